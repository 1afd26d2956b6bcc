//! `json-add-field` as a WebAssembly function: the same work as weir's
//! native step, for the `wasm-map` benchmark. Sets the top-level field
//! `field` of every JSON object to `value` (JSON text; text that is not
//! JSON is taken as a string). Other fields' values are copied through as
//! raw JSON text; the field is replaced in place if present, else appended.
//! The object is rewritten while it is parsed, straight into the batch's
//! output buffer.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weir_guest::{Config, Event, Function, Out};

struct JsonAddField {
    /// The field's name, unescaped.
    field: String,
    /// `"field":value` as JSON text, ready to copy.
    entry: Vec<u8>,
}

impl Function for JsonAddField {
    fn init(config: &Config) -> Result<Self, String> {
        let field = config.require("field")?.to_string();
        let value = config.require("value")?;
        let value = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(v) => v,
            Err(_) => serde_json::Value::String(value.to_string()),
        };
        let mut entry = serde_json::to_vec(&field).map_err(|e| e.to_string())?;
        entry.push(b':');
        serde_json::to_writer(&mut entry, &value).map_err(|e| e.to_string())?;
        Ok(JsonAddField { field, entry })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Out<'_>) {
        let written = out.write_value(event, |json| {
            let mut de = serde_json::Deserializer::from_slice(event.value);
            let rewrite = Rewrite {
                out: json,
                field: &self.field,
                entry: &self.entry,
            };
            rewrite.deserialize(&mut de).and_then(|()| de.end())
        });
        if let Err(e) = written {
            out.fail(format!("not a JSON object: {e}"));
        }
    }
}

/// Writes the object it parses with the field set.
struct Rewrite<'a> {
    out: &'a mut Vec<u8>,
    field: &'a str,
    entry: &'a [u8],
}

impl<'de> DeserializeSeed<'de> for Rewrite<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Rewrite<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        out.push(b'{');
        let mut replaced = false;
        let mut first = true;
        while let Some(key) = map.next_key_seed(Key)? {
            let raw = map.next_value::<&'de RawValue>()?;
            if !first {
                out.push(b',');
            }
            first = false;
            if key == self.field {
                out.extend_from_slice(self.entry);
                replaced = true;
                continue;
            }
            match key {
                // borrowed: the text had no escapes, so it is its own JSON
                Cow::Borrowed(k) => {
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'"');
                }
                Cow::Owned(k) => {
                    let _ = serde_json::to_writer(&mut *out, &k);
                }
            }
            out.push(b':');
            out.extend_from_slice(raw.get().as_bytes());
        }
        if !replaced {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(self.entry);
        }
        out.push(b'}');
        Ok(())
    }
}

/// A key: borrowed from the input when it has no escapes (serde's own
/// `Cow<str>` always copies).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

weir_guest::export_function!(JsonAddField);
