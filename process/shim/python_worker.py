# weir's worker for Python functions: shipped inside weir, started by it as
#   python3 -u <this file> <handler.py> <mode> <file>
# where <handler.py> is the version's kept copy and <file> the path the
# handler was written at (its directory goes on sys.path, for the
# handler's own modules; errors name it).
# It talks to weir over two pipes, fd 3 (from weir) and fd 4 (to weir), so
# whatever the function prints on stdout or stderr never touches the
# protocol: weir logs those lines. See docs/connectors/plugins.md.
#
# A frame is: json length (u32 LE), blob length (u32 LE), JSON, blob.
# Event keys and values travel in the blob, located by their lengths (in a
# batch) or [offset, length] pairs (in a reply), so they are neither
# escaped nor copied into JSON.

import inspect
import json
import os
import struct
import sys
import traceback
import types

FROM_WEIR, TO_WEIR = 3, 4
HEAD = struct.Struct("<II")
_reader = os.fdopen(FROM_WEIR, "rb", buffering=1 << 16)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def send(message, blob=b""):
    body = _dumps(message).encode("utf-8")
    data = memoryview(HEAD.pack(len(body), len(blob)) + body + blob)
    while data:
        n = os.write(TO_WEIR, data)
        data = data[n:]


def receive():
    head = _reader.read(8)
    if len(head) < 8:
        return None, b""
    jlen, blen = HEAD.unpack(head)
    body = _reader.read(jlen)
    blob = _reader.read(blen) if blen else b""
    if len(body) < jlen or len(blob) < blen:
        return None, b""
    return json.loads(body), blob


def last_line(error):
    lines = traceback.format_exception_only(type(error), error)
    text = lines[-1].strip() if lines else repr(error)
    tb = error.__traceback__
    where = None
    while tb is not None:
        where = tb
        tb = tb.tb_next
    if where is not None:
        frame = where.tb_frame
        text += " (%s, line %d)" % (os.path.basename(frame.f_code.co_filename), where.tb_lineno)
    return text


class Log:
    """Lines go to weir's log, tagged with the function's name."""

    __slots__ = ()

    def _send(self, level, message):
        send({"t": "log", "level": level, "message": str(message)})

    def debug(self, message):
        self._send("debug", message)

    def info(self, message):
        self._send("info", message)

    def warning(self, message):
        self._send("warn", message)

    warn = warning

    def error(self, message):
        self._send("error", message)


class Event:
    """One event: `value` (str), `key` (str or None), `headers` (dict),
    `timestamp` (ms). Change them in place to change the event."""

    __slots__ = ("value", "key", "timestamp", "_headers", "_v0", "_k0", "_out", "_index")

    def __init__(self, value, key, timestamp, headers, index):
        self.value = value
        self.key = key
        self.timestamp = timestamp
        self._headers = headers
        self._v0 = value
        self._k0 = key
        self._out = None
        self._index = index

    @property
    def headers(self):
        if self._headers is None or type(self._headers) is list:
            self._headers = dict(self._headers or ())
        return self._headers

    @headers.setter
    def headers(self, value):
        self._headers = dict(value)

    def json(self):
        """The value parsed as JSON."""
        return json.loads(self.value)

    def __repr__(self):
        return "Event(key=%r, value=%r)" % (self.key, self.value)


class Context:
    """What a handler gets besides its events: the function's name and
    config, a logger, and the outcomes other than keeping an event."""

    __slots__ = ("function", "config", "log", "_emitted")

    def __init__(self, function, config):
        self.function = function
        self.config = config
        self.log = Log()
        self._emitted = {}

    def drop(self, event):
        """The event goes nowhere (filtered out)."""
        event._out = ("d",)

    def fail(self, event, reason, retryable=False):
        """The event failed: dead-lettered with `reason`, or retried later
        when `retryable`."""
        event._out = ("f", str(reason), bool(retryable))

    def route(self, event, sink):
        """The event skips later steps and goes to sink `sink`."""
        event._out = ("s", str(sink))

    def emit(self, event, value, key=None, headers=None):
        """A new event after `event` (which it is acknowledged with)."""
        self._emitted.setdefault(event._index, []).append((value, key, headers))


def as_bytes(value):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return _dumps(value).encode("utf-8")


class Out:
    """The reply being built: outcome entries and their blob."""

    __slots__ = ("parts", "size")

    def __init__(self):
        self.parts = []
        self.size = 0

    def put(self, value):
        data = as_bytes(value)
        self.parts.append(data)
        at = self.size
        self.size += len(data)
        return [at, len(data)]

    def blob(self):
        return b"".join(self.parts)


def outcome(event, returned, emitted, out):
    """One input's entry: None when it is kept as it came in."""
    entry = None
    if returned is not None:
        event.value = returned
    if event.value is not event._v0:
        entry = {"v": out.put(event.value)}
    if event.key is not event._k0:
        entry = entry or {}
        entry["k"] = None if event.key is None else out.put(event.key)
    if type(event._headers) is dict:
        entry = entry or {}
        entry["h"] = [[str(k), str(v)] for k, v in event._headers.items()]
    if event._out is not None:
        entry = entry or {}
        kind = event._out[0]
        if kind == "d":
            entry["x"] = "d"
        elif kind == "f":
            entry["x"] = "f"
            entry["r"] = event._out[1]
            entry["rt"] = event._out[2]
        else:
            entry["x"] = "s"
            entry["s"] = event._out[1]
    if emitted:
        entry = entry or {}
        entry["e"] = [
            {
                "v": out.put(v),
                "k": None if k is None else out.put(k),
                "h": None if h is None else [[str(a), str(b)] for a, b in dict(h).items()],
            }
            for v, k, h in emitted
        ]
    return entry


def load(path, original):
    directory = os.path.dirname(os.path.abspath(original))
    if directory not in sys.path:
        sys.path.insert(0, directory)
    with open(path, "rb") as f:
        source = f.read()
    # compiled under the name the user wrote, so tracebacks point there
    code = compile(source, original, "exec")
    module = types.ModuleType("weir_function")
    module.__file__ = original
    sys.modules["weir_function"] = module
    exec(code, module.__dict__)
    return module


def batch_form(handler, mode):
    if mode in ("batch", "event"):
        return mode == "batch"
    try:
        params = list(inspect.signature(handler).parameters)
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 and params[1] == "events"


def run(path, mode, original):
    message, _ = receive()
    if message is None or message.get("t") != "init":
        return 2
    context = Context(message.get("function", ""), message.get("config") or {})
    try:
        module = load(path, original)
    except SyntaxError as e:
        send({"t": "error", "message": "%s:%s: SyntaxError: %s" % (original, e.lineno, e.msg)})
        return 1
    except BaseException as e:
        send({"t": "error", "message": "%s: loading failed: %s" % (original, last_line(e))})
        return 1
    handler = getattr(module, "handler", None)
    if not callable(handler):
        send({"t": "error", "message": "%s: no function `handler` (def handler(context, event) or def handler(context, events))" % original})
        return 1
    init = getattr(module, "init", None)
    if callable(init):
        try:
            init(context)
        except BaseException as e:
            send({"t": "error", "message": "%s: init failed: %s" % (original, last_line(e))})
            return 1
    batched = batch_form(handler, mode)
    send({"t": "ready", "runtime": "python %d.%d.%d" % sys.version_info[:3], "batch": batched})
    while True:
        message, blob = receive()
        if message is None:
            return 0
        events = decode(message, blob)
        context._emitted = {}
        if batched:
            try:
                returned = handler(context, events)
                if returned is not None:
                    returned = list(returned)
            except Exception as e:
                send({"t": "failed", "message": last_line(e)})
                continue
            if returned is None:
                returned = [None] * len(events)
            elif len(returned) != len(events):
                send({"t": "failed", "message": "the handler returned %d values for %d events" % (len(returned), len(events))})
                continue
        else:
            returned = []
            for event in events:
                try:
                    returned.append(handler(context, event))
                except Exception as e:
                    returned.append(Raised(last_line(e)))
        reply(events, returned, context._emitted)


class Raised:
    """A per-event handler's exception, in place of its return value."""

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason


def decode(message, blob):
    """The batch's events. The index comes by columns: value lengths `vl`,
    key lengths `kl` (-1: no key; null: no keys at all), timestamps `ts`,
    headers `h`; the values lie one after the other in the blob, then the
    keys. An all-ASCII blob (the common case) is decoded once and sliced;
    otherwise each key and value is decoded on its own."""
    events = []
    new = Event.__new__
    text = blob.decode("ascii") if blob.isascii() else None
    lengths, key_lengths, stamps, headers = message["vl"], message["kl"], message["ts"], message["h"]
    at = 0
    for i, n in enumerate(lengths):
        value = text[at:at + n] if text is not None else blob[at:at + n].decode("utf-8", "surrogateescape")
        at += n
        event = new(Event)
        event.value = event._v0 = value
        event.key = event._k0 = None
        event.timestamp = stamps[i]
        event._headers = None if headers is None else headers[i]
        event._out = None
        event._index = i
        events.append(event)
    if key_lengths is not None:
        for event, n in zip(events, key_lengths):
            if n >= 0:
                key = text[at:at + n] if text is not None else blob[at:at + n].decode("utf-8", "surrogateescape")
                event.key = event._k0 = key
                at += n
    return events


def reply(events, returned, emitted):
    """Sends the outcomes: when every event was only kept or given a new
    value (the common case), just the values' lengths (`vl`, -1 for kept);
    otherwise one entry per event (`o`)."""
    if not emitted:
        lengths = []
        parts = []
        for event, value in zip(events, returned):
            if value is not None:
                if type(value) is Raised:
                    break
                event.value = value
            if event._out is not None or event.key is not event._k0 or type(event._headers) is dict:
                break
            value = event.value
            if value is event._v0:
                lengths.append(-1)
                continue
            data = value.encode("utf-8", "surrogateescape") if type(value) is str else as_bytes(value)
            parts.append(data)
            lengths.append(len(data))
        else:
            send({"t": "done", "vl": lengths}, b"".join(parts))
            return
    out = Out()
    entries = []
    for i, (event, value) in enumerate(zip(events, returned)):
        if type(value) is Raised:
            entries.append({"x": "f", "r": value.reason, "rt": False})
        else:
            entries.append(outcome(event, value, emitted.get(i), out))
    send({"t": "done", "o": entries}, out.blob())


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2], sys.argv[3]))
