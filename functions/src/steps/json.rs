//! The `json` step: lets through events whose value is valid JSON (of the
//! required shape) and fails the rest, naming the problem.
//!
//! ```toml
//! [[steps]]
//! type = "json"
//! object = true
//! require = ["id", "user"]
//! ```
//!
//! Valid events pass unchanged: the value is checked, not rewritten.
//! Checking allocates nothing.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, Step, StepContext, StepFactory, StepOutput};

use crate::scan::validate;

/// Options of the `json` step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {
    /// Top-level fields every event must have; a value that lacks one (or
    /// is not an object) fails. Default: none.
    #[serde(default)]
    pub require: Vec<String>,
    /// Whether the value must be a JSON object; default `false` (any JSON
    /// value passes).
    #[serde(default)]
    pub object: bool,
}

/// Validates the options.
pub fn build(
    config: &ComponentConfig,
    _ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: JsonOptions = config.options()?;
    for (i, field) in options.require.iter().enumerate() {
        if options.require[..i].contains(field) {
            return Err(config.option_error("require", format!("field `{field}` is listed twice")));
        }
    }
    Ok(Arc::new(JsonFactory { options }))
}

/// Builds `json` instances.
#[derive(Debug)]
pub struct JsonFactory {
    options: JsonOptions,
}

impl StepFactory for JsonFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        let object = self.options.object || !self.options.require.is_empty();
        Ok(Box::new(JsonStep {
            require: self.options.require.clone(),
            object,
            seen: Vec::new(),
        }))
    }
}

/// One instance of the `json` step.
struct JsonStep {
    /// Required top-level fields.
    require: Vec<String>,
    /// Whether the value must be an object (also when fields are required).
    object: bool,
    /// Which required fields the current event has (kept for the capacity).
    seen: Vec<bool>,
}

impl JsonStep {
    /// Why `value` does not pass, if it does not.
    fn check(&mut self, value: &[u8]) -> Result<(), String> {
        self.seen.clear();
        self.seen.resize(self.require.len(), false);
        let (require, seen) = (&self.require, &mut self.seen);
        let is_object = validate(value, |key| {
            if let Some(i) = require.iter().position(|r| r == key) {
                seen[i] = true;
            }
        })
        .map_err(|e| format!("invalid JSON: {e}"))?;
        if self.object && !is_object {
            return Err(format!("expected a JSON object, found {}", kind_of(value)));
        }
        let mut missing = require
            .iter()
            .zip(seen.iter())
            .filter(|(_, seen)| !**seen)
            .map(|(f, _)| f);
        match (missing.next(), missing.next()) {
            (None, _) => Ok(()),
            (Some(field), None) => Err(format!("missing required field `{field}`")),
            (Some(first), Some(second)) => {
                let mut message = format!("missing required fields `{first}`, `{second}`");
                for field in missing {
                    message.push_str(&format!(", `{field}`"));
                }
                Err(message)
            }
        }
    }
}

/// What kind of JSON value valid `json` is, with an article.
fn kind_of(json: &[u8]) -> &'static str {
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[async_trait(?Send)]
impl Step for JsonStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        for event in input.drain(..) {
            match self.check(&event.value) {
                Ok(()) => output.emit(event),
                Err(reason) => output.fail(event, reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{build, dead, run_values, values};

    #[tokio::test]
    async fn passes_valid_json_unchanged() {
        let inputs = [r#" {"a" : 1} "#, "[1, 2]", "\"s\"", "3.25", "null"];
        let out = run_values("json", "", &inputs).await;
        assert_eq!(values(&out.events), inputs.to_vec());
        assert!(out.dead.is_empty());
    }

    #[tokio::test]
    async fn fails_invalid_json_with_the_position() {
        let inputs = [
            r#"{"a": 1,}"#,
            "",
            "{\"a\": \"\u{1}\"}",
            "[1] 2",
            r#"{"ok": true}"#,
        ];
        let out = run_values("json", "", &inputs).await;
        assert_eq!(values(&out.events), vec![r#"{"ok": true}"#]);
        let reasons: Vec<String> = dead(&out).into_iter().map(|(_, reason)| reason).collect();
        assert_eq!(
            reasons,
            vec![
                "invalid JSON: expected string at byte 8",
                "invalid JSON: expected value at byte 0",
                "invalid JSON: invalid string control character at byte 7",
                "invalid JSON: trailing characters at byte 4",
            ]
        );
    }

    #[tokio::test]
    async fn requires_an_object() {
        let out = run_values(
            "json",
            "object = true",
            &[r#"{"a": 1}"#, "[1]", " 2", "null"],
        )
        .await;
        assert_eq!(values(&out.events), vec![r#"{"a": 1}"#]);
        let reasons: Vec<String> = dead(&out).into_iter().map(|(_, reason)| reason).collect();
        assert_eq!(
            reasons,
            vec![
                "expected a JSON object, found an array",
                "expected a JSON object, found a number",
                "expected a JSON object, found null",
            ]
        );
    }

    #[tokio::test]
    async fn requires_fields() {
        let inputs = [
            r#"{"id": 1, "user": {"id": 2}, "x": null}"#,
            r#"{"user": {"id": 2}}"#,
            r#"{"x": {"id": 1, "user": 2}}"#,
            r#"{"us\u0065r": 1, "id": 2}"#,
            r#"[{"id": 1}]"#,
        ];
        let out = run_values("json", "require = ['id', 'user']", &inputs).await;
        assert_eq!(values(&out.events), vec![inputs[0], inputs[3]]);
        let reasons: Vec<String> = dead(&out).into_iter().map(|(_, reason)| reason).collect();
        assert_eq!(
            reasons,
            vec![
                "missing required field `id`",
                "missing required fields `id`, `user`",
                "expected a JSON object, found an array",
            ]
        );
    }

    #[test]
    fn config_errors() {
        let err = |options: &str| build("json", options).err().expect("an error");
        assert_eq!(
            err("requires = ['a']"),
            "error: <inline>:1:1: unknown field `requires`, expected `require` or `object`; did you mean `require`?"
        );
        assert_eq!(
            err("object = 'yes'"),
            "error: <inline>:1:10: `object`: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            err("require = ['a', 'a']"),
            "error: <inline>:1:11: field `a` is listed twice"
        );
    }
}
