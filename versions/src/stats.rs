//! Per-version counters the canary watcher and `weir functions list` read:
//! atomics bumped once per batch by the lanes, read without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// What one version has done since it was loaded.
#[derive(Debug, Default)]
pub struct VersionStats {
    events: AtomicU64,
    errors: AtomicU64,
    traps: AtomicU64,
    nanos: AtomicU64,
}

/// A reading of [`VersionStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    /// Events given to the version.
    pub events: u64,
    /// Events it failed (fail, retry, or a trap that was not isolated away).
    pub errors: u64,
    /// Calls that trapped.
    pub traps: u64,
    /// Time spent in its calls, in nanoseconds.
    pub nanos: u64,
}

impl VersionStats {
    /// Records one batch.
    pub fn record(&self, events: u64, errors: u64, nanos: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.errors.fetch_add(errors, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records a trapped call.
    pub fn trap(&self) {
        self.traps.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            events: self.events.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            nanos: self.nanos.load(Ordering::Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            events: self.events.saturating_sub(earlier.events),
            errors: self.errors.saturating_sub(earlier.errors),
            traps: self.traps.saturating_sub(earlier.traps),
            nanos: self.nanos.saturating_sub(earlier.nanos),
        }
    }

    /// Failed events per event (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.errors as f64 / self.events as f64
        }
    }

    /// Mean time per event in nanoseconds (0 when there were none).
    pub fn nanos_per_event(&self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.nanos as f64 / self.events as f64
        }
    }

    /// As JSON for the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events,
            "errors": self.errors,
            "traps": self.traps,
            "error_rate": self.error_rate(),
            "mean_us_per_event": self.nanos_per_event() / 1000.0,
        })
    }
}
