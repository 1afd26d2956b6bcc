"""The framing of weir's plugin protocol, for plugins written in Python
(docs/connectors/plugins.md describes it message by message).

weir starts the plugin with two extra open files: fd 3 carries frames from
weir, fd 4 frames to weir. A frame is: JSON length (u32 LE), blob length
(u32 LE), the JSON message, the blob. Events travel as
[value_offset, value_length, key_offset (-1: none), key_length,
timestamp_ms, headers ([[name, value], ...] or null)] with their keys and
values in the blob. stdout and stderr go to weir's log.
"""
import json
import os
import struct

HEAD = struct.Struct("<II")
_reader = os.fdopen(3, "rb", buffering=1 << 16)


def receive():
    """The next message and its blob; (None, b"") once weir closed the pipe."""
    head = _reader.read(8)
    if len(head) < 8:
        return None, b""
    jlen, blen = HEAD.unpack(head)
    body = _reader.read(jlen)
    blob = _reader.read(blen) if blen else b""
    if len(body) < jlen or len(blob) < blen:
        return None, b""
    return json.loads(body), blob


def send(message, blob=b""):
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    data = memoryview(HEAD.pack(len(body), len(blob)) + body + blob)
    while data:
        data = data[os.write(4, data):]


def events(message, blob):
    """The events of a `write` message: (key, value, headers, timestamp_ms)
    with key and value as bytes (key None when absent)."""
    out = []
    for vo, vl, ko, kl, ts, hs in message["e"]:
        key = None if ko < 0 else blob[ko:ko + kl]
        out.append((key, blob[vo:vo + vl], dict(hs or ()), ts))
    return out


def batch(partition, position, items):
    """A `batch` message for `items` of (key, value) bytes, and its blob."""
    parts, index, at = [], [], 0
    for key, value in items:
        parts.append(value)
        entry = [at, len(value), -1, 0, 0, None]
        at += len(value)
        if key is not None:
            parts.append(key)
            entry[2], entry[3] = at, len(key)
            at += len(key)
        index.append(entry)
    return {"t": "batch", "partition": partition, "position": str(position), "e": index}, b"".join(parts)
