//! `json-add-field` as a WebAssembly function: the same work as weir's
//! native step, for the `wasm-map` benchmark. Sets the top-level field
//! `field` of every JSON object to `value` (JSON text; text that is not
//! JSON is taken as a string). Other fields' values are copied through as
//! raw JSON text; the field is replaced in place if present, else appended.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weir_guest::{Config, Event, Function, Out};

struct JsonAddField {
    /// `"field"` as JSON.
    name: String,
    /// The field's name, unescaped.
    field: String,
    /// The value as JSON text.
    value: String,
}

impl Function for JsonAddField {
    fn init(config: &Config) -> Result<Self, String> {
        let field = config.require("field")?.to_string();
        let value = config.require("value")?;
        let value = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v) => v.to_string(),
            Err(_) => serde_json::Value::String(value.to_string()).to_string(),
        };
        Ok(JsonAddField {
            name: serde_json::Value::String(field.clone()).to_string(),
            field,
            value,
        })
    }

    fn process(&mut self, event: &Event, out: &mut Out<'_>) {
        let mut de = serde_json::Deserializer::from_slice(&event.value);
        let entries = match de.deserialize_map(Entries) {
            Ok(entries) => entries,
            Err(e) => return out.fail(format!("not a JSON object: {e}")),
        };
        if let Err(e) = de.end() {
            return out.fail(format!("not a JSON object: {e}"));
        }
        let mut json =
            Vec::with_capacity(event.value.len() + self.name.len() + self.value.len() + 2);
        json.push(b'{');
        let mut replaced = false;
        for (i, (key, raw)) in entries.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            if key == &self.field {
                json.extend_from_slice(self.name.as_bytes());
                json.push(b':');
                json.extend_from_slice(self.value.as_bytes());
                replaced = true;
            } else {
                // keys are re-escaped: their raw text was decoded
                json.extend_from_slice(
                    serde_json::Value::String(key.to_string())
                        .to_string()
                        .as_bytes(),
                );
                json.push(b':');
                json.extend_from_slice(raw.get().as_bytes());
            }
        }
        if !replaced {
            if !entries.is_empty() {
                json.push(b',');
            }
            json.extend_from_slice(self.name.as_bytes());
            json.push(b':');
            json.extend_from_slice(self.value.as_bytes());
        }
        json.push(b'}');
        out.emit_value(event, json);
    }
}

/// A JSON object's entries in order: keys decoded, values raw.
struct Entries;

impl<'de> Visitor<'de> for Entries {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            entries.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(entries)
    }
}

weir_guest::export_function!(JsonAddField);
