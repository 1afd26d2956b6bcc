//! The `jq` step: transforms, filters or splits JSON events with a jq
//! program.
//!
//! ```toml
//! [[steps]]
//! type = "jq"
//! expr = "select(.amount > 100) | .flag = true"
//! on_error = "fail"
//! ```
//!
//! Per event the program runs on the parsed value: no output drops the
//! event (filtered, acked at once), one output replaces its value (key,
//! headers, timestamp and origin are kept), several outputs become as many
//! events. Outputs are written as compact JSON.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Step, StepContext, StepFactory, StepOutput};

use crate::batch_bytes::{value_bytes, BatchBytes};
use crate::jq::{compile, parse_json, write_json, JqProgram};

/// Options of the `jq` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JqOptions {
    /// The jq program, e.g. `"select(.level == \"error\") | {msg, ts}"`.
    pub expr: String,
    /// What to do with an event the program cannot process (its value is
    /// not JSON, or the program raised an error); default `"fail"`.
    #[serde(default)]
    pub on_error: OnError,
}

/// What the `jq` step does with an event it cannot process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Fail the event: it goes to the dead-letter sink with the error.
    #[default]
    Fail,
    /// Drop the event (it counts as delivered).
    Drop,
    /// Pass the original event on unchanged.
    Keep,
}

/// Validates the options and compiles the program once to report errors.
pub fn build(
    config: &ComponentConfig,
    _ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: JqOptions = config.options()?;
    compile(&options.expr)
        .map_err(|e| config.option_error("expr", format!("invalid jq program: {e}")))?;
    Ok(Arc::new(JqFactory { options }))
}

/// Builds `jq` instances; each compiles its own program, on its thread.
#[derive(Debug)]
pub struct JqFactory {
    options: JqOptions,
}

impl StepFactory for JqFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(JqStep {
            program: compile(&self.options.expr)?,
            on_error: self.options.on_error,
            bytes: BatchBytes::default(),
            outputs: Vec::new(),
        }))
    }
}

/// One instance of the `jq` step.
struct JqStep {
    program: JqProgram,
    on_error: OnError,
    /// Holds the batch's output values.
    bytes: BatchBytes,
    /// Outputs of the current event (kept across events for the capacity).
    outputs: Vec<Bytes>,
}

impl JqStep {
    /// Runs the program on one event's value: its outputs in
    /// `self.outputs`, or the error.
    fn apply(&mut self, value: &[u8]) -> Result<(), String> {
        self.outputs.clear();
        let input = parse_json(value).map_err(|e| format!("invalid JSON: {e}"))?;
        for out in self.program.run(input) {
            write_json(&out?, self.bytes.buf());
            self.outputs.push(self.bytes.take());
        }
        Ok(())
    }
}

#[async_trait(?Send)]
impl Step for JqStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        self.bytes.reserve(value_bytes(input) + 16 * input.len());
        for event in input.drain(..) {
            if let Err(reason) = self.apply(&event.value) {
                self.bytes.discard();
                match self.on_error {
                    OnError::Fail => output.fail(event, reason),
                    OnError::Drop => output.drop_event(event),
                    OnError::Keep => output.emit(event),
                }
                continue;
            }
            let Some(last) = self.outputs.pop() else {
                output.drop_event(event);
                continue;
            };
            for value in self.outputs.drain(..) {
                output.emit(Event {
                    value,
                    ..event.clone()
                });
            }
            output.emit(Event {
                value: last,
                ..event
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{build, dead, run, run_values, values};
    use weir_engine::Event;

    const SELECT_FLAG: &str = "expr = 'select(.amount > 100) | .flag = true'";

    #[tokio::test]
    async fn select_and_update_gives_exact_outputs() {
        let out = run_values(
            "jq",
            SELECT_FLAG,
            &[
                r#"{"id": 1, "amount": 50}"#,
                r#"{"id": 2, "amount": 150, "user": {"name": "ada"}}"#,
                r#"{"id": 3, "amount": 100.5, "flag": false}"#,
                r#"{"id": 4}"#,
            ],
        )
        .await;
        assert_eq!(
            values(&out.events),
            vec![
                r#"{"id":2,"amount":150,"user":{"name":"ada"},"flag":true}"#,
                r#"{"id":3,"amount":100.5,"flag":true}"#,
            ]
        );
        assert!(out.dead.is_empty());
    }

    #[tokio::test]
    async fn keeps_key_headers_timestamp_and_origin() {
        let factory = build("jq", "expr = '.a'").unwrap();
        let mut event = Event::new(r#"{"a": {"b": 1}}"#)
            .with_key("k")
            .with_offset(7)
            .with_timestamp_ms(42);
        event.set_header("h", "v");
        let out = run(factory, vec![event.clone()]).await;
        let expected = Event {
            value: r#"{"b":1}"#.into(),
            ..event
        };
        assert_eq!(out.events, vec![expected]);
    }

    #[tokio::test]
    async fn emits_many_in_order() {
        let factory = build("jq", "expr = '.items[] | {id: .}'").unwrap();
        let events = vec![
            Event::new(r#"{"items": [1, 2, 3]}"#)
                .with_key("a")
                .with_offset(1),
            Event::new(r#"{"items": []}"#).with_offset(2),
            Event::new(r#"{"items": ["x"]}"#).with_offset(3),
        ];
        let out = run(factory, events).await;
        assert_eq!(
            values(&out.events),
            vec![r#"{"id":1}"#, r#"{"id":2}"#, r#"{"id":3}"#, r#"{"id":"x"}"#]
        );
        let offsets: Vec<u64> = out.events.iter().map(|e| e.origin.offset).collect();
        assert_eq!(offsets, vec![1, 1, 1, 3]);
        let keys: Vec<Option<&[u8]>> = out.events.iter().map(|e| e.key.as_deref()).collect();
        assert_eq!(
            keys,
            vec![Some(b"a".as_ref()), Some(b"a"), Some(b"a"), None]
        );
    }

    #[tokio::test]
    async fn identity_keeps_the_value_meaning() {
        let out = run_values("jq", "expr = '.'", &[r#" {"a" : 1.0, "b": "\u00e9"} "#]).await;
        assert_eq!(values(&out.events), vec![r#"{"a":1.0,"b":"é"}"#]);
    }

    #[tokio::test]
    async fn fails_invalid_json_and_jq_errors() {
        let inputs = [r#"{"a": 1"#, r#"{"a": "x"}"#, r#"{"a": 2}"#, r#"{"a": 0}"#];
        let options = r#"expr = 'if .a == "x" then error("bad a") elif .a == 0 then (1, error("late")) else .a end'"#;
        let out = run_values("jq", options, &inputs).await;
        assert_eq!(values(&out.events), vec!["2"]);
        assert_eq!(
            dead(&out),
            vec![
                (
                    inputs[0].to_string(),
                    "invalid JSON: expected comma or end of sequence at byte 7".to_string()
                ),
                (inputs[1].to_string(), "bad a".to_string()),
                (inputs[3].to_string(), "late".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn on_error_drop_and_keep() {
        let inputs = ["not json", r#"{"a": "x"}"#, r#"{"a": 2}"#];
        let expr = r#"expr = 'if .a == "x" then error("bad") else .a end'"#;
        let out = run_values("jq", &format!("{expr}\non_error = 'drop'"), &inputs).await;
        assert_eq!(values(&out.events), vec!["2"]);
        assert!(out.dead.is_empty());
        let out = run_values("jq", &format!("{expr}\non_error = 'keep'"), &inputs).await;
        assert_eq!(values(&out.events), vec!["not json", r#"{"a": "x"}"#, "2"]);
        assert!(out.dead.is_empty());
    }

    #[tokio::test]
    async fn empty_output_drops() {
        let out = run_values("jq", "expr = 'empty'", &["1", "2"]).await;
        assert!(out.events.is_empty() && out.dead.is_empty() && out.routed.is_empty());
    }

    #[test]
    fn config_errors() {
        let err = |options: &str| build("jq", options).err().expect("an error");
        assert_eq!(
            err("expr = '.a | foo'"),
            "error: <inline>:1:8: invalid jq program: undefined filter `foo/0` at column 6"
        );
        assert_eq!(err("expr = '.a'\nexrp = 1"), "error: <inline>:2:1: unknown field `exrp`, expected `expr` or `on_error`; did you mean `expr`?");
        assert_eq!(
            err("on_error = 'keep'"),
            "error: <inline>:1:1: missing field `expr`"
        );
        assert_eq!(
            err("expr = '.'\non_error = 'retry'"),
            "error: <inline>:2:12: `on_error`: unknown variant `retry`, expected one of `fail`, `drop`, `keep`"
        );
    }
}
