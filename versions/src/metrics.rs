//! What a versioned step records per batch and per version: the version's
//! counters (read by the canary judge and `weir functions list`), the
//! canary's control group when the batch was one, and the Prometheus
//! metrics `weir_function_*` labelled by step and version.

use std::time::Duration;

use metrics::{counter, histogram, Counter, Histogram};

use crate::stats::VersionStats;

/// One version's metrics on one lane.
pub struct VersionMetrics {
    events: Counter,
    errors: Counter,
    failures: Counter,
    seconds: Histogram,
}

impl VersionMetrics {
    /// The metrics of `version` (short hash) of `step`; `failures` names
    /// the counter of failed calls (`weir_function_traps_total` for
    /// WebAssembly, `weir_function_worker_restarts_total` for workers).
    pub fn new(step: &str, version: &str, failures: &'static str) -> Self {
        let (s, v) = (step.to_string(), version.to_string());
        VersionMetrics {
            events: counter!("weir_function_events_total", "step" => s.clone(), "version" => v.clone()),
            errors: counter!("weir_function_errors_total", "step" => s.clone(), "version" => v.clone()),
            failures: counter!(failures, "step" => s.clone(), "version" => v.clone()),
            seconds: histogram!("weir_function_batch_seconds", "step" => s, "version" => v),
        }
    }

    /// Records a batch of `events` of which `errors` failed, run in `took`,
    /// in the version's counters, in the control group's if the batch was
    /// one, and in the metrics.
    pub fn batch(
        &self,
        stats: &VersionStats,
        control: Option<&VersionStats>,
        events: u64,
        errors: u64,
        took: Duration,
    ) {
        let nanos = took.as_nanos() as u64;
        stats.record(events, errors, nanos);
        if let Some(control) = control {
            control.record(events, errors, nanos);
        }
        self.events.increment(events);
        self.errors.increment(errors);
        self.seconds.record(took.as_secs_f64());
    }

    /// Records a failed call (a trap, a worker that died or timed out).
    pub fn failed_call(&self, stats: &VersionStats) {
        stats.trap();
        self.failures.increment(1);
    }
}
