//! Helpers for the steps' tests: build a step from TOML options through the
//! registry and run events through a one-step chain.

use std::sync::Arc;
use std::time::Duration;

use weir_config::{ComponentConfig, RetrySettings};
use weir_engine::telemetry::StepMetrics;
use weir_engine::{ChainOutput, Event, Registry, StepChain, StepContext, StepFactory, StepSpec};

/// Sinks of the test pipeline, in order (so `"audit"` is sink 1).
pub(crate) const SINKS: [&str; 3] = ["out", "audit", "errors"];

/// Builds step `kind` with `options` (TOML) as the registry would; errors
/// are the diagnostic's text, e.g. `error: <inline>:1:1: …`.
pub(crate) fn build(kind: &str, options: &str) -> Result<Arc<dyn StepFactory>, String> {
    let mut registry = Registry::new();
    crate::register(&mut registry);
    let config = ComponentConfig::from_toml("step", kind, options).map_err(|e| e.to_string())?;
    let sinks: Vec<String> = SINKS.iter().map(|s| s.to_string()).collect();
    let mut ctx = StepContext::new(&sinks);
    registry
        .build_step(&config, &mut ctx)
        .map_err(|e| e.to_string())
}

/// Runs `events` through one instance of `factory`.
pub(crate) async fn run(factory: Arc<dyn StepFactory>, events: Vec<Event>) -> ChainOutput {
    let spec = StepSpec {
        name: "step".into(),
        factory,
        metrics: StepMetrics::new("step"),
    };
    let retry = RetrySettings {
        max_attempts: 1,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
        max_age: Duration::from_secs(1),
    };
    let mut chain = StepChain::build(&[spec], retry).expect("the step builds");
    let mut out = ChainOutput::default();
    chain.run(events, &mut out).await;
    out
}

/// Builds step `kind` with `options` and runs JSON `values` through it.
pub(crate) async fn run_values(kind: &str, options: &str, values: &[&str]) -> ChainOutput {
    let factory = build(kind, options).expect("valid options");
    run(
        factory,
        values.iter().map(|v| Event::new(v.to_string())).collect(),
    )
    .await
}

/// The values of `events`, as text.
pub(crate) fn values(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.value).into_owned())
        .collect()
}

/// The dead events of `out`: value and reason.
pub(crate) fn dead(out: &ChainOutput) -> Vec<(String, String)> {
    out.dead
        .iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.event.value).into_owned(),
                d.reason.clone(),
            )
        })
        .collect()
}

/// The routed events of `out`: sink id and value.
pub(crate) fn routed(out: &ChainOutput) -> Vec<(u16, String)> {
    out.routed
        .iter()
        .map(|(sink, e)| (*sink, String::from_utf8_lossy(&e.value).into_owned()))
        .collect()
}
