"""A plugin sink: appends each event's value as a line to `config.path`,
and acknowledges a batch only once it is fsynced.

    [sinks.archive]
    type = "plugin"
    command = ["python3", "examples/plugins/file_sink.py"]
    config = { path = "archive.jsonl" }
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weir_plugin  # noqa: E402


def main():
    init, _ = weir_plugin.receive()
    if init is None:
        return
    config = init.get("config", {})
    try:
        out = open(config["path"], "ab")
    except (KeyError, OSError) as e:
        weir_plugin.send({"t": "error", "message": "cannot open config.path: %s" % e})
        return
    if config.get("pid_file"):
        with open(config["pid_file"], "w") as f:
            f.write(str(os.getpid()))
    weir_plugin.send({"t": "ready", "runtime": "file_sink.py"})
    while True:
        message, blob = weir_plugin.receive()
        if message is None:
            break  # weir closed the pipe: stop
        if message["t"] != "write":
            continue
        try:
            for _key, value, _headers, _ts in weir_plugin.events(message, blob):
                out.write(value + b"\n")
            out.flush()
            os.fsync(out.fileno())
        except OSError as e:
            weir_plugin.send({"t": "failed", "message": str(e), "retryable": True})
            continue
        weir_plugin.send({"t": "ack"})


main()
