//! The `key-by` step: sets each event's key from its JSON value, so later
//! steps and sinks (and key-hashed sharding downstream) see it.
//!
//! ```toml
//! [[steps]]
//! type = "key-by"
//! field = "user.id"        # or: expr = ".user.id // .session"
//! on_missing = "fail"
//! ```
//!
//! A string becomes the key as is (unquoted); any other value becomes
//! compact JSON (`42`, `true`, `{"a":1}`). A `field` path is read straight
//! from the bytes without building the document (it is still validated);
//! an `expr` runs jq and takes its first output.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Step, StepContext, StepFactory, StepOutput};

use crate::batch_bytes::BatchBytes;
use crate::jq::{compile, parse_json, write_json, JqProgram, Val};
use crate::scan::{lookup, write_compact, Found};

/// Options of the `key-by` step: exactly one of `field` and `expr`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyByOptions {
    /// A path of object fields separated by dots, e.g. `"user.id"` (a
    /// leading dot is allowed). For keys with dots, array elements or
    /// anything computed, use `expr`.
    pub field: Option<String>,
    /// A jq program whose first output is the key, e.g.
    /// `".user.id // .session_id"`.
    pub expr: Option<String>,
    /// What to do when the value has no key (the path is absent or `null`,
    /// or the program yields nothing or `null`); default `"fail"`.
    #[serde(default)]
    pub on_missing: OnMissing,
}

/// What the `key-by` step does with an event that has no key to take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMissing {
    /// Fail the event: it goes to the dead-letter sink.
    #[default]
    Fail,
    /// Pass the event on with its key unchanged.
    Keep,
}

/// Where the key comes from.
#[derive(Debug, Clone)]
enum KeySource {
    /// An object path, outermost field first.
    Path(Vec<String>),
    /// A jq program (compiled per instance).
    Expr(String),
}

/// Validates the options (compiling `expr` once to report errors).
pub fn build(
    config: &ComponentConfig,
    _ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: KeyByOptions = config.options()?;
    let source = match (options.field, options.expr) {
        (Some(field), None) => {
            KeySource::Path(parse_path(&field).map_err(|e| config.option_error("field", e))?)
        }
        (None, Some(expr)) => {
            compile(&expr)
                .map_err(|e| config.option_error("expr", format!("invalid jq program: {e}")))?;
            KeySource::Expr(expr)
        }
        (Some(_), Some(_)) => {
            return Err(config.option_error("expr", "set either `field` or `expr`, not both"));
        }
        (None, None) => {
            return Err(
                config.error("missing the key: set `field` (a path like `user.id`) or `expr`")
            )
        }
    };
    Ok(Arc::new(KeyByFactory {
        source,
        on_missing: options.on_missing,
    }))
}

/// Splits a dot path into its fields.
fn parse_path(field: &str) -> Result<Vec<String>, String> {
    let path = field.strip_prefix('.').unwrap_or(field);
    let fields: Vec<String> = path.split('.').map(str::to_string).collect();
    if fields.iter().any(String::is_empty) {
        return Err(format!(
            "invalid field path `{field}`: expected names separated by dots, like `user.id`"
        ));
    }
    Ok(fields)
}

/// Builds `key-by` instances.
#[derive(Debug)]
pub struct KeyByFactory {
    source: KeySource,
    on_missing: OnMissing,
}

impl StepFactory for KeyByFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        let source = match &self.source {
            KeySource::Path(path) => Reader::Path(path.clone()),
            KeySource::Expr(expr) => Reader::Expr(compile(expr)?),
        };
        Ok(Box::new(KeyByStep {
            source,
            on_missing: self.on_missing,
            keys: BatchBytes::default(),
        }))
    }
}

/// An instance's way to read the key.
enum Reader {
    /// Look up a path in the bytes.
    Path(Vec<String>),
    /// Run a program.
    Expr(JqProgram),
}

/// One instance of the `key-by` step.
struct KeyByStep {
    source: Reader,
    on_missing: OnMissing,
    /// Holds the batch's keys.
    keys: BatchBytes,
}

impl KeyByStep {
    /// Writes the key of `value` into `self.keys`; `false` if it has none.
    fn write_key(&mut self, value: &[u8]) -> Result<bool, String> {
        let out = self.keys.buf();
        match &self.source {
            Reader::Path(path) => {
                match lookup(value, path).map_err(|e| format!("invalid JSON: {e}"))? {
                    None => return Ok(false),
                    Some(Found::Str(s)) => out.extend_from_slice(s.as_bytes()),
                    Some(Found::Scalar(text)) => out.extend_from_slice(text),
                    Some(Found::Composite(text)) => write_compact(text, out),
                }
            }
            Reader::Expr(program) => {
                let input = parse_json(value).map_err(|e| format!("invalid JSON: {e}"))?;
                match program.run(input).next().transpose()? {
                    None | Some(Val::Null) => return Ok(false),
                    Some(Val::Str(s)) => out.extend_from_slice(s.as_bytes()),
                    Some(other) => write_json(&other, out),
                }
            }
        }
        Ok(true)
    }
}

#[async_trait(?Send)]
impl Step for KeyByStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        // keys are short: a guess that saves most reallocations
        self.keys.reserve(32 * input.len());
        for mut event in input.drain(..) {
            match self.write_key(&event.value) {
                Ok(true) => {
                    event.key = Some(self.keys.take());
                    output.emit(event);
                }
                Ok(false) => match self.on_missing {
                    OnMissing::Fail => output.fail(event, missing_reason(&self.source)),
                    OnMissing::Keep => output.emit(event),
                },
                Err(reason) => {
                    self.keys.discard();
                    output.fail(event, reason);
                }
            }
        }
    }
}

/// Why an event has no key.
fn missing_reason(source: &Reader) -> String {
    match source {
        Reader::Path(path) => format!("no key: field `{}` is missing or null", path.join(".")),
        Reader::Expr(_) => "no key: the expression yielded nothing or null".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{build, dead, run, run_values, values};
    use weir_engine::Event;

    fn keys(events: &[Event]) -> Vec<Option<String>> {
        events
            .iter()
            .map(|e| {
                e.key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
            })
            .collect()
    }

    const INPUTS: [&str; 5] = [
        r#"{"user": {"id": "u-1"}, "n": 1}"#,
        r#"{"user": {"id": 42}}"#,
        r#"{"user": {"id": {"a": [1, 2]}}}"#,
        r#"{"user": {"id": "\u00e9\"x"}}"#,
        r#"{"user": {"id": true}}"#,
    ];

    #[tokio::test]
    async fn field_sets_the_key() {
        let out = run_values("key-by", "field = 'user.id'", &INPUTS).await;
        assert_eq!(values(&out.events), INPUTS.to_vec(), "values are unchanged");
        let expected = vec![
            Some("u-1"),
            Some("42"),
            Some(r#"{"a":[1,2]}"#),
            Some("é\"x"),
            Some("true"),
        ];
        assert_eq!(
            keys(&out.events),
            expected
                .into_iter()
                .map(|k| k.map(String::from))
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn expr_sets_the_key() {
        let out = run_values("key-by", "expr = '.user.id'", &INPUTS).await;
        let expected = vec![
            Some("u-1"),
            Some("42"),
            Some(r#"{"a":[1,2]}"#),
            Some("é\"x"),
            Some("true"),
        ];
        assert_eq!(
            keys(&out.events),
            expected
                .into_iter()
                .map(|k| k.map(String::from))
                .collect::<Vec<_>>()
        );
        let out = run_values(
            "key-by",
            r#"expr = '"\(.a)-\(.b)"'"#,
            &[r#"{"a": 1, "b": "x"}"#],
        )
        .await;
        assert_eq!(keys(&out.events), vec![Some("1-x".to_string())]);
    }

    #[tokio::test]
    async fn missing_key_fails_or_keeps() {
        let inputs = [
            r#"{"user": {}}"#,
            r#"{"user": {"id": null}}"#,
            r#"{"user": 3}"#,
            "[1]",
        ];
        let out = run_values("key-by", "field = '.user.id'", &inputs).await;
        assert!(out.events.is_empty());
        let reasons: Vec<String> = dead(&out).into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            reasons,
            vec!["no key: field `user.id` is missing or null"; 4]
        );

        let factory = build("key-by", "field = 'user.id'\non_missing = 'keep'").unwrap();
        let event = Event::new(r#"{"user": {}}"#).with_key("old");
        let out = run(factory, vec![event.clone(), Event::new("{}")]).await;
        assert_eq!(out.events, vec![event, Event::new("{}")]);

        let out = run_values("key-by", "expr = '.a // empty'", &["{}"]).await;
        assert_eq!(
            dead(&out)[0].1,
            "no key: the expression yielded nothing or null"
        );
    }

    #[tokio::test]
    async fn invalid_json_and_jq_errors_fail() {
        let out = run_values(
            "key-by",
            "field = 'a'\non_missing = 'keep'",
            &[r#"{"a": 1,"#],
        )
        .await;
        assert_eq!(dead(&out)[0].1, "invalid JSON: expected value at byte 8");
        let out = run_values("key-by", r#"expr = 'error("no")'"#, &["{}"]).await;
        assert_eq!(dead(&out)[0].1, "no");
        let out = run_values("key-by", "expr = '.a'", &["{"]).await;
        assert_eq!(
            dead(&out)[0].1,
            "invalid JSON: expected value or end of sequence at byte 1"
        );
    }

    #[test]
    fn config_errors() {
        let err = |options: &str| build("key-by", options).err().expect("an error");
        assert_eq!(
            err("field = 'a'\nexpr = '.a'"),
            "error: <inline>:2:8: set either `field` or `expr`, not both"
        );
        assert_eq!(
            err("on_missing = 'keep'"),
            "error: <inline>:1:1: missing the key: set `field` (a path like `user.id`) or `expr`"
        );
        assert_eq!(
            err("field = 'user..id'"),
            "error: <inline>:1:9: invalid field path `user..id`: expected names separated by dots, like `user.id`"
        );
        assert_eq!(
            err("expr = '.a |'"),
            "error: <inline>:1:8: invalid jq program: expected term but found end of input"
        );
        assert_eq!(
            err("feild = 'a'"),
            "error: <inline>:1:1: unknown field `feild`, expected one of `field`, `expr`, `on_missing`; did you mean `field`?"
        );
    }
}
