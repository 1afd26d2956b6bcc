//! The `route` step: sends events to named sinks by jq predicates.
//!
//! ```toml
//! [[steps]]
//! type = "route"
//! rules = [
//!   { when = ".level == \"error\"", sink = "alerts" },
//!   { when = ".amount > 10000", sink = "audit" },
//! ]
//! ```
//!
//! The first rule whose predicate yields a truthy value (neither `false`
//! nor `null`) sends the event to its sink, skipping later steps; events
//! no rule matches go on to the next step. A routed sink no longer
//! receives the pipeline's default output. Events whose value is not JSON,
//! or on which a predicate raises an error, fail.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Event, SinkId, Step, StepContext, StepFactory, StepOutput};

use crate::jq::{compile, parse_json, JqProgram};

/// Options of the `route` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteOptions {
    /// The rules, tried in order; at least one.
    pub rules: Vec<RouteRule>,
}

/// One rule of the `route` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// A jq predicate, e.g. `".level == \"error\""`.
    pub when: String,
    /// The name of the sink that receives matching events.
    pub sink: String,
}

/// Validates the rules: compiles each predicate once and resolves the sinks.
pub fn build(
    config: &ComponentConfig,
    ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: RouteOptions = config.options()?;
    if options.rules.is_empty() {
        return Err(config.option_error("rules", "expected at least one rule"));
    }
    let mut rules = Vec::with_capacity(options.rules.len());
    for (i, rule) in options.rules.into_iter().enumerate() {
        let n = i + 1;
        compile(&rule.when).map_err(|e| {
            config.option_error(
                "rules",
                format!("rule {n}: invalid jq predicate in `when`: {e}"),
            )
        })?;
        let sink = ctx
            .route_to(&rule.sink)
            .map_err(|e| config.option_error("rules", format!("rule {n}: {e}")))?;
        rules.push((rule.when, sink));
    }
    Ok(Arc::new(RouteFactory { rules }))
}

/// Builds `route` instances; each compiles its own predicates, on its thread.
#[derive(Debug)]
pub struct RouteFactory {
    /// Predicates and their sinks, in order.
    rules: Vec<(String, SinkId)>,
}

impl StepFactory for RouteFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        let rules = self
            .rules
            .iter()
            .map(|(when, sink)| Ok((compile(when)?, *sink)))
            .collect::<Result<_, String>>()?;
        Ok(Box::new(RouteStep { rules }))
    }
}

/// One instance of the `route` step.
struct RouteStep {
    rules: Vec<(JqProgram, SinkId)>,
}

impl RouteStep {
    /// The sink of the first rule that matches `value`, if any.
    fn sink_for(&self, value: &[u8]) -> Result<Option<SinkId>, String> {
        let input = parse_json(value).map_err(|e| format!("invalid JSON: {e}"))?;
        for (i, (predicate, sink)) in self.rules.iter().enumerate() {
            // cloning a value only counts a reference
            let matched = predicate
                .matches(input.clone())
                .map_err(|e| format!("rule {}: {e}", i + 1))?;
            if matched {
                return Ok(Some(*sink));
            }
        }
        Ok(None)
    }
}

#[async_trait(?Send)]
impl Step for RouteStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        for event in input.drain(..) {
            match self.sink_for(&event.value) {
                Ok(Some(sink)) => output.route(sink, event),
                Ok(None) => output.emit(event),
                Err(reason) => output.fail(event, reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{build, dead, routed, run_values, values};

    const RULES: &str = r#"rules = [
  { when = '.level == "error"', sink = "errors" },
  { when = '.amount > 100', sink = "audit" },
  { when = '.tags[]? == "audit"', sink = "audit" },
]"#;

    #[tokio::test]
    async fn first_matching_rule_wins_and_the_rest_continue() {
        let inputs = [
            r#"{"level": "error", "amount": 500}"#,
            r#"{"level": "info", "amount": 500}"#,
            r#"{"level": "info", "amount": 5}"#,
            r#"{"tags": ["x", "audit"]}"#,
            r#"{"amount": null}"#,
        ];
        let out = run_values("route", RULES, &inputs).await;
        assert_eq!(
            routed(&out),
            vec![
                (2, inputs[0].into()),
                (1, inputs[1].into()),
                (1, inputs[3].into())
            ]
        );
        assert_eq!(values(&out.events), vec![inputs[2], inputs[4]]);
        assert!(out.dead.is_empty());
    }

    #[tokio::test]
    async fn fails_invalid_json_and_predicate_errors() {
        let rules =
            "rules = [{ when = '.a == 1', sink = 'audit' }, { when = '.a.b', sink = 'audit' }]";
        let out = run_values("route", rules, &["{", r#"{"a": 2}"#, r#"{"a": 1}"#]).await;
        assert_eq!(routed(&out), vec![(1, r#"{"a": 1}"#.to_string())]);
        assert!(out.events.is_empty());
        assert_eq!(
            dead(&out),
            vec![
                (
                    "{".to_string(),
                    "invalid JSON: expected value or end of sequence at byte 1".to_string()
                ),
                (
                    r#"{"a": 2}"#.to_string(),
                    "rule 2: cannot use 2 as iterable (array or object)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn config_errors() {
        let err = |options: &str| build("route", options).err().expect("an error");
        assert_eq!(
            err("rules = [{ when = '.a', sink = 'adit' }]"),
            "error: <inline>:1:9: rule 1: no sink called `adit`; sinks are: `out`, `audit`, `errors`; did you mean `audit`?"
        );
        assert_eq!(
            err("rules = [{ when = '.a', sink = 'audit' }, { when = '.a |', sink = 'out' }]"),
            "error: <inline>:1:9: rule 2: invalid jq predicate in `when`: expected term but found end of input"
        );
        assert_eq!(
            err("rules = []"),
            "error: <inline>:1:9: expected at least one rule"
        );
        assert_eq!(
            err("rules = [{ when = '.a', sink = 'out', to = 'x' }]"),
            "error: <inline>:1:39: `rules[0]`: unknown field `to`, expected `when` or `sink`"
        );
    }
}
