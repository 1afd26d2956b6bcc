"""A plugin source: reads `config.path` line by line; a position is the
byte offset after a batch. Committed positions are written (fsynced) to
`config.path + ".committed"`, and a restart resumes from there.

    [sources.lines]
    type = "plugin"
    command = ["python3", "examples/plugins/file_source.py"]
    config = { path = "input.jsonl" }
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weir_plugin  # noqa: E402


def load_committed(state):
    try:
        with open(state) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def save_committed(state, offset):
    tmp = state + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(offset))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state)


def main():
    init, _ = weir_plugin.receive()
    if init is None:
        return
    config = init.get("config", {})
    path = config["path"]
    state = path + ".committed"
    delay = float(config.get("delay_ms", 0)) / 1000.0
    if config.get("pid_file"):
        with open(config["pid_file"], "w") as f:
            f.write(str(os.getpid()))
    offset = load_committed(state)
    try:
        source = open(path, "rb")
    except OSError as e:
        weir_plugin.send({"t": "error", "message": "cannot open %s: %s" % (path, e)})
        return
    source.seek(offset)
    weir_plugin.send({"t": "ready", "runtime": "file_source.py"})
    while True:
        message, _ = weir_plugin.receive()
        if message is None:
            break
        for _partition, position in message.get("commit", []):
            save_committed(state, int(position))
        if message["t"] == "commit":
            weir_plugin.send({"t": "ack"})
            continue
        if message["t"] != "poll":
            continue
        if delay:
            time.sleep(delay)
        items = []
        for _ in range(min(int(message.get("max_events", 100)), int(config.get("max_events", 1 << 30)))):
            line = source.readline()
            if not line.endswith(b"\n"):
                source.seek(-len(line), os.SEEK_CUR)  # a partial last line waits
                break
            items.append((None, line[:-1]))
        if not items:
            weir_plugin.send({"t": "end"})
            continue
        reply, blob = weir_plugin.batch(0, source.tell(), items)
        weir_plugin.send(reply, blob)


main()
