//! `json-add-field`: sets one field of every JSON object event to a fixed
//! value. The example native step, and the step of the `json-map`
//! benchmark.
//!
//! ```toml
//! [[steps]]
//! type = "json-add-field"
//! field = "env"
//! value = "prod"          # any TOML value: string, number, table, array…
//! ```
//!
//! The value is parsed with serde_json, entry by entry: keys are read (a
//! key without escapes is copied as it was spelled, one with escapes is
//! decoded and written again) and the other fields' values are copied
//! through as raw JSON text (validated, never decoded), then the object is
//! written back compactly with the field set (replaced in place if
//! present, else appended). All of a batch's new
//! values share one buffer. Values that are not JSON objects fail.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Step, StepContext, StepFactory, StepOutput};

/// Options of the `json-add-field` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonAddFieldOptions {
    /// Name of the top-level field to set.
    pub field: String,
    /// The value to set it to: any TOML value, written as JSON (tables
    /// become objects, arrays arrays, datetimes strings).
    pub value: serde_json::Value,
}

/// Validates the options and renders the value as JSON once.
pub fn build(
    config: &ComponentConfig,
    _ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: JsonAddFieldOptions = config.options()?;
    let mut entry = Vec::new();
    // `"field":value`, ready to copy into every event
    serde_json::to_writer(&mut entry, &options.field)
        .map_err(|e| config.option_error("field", e.to_string()))?;
    entry.push(b':');
    serde_json::to_writer(&mut entry, &from_toml(options.value))
        .map_err(|e| config.option_error("value", e.to_string()))?;
    Ok(Arc::new(JsonAddFieldFactory {
        field: options.field.into(),
        entry: entry.into(),
    }))
}

/// Turns the TOML-shaped JSON that deserializing a TOML value gives into
/// plain JSON: datetimes arrive as `{"$__toml_private_datetime": "…"}`.
fn from_toml(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some(Value::String(datetime)) = map.get("$__toml_private_datetime") {
                    return Value::String(datetime.clone());
                }
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, from_toml(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(from_toml).collect()),
        other => other,
    }
}

/// Builds `json-add-field` instances.
#[derive(Debug)]
pub struct JsonAddFieldFactory {
    /// The field's name.
    field: Arc<str>,
    /// `"field":value` as JSON text.
    entry: Arc<[u8]>,
}

impl StepFactory for JsonAddFieldFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(JsonAddField {
            field: self.field.clone(),
            entry: self.entry.clone(),
            buf: BytesMut::new(),
        }))
    }
}

/// One instance of `json-add-field`.
struct JsonAddField {
    field: Arc<str>,
    entry: Arc<[u8]>,
    /// Holds the batch's new values.
    buf: BytesMut,
}

#[async_trait(?Send)]
impl Step for JsonAddField {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        // one allocation for the batch: every value grows by about `entry`
        let total: usize = input
            .iter()
            .map(|e| e.value.len() + self.entry.len() + 1)
            .sum();
        self.buf.reserve(total);
        for event in input.drain(..) {
            let rewrite = RewriteObject {
                field: &self.field,
                entry: &self.entry,
                out: &mut self.buf,
            };
            let mut de = serde_json::Deserializer::from_slice(&event.value);
            match rewrite.deserialize(&mut de).and_then(|()| de.end()) {
                Ok(()) => {
                    let value = self.buf.split().freeze();
                    output.emit(Event { value, ..event });
                }
                Err(e) => {
                    self.buf.clear();
                    output.fail(event, format!("invalid JSON: {e}"));
                }
            }
        }
    }
}

/// Reads one JSON object and writes it to `out` with `field` set: a serde
/// seed, so it streams entry by entry without building the object.
struct RewriteObject<'s> {
    field: &'s str,
    /// `"field":value`.
    entry: &'s [u8],
    out: &'s mut BytesMut,
}

impl<'de> DeserializeSeed<'de> for RewriteObject<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RewriteObject<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        out.put_u8(b'{');
        let mut first = true;
        let mut replaced = false;
        while let Some(Key(key)) = map.next_key()? {
            let value: &RawValue = map.next_value()?;
            if !first {
                out.put_u8(b',');
            }
            first = false;
            if key == self.field {
                out.extend_from_slice(self.entry);
                replaced = true;
            } else {
                match key {
                    // borrowed: the input spelled it without escapes, so
                    // its text is already the compact JSON string
                    Cow::Borrowed(key) => {
                        out.put_u8(b'"');
                        out.extend_from_slice(key.as_bytes());
                        out.put_u8(b'"');
                    }
                    Cow::Owned(key) => {
                        serde_json::to_writer(out.writer(), &key).map_err(de::Error::custom)?;
                    }
                }
                out.put_u8(b':');
                out.extend_from_slice(value.get().as_bytes());
            }
        }
        if !replaced {
            if !first {
                out.put_u8(b',');
            }
            out.extend_from_slice(self.entry);
        }
        out.put_u8(b'}');
        Ok(())
    }
}

/// An object key, borrowed from the input unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{build, dead, run, run_values, values};
    use weir_engine::Event;

    #[tokio::test]
    async fn adds_or_replaces_the_field() {
        let inputs = [
            r#"{"id": 1, "user": {"name" : "ada"}}"#,
            r#"{"env": "dev", "id": 2}"#,
            "{}",
            r#" {"a\"b": [1, 2 ], "\u00e9": 1.50} "#,
            "{\"é/\u{7f}\": 0, \"env\" : 1}",
        ];
        let out = run_values("json-add-field", "field = 'env'\nvalue = 'prod'", &inputs).await;
        assert_eq!(
            values(&out.events),
            vec![
                r#"{"id":1,"user":{"name" : "ada"},"env":"prod"}"#,
                r#"{"env":"prod","id":2}"#,
                r#"{"env":"prod"}"#,
                r#"{"a\"b":[1, 2 ],"é":1.50,"env":"prod"}"#,
                "{\"é/\u{7f}\":0,\"env\":\"prod\"}",
            ]
        );
        assert!(out.dead.is_empty());
    }

    #[tokio::test]
    async fn keeps_the_rest_of_the_event() {
        let factory = build("json-add-field", "field = 'n'\nvalue = 1").unwrap();
        let mut event = Event::new("{}")
            .with_key("k")
            .with_offset(3)
            .with_timestamp_ms(9);
        event.set_header("h", "v");
        let out = run(factory, vec![event.clone()]).await;
        assert_eq!(
            out.events,
            vec![Event {
                value: r#"{"n":1}"#.into(),
                ..event
            }]
        );
    }

    #[tokio::test]
    async fn maps_toml_values_to_json() {
        let options = "field = 'meta'\nvalue = { tags = ['a', 'b'], ratio = 0.5, on = true, at = 1979-05-27T07:32:00Z }";
        let out = run_values("json-add-field", options, &["{}"]).await;
        assert_eq!(
            values(&out.events),
            vec![
                r#"{"meta":{"at":"1979-05-27T07:32:00Z","on":true,"ratio":0.5,"tags":["a","b"]}}"#
            ]
        );
    }

    #[tokio::test]
    async fn fails_what_is_not_an_object() {
        let inputs = ["[1]", r#"{"a": 1"#, r#"{"a": 1} x"#, "", r#"{"ok": 1}"#];
        let out = run_values("json-add-field", "field = 'f'\nvalue = 0", &inputs).await;
        assert_eq!(values(&out.events), vec![r#"{"ok":1,"f":0}"#]);
        let reasons: Vec<String> = dead(&out).into_iter().map(|(_, reason)| reason).collect();
        assert_eq!(
            reasons,
            vec![
                "invalid JSON: invalid type: sequence, expected a JSON object at line 1 column 0",
                "invalid JSON: EOF while parsing an object at line 1 column 7",
                "invalid JSON: trailing characters at line 1 column 10",
                "invalid JSON: EOF while parsing a value at line 1 column 0",
            ]
        );
    }

    #[tokio::test]
    async fn deep_nesting_does_not_overflow_the_stack() {
        // field values are skipped without recursion, so depth costs nothing
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let out = run_values("json-add-field", "field = 'f'\nvalue = 0", &[&deep]).await;
        assert_eq!(out.events.len(), 1);
        assert!(out.events[0].value.ends_with(b"]],\"f\":0}"));
    }

    #[test]
    fn config_errors() {
        let err = |options: &str| build("json-add-field", options).err().expect("an error");
        assert_eq!(
            err("field = 'f'"),
            "error: <inline>:1:1: missing field `value`"
        );
        assert_eq!(
            err("field = 'f'\nvalue = 1\nvalues = 2"),
            "error: <inline>:3:1: unknown field `values`, expected `field` or `value`; did you mean `value`?"
        );
    }
}
