//! How the `stdout` and `file` sinks write an event as one line.
//!
//! `format = "value"` writes the raw value and a newline. `format =
//! "envelope"` writes one JSON object per event:
//!
//! ```json
//! {"key":"k1","value":{"id":1},"headers":{"h":"v"},"timestamp_ms":1700000000000,"source":0,"partition":3,"offset":42}
//! ```
//!
//! - `key`: a string, or `null` for an unkeyed event;
//! - `value`: the value itself when it is valid UTF-8 JSON (re-written on one
//!   line if it spans several), else the value as a string;
//! - `headers`: an object of header names to values, in event order (a
//!   repeated name appears twice);
//! - strings that are not valid UTF-8 are written with U+FFFD in place of
//!   the invalid bytes.

use std::io::Write;

use serde::Deserialize;
use weir_engine::Event;

/// How a sink writes each event (`format = "..."`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The raw value followed by `\n` (the default). A value containing
    /// newlines spans several lines.
    #[default]
    Value,
    /// One JSON object per line with key, value, headers, timestamp and origin.
    Envelope,
}

/// Appends `event` to `out` as one line in `format`.
pub fn write_line(out: &mut Vec<u8>, event: &Event, format: OutputFormat) {
    match format {
        OutputFormat::Value => out.extend_from_slice(&event.value),
        OutputFormat::Envelope => write_envelope(out, event),
    }
    out.push(b'\n');
}

/// Appends the JSON envelope of `event` (without a newline).
pub fn write_envelope(out: &mut Vec<u8>, event: &Event) {
    out.extend_from_slice(b"{\"key\":");
    match &event.key {
        Some(key) => write_string(out, key),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value\":");
    write_value(out, &event.value);
    out.extend_from_slice(b",\"headers\":{");
    for (i, (name, value)) in event.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, name);
        out.push(b':');
        write_string(out, value);
    }
    let origin = &event.origin;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "}},\"timestamp_ms\":{},\"source\":{},\"partition\":{},\"offset\":{}}}",
        event.timestamp_ms, origin.source, origin.partition, origin.offset
    );
}

/// The event an envelope line describes (the reverse of [`write_envelope`],
/// for replaying dead letters): its key, value (a JSON string is the value's
/// text; anything else the value's JSON), headers except weir's own
/// `weir.*` ones (the failure's reason and origin), and timestamp.
pub fn read_envelope(line: &[u8]) -> Result<Event, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON envelope: {e}"))?;
    let object = v.as_object().ok_or("not a JSON envelope: not an object")?;
    let value = match object.get("value") {
        Some(serde_json::Value::String(text)) => bytes::Bytes::from(text.clone().into_bytes()),
        Some(other) => bytes::Bytes::from(other.to_string().into_bytes()),
        None => return Err("the envelope has no `value`".into()),
    };
    let key = match object.get("key") {
        Some(serde_json::Value::String(k)) => Some(bytes::Bytes::from(k.clone().into_bytes())),
        Some(serde_json::Value::Null) | None => None,
        Some(other) => return Err(format!("the envelope's `key` is not a string: {other}")),
    };
    let headers = match object.get("headers") {
        Some(serde_json::Value::Object(h)) => h
            .iter()
            .filter(|(name, _)| !name.starts_with("weir."))
            .map(|(name, value)| {
                let value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (
                    bytes::Bytes::from(name.clone().into_bytes()),
                    bytes::Bytes::from(value.into_bytes()),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Event {
        key,
        value,
        headers,
        timestamp_ms: object
            .get("timestamp_ms")
            .and_then(|t| t.as_i64())
            .unwrap_or(0),
        origin: weir_engine::Origin::default(),
    })
}

/// Appends `value` as JSON if it is JSON, else as a string.
fn write_value(out: &mut Vec<u8>, value: &[u8]) {
    let json = std::str::from_utf8(value)
        .ok()
        .filter(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
    match json {
        Some(text) if text.bytes().any(|b| b == b'\n' || b == b'\r') => {
            write_compact(out, text.as_bytes())
        }
        Some(text) => out.extend_from_slice(text.trim().as_bytes()),
        None => write_string(out, value),
    }
}

/// Appends valid JSON without the whitespace between tokens.
fn write_compact(out: &mut Vec<u8>, json: &[u8]) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(b);
            in_string = b == b'"';
        }
    }
}

/// Appends `bytes` as a JSON string (invalid UTF-8 becomes U+FFFD).
pub fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        escape_into(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

/// Appends `text` with JSON string escapes.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use weir_engine::Origin;

    fn envelope(event: &Event) -> String {
        let mut out = Vec::new();
        write_line(&mut out, event, OutputFormat::Envelope);
        let text = String::from_utf8(out).expect("envelopes are UTF-8");
        assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
        assert!(text.ends_with('\n'));
        text.trim_end().to_string()
    }

    fn event(value: &'static [u8]) -> Event {
        Event {
            key: None,
            value: Bytes::from_static(value),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000,
            origin: Origin {
                source: 1,
                partition: 3,
                offset: 42,
            },
        }
    }

    #[test]
    fn json_value_is_embedded() {
        let mut e = event(br#"{"id":1,"tags":["a"]}"#).with_key("k1");
        e.set_header("h", "v");
        e.set_header("trace", "t\"1");
        assert_eq!(
            envelope(&e),
            r#"{"key":"k1","value":{"id":1,"tags":["a"]},"headers":{"h":"v","trace":"t\"1"},"timestamp_ms":1700000000000,"source":1,"partition":3,"offset":42}"#
        );
    }

    #[test]
    fn non_json_value_is_a_string() {
        let e = event(b"plain \"text\"\twith\ncontrol\x01");
        let text = envelope(&e);
        assert!(
            text.starts_with(
                r#"{"key":null,"value":"plain \"text\"\twith\ncontrol\u0001","headers":{}"#
            ),
            "{text}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["value"], "plain \"text\"\twith\ncontrol\u{1}");
        assert_eq!(parsed["offset"], 42);
    }

    #[test]
    fn non_utf8_value_key_and_headers_are_replaced() {
        let mut e = event(b"ab\xff\xfecd").with_key(Bytes::from_static(b"k\x80"));
        e.set_header(Bytes::from_static(b"n\xc3"), Bytes::from_static(b"\xffv"));
        let text = envelope(&e);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["value"], "ab\u{fffd}\u{fffd}cd");
        assert_eq!(parsed["key"], "k\u{fffd}");
        assert_eq!(parsed["headers"]["n\u{fffd}"], "\u{fffd}v");
    }

    #[test]
    fn invalid_utf8_inside_a_json_string_is_not_embedded() {
        let text = envelope(&event(b"\"a\xffb\""));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["value"], "\"a\u{fffd}b\"");
    }

    #[test]
    fn multi_line_json_is_compacted() {
        let text = envelope(&event(
            b"{\n  \"a\": \"x y\\\" \\n\",\r\n  \"b\": [1, 2]\n}\n",
        ));
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed["value"],
            serde_json::json!({"a": "x y\" \n", "b": [1, 2]})
        );
        assert!(
            text.contains(r#""value":{"a":"x y\" \n","b":[1,2]}"#),
            "{text}"
        );
    }

    #[test]
    fn scalars_and_edge_values() {
        assert!(envelope(&event(b"42")).contains(r#""value":42,"#));
        assert!(envelope(&event(b" true ")).contains(r#""value":true,"#));
        assert!(envelope(&event(b"")).contains(r#""value":"","#));
        assert!(
            envelope(&event(b"{\"a\":1} trailing")).contains(r#""value":"{\"a\":1} trailing","#)
        );
        let deep = "[".repeat(10_000);
        let e = Event::new(deep.clone());
        let mut out = Vec::new();
        write_line(&mut out, &e, OutputFormat::Envelope);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["value"], deep);
        let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut out = Vec::new();
        write_line(
            &mut out,
            &Event::new(nested.clone()),
            OutputFormat::Envelope,
        );
        assert!(
            out.windows(nested.len()).any(|w| w == nested.as_bytes()),
            "valid deep JSON is embedded"
        );
    }

    #[test]
    fn an_envelope_reads_back_into_its_event_without_weirs_headers() {
        let mut e = Event::new(r#"{"id":1}"#).with_key("k1");
        e.headers.push((
            bytes::Bytes::from_static(b"trace"),
            bytes::Bytes::from_static(b"abc"),
        ));
        e.headers.push((
            bytes::Bytes::from_static(b"weir.error"),
            bytes::Bytes::from_static(b"bad"),
        ));
        e.timestamp_ms = 17;
        let mut line = Vec::new();
        write_envelope(&mut line, &e);
        let back = read_envelope(&line).unwrap();
        assert_eq!(back.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(&back.value[..], br#"{"id":1}"#);
        assert_eq!(
            back.headers.len(),
            1,
            "weir.* headers are the failure's, not the event's"
        );
        assert_eq!(back.timestamp_ms, 17);
        let text = Event::new("plain text");
        let mut line = Vec::new();
        write_envelope(&mut line, &text);
        assert_eq!(&read_envelope(&line).unwrap().value[..], b"plain text");
        assert!(read_envelope(b"[1]").is_err());
        assert!(read_envelope(b"{\"key\":1,\"value\":2}")
            .unwrap_err()
            .contains("key"));
    }

    #[test]
    fn value_format_is_raw() {
        let mut out = Vec::new();
        write_line(&mut out, &event(b"raw \xff"), OutputFormat::Value);
        write_line(&mut out, &event(b""), OutputFormat::Value);
        assert_eq!(out, b"raw \xff\n\n");
    }
}
