//! How long a source lets a partial batch wait for more events: fixed at
//! `batch.max_wait`, or adapted to load when `batch.latency_target` is set.
//!
//! The adaptive wait follows the pipeline's own latency, from a batch's
//! dispatch to its sinks' acknowledgement, as every batch settles. While
//! that latency is well under the target the pipeline has room: batches
//! need not amortise anything, so the wait shrinks towards zero and a
//! batch leaves with whatever the source has at hand (low load, small
//! batches, no waiting). Once it nears half the target, work is queueing:
//! the wait grows (up to `max_wait`, and never past half the target) so
//! that batches grow and their fixed cost is spread over more events (high
//! load, large batches). Full batches leave at once either way.
//!
//! Updates are lock-free and lossy: shards and sinks settle batches
//! concurrently, and two updates racing may lose one step, which the next
//! batch makes up. Reading the wait is one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The smallest wait the adaptive wait grows from, in nanoseconds: from
/// zero, growth by a quarter would never start.
const GROWTH_FLOOR_NANOS: u64 = 100_000;
/// Below this (nanoseconds) a shrinking wait becomes zero.
const SHRINK_FLOOR_NANOS: u64 = 20_000;
/// The smoothing of the observed latency: each batch moves the average by
/// 1/`SMOOTHING` of its difference.
const SMOOTHING: u64 = 8;

/// The wait of a partial batch; shared by a source (which reads it) and
/// the acknowledgements of its batches (which adapt it).
#[derive(Debug)]
pub struct BatchWait {
    /// The current wait, in nanoseconds.
    wait_nanos: AtomicU64,
    /// Smoothed dispatch-to-acknowledgement latency, in nanoseconds.
    observed_nanos: AtomicU64,
    /// `batch.latency_target`, if set (else the wait is fixed).
    target_nanos: Option<u64>,
    /// The most the wait grows to: `max_wait`, at most half the target.
    ceiling_nanos: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl BatchWait {
    /// A wait fixed at `max_wait`.
    pub fn fixed(max_wait: Duration) -> Self {
        let max = nanos(max_wait);
        BatchWait {
            wait_nanos: AtomicU64::new(max),
            observed_nanos: AtomicU64::new(0),
            target_nanos: None,
            ceiling_nanos: max,
        }
    }

    /// A wait that adapts between zero and `max_wait` (at most half of
    /// `target`) to keep dispatch-to-acknowledgement latency under half of
    /// `target`. It starts at zero: a pipeline starts idle.
    pub fn adaptive(max_wait: Duration, target: Duration) -> Self {
        let target = nanos(target).max(1);
        BatchWait {
            wait_nanos: AtomicU64::new(0),
            observed_nanos: AtomicU64::new(0),
            target_nanos: Some(target),
            ceiling_nanos: nanos(max_wait).min(target / 2),
        }
    }

    /// The wait for `settings`: adaptive with a latency target, else fixed.
    pub fn for_settings(settings: &weir_config::BatchSettings) -> Self {
        match settings.latency_target {
            Some(target) => BatchWait::adaptive(settings.max_wait, target),
            None => BatchWait::fixed(settings.max_wait),
        }
    }

    /// Whether the wait adapts (a latency target is set).
    pub fn is_adaptive(&self) -> bool {
        self.target_nanos.is_some()
    }

    /// How long a partial batch may wait now.
    pub fn current(&self) -> Duration {
        Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed))
    }

    /// Takes in the age of a batch still in flight (the oldest of the
    /// partition a new batch is dispatched to): a lower bound of its
    /// latency, known before it settles. It counts only when it is above
    /// the latency observed so far, so that queueing is seen while it
    /// builds rather than a step's or sink's time after it.
    pub fn observe_in_flight(&self, age: Duration) {
        if self.target_nanos.is_some() && nanos(age) > self.observed_nanos.load(Ordering::Relaxed) {
            self.observe(age);
        }
    }

    /// Takes in one batch's dispatch-to-acknowledgement latency and adapts
    /// the wait. Does nothing to a fixed wait.
    pub fn observe(&self, latency: Duration) {
        let Some(target) = self.target_nanos else {
            return;
        };
        let sample = nanos(latency);
        let old = self.observed_nanos.load(Ordering::Relaxed);
        let observed = if sample >= old {
            old + (sample - old) / SMOOTHING
        } else {
            old - (old - sample) / SMOOTHING
        };
        self.observed_nanos.store(observed, Ordering::Relaxed);
        let wait = self.wait_nanos.load(Ordering::Relaxed);
        let next = if observed > target / 2 {
            // queueing: larger batches
            (wait + wait / 4)
                .max(GROWTH_FLOOR_NANOS)
                .min(self.ceiling_nanos)
        } else if observed < target / 4 {
            // room to spare: smaller batches, sooner
            let shrunk = wait - wait / 4;
            if shrunk < SHRINK_FLOOR_NANOS {
                0
            } else {
                shrunk
            }
        } else {
            wait
        };
        if next != wait {
            self.wait_nanos.store(next, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_fixed_wait_is_max_wait_whatever_the_latency() {
        let w = BatchWait::fixed(5 * MS);
        for _ in 0..100 {
            w.observe(500 * MS);
        }
        assert_eq!(w.current(), 5 * MS);
        assert!(!w.is_adaptive());
    }

    #[test]
    fn an_adaptive_wait_grows_under_queueing_up_to_its_ceiling_and_shrinks_to_zero_with_room() {
        let w = BatchWait::adaptive(50 * MS, 20 * MS);
        assert_eq!(w.current(), Duration::ZERO, "a pipeline starts idle");
        // latency well under a quarter of the target: stays at zero
        for _ in 0..50 {
            w.observe(2 * MS);
        }
        assert_eq!(w.current(), Duration::ZERO);
        // latency past half the target: grows, bounded by half the target
        let mut last = Duration::ZERO;
        let mut grew = false;
        for _ in 0..200 {
            w.observe(40 * MS);
            grew |= w.current() > last;
            assert!(w.current() >= last, "growth is monotonic under queueing");
            last = w.current();
        }
        assert!(grew);
        assert_eq!(w.current(), 10 * MS, "ceiling: min(max_wait, target / 2)");
        // room again: shrinks back to zero
        for _ in 0..400 {
            w.observe(MS);
        }
        assert_eq!(w.current(), Duration::ZERO);
    }

    #[test]
    fn a_batch_in_flight_raises_the_observed_latency_but_a_young_one_does_not_lower_it() {
        let w = BatchWait::adaptive(50 * MS, 20 * MS);
        for _ in 0..100 {
            w.observe_in_flight(30 * MS);
        }
        assert_eq!(
            w.current(),
            10 * MS,
            "queueing seen before anything settled"
        );
        for _ in 0..100 {
            w.observe_in_flight(Duration::ZERO);
        }
        assert_eq!(w.current(), 10 * MS, "a batch just dispatched says nothing");
    }

    #[test]
    fn max_wait_caps_the_adaptive_wait_when_smaller_than_half_the_target() {
        let w = BatchWait::adaptive(3 * MS, 100 * MS);
        for _ in 0..500 {
            w.observe(90 * MS);
        }
        assert_eq!(w.current(), 3 * MS);
    }

    #[test]
    fn between_a_quarter_and_half_of_the_target_the_wait_holds() {
        let w = BatchWait::adaptive(50 * MS, 20 * MS);
        for _ in 0..200 {
            w.observe(40 * MS);
        }
        assert_eq!(w.current(), 10 * MS);
        // the smoothed latency settles inside the band: the wait holds
        for _ in 0..200 {
            w.observe(7 * MS);
        }
        assert_eq!(w.current(), 10 * MS);
    }
}
