//! The messages between weir and a worker (docs/connectors/plugins.md has
//! them message by message).
//!
//! weir → worker: `{"t":"init","function":…,"config":{…}}` once, then per
//! batch `{"t":"b","vl":[…],"kl":[…]|null,"ts":[…],"h":[…]|null}` (by
//! columns, see [`encode_batch`]); to a plugin sink, `write` frames with
//! one `[value_offset, value_len, key_offset (-1: none), key_len,
//! timestamp_ms, headers]` array per event ([`encode_events`]). Keys and
//! values are always in the blob.
//!
//! worker → weir: `ready` (with `runtime` and `batch`) or `error` once;
//! then per batch `done` with one outcome entry per event (`o`), or only
//! the new values' lengths (`vl`) when no event needs more; `failed` when a
//! batch handler raised; `log` lines at any time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;

use bytes::Bytes;
use serde::Deserialize;
use weir_engine::{Event, SinkId, StepOutput};

use crate::frame::FrameBuf;

/// A message from a worker.
#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Message<'a> {
    /// Started: the handler loaded and `init` ran.
    Ready {
        /// The interpreter and its version (a plugin may say what it is).
        #[serde(default, borrow)]
        runtime: Cow<'a, str>,
        /// Whether the handler takes whole batches.
        #[serde(default)]
        batch: bool,
    },
    /// Could not start (the message names file and line).
    Error {
        /// What went wrong.
        #[serde(borrow)]
        message: Cow<'a, str>,
    },
    /// A log line from the handler.
    Log {
        /// `debug`, `info`, `warn` or `error`.
        #[serde(borrow)]
        level: Cow<'a, str>,
        /// The line.
        #[serde(borrow)]
        message: Cow<'a, str>,
    },
    /// A batch handler raised (no outcome for any event of the batch), or
    /// a plugin sink could not write the batch.
    Failed {
        /// The exception's last line, or the write's error.
        #[serde(borrow)]
        message: Cow<'a, str>,
        /// Plugin sinks: whether writing again later may succeed.
        #[serde(default = "yes")]
        retryable: bool,
    },
    /// A plugin sink wrote the batch durably, or a plugin source took a commit.
    Ack,
    /// A plugin source's batch: events (encoded as weir encodes a batch)
    /// and the position after them, which weir hands back in a `commit`
    /// once every event up to it is durable in the sinks.
    Batch {
        /// The partition (default 0); order holds within one.
        #[serde(default)]
        partition: u32,
        /// Opaque to weir.
        #[serde(borrow)]
        position: Cow<'a, str>,
        /// The events.
        #[serde(borrow)]
        e: Vec<WireEvent<'a>>,
    },
    /// A plugin source has no more input.
    End,
    /// The batch's outcomes, one per event in order.
    Done {
        /// One entry per event; `null` keeps the event as it came.
        #[serde(default, borrow)]
        o: Option<Vec<Option<Entry<'a>>>>,
        /// Or, when every event was kept or only given a new value: the new
        /// values' lengths (-1: kept as it came), the values one after the
        /// other in the blob.
        #[serde(default)]
        vl: Option<Vec<i64>>,
    },
}

/// What became of one event.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry<'a> {
    /// A new value: `[offset, length]` in the blob.
    #[serde(default)]
    v: Option<[usize; 2]>,
    /// A new key (`null`: no key); absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    k: Option<Option<[usize; 2]>>,
    /// New headers, replacing the old ones.
    #[serde(default, borrow)]
    h: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    /// `d` drop, `f` fail, `s` route; absent: keep.
    #[serde(default)]
    x: Option<&'a str>,
    /// The failure's reason.
    #[serde(default, borrow)]
    r: Option<Cow<'a, str>>,
    /// Whether the failure is retryable.
    #[serde(default)]
    rt: bool,
    /// The sink to route to.
    #[serde(default, borrow)]
    s: Option<Cow<'a, str>>,
    /// New events emitted after this one.
    #[serde(default, borrow)]
    e: Vec<Emitted<'a>>,
}

/// An event a handler emitted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Emitted<'a> {
    v: [usize; 2],
    #[serde(default)]
    k: Option<[usize; 2]>,
    #[serde(default, borrow)]
    h: Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
}

/// An event in a batch frame: value offset and length, key offset (-1:
/// none) and length, timestamp, headers.
pub type WireEvent<'a> = (
    usize,
    usize,
    i64,
    usize,
    i64,
    Option<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
);

fn yes() -> bool {
    true
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<[usize; 2]>>, D::Error> {
    Option::<[usize; 2]>::deserialize(d).map(Some)
}

/// Parses a worker's message.
pub fn parse(json: &[u8]) -> Result<Message<'_>, String> {
    serde_json::from_slice(json).map_err(|e| {
        format!(
            "the worker sent a message weir cannot read ({e}): {}",
            String::from_utf8_lossy(&json[..json.len().min(200)])
        )
    })
}

/// The `init` message.
pub fn init_message(function: &str, config: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "t": "init", "function": function, "config": config }))
        .unwrap_or_default()
}

/// Writes a function batch frame for `events` into `frame` (cleared
/// first), by columns: `{"t":"b","vl":[value lengths],"kl":[key lengths,
/// -1: none] or null,"ts":[timestamps],"h":[headers or null] or null}`;
/// the values one after the other in the blob, then the keys. Flat lists
/// of numbers parse in a third of the time of one list per event in
/// CPython (measured: docs/benchmarks.md), as fast as msgpack would,
/// without a package in the function's environment.
pub fn encode_batch(events: &[Event], frame: &mut FrameBuf) {
    frame.clear();
    frame.json.extend_from_slice(br#"{"t":"b","vl":["#);
    let mut keyed = false;
    let mut with_headers = false;
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            frame.json.push(b',');
        }
        frame.put(&event.value);
        let _ = write!(frame.json, "{}", event.value.len());
        keyed |= event.key.is_some();
        with_headers |= !event.headers.is_empty();
    }
    frame.json.extend_from_slice(br#"],"kl":"#);
    if keyed {
        frame.json.push(b'[');
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                frame.json.push(b',');
            }
            match &event.key {
                Some(key) => {
                    frame.put(key);
                    let _ = write!(frame.json, "{}", key.len());
                }
                None => frame.json.extend_from_slice(b"-1"),
            }
        }
        frame.json.push(b']');
    } else {
        frame.json.extend_from_slice(b"null");
    }
    frame.json.extend_from_slice(br#","ts":["#);
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            frame.json.push(b',');
        }
        let _ = write!(frame.json, "{}", event.timestamp_ms);
    }
    frame.json.extend_from_slice(br#"],"h":"#);
    if with_headers {
        frame.json.push(b'[');
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                frame.json.push(b',');
            }
            write_headers(&mut frame.json, &event.headers);
        }
        frame.json.push(b']');
    } else {
        frame.json.extend_from_slice(b"null");
    }
    frame.json.push(b'}');
}

/// `null`, or `[["name","value"],…]` (names and values as lossy UTF-8).
fn write_headers(json: &mut Vec<u8>, headers: &[weir_engine::event::Header]) {
    if headers.is_empty() {
        json.extend_from_slice(b"null");
        return;
    }
    json.push(b'[');
    for (j, (name, value)) in headers.iter().enumerate() {
        if j > 0 {
            json.push(b',');
        }
        json.push(b'[');
        let _ = serde_json::to_writer(&mut *json, &String::from_utf8_lossy(name));
        json.push(b',');
        let _ = serde_json::to_writer(&mut *json, &String::from_utf8_lossy(value));
        json.push(b']');
    }
    json.push(b']');
}

/// Writes a frame `{"t": KIND, "e": [...]}` for `events` into `frame`.
pub fn encode_events(kind: &str, events: &[Event], frame: &mut FrameBuf) {
    frame.clear();
    frame.json.extend_from_slice(br#"{"t":""#);
    frame.json.extend_from_slice(kind.as_bytes());
    frame.json.extend_from_slice(br#"","e":["#);
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            frame.json.push(b',');
        }
        let value_at = frame.put(&event.value);
        let (key_at, key_len) = match &event.key {
            Some(key) => (frame.put(key) as i64, key.len()),
            None => (-1, 0),
        };
        let _ = write!(
            frame.json,
            "[{value_at},{},{key_at},{key_len},{},",
            event.value.len(),
            event.timestamp_ms
        );
        write_headers(&mut frame.json, &event.headers);
        frame.json.push(b']');
    }
    frame.json.extend_from_slice(b"]}");
}

/// Applies a `done` message to `input` (drained) into `output`. `Err`
/// when it does not match the batch; `input` is then untouched.
pub fn apply_done(
    entries: Option<Vec<Option<Entry<'_>>>>,
    lengths: Option<Vec<i64>>,
    blob: &Bytes,
    input: &mut Vec<Event>,
    routes: &HashMap<String, SinkId>,
    function: &str,
    output: &mut StepOutput,
) -> Result<(), String> {
    match (entries, lengths) {
        (Some(entries), None) => apply(entries, blob, input, routes, function, output),
        (None, Some(lengths)) => apply_values(&lengths, blob, input, output),
        _ => Err("the worker's `done` has neither or both of `o` and `vl`".into()),
    }
}

/// Applies new values given by their lengths (-1: kept as it came).
fn apply_values(
    lengths: &[i64],
    blob: &Bytes,
    input: &mut Vec<Event>,
    output: &mut StepOutput,
) -> Result<(), String> {
    if lengths.len() != input.len() {
        return Err(format!(
            "the worker returned {} values for {} events",
            lengths.len(),
            input.len()
        ));
    }
    // checked: the lengths come from another process
    let total = lengths
        .iter()
        .filter(|l| **l > 0)
        .try_fold(0u64, |sum, l| sum.checked_add(*l as u64));
    if lengths.iter().any(|l| *l < -1) || total != Some(blob.len() as u64) {
        return Err(format!(
            "the worker's value lengths ({} of them) do not add up to its blob's {} bytes",
            lengths.len(),
            blob.len()
        ));
    }
    let mut at = 0;
    for (mut event, len) in input.drain(..).zip(lengths) {
        if *len >= 0 {
            let end = at + *len as usize;
            event.value = blob.slice(at..end);
            at = end;
        }
        output.emit(event);
    }
    Ok(())
}

/// Applies one entry per event to `input` (drained) into `output`.
/// `Err` when the entries do not match the batch; `input` is then untouched.
pub fn apply(
    entries: Vec<Option<Entry<'_>>>,
    blob: &Bytes,
    input: &mut Vec<Event>,
    routes: &HashMap<String, SinkId>,
    function: &str,
    output: &mut StepOutput,
) -> Result<(), String> {
    if entries.len() != input.len() {
        return Err(format!(
            "the worker returned {} outcomes for {} events",
            entries.len(),
            input.len()
        ));
    }
    let slice = |span: [usize; 2]| -> Option<Bytes> {
        let end = span[0].checked_add(span[1])?;
        (end <= blob.len()).then(|| blob.slice(span[0]..end))
    };
    for (mut event, entry) in input.drain(..).zip(entries) {
        let Some(entry) = entry else {
            output.emit(event);
            continue;
        };
        let mut bad = false;
        let emitted: Vec<Event> = entry
            .e
            .iter()
            .filter_map(|e| {
                let value = slice(e.v).or_else(|| {
                    bad = true;
                    None
                })?;
                let key = match e.k {
                    Some(span) => Some(slice(span).or_else(|| {
                        bad = true;
                        None
                    })?),
                    None => event.key.clone(),
                };
                Some(Event {
                    key,
                    value,
                    headers: match &e.h {
                        Some(h) => headers(h),
                        None => event.headers.clone(),
                    },
                    timestamp_ms: event.timestamp_ms,
                    origin: event.origin,
                })
            })
            .collect();
        if let Some(span) = entry.v {
            match slice(span) {
                Some(v) => event.value = v,
                None => bad = true,
            }
        }
        if let Some(key) = entry.k {
            match key.map(slice) {
                None => event.key = None,
                Some(Some(k)) => event.key = Some(k),
                Some(None) => bad = true,
            }
        }
        if let Some(h) = &entry.h {
            event.headers = headers(h);
        }
        if bad {
            output.fail(
                event,
                format!("function `{function}` returned a value outside its reply (a bug in the worker)"),
            );
            continue;
        }
        match entry.x {
            None => output.emit(event),
            Some("d") => output.drop_event(event),
            Some("f") => {
                let reason = format!(
                    "function `{function}`: {}",
                    entry.r.as_deref().unwrap_or("failed")
                );
                if entry.rt {
                    output.fail_retryable(event, reason)
                } else {
                    output.fail(event, reason)
                }
            }
            Some("s") => {
                let sink = entry.s.as_deref().unwrap_or("");
                match routes.get(sink) {
                    Some(id) => output.route(*id, event),
                    None => output.fail(
                        event,
                        format!(
                            "function `{function}` routed to `{sink}`, which is not in its `routes` ({})",
                            routes.keys().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                        ),
                    ),
                }
            }
            Some(other) => output.fail(
                event,
                format!("function `{function}` gave the unknown outcome `{other}`"),
            ),
        }
        for e in emitted {
            output.emit(e);
        }
    }
    Ok(())
}

/// The events of a plugin source's batch, their keys and values sliced
/// from `blob` without a copy; `Err` names the first event out of bounds.
pub fn decode_events(
    wire: &[WireEvent<'_>],
    blob: &Bytes,
    partition: u32,
) -> Result<Vec<Event>, String> {
    let slice = |at: usize, len: usize| -> Option<Bytes> {
        let end = at.checked_add(len)?;
        (end <= blob.len()).then(|| blob.slice(at..end))
    };
    wire.iter()
        .enumerate()
        .map(|(i, (vo, vl, ko, kl, ts, hs))| {
            let bad = || format!("event {i} of the batch points outside its blob");
            let value = slice(*vo, *vl).ok_or_else(bad)?;
            let key = match usize::try_from(*ko) {
                Ok(at) => Some(slice(at, *kl).ok_or_else(bad)?),
                Err(_) => None,
            };
            Ok(Event {
                key,
                value,
                headers: hs.as_deref().map(headers).unwrap_or_default(),
                timestamp_ms: *ts,
                origin: weir_engine::Origin {
                    source: 0,
                    partition,
                    offset: i as u64,
                },
            })
        })
        .collect()
}

fn headers(pairs: &[(Cow<'_, str>, Cow<'_, str>)]) -> Vec<weir_engine::event::Header> {
    pairs
        .iter()
        .map(|(n, v)| {
            (
                Bytes::copy_from_slice(n.as_bytes()),
                Bytes::copy_from_slice(v.as_bytes()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_batch_decodes_and_a_bad_offset_is_an_error() {
        let mut frame = FrameBuf::default();
        let mut e = Event::new("v1").with_key("k1");
        e.headers
            .push((Bytes::from_static(b"h"), Bytes::from_static(b"x")));
        encode_events("write", &[e, Event::new("v2")], &mut frame);
        let json = String::from_utf8(frame.json.clone()).unwrap();
        let batch = json.replacen(r#""t":"write""#, r#""t":"batch","position":"p9""#, 1);
        let blob = Bytes::from(frame.blob.clone());
        let Message::Batch { e, position, .. } = parse(batch.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(position, "p9");
        let events = decode_events(&e, &blob, 3).unwrap();
        assert_eq!(events[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(&events[1].value[..], b"v2");
        assert_eq!(events[0].headers.len(), 1);
        assert_eq!(events[1].origin.partition, 3);
        assert!(decode_events(&e, &Bytes::from_static(b"v"), 0).is_err());
    }

    #[test]
    fn values_by_length_apply_and_a_wrong_total_is_refused() {
        let blob = Bytes::from_static(b"AABBB");
        let mut input: Vec<Event> = (0..3).map(|i| Event::new(format!("e{i}"))).collect();
        let mut out = StepOutput::new();
        apply_done(
            None,
            Some(vec![2, -1, 3]),
            &blob,
            &mut input,
            &HashMap::new(),
            "f",
            &mut out,
        )
        .unwrap();
        let values: Vec<&[u8]> = out.events.iter().map(|e| e.value.as_ref()).collect();
        assert_eq!(values, vec![&b"AA"[..], b"e1", b"BBB"]);
        let mut input = vec![Event::new("x")];
        assert!(apply_done(
            None,
            Some(vec![9]),
            &blob,
            &mut input,
            &HashMap::new(),
            "f",
            &mut out
        )
        .is_err());
        assert_eq!(input.len(), 1, "untouched");
        // lengths from another process must not overflow the sum
        let huge = Some(vec![i64::MAX, i64::MAX, 1]);
        let mut three = vec![Event::new("a"), Event::new("b"), Event::new("c")];
        let refused = apply_done(
            None,
            huge,
            &blob,
            &mut three,
            &HashMap::new(),
            "f",
            &mut out,
        );
        assert!(refused.is_err());
    }

    #[test]
    fn a_function_batch_goes_by_columns_values_then_keys_in_the_blob() {
        let mut e = Event::new(r#"{"a":"x\"y"}"#).with_key("k1");
        e.headers
            .push((Bytes::from_static(b"h"), Bytes::from_static(b"v")));
        e.timestamp_ms = 7;
        let mut frame = FrameBuf::default();
        encode_batch(&[e, Event::new("plain")], &mut frame);
        let json: serde_json::Value = serde_json::from_slice(&frame.json).unwrap();
        assert_eq!(json["vl"], serde_json::json!([12, 5]));
        assert_eq!(json["kl"], serde_json::json!([2, -1]));
        assert_eq!(json["ts"], serde_json::json!([7, 0]));
        assert_eq!(json["h"], serde_json::json!([[["h", "v"]], null]));
        assert_eq!(&frame.blob[..], br#"{"a":"x\"y"}plaink1"#);
        encode_batch(&[Event::new("x")], &mut frame);
        let json: serde_json::Value = serde_json::from_slice(&frame.json).unwrap();
        assert!(json["kl"].is_null() && json["h"].is_null());
    }

    #[test]
    fn a_write_encodes_keys_values_and_headers_into_the_blob() {
        let mut e = Event::new(r#"{"a":"x\"y"}"#).with_key("k1");
        e.headers
            .push((Bytes::from_static(b"h"), Bytes::from_static(b"v\"")));
        e.timestamp_ms = 7;
        let mut frame = FrameBuf::default();
        encode_events("write", &[e, Event::new("plain")], &mut frame);
        let json: serde_json::Value = serde_json::from_slice(&frame.json).unwrap();
        let first = &json["e"][0];
        let at = |i: usize| first[i].as_u64().unwrap() as usize;
        assert_eq!(&frame.blob[at(0)..at(0) + at(1)], br#"{"a":"x\"y"}"#);
        assert_eq!(&frame.blob[at(2)..at(2) + at(3)], b"k1");
        assert_eq!(first[4], 7);
        assert_eq!(first[5], serde_json::json!([["h", "v\""]]));
        assert_eq!(json["e"][1][2], -1);
        assert!(json["e"][1][5].is_null());
    }

    #[test]
    fn outcomes_apply_and_a_bad_span_fails_only_its_event() {
        let blob = Bytes::from_static(b"NEWKEYextra");
        let json = br#"{"t":"done","o":[null,{"v":[0,3],"k":[3,3]},{"x":"d"},{"x":"f","r":"bad","rt":true},{"x":"s","s":"audit"},{"v":[9,99]},{"x":"s","s":"nope"},{"e":[{"v":[6,5]}]}]}"#;
        let Message::Done { o: Some(o), .. } = parse(json).unwrap() else {
            panic!("not done")
        };
        let mut input: Vec<Event> = (0..8)
            .map(|i| Event::new(format!("e{i}")).with_key("k"))
            .collect();
        let routes = HashMap::from([("audit".to_string(), 1 as SinkId)]);
        let mut out = StepOutput::new();
        apply(o, &blob, &mut input, &routes, "f", &mut out).unwrap();
        let values: Vec<&[u8]> = out.events.iter().map(|e| e.value.as_ref()).collect();
        assert_eq!(values, vec![&b"e0"[..], b"NEW", b"e7", b"extra"]);
        assert_eq!(out.events[1].key.as_deref(), Some(&b"KEY"[..]));
        assert_eq!(
            out.events[3].key.as_deref(),
            Some(&b"k"[..]),
            "emitted events keep the input's key"
        );
        assert_eq!(out.dropped, 1);
        assert_eq!(out.routed.len(), 1);
        assert_eq!(out.failed.len(), 3);
        assert!(out.failed[0].retryable && out.failed[0].reason.contains("bad"));
        assert!(out.failed[1].reason.contains("outside its reply"));
        assert!(out.failed[2].reason.contains("not in its `routes`"));
    }

    #[test]
    fn a_count_mismatch_leaves_the_input_untouched() {
        let Message::Done { o: Some(o), .. } = parse(br#"{"t":"done","o":[null]}"#).unwrap() else {
            panic!()
        };
        let mut input = vec![Event::new("a"), Event::new("b")];
        let mut out = StepOutput::new();
        assert!(apply(o, &Bytes::new(), &mut input, &HashMap::new(), "f", &mut out).is_err());
        assert_eq!(input.len(), 2);
    }
}
