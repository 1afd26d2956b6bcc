//! A lock-free latency histogram with log-linear buckets (about 6% wide),
//! cheap enough to record every batch and read percentiles from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BUCKETS: usize = 16;
const GROUPS: usize = 40;

/// Latency distribution in microseconds, from 0 to about 2^40 µs.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: (0..SUB_BUCKETS * GROUPS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            count: AtomicU64::new(0),
        }
    }
}

fn index_of(micros: u64) -> usize {
    if micros < SUB_BUCKETS as u64 {
        return micros as usize;
    }
    let group = 63 - micros.leading_zeros() as usize - 3; // micros >= 16 → group >= 1
    let sub = ((micros >> (group - 1)) as usize) & (SUB_BUCKETS - 1);
    (group * SUB_BUCKETS + sub).min(SUB_BUCKETS * GROUPS - 1)
}

fn upper_bound_of(index: usize) -> u64 {
    let group = index / SUB_BUCKETS;
    let sub = (index % SUB_BUCKETS) as u64;
    if group == 0 {
        return sub;
    }
    ((SUB_BUCKETS as u64 + sub + 1) << (group - 1)) - 1
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram::default()
    }

    /// Records one observation.
    pub fn record(&self, latency: Duration) {
        self.record_micros(latency.as_micros().min(u64::MAX as u128) as u64);
    }

    /// Records one observation in microseconds.
    pub fn record_micros(&self, micros: u64) {
        self.buckets[index_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0.0..=1.0) in microseconds: an upper bound
    /// of the bucket holding it. 0 when empty.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return upper_bound_of(i);
            }
        }
        upper_bound_of(self.buckets.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_cover_their_values() {
        for v in [0u64, 1, 15, 16, 17, 31, 32, 100, 1_000, 123_456, 10_000_000] {
            let i = index_of(v);
            assert!(
                upper_bound_of(i) >= v,
                "value {v} above bound {}",
                upper_bound_of(i)
            );
            if i > 0 {
                assert!(
                    upper_bound_of(i - 1) < v,
                    "value {v} fits an earlier bucket"
                );
            }
        }
    }

    #[test]
    fn quantiles_are_within_bucket_precision() {
        let h = LatencyHistogram::new();
        for v in 1..=1000u64 {
            h.record_micros(v);
        }
        let p50 = h.quantile_micros(0.5);
        let p99 = h.quantile_micros(0.99);
        assert!((500..=540).contains(&p50), "p50 {p50}");
        assert!((990..=1060).contains(&p99), "p99 {p99}");
        assert_eq!(LatencyHistogram::new().quantile_micros(0.5), 0);
    }
}
