//! The `set-headers` step: sets headers on every event, to fixed values or
//! to a field of the event's JSON value. An `http` source answers with the
//! status and response headers a step sets this way (`http.status`,
//! `http.response.NAME`).
//!
//! ```toml
//! [[steps]]
//! type = "set-headers"
//! set = { "http.status" = "201", "http.response.content-type" = "application/json" }
//! from_fields = { "http.response.location" = "id" }   # the value of field `id`
//! ```
//!
//! A header already present is replaced. A `from_fields` field that is
//! missing leaves that header unset; a value that is not JSON fails the
//! event (it goes to the dead-letter sink).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Step, StepContext, StepFactory, StepOutput};

use crate::scan::{lookup, write_compact, Found};

/// Options of the `set-headers` step; at least one of the two tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetHeadersOptions {
    /// Header name → fixed value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Header name → a top-level field of the JSON value whose value (a
    /// string as is, anything else as compact JSON) becomes the header.
    #[serde(default)]
    pub from_fields: BTreeMap<String, String>,
}

/// Validates the options.
pub fn build(
    config: &ComponentConfig,
    _ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: SetHeadersOptions = config.options()?;
    if options.set.is_empty() && options.from_fields.is_empty() {
        return Err(
            config.error("set-headers needs `set` or `from_fields` with at least one header")
        );
    }
    for name in options.set.keys().chain(options.from_fields.keys()) {
        if name.is_empty() {
            let key = if options.set.contains_key(name) {
                "set"
            } else {
                "from_fields"
            };
            return Err(config.option_error(key, "a header name may not be empty"));
        }
    }
    let fixed = options
        .set
        .into_iter()
        .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
        .collect();
    let fields = options
        .from_fields
        .into_iter()
        .map(|(k, f)| (Bytes::from(k), vec![f]))
        .collect();
    Ok(Arc::new(SetHeaders { fixed, fields }))
}

/// Builds instances (the step keeps no state; every instance shares the
/// names and values).
#[derive(Debug, Clone)]
pub struct SetHeaders {
    fixed: Vec<(Bytes, Bytes)>,
    fields: Vec<(Bytes, Vec<String>)>,
}

impl StepFactory for SetHeaders {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(self.clone()))
    }
}

fn put(event: &mut Event, name: &Bytes, value: Bytes) {
    match event.headers.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => event.headers.push((name.clone(), value)),
    }
}

#[async_trait(?Send)]
impl Step for SetHeaders {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        'events: for mut event in input.drain(..) {
            for (name, value) in &self.fixed {
                put(&mut event, name, value.clone());
            }
            for (name, path) in &self.fields {
                let value = match lookup(&event.value, path) {
                    Err(e) => {
                        output.fail(event, format!("invalid JSON: {e}"));
                        continue 'events;
                    }
                    Ok(None) => continue,
                    Ok(Some(Found::Str(s))) => Bytes::copy_from_slice(s.as_bytes()),
                    Ok(Some(Found::Scalar(text))) => Bytes::copy_from_slice(text),
                    Ok(Some(Found::Composite(text))) => {
                        let mut out = bytes::BytesMut::with_capacity(text.len());
                        write_compact(text, &mut out);
                        out.freeze()
                    }
                };
                put(&mut event, name, value);
            }
            output.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(options: &str, value: &str) -> StepOutput {
        let config = ComponentConfig::from_toml("h", "set-headers", options).unwrap();
        let sinks: Vec<String> = Vec::new();
        let factory = build(&config, &mut StepContext::new(&sinks)).unwrap();
        let mut step = factory.build().unwrap();
        let mut output = StepOutput::new();
        let mut event = Event::new(value.to_string());
        event.headers.push((
            Bytes::from_static(b"http.status"),
            Bytes::from_static(b"200"),
        ));
        step.process(&mut vec![event], &mut output).await;
        output
    }

    #[tokio::test]
    async fn sets_fixed_and_field_headers() {
        let out = run(
            "set = { 'http.status' = '201' }\nfrom_fields = { loc = 'id', n = 'n', missing = 'nope' }",
            r#"{"id":"a-1","n":{"x": 1}}"#,
        )
        .await;
        let e = &out.events[0];
        assert_eq!(e.header("http.status").unwrap().as_ref(), b"201");
        assert_eq!(
            e.headers
                .iter()
                .filter(|(k, _)| k.as_ref() == b"http.status")
                .count(),
            1
        );
        assert_eq!(e.header("loc").unwrap().as_ref(), b"a-1");
        assert_eq!(e.header("n").unwrap().as_ref(), br#"{"x":1}"#);
        assert!(e.header("missing").is_none());
    }

    #[tokio::test]
    async fn a_value_that_is_not_json_fails_with_from_fields() {
        let out = run("from_fields = { loc = 'id' }", "not json").await;
        assert!(out.events.is_empty());
        assert_eq!(out.failed.len(), 1);
    }

    #[test]
    fn needs_a_header() {
        let config = ComponentConfig::from_toml("h", "set-headers", "").unwrap();
        let sinks: Vec<String> = Vec::new();
        let Err(err) = build(&config, &mut StepContext::new(&sinks)) else {
            panic!("built without headers")
        };
        assert!(
            err.to_string().contains("needs `set` or `from_fields`"),
            "{err}"
        );
    }
}
