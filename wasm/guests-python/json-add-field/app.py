"""json-add-field in Python: sets the top-level field `field` of every JSON
object event to `value` (JSON text; text that is not JSON is taken as a
string). Built into a component with componentize-py by
scripts/build-guests.sh; the classes come from the bindings it generates
from wasm/wit/weir-function.wit."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        settings = dict(config)
        if "field" not in settings or "value" not in settings:
            raise Err("config keys `field` and `value` are required")
        global FIELD, VALUE
        FIELD = settings["field"]
        try:
            VALUE = json.loads(settings["value"])
        except ValueError:
            VALUE = settings["value"]

    def process(self, batch):
        data = batch.data
        out = bytearray()
        outcomes = []
        for i, event in enumerate(batch.events):
            start = event.value.offset
            raw = data[start : start + event.value.len]
            try:
                obj = json.loads(raw)
            except ValueError as e:
                outcomes.append(types.Outcome(i, types.Action_Fail(f"not JSON: {e}")))
                continue
            if not isinstance(obj, dict):
                outcomes.append(types.Outcome(i, types.Action_Fail("not a JSON object")))
                continue
            obj[FIELD] = VALUE
            encoded = json.dumps(obj, separators=(",", ":")).encode()
            key = None
            if event.key is not None:
                key = types.Span(len(out), event.key.len)
                out += data[event.key.offset : event.key.offset + event.key.len]
            value = types.Span(len(out), len(encoded))
            out += encoded
            outcomes.append(types.Outcome(i, types.Action_Emit(types.Output(key, value, event.headers))))
        return types.Outcomes(bytes(out), outcomes)


FIELD = None
VALUE = None
