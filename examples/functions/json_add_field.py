"""Adds a field to every JSON object event: the json-add-field step in Python.

    [[steps]]
    type = "python"
    handler = "examples/functions/json_add_field.py"
    config = { field = "seen", value = true }
"""
import json

FIELD = "seen"
VALUE = True
# made once: json.dumps with options builds an encoder on every call
ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def init(context):
    # runs once per worker: read the config, open connections, warm caches
    global FIELD, VALUE
    FIELD = context.config.get("field", FIELD)
    VALUE = context.config.get("value", VALUE)
    context.log.info("adding %s=%r" % (FIELD, VALUE))


def handler(context, event):
    data = json.loads(event.value)
    if not isinstance(data, dict):
        context.fail(event, "not a JSON object")
        return None
    data[FIELD] = VALUE
    return ENCODE(data)
