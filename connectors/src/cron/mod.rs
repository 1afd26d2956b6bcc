//! The `cron` source: one event per fire of a cron schedule (UTC) or of a
//! fixed interval.
//!
//! - **Delivery**: events are made when the clock fires; a fire while the
//!   process is down is not made up for. Acked positions are recorded in
//!   metrics only; nothing is stored.
//! - **Ordering**: fire order; everything is partition 0.
//! - **Partitions**: one, partition 0. An event's offset is its fire number
//!   from 0 (also `{{seq}}`); its timestamp is the scheduled fire time (cron)
//!   or the actual one (interval).
//! - **Backpressure**: a fire waits for room in the shard inbox; fires that
//!   fall due meanwhile are skipped, not queued.
//! - **Checkpoint**: metrics only.
//! - **End**: after `count` fires, or at shutdown.
//!
//! ```toml
//! [sources.hourly]
//! type = "cron"
//! schedule = "0 * * * *"
//! payload = '{"job":"compact","at":{{ts}}}'
//!
//! [sources.heartbeat]
//! type = "cron"
//! interval = "10s"
//! ```

mod civil;
mod schedule;

use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use serde::Deserialize;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use weir_config::{parse_duration, ComponentConfig, Diagnostic};
use weir_engine::driver::{self, Connector, Input, Positions};
use weir_engine::{Error, Event, Origin, Result, Source, SourceContext};

pub use schedule::Schedule;

use crate::control::now_ms;
use crate::template::{Template, Vars, XorShift};

/// The default payload template.
pub const DEFAULT_PAYLOAD: &str = r#"{"seq":{{seq}},"ts":{{ts}}}"#;

/// The longest `interval`: 366 days.
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Options of the `cron` source. Exactly one of `schedule` and `interval`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronOptions {
    /// A five-field cron expression in UTC (`minute hour day-of-month month
    /// day-of-week`, with `*`, `N`, `A-B`, `A,B`, `*/S`, `A-B/S`); default none.
    #[serde(default)]
    pub schedule: Option<String>,
    /// A fixed period such as `"10s"` or `"1.5m"` (units ns, us, ms, s, m,
    /// h), above 0 and at most 366 days; the first event comes one period
    /// after start; default none.
    #[serde(default)]
    pub interval: Option<String>,
    /// Payload template with `{{seq}}`, `{{ts}}`, `{{partition}}` (always 0)
    /// and `{{rand:LO:HI}}`; default [`DEFAULT_PAYLOAD`].
    #[serde(default = "default_payload")]
    pub payload: String,
    /// Fires before the source ends; default none: until shutdown.
    #[serde(default)]
    pub count: Option<u64>,
}

fn default_payload() -> String {
    DEFAULT_PAYLOAD.to_string()
}

/// When the source fires.
#[derive(Debug, Clone)]
pub enum Timing {
    /// On the minutes a cron expression selects.
    Schedule(Schedule),
    /// Every period, starting one period after the source starts.
    Interval(Duration),
}

/// Builds a `cron` source from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options: CronOptions = config.options()?;
    let timing = match (&options.schedule, &options.interval) {
        (Some(_), Some(_)) => {
            return Err(config.option_error("interval", "set `schedule` or `interval`, not both"))
        }
        (None, None) => {
            return Err(config.error(
                "a cron source needs `schedule` (a cron expression) or `interval` (a duration)",
            ))
        }
        (Some(expr), None) => Schedule::parse(expr).map(Timing::Schedule).map_err(|e| {
            config.option_error("schedule", format!("invalid cron expression `{expr}`: {e}"))
        })?,
        (None, Some(text)) => {
            let period = parse_duration(text)
                .map_err(|e| config.option_error("interval", format!("`interval`: {e}")))?;
            if period.is_zero() {
                return Err(config.option_error("interval", "`interval` must be greater than 0"));
            }
            if period > MAX_INTERVAL {
                return Err(config.option_error(
                    "interval",
                    "`interval` must be at most 8784h (366 days); use `schedule`",
                ));
            }
            Timing::Interval(period)
        }
    };
    let template = Template::parse(&options.payload)
        .map_err(|e| config.option_error("payload", format!("`payload`: {e}")))?;
    if template.uses_key() {
        return Err(config.option_error(
            "payload",
            "`payload` uses `{{key}}` but cron events have no key",
        ));
    }
    Ok(Box::new(CronSource {
        timing,
        template,
        count: options.count,
    }))
}

/// Emits an event at every fire.
#[derive(Debug)]
pub struct CronSource {
    timing: Timing,
    template: Template,
    count: Option<u64>,
}

/// The running clock.
enum Clock {
    /// Cron: the pending fire (instant, epoch ms) and the last fire.
    Cron {
        schedule: Schedule,
        next: Option<(Instant, i64)>,
        last: Option<i64>,
    },
    /// Interval ticks.
    Every(Interval),
}

impl Clock {
    fn new(timing: Timing) -> Clock {
        match timing {
            Timing::Schedule(schedule) => Clock::Cron {
                schedule,
                next: None,
                last: None,
            },
            Timing::Interval(period) => {
                let mut interval = tokio::time::interval_at(Instant::now() + period, period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                Clock::Every(interval)
            }
        }
    }

    /// Completes at the next fire with its time in ms since the epoch.
    /// Cancel safe: a pending cron fire is remembered.
    async fn fire(&mut self) -> Result<i64> {
        match self {
            Clock::Cron {
                schedule,
                next,
                last,
            } => {
                let (at, fire_ms) = match *next {
                    Some(pending) => pending,
                    None => {
                        let now = now_ms();
                        let after = last.map_or(now, |last| last.max(now));
                        let fire_ms = schedule.next_after(after).ok_or_else(|| {
                            Error::user(format!("the schedule `{schedule}` never fires"))
                        })?;
                        let wait = Duration::from_millis(fire_ms.saturating_sub(now).max(0) as u64);
                        let pending = (Instant::now() + wait, fire_ms);
                        *next = Some(pending);
                        pending
                    }
                };
                tokio::time::sleep_until(at).await;
                *next = None;
                *last = Some(fire_ms);
                Ok(fire_ms)
            }
            Clock::Every(interval) => {
                interval.tick().await;
                Ok(now_ms())
            }
        }
    }
}

#[async_trait]
impl Source for CronSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let CronSource {
            timing,
            template,
            count,
        } = *self;
        let connector = CronConnector {
            clock: Clock::new(timing),
            template,
            rng: XorShift::default(),
            count,
            seq: 0,
        };
        driver::drive(connector, &mut ctx).await
    }
}

/// The schedule as a [`Connector`]: each fire is a batch of one event;
/// the engine's driver runs the loop.
struct CronConnector {
    clock: Clock,
    template: Template,
    rng: XorShift,
    count: Option<u64>,
    /// Fires so far.
    seq: u64,
}

#[async_trait]
impl Connector for CronConnector {
    async fn read(&mut self) -> Result<Input> {
        if matches!(self.count, Some(count) if self.seq >= count) {
            return Ok(Input::End);
        }
        // cancel safe: a fire not yet due is simply waited for again
        let ts_ms = self.clock.fire().await?;
        let seq = self.seq;
        let value = match self.template.fixed() {
            Some(fixed) => fixed.clone(),
            None => {
                let mut buf = BytesMut::with_capacity(self.template.max_len(0));
                self.template.render(
                    &Vars {
                        seq,
                        partition: 0,
                        key: b"",
                        ts_ms,
                    },
                    &mut self.rng,
                    &mut buf,
                );
                buf.freeze()
            }
        };
        let origin = Origin {
            offset: seq,
            ..Origin::default()
        };
        let event = Event {
            key: None,
            value,
            headers: Vec::new(),
            timestamp_ms: ts_ms,
            origin,
        };
        self.seq += 1;
        Ok(Input::Batch {
            partition: 0,
            events: vec![event],
            end: seq + 1,
        })
    }

    fn positions(&self) -> Positions {
        Positions::Untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{options_error, Harness};

    #[tokio::test]
    async fn interval_fires_count_times() {
        let config =
            ComponentConfig::from_toml("c", "cron", "interval = '20ms'\ncount = 3").unwrap();
        let started = std::time::Instant::now();
        let run = Harness::new(2)
            .run(build(&config).unwrap_or_else(|e| panic!("{e}")))
            .await;
        run.assert_ok();
        assert!(
            started.elapsed() >= Duration::from_millis(55),
            "{:?}",
            started.elapsed()
        );
        let events = run.events();
        assert_eq!(events.len(), 3);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.origin.offset, i as u64);
            assert_eq!(e.origin.partition, 0);
            let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
            assert_eq!(v["seq"], i as u64);
            assert_eq!(v["ts"], e.timestamp_ms);
        }
    }

    #[tokio::test]
    async fn a_distant_schedule_stops_on_shutdown() {
        let config =
            ComponentConfig::from_toml("c", "cron", "schedule = '0 0 1 1 *'\npayload = 'x'")
                .unwrap();
        let started = std::time::Instant::now();
        let run = Harness::new(1)
            .shutdown_after(Duration::from_millis(50))
            .run(build(&config).unwrap_or_else(|e| panic!("{e}")))
            .await;
        run.assert_ok();
        assert!(run.events().is_empty());
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn options_are_validated_at_their_place() {
        assert_eq!(
            options_error(build, "schedule = '61 * * * *'"),
            "error: <inline>:1:12: invalid cron expression `61 * * * *`: minute field `61`: 61 is out of range 0-59"
        );
        assert_eq!(
            options_error(build, "schedule = '* * * *'"),
            "error: <inline>:1:12: invalid cron expression `* * * *`: expected 5 fields \
             (minute hour day-of-month month day-of-week), found 4"
        );
        assert_eq!(
            options_error(build, "schedule = '* * * * *'\ninterval = '1s'"),
            "error: <inline>:2:12: set `schedule` or `interval`, not both"
        );
        assert_eq!(
            options_error(build, "count = 1"),
            "error: <inline>:1:1: a cron source needs `schedule` (a cron expression) or `interval` (a duration)"
        );
        assert!(options_error(build, "interval = '10 s'")
            .starts_with("error: <inline>:1:12: `interval`: invalid duration `10 s`"));
        assert_eq!(
            options_error(build, "interval = '0s'"),
            "error: <inline>:1:12: `interval` must be greater than 0"
        );
        assert_eq!(
            options_error(build, "interval = '99999999h'"),
            "error: <inline>:1:12: `interval` must be at most 8784h (366 days); use `schedule`"
        );
        assert_eq!(
            options_error(build, "interval = '1s'\npayload = '{{key}}'"),
            "error: <inline>:2:11: `payload` uses `{{key}}` but cron events have no key"
        );
        assert_eq!(
            options_error(build, "interval = '1s'\nshedule = '* * * * *'"),
            "error: <inline>:2:1: unknown field `shedule`, expected one of `schedule`, `interval`, `payload`, `count`; \
             did you mean `schedule`?"
        );
    }

    #[test]
    fn valid_options_build() {
        for options in [
            "schedule = '*/5 9-17 * * 1-5'",
            "interval = '1.5s'\ncount = 2\npayload = '{{rand:1:6}}'",
        ] {
            let config = ComponentConfig::from_toml("c", "cron", options).unwrap();
            assert!(build(&config).is_ok(), "{options}");
        }
    }
}
