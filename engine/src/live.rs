//! Live values the admin API reads: the same counts as the Prometheus
//! metrics (whose handles are write-only), kept as atomics in one
//! process-wide registry, like the metrics recorder itself. A stage's
//! handles are made once, when the stage is built; the hot path only adds
//! to an atomic (once per batch, never per event).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::latency::LatencyHistogram;

/// The kinds of stage the registry knows.
pub mod kind {
    /// A source (`name` = the source's name).
    pub const SOURCE: &str = "source";
    /// A bounded queue (`shard-N`, `sink-NAME`).
    pub const QUEUE: &str = "queue";
    /// A shard (`name` = its index).
    pub const SHARD: &str = "shard";
    /// A step.
    pub const STEP: &str = "step";
    /// A sink.
    pub const SINK: &str = "sink";
}

/// (kind, name, field).
type Key = (&'static str, String, &'static str);

#[derive(Default)]
struct Registry {
    values: Mutex<BTreeMap<Key, Arc<AtomicU64>>>,
    latencies: Mutex<BTreeMap<(&'static str, String), Arc<LatencyHistogram>>>,
    /// (source, partition) → (committed position, lag).
    partitions: Mutex<BTreeMap<(String, u32), (u64, u64)>>,
    /// (step, instance) → why that instance is degraded.
    degraded: Mutex<BTreeMap<(String, u64), String>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The live value `field` of stage `name` of `kind`, made on first use.
pub fn value(kind: &'static str, name: &str, field: &'static str) -> Arc<AtomicU64> {
    Arc::clone(
        lock(&registry().values)
            .entry((kind, name.to_string(), field))
            .or_default(),
    )
}

/// The live latency histogram of stage `name` of `kind`.
pub fn latency(kind: &'static str, name: &str) -> Arc<LatencyHistogram> {
    Arc::clone(
        lock(&registry().latencies)
            .entry((kind, name.to_string()))
            .or_default(),
    )
}

/// Records a source partition's committed position and lag.
pub fn partition(source: &str, partition: u32, position: u64, lag: u64) {
    lock(&registry().partitions).insert((source.to_string(), partition), (position, lag));
}

/// Records that instance `instance` of step `step` is degraded (`Some`,
/// why) or healthy again (`None`); returns how many of the step's
/// instances are degraded now.
pub fn step_health(step: &str, instance: u64, degraded: Option<&str>) -> usize {
    let mut map = lock(&registry().degraded);
    match degraded {
        Some(why) => {
            map.insert((step.to_string(), instance), why.to_string());
        }
        None => {
            map.remove(&(step.to_string(), instance));
        }
    }
    map.keys().filter(|(s, _)| s == step).count()
}

/// A counter exported to Prometheus and kept live.
#[derive(Debug, Clone)]
pub struct Tally {
    counter: Counter,
    live: Arc<AtomicU64>,
}

impl Tally {
    /// Pairs a Prometheus counter with live value `field` of (`kind`, `name`).
    pub fn new(counter: Counter, kind: &'static str, name: &str, field: &'static str) -> Self {
        Tally {
            counter,
            live: value(kind, name, field),
        }
    }

    /// Adds `n`.
    #[inline]
    pub fn increment(&self, n: u64) {
        self.counter.increment(n);
        self.live.fetch_add(n, Ordering::Relaxed);
    }
}

/// A gauge exported to Prometheus and kept live.
#[derive(Debug, Clone)]
pub struct Level {
    gauge: Gauge,
    live: Arc<AtomicU64>,
}

impl Level {
    /// Pairs a Prometheus gauge with live value `field` of (`kind`, `name`).
    pub fn new(gauge: Gauge, kind: &'static str, name: &str, field: &'static str) -> Self {
        Level {
            gauge,
            live: value(kind, name, field),
        }
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, v: u64) {
        self.gauge.set(v as f64);
        self.live.store(v, Ordering::Relaxed);
    }
}

/// A latency histogram exported to Prometheus (seconds) and kept live.
#[derive(Debug, Clone)]
pub struct Timing {
    histogram: Histogram,
    live: Arc<LatencyHistogram>,
}

impl Timing {
    /// Pairs a Prometheus histogram with the live latency of (`kind`, `name`).
    pub fn new(histogram: Histogram, kind: &'static str, name: &str) -> Self {
        Timing {
            histogram,
            live: latency(kind, name),
        }
    }

    /// Records one duration in seconds (as the metrics crate takes them).
    #[inline]
    pub fn record(&self, seconds: f64) {
        self.histogram.record(seconds);
        self.live.record(Duration::from_secs_f64(seconds.max(0.0)));
    }
}

/// A reading of every live value.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (kind, name, field) → value.
    pub values: BTreeMap<(String, String, String), u64>,
    /// (kind, name) → (count, p50 µs, p99 µs).
    pub latencies: BTreeMap<(String, String), (u64, u64, u64)>,
    /// (source, partition) → (committed position, lag).
    pub partitions: BTreeMap<(String, u32), (u64, u64)>,
    /// step → why its degraded instances are degraded (one entry each).
    pub degraded: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    /// Value `field` of stage (`kind`, `name`), 0 if never set.
    pub fn get(&self, kind: &str, name: &str, field: &str) -> u64 {
        self.values
            .get(&(kind.to_string(), name.to_string(), field.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// The names of the stages of `kind`, in order.
    pub fn names(&self, kind: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .values
            .keys()
            .filter(|(k, _, _)| k == kind)
            .map(|(_, n, _)| n.clone())
            .collect();
        names.dedup();
        names
    }
}

/// Reads every live value now.
pub fn snapshot() -> Snapshot {
    let r = registry();
    let values = lock(&r.values)
        .iter()
        .map(|((k, n, f), v)| {
            (
                (k.to_string(), n.clone(), f.to_string()),
                v.load(Ordering::Relaxed),
            )
        })
        .collect();
    let latencies = lock(&r.latencies)
        .iter()
        .map(|((k, n), h)| {
            (
                (k.to_string(), n.clone()),
                (h.count(), h.quantile_micros(0.5), h.quantile_micros(0.99)),
            )
        })
        .collect();
    let partitions = lock(&r.partitions).clone();
    let mut degraded: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((step, _), why) in lock(&r.degraded).iter() {
        degraded.entry(step.clone()).or_default().push(why.clone());
    }
    Snapshot {
        values,
        latencies,
        partitions,
        degraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_levels_and_timings_are_readable() {
        let t = Tally::new(
            metrics::Counter::noop(),
            kind::STEP,
            "live-test",
            "events_in",
        );
        t.increment(3);
        t.increment(4);
        Level::new(metrics::Gauge::noop(), kind::QUEUE, "live-q", "events").set(9);
        Timing::new(metrics::Histogram::noop(), kind::STEP, "live-test").record(0.002);
        partition("live-src", 2, 100, 7);
        let s = snapshot();
        assert_eq!(s.get("step", "live-test", "events_in"), 7);
        assert_eq!(s.get("queue", "live-q", "events"), 9);
        assert_eq!(s.latencies[&("step".into(), "live-test".into())].0, 1);
        assert_eq!(s.partitions[&("live-src".into(), 2)], (100, 7));
        assert!(s.names("step").contains(&"live-test".to_string()));
    }
}
