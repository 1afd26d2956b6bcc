//! The `sample` step: keeps a fraction of the events and drops the rest
//! (dropped events count as delivered).
//!
//! ```toml
//! [[steps]]
//! type = "sample"
//! rate = 0.1
//! by_key = true
//! ```
//!
//! With `by_key`, the decision is a function of the event key, so all
//! events of a key are kept or all dropped, in every process and run.
//! Otherwise each event is kept with probability `rate`, from a seeded
//! pseudo-random sequence (xorshift64*) per instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::assign::{hash_key, mix};
use weir_engine::{Event, Step, StepContext, StepFactory, StepOutput};

/// Options of the `sample` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleOptions {
    /// Fraction of events to keep, from 0.0 (none) to 1.0 (all).
    pub rate: f64,
    /// Decide by the event key (all events of a key share one fate)
    /// instead of at random; unkeyed events are then sampled at random.
    /// Default `false`.
    #[serde(default)]
    pub by_key: bool,
    /// Seed of the random sequences and of the key hash; default
    /// [`DEFAULT_SEED`]. Change it to sample another subset of keys.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

/// The seed when none is given.
pub const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn default_seed() -> u64 {
    DEFAULT_SEED
}

/// Validates the options.
pub fn build(
    config: &ComponentConfig,
    _ctx: &mut StepContext<'_>,
) -> Result<Arc<dyn StepFactory>, Diagnostic> {
    let options: SampleOptions = config.options()?;
    if !(0.0..=1.0).contains(&options.rate) {
        return Err(config.option_error(
            "rate",
            format!("rate must be between 0.0 and 1.0, got {}", options.rate),
        ));
    }
    Ok(Arc::new(SampleFactory {
        threshold: Threshold::new(options.rate),
        by_key: options.by_key,
        seed: options.seed,
        instances: AtomicU64::new(0),
    }))
}

/// A rate as a comparison on 64-bit hashes or random numbers.
#[derive(Debug, Clone, Copy)]
enum Threshold {
    /// Keep everything (rate 1).
    All,
    /// Keep a number `x` if `x < n` (so `n = 0` keeps nothing).
    Below(u64),
}

impl Threshold {
    fn new(rate: f64) -> Self {
        if rate >= 1.0 {
            Threshold::All
        } else {
            // rate < 1, so the product is below 2^64 (the cast saturates anyway)
            Threshold::Below((rate * 18_446_744_073_709_551_616.0) as u64)
        }
    }

    #[inline]
    fn keeps(self, x: u64) -> bool {
        match self {
            Threshold::All => true,
            Threshold::Below(n) => x < n,
        }
    }
}

/// Builds `sample` instances, each with its own random sequence.
#[derive(Debug)]
pub struct SampleFactory {
    threshold: Threshold,
    by_key: bool,
    seed: u64,
    /// Instances built so far: numbers each instance's sequence.
    instances: AtomicU64,
}

impl StepFactory for SampleFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        let instance = self.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(SampleStep {
            threshold: self.threshold,
            key_salt: self.by_key.then(|| mix(self.seed)),
            rng: XorShift::new(mix(self.seed.wrapping_add(instance))),
        }))
    }
}

/// One instance of the `sample` step.
struct SampleStep {
    threshold: Threshold,
    /// `Some` when sampling by key: mixed into the key hash.
    key_salt: Option<u64>,
    rng: XorShift,
}

impl SampleStep {
    fn keeps(&mut self, event: &Event) -> bool {
        let x = match (self.key_salt, &event.key) {
            // re-mix: the engine assigns shards and lanes from the same
            // hash, so its bits alone would be skewed within a lane
            (Some(salt), Some(key)) => mix(hash_key(key) ^ salt),
            _ => self.rng.next_u64(),
        };
        self.threshold.keeps(x)
    }
}

#[async_trait(?Send)]
impl Step for SampleStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        for event in input.drain(..) {
            if self.keeps(&event) {
                output.emit(event);
            } else {
                output.drop_event(event);
            }
        }
    }
}

/// xorshift64* (Vigna): fast, small, good enough to sample.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // the state must never be zero
        XorShift(seed.max(1))
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{build, run};

    fn events(n: usize, keyed: bool) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let e = Event::new(format!("{i}"));
                if keyed {
                    e.with_key(format!("key-{}", i % 500))
                } else {
                    e
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn keeps_about_the_rate() {
        let out = run(
            build("sample", "rate = 0.25").unwrap(),
            events(20_000, false),
        )
        .await;
        let kept = out.events.len();
        assert!((4_500..5_500).contains(&kept), "kept {kept}");
        assert!(out.dead.is_empty());
        let out = run(build("sample", "rate = 1.0").unwrap(), events(1000, false)).await;
        assert_eq!(out.events.len(), 1000);
        let out = run(build("sample", "rate = 0").unwrap(), events(1000, false)).await;
        assert_eq!(out.events.len(), 0);
    }

    #[tokio::test]
    async fn by_key_keeps_all_or_none_of_a_key() {
        let factory = build("sample", "rate = 0.5\nby_key = true").unwrap();
        let out = run(factory.clone(), events(10_000, true)).await;
        let kept_keys: std::collections::BTreeSet<_> =
            out.events.iter().map(|e| e.key.clone().unwrap()).collect();
        assert!(
            (180..320).contains(&kept_keys.len()),
            "kept {} keys",
            kept_keys.len()
        );
        // every event of a kept key is kept: 20 events per key
        assert_eq!(out.events.len(), kept_keys.len() * 20);
        // another instance (another lane, another process) decides the same
        let again = run(factory, events(10_000, true)).await;
        assert_eq!(again.events, out.events);
    }

    #[test]
    fn by_key_is_not_skewed_within_a_lane() {
        use weir_engine::assign::{lane_for_key, shard_for_key};
        let threshold = Threshold::new(0.5);
        let salt = mix(DEFAULT_SEED);
        let (mut seen, mut kept) = (0, 0);
        for i in 0..20_000 {
            let h = hash_key(format!("k{i}").as_bytes());
            if shard_for_key(h, 2) == 1 && lane_for_key(h, 2) == 1 {
                seen += 1;
                kept += threshold.keeps(mix(h ^ salt)) as usize;
            }
        }
        assert!(
            (seen * 4 / 10..seen * 6 / 10).contains(&kept),
            "kept {kept} of {seen}"
        );
    }

    #[test]
    fn config_errors() {
        let err = |options: &str| build("sample", options).err().expect("an error");
        assert_eq!(
            err("rate = 1.5"),
            "error: <inline>:1:8: rate must be between 0.0 and 1.0, got 1.5"
        );
        assert_eq!(
            err("rate = -0.1"),
            "error: <inline>:1:8: rate must be between 0.0 and 1.0, got -0.1"
        );
        assert_eq!(
            err("rate = nan"),
            "error: <inline>:1:8: rate must be between 0.0 and 1.0, got NaN"
        );
        assert_eq!(
            err("by_key = true"),
            "error: <inline>:1:1: missing field `rate`"
        );
        assert_eq!(
            err("rate = 0.5\nbykey = true"),
            "error: <inline>:2:1: unknown field `bykey`, expected one of `rate`, `by_key`, `seed`; did you mean `by_key`?"
        );
    }
}
