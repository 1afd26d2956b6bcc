//! How long a source lets a partial batch wait for more events: fixed at
//! `batch.max_wait`, or adapted to load when `batch.latency_target` is set.
//!
//! The adaptive wait follows the pipeline's own latency, from a batch's
//! dispatch to its sinks' acknowledgement: every settled batch, and at each
//! dispatch the age of the partition's oldest batch still in flight (a
//! lower bound of its latency, so queueing is seen while it builds). While
//! that latency stays under a quarter of the target the pipeline has room:
//! batches need not amortise anything, so the wait shrinks towards zero
//! and a batch leaves with whatever the source has at hand (low load,
//! small batches, no waiting). Once it passes half the target, work is
//! queueing, and the wait grows — trading latency for larger batches whose
//! fixed cost is spread over more events (high load) — up to `max_wait`
//! and never past half the target. In between it holds. The target is what
//! the controller steers by, not a bound it guarantees: the wait itself
//! comes on top of the latency it observes.
//!
//! The wait moves by a quarter at most once per [`STEP_SHARE`] of the
//! target, however many batches are dispatched or settle meanwhile, so
//! how fast it adapts is a matter of time, not of the dispatch rate.
//!
//! Updates are lock-free and lossy: shards and sinks settle batches
//! concurrently, and two updates racing may lose one, which the next makes
//! up. Reading the wait is one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The smallest wait the adaptive wait grows from, in nanoseconds: from
/// zero, growth by a quarter would never start.
const GROWTH_FLOOR_NANOS: u64 = 100_000;
/// Below this (nanoseconds) a shrinking wait becomes zero.
const SHRINK_FLOOR_NANOS: u64 = 20_000;
/// The smoothing of the observed latency: each observation moves the
/// average by 1/`SMOOTHING` of its difference.
const SMOOTHING: u64 = 8;
/// The wait changes at most once per target / `STEP_SHARE` (from zero to a
/// 50 ms ceiling takes 28 steps: 90 ms with a 100 ms target).
pub const STEP_SHARE: u64 = 32;

/// The wait of a partial batch; shared by a source (which reads it) and
/// the acknowledgements of its batches (which adapt it).
#[derive(Debug)]
pub struct BatchWait {
    /// The current wait, in nanoseconds.
    wait_nanos: AtomicU64,
    /// Smoothed dispatch-to-acknowledgement latency, in nanoseconds. Kept
    /// apart from `wait_nanos` (a cache line each): it is written by every
    /// settling batch, `wait_nanos` is read for every batch built.
    observed_nanos: Padded,
    /// When the wait last changed, in nanoseconds since `born`.
    stepped_nanos: AtomicU64,
    /// The clock's origin.
    born: Instant,
    /// `batch.latency_target`, if set (else the wait is fixed).
    target_nanos: Option<u64>,
    /// The most the wait grows to: `max_wait`, at most half the target.
    ceiling_nanos: u64,
}

/// An atomic on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl BatchWait {
    /// A wait fixed at `max_wait`.
    pub fn fixed(max_wait: Duration) -> Self {
        let max = nanos(max_wait);
        BatchWait {
            wait_nanos: AtomicU64::new(max),
            observed_nanos: Padded::default(),
            stepped_nanos: AtomicU64::new(0),
            born: Instant::now(),
            target_nanos: None,
            ceiling_nanos: max,
        }
    }

    /// A wait that adapts between zero and `max_wait` (at most half of
    /// `target`) to the pipeline's latency against `target`. It starts at
    /// zero: a pipeline starts idle.
    pub fn adaptive(max_wait: Duration, target: Duration) -> Self {
        let target = nanos(target).max(1);
        BatchWait {
            wait_nanos: AtomicU64::new(0),
            observed_nanos: Padded::default(),
            stepped_nanos: AtomicU64::new(0),
            born: Instant::now(),
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
        self.observe_in_flight_at(age, || nanos(self.born.elapsed()));
    }

    /// [`observe_in_flight`](Self::observe_in_flight) with the clock given.
    fn observe_in_flight_at(&self, age: Duration, now: impl FnOnce() -> u64) {
        if self.target_nanos.is_some() && nanos(age) > self.observed_nanos.0.load(Ordering::Relaxed)
        {
            self.observe_at(age, now);
        }
    }

    /// Takes in one batch's dispatch-to-acknowledgement latency and adapts
    /// the wait. Does nothing to a fixed wait.
    pub fn observe(&self, latency: Duration) {
        self.observe_at(latency, || nanos(self.born.elapsed()));
    }

    /// [`observe`](Self::observe) with the clock given (`now`: nanoseconds
    /// since `born`, read only when the wait would change).
    fn observe_at(&self, latency: Duration, now: impl FnOnce() -> u64) {
        let Some(target) = self.target_nanos else {
            return;
        };
        // above the target a latency says nothing more (the wait grows
        // from half of it): capped, so that the average comes back within
        // a few batches once a backlog of seconds is worked off
        let sample = nanos(latency).min(target);
        let old = self.observed_nanos.0.load(Ordering::Relaxed);
        let observed = if sample >= old {
            old + (sample - old) / SMOOTHING
        } else {
            old - (old - sample) / SMOOTHING
        };
        if observed != old {
            self.observed_nanos.0.store(observed, Ordering::Relaxed);
        }
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
        if next == wait {
            return;
        }
        let now = now();
        let last = self.stepped_nanos.load(Ordering::Relaxed);
        if now.saturating_sub(last) < target / STEP_SHARE {
            return;
        }
        self.stepped_nanos.store(now, Ordering::Relaxed);
        self.wait_nanos.store(next, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `latency` `n` times, the clock moving 1 ms before each.
    fn feed(w: &BatchWait, latency: Duration, n: usize, clock: &mut u64) {
        for _ in 0..n {
            *clock += 1_000_000;
            let now = *clock;
            w.observe_at(latency, || now);
        }
    }

    #[test]
    fn a_fixed_wait_is_max_wait_whatever_the_latency() {
        let w = BatchWait::fixed(5 * MS);
        feed(&w, 500 * MS, 100, &mut 0);
        assert_eq!(w.current(), 5 * MS);
        assert!(!w.is_adaptive());
    }

    #[test]
    fn an_adaptive_wait_grows_under_queueing_up_to_its_ceiling_and_shrinks_to_zero_with_room() {
        let w = BatchWait::adaptive(50 * MS, 20 * MS);
        let clock = &mut 0;
        assert_eq!(w.current(), Duration::ZERO, "a pipeline starts idle");
        // latency well under a quarter of the target: stays at zero
        feed(&w, 2 * MS, 50, clock);
        assert_eq!(w.current(), Duration::ZERO);
        // latency past half the target: grows, bounded by half the target
        let mut last = Duration::ZERO;
        let mut grew = false;
        for _ in 0..200 {
            feed(&w, 40 * MS, 1, clock);
            grew |= w.current() > last;
            assert!(w.current() >= last, "growth is monotonic under queueing");
            last = w.current();
        }
        assert!(grew);
        assert_eq!(w.current(), 10 * MS, "ceiling: min(max_wait, target / 2)");
        // room again: shrinks back to zero
        feed(&w, MS, 400, clock);
        assert_eq!(w.current(), Duration::ZERO);
    }

    #[test]
    fn the_wait_moves_at_most_once_per_step_interval_however_many_batches_report() {
        // a target of 32 ms allows a step per millisecond; queueing is
        // seen by a thousand dispatches within one millisecond
        let w = BatchWait::adaptive(50 * MS, 32 * MS);
        for i in 0..1000u64 {
            w.observe_in_flight_at(40 * MS, || 1_000_000 + i * 500);
        }
        assert_eq!(
            w.current(),
            Duration::from_nanos(GROWTH_FLOOR_NANOS),
            "one step, not a thousand"
        );
        // the next millisecond allows the next step
        w.observe_at(40 * MS, || 2_100_000);
        assert_eq!(
            w.current(),
            Duration::from_nanos(GROWTH_FLOOR_NANOS + GROWTH_FLOOR_NANOS / 4)
        );
    }

    #[test]
    fn a_batch_in_flight_raises_the_observed_latency_but_a_young_one_does_not_lower_it() {
        let w = BatchWait::adaptive(50 * MS, 20 * MS);
        let mut clock = 0;
        for _ in 0..100 {
            clock += 1_000_000;
            let now = clock;
            w.observe_in_flight_at(30 * MS, || now);
        }
        assert_eq!(
            w.current(),
            10 * MS,
            "queueing seen before anything settled"
        );
        for _ in 0..100 {
            clock += 1_000_000;
            let now = clock;
            w.observe_in_flight_at(Duration::ZERO, || now);
        }
        assert_eq!(w.current(), 10 * MS, "a batch just dispatched says nothing");
    }

    #[test]
    fn after_a_backlog_of_seconds_the_wait_shrinks_within_a_few_dozen_batches() {
        let w = BatchWait::adaptive(50 * MS, 20 * MS);
        let clock = &mut 0;
        feed(&w, Duration::from_secs(10), 100, clock);
        assert_eq!(w.current(), 10 * MS);
        feed(&w, MS, 60, clock);
        assert_eq!(w.current(), Duration::ZERO);
    }

    #[test]
    fn max_wait_caps_the_adaptive_wait_when_smaller_than_half_the_target() {
        let w = BatchWait::adaptive(3 * MS, 100 * MS);
        feed(&w, 90 * MS, 500, &mut 0);
        assert_eq!(w.current(), 3 * MS);
    }

    #[test]
    fn between_a_quarter_and_half_of_the_target_the_wait_holds() {
        let w = BatchWait::adaptive(50 * MS, 20 * MS);
        let clock = &mut 0;
        feed(&w, 40 * MS, 200, clock);
        assert_eq!(w.current(), 10 * MS);
        // the smoothed latency settles inside the band: the wait holds
        feed(&w, 7 * MS, 200, clock);
        assert_eq!(w.current(), 10 * MS);
    }
}
