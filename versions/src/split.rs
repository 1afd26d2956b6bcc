//! Which version an event runs on while a canary runs: by the hash of its
//! key, so a key never changes version (and stays in order) while the
//! canary runs; an unkeyed event by its origin's.

use weir_engine::assign::{hash_key, mix};
use weir_engine::Event;

/// The share of hashes a canary gets, and the share its control group gets.
#[derive(Debug, Clone, Copy)]
pub struct CanarySplit {
    /// Hashes below this go to the canary.
    threshold: u64,
    /// Hashes from `threshold` up to this are the stable version's control
    /// group; `None` when the canary has over half the keys.
    control_end: Option<u64>,
}

/// The three parts of a batch under a canary.
#[derive(Debug, Default)]
pub struct Parts {
    /// Events for the stable version outside the control group.
    pub stable: Vec<Event>,
    /// Events for the stable version, counted as the control group.
    pub control: Vec<Event>,
    /// Events for the canary.
    pub canary: Vec<Event>,
}

impl CanarySplit {
    /// A split giving the canary `share` (0.0–1.0) of the keys.
    pub fn new(share: f64) -> Self {
        CanarySplit {
            threshold: threshold(share),
            control_end: (share <= 0.5).then(|| threshold(share * 2.0)),
        }
    }

    /// Moves `input`'s events into `parts` (kept across batches).
    pub fn split(&self, input: &mut Vec<Event>, parts: &mut Parts) {
        for event in input.drain(..) {
            let h = canary_hash(&event);
            if h < self.threshold {
                parts.canary.push(event);
            } else if self.control_end.is_some_and(|end| h < end) {
                parts.control.push(event);
            } else {
                parts.stable.push(event);
            }
        }
    }
}

/// A share (0.0–1.0) as a bound on 64-bit hashes.
fn threshold(share: f64) -> u64 {
    if share >= 1.0 {
        u64::MAX
    } else {
        (share.max(0.0) * u64::MAX as f64) as u64
    }
}

fn canary_hash(event: &Event) -> u64 {
    match &event.key {
        Some(key) => mix(hash_key(key)),
        None => mix(((event.origin.partition as u64) << 48) ^ event.origin.offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_in_the_same_part_and_shares_hold() {
        let split = CanarySplit::new(0.2);
        let mut parts = Parts::default();
        let mut input: Vec<Event> = (0..20_000)
            .map(|i| Event::new("x").with_key(format!("k{i}")))
            .collect();
        split.split(&mut input, &mut parts);
        let share = |n: usize| n as f64 / 20_000.0;
        assert!((share(parts.canary.len()) - 0.2).abs() < 0.02);
        assert!((share(parts.control.len()) - 0.2).abs() < 0.02);
        let mut again = Parts::default();
        let mut same: Vec<Event> = parts.canary.clone();
        split.split(&mut same, &mut again);
        assert_eq!(again.canary.len(), parts.canary.len());
        let all = CanarySplit::new(0.9);
        let mut parts = Parts::default();
        let mut input: Vec<Event> = (0..100)
            .map(|i| Event::new("x").with_key(format!("k{i}")))
            .collect();
        all.split(&mut input, &mut parts);
        assert!(
            parts.control.is_empty(),
            "no control group over half the keys"
        );
    }
}
