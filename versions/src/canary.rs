//! When a canary is rolled back or promoted: the policy and the pure
//! decision the watcher applies every `check_every`.

use std::time::Duration;

use serde::Deserialize;

use crate::stats::StatsSnapshot;

/// How a canary is judged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPolicy {
    /// Share of keys (0.0–1.0) the canary gets. Default 0.1.
    #[serde(default = "default_share")]
    pub share: f64,
    /// Events each version must have seen before the canary is judged. Default 200.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// Roll back when the canary's error rate exceeds the stable version's
    /// by more than this (absolute: 0.02 = two points). Default 0.02.
    #[serde(default = "default_max_error_rate_increase")]
    pub max_error_rate_increase: f64,
    /// Roll back when the canary's mean time per event is more than this
    /// many times the stable version's. Default 3.0.
    #[serde(default = "default_max_latency_ratio")]
    pub max_latency_ratio: f64,
    /// Promote the canary after this long without a rollback; without it,
    /// only `promote` does.
    #[serde(default, deserialize_with = "optional_duration")]
    pub promote_after: Option<Duration>,
    /// How often the canary is judged. Default 1s.
    #[serde(
        default = "default_check_every",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub check_every: Duration,
}

fn default_share() -> f64 {
    0.1
}
fn default_min_events() -> u64 {
    200
}
fn default_max_error_rate_increase() -> f64 {
    0.02
}
fn default_max_latency_ratio() -> f64 {
    3.0
}
fn default_check_every() -> Duration {
    Duration::from_secs(1)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    weir_config::deserialize_duration(d).map(Some)
}

impl Default for CanaryPolicy {
    fn default() -> Self {
        CanaryPolicy {
            share: default_share(),
            min_events: default_min_events(),
            max_error_rate_increase: default_max_error_rate_increase(),
            max_latency_ratio: default_max_latency_ratio(),
            promote_after: None,
            check_every: default_check_every(),
        }
    }
}

impl CanaryPolicy {
    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.max_error_rate_increase.is_finite() || !self.max_latency_ratio.is_finite() {
            return Err(
                "max_error_rate_increase and max_latency_ratio must be finite numbers".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.share) {
            return Err(format!(
                "share must be between 0.0 and 1.0, got {}",
                self.share
            ));
        }
        if self.max_error_rate_increase < 0.0 {
            return Err("max_error_rate_increase must not be negative".into());
        }
        if self.max_latency_ratio < 1.0 {
            return Err("max_latency_ratio must be at least 1.0".into());
        }
        if self.check_every.is_zero() {
            return Err("check_every must be more than 0".into());
        }
        Ok(())
    }
}

/// What to do with a canary now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough seen yet, or within bounds and not yet due.
    Wait,
    /// Worse than the stable version: roll back, for this reason.
    RollBack(String),
    /// Within bounds for `promote_after`: make it the stable version.
    Promote,
}

/// Judges a canary on what both versions did since it started.
pub fn judge(
    policy: &CanaryPolicy,
    stable: &StatsSnapshot,
    canary: &StatsSnapshot,
    running: Duration,
) -> Verdict {
    if canary.events >= policy.min_events {
        let (s, c) = (stable.error_rate(), canary.error_rate());
        if c > s + policy.max_error_rate_increase {
            return Verdict::RollBack(format!(
                "error rate {:.2}% against the stable version's {:.2}% (allowed: +{:.2} points) over {} events",
                c * 100.0,
                s * 100.0,
                policy.max_error_rate_increase * 100.0,
                canary.events
            ));
        }
        if stable.events >= policy.min_events {
            let (s, c) = (stable.nanos_per_event(), canary.nanos_per_event());
            if s > 0.0 && c > s * policy.max_latency_ratio {
                return Verdict::RollBack(format!(
                    "{:.1} µs per event against the stable version's {:.1} µs (allowed: {}×)",
                    c / 1000.0,
                    s / 1000.0,
                    policy.max_latency_ratio
                ));
            }
        }
        if let Some(after) = policy.promote_after {
            if running >= after {
                return Verdict::Promote;
            }
        }
    }
    Verdict::Wait
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(events: u64, errors: u64, nanos: u64) -> StatsSnapshot {
        StatsSnapshot {
            events,
            errors,
            traps: 0,
            nanos,
        }
    }

    #[test]
    fn waits_for_enough_events_then_rolls_back_a_worse_error_rate() {
        let p = CanaryPolicy::default();
        let s = stats(10_000, 10, 1_000_000);
        assert_eq!(
            judge(&p, &s, &stats(100, 50, 100), Duration::ZERO),
            Verdict::Wait
        );
        match judge(&p, &s, &stats(1000, 100, 100_000), Duration::ZERO) {
            Verdict::RollBack(why) => assert!(why.contains("error rate 10.00%"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            judge(&p, &s, &stats(1000, 20, 100_000), Duration::ZERO),
            Verdict::Wait
        );
    }

    #[test]
    fn rolls_back_a_slow_canary_and_promotes_a_good_one_when_due() {
        let mut p = CanaryPolicy::default();
        let s = stats(1000, 0, 1_000_000); // 1 µs per event
        match judge(&p, &s, &stats(1000, 0, 5_000_000), Duration::ZERO) {
            Verdict::RollBack(why) => assert!(why.contains("5.0 µs"), "{why}"),
            other => panic!("{other:?}"),
        }
        let good = stats(1000, 0, 1_200_000);
        assert_eq!(
            judge(&p, &s, &good, Duration::from_secs(3600)),
            Verdict::Wait,
            "no promote_after: manual"
        );
        p.promote_after = Some(Duration::from_secs(60));
        assert_eq!(judge(&p, &s, &good, Duration::from_secs(59)), Verdict::Wait);
        assert_eq!(
            judge(&p, &s, &good, Duration::from_secs(60)),
            Verdict::Promote
        );
    }

    #[test]
    fn validation_names_the_field() {
        let p = CanaryPolicy {
            share: 1.5,
            ..CanaryPolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("share"));
    }
}
