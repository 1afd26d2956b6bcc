//! The `generator` source: synthetic events for benchmarks and local runs.
//!
//! - **Delivery**: nothing to lose: events are made up. Acked positions are
//!   recorded in metrics; nothing is stored and a restart starts from
//!   sequence 0 again.
//! - **Ordering**: within a partition, offsets (and sequence numbers) rise.
//!   With `key_cardinality`, events of one key stay in order.
//! - **Partitions**: `partitions` of them (default one per shard). Event
//!   `seq` goes to partition `seq % partitions`; its offset is its index in
//!   that partition (`seq / partitions`); a batch ends at its last offset + 1.
//!   Without `key_cardinality` a batch goes to the shard owning its
//!   partition; with it, each event goes to the shard owning its key.
//! - **Batching**: each batch holds `batch.max_events` events of one
//!   partition (fewer if `batch.max_bytes` would be exceeded or `rate` is
//!   set), rotating over the partitions. With `rate`, a batch holds about
//!   `rate × batch.max_wait` events and batches are paced to the rate.
//! - **Backpressure**: generation stops while a shard inbox is full.
//! - **Cost**: the payloads and keys of a batch are rendered into one
//!   buffer; each event holds a slice of it. A payload without placeholders
//!   is one static buffer shared by every event.
//! - **End**: after `count` events it drains and returns; without `count`
//!   it runs until shutdown.
//!
//! ```toml
//! [sources.gen]
//! type = "generator"
//! count = 1000000
//! key_cardinality = 100
//! payload = '{"user":"{{key}}","amount":{{rand:1:500}},"ts":{{ts}}}'
//! ```

mod config;
mod plan;

use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use tokio::time::Instant;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::driver::{self, Connector, Input, Positions};
use weir_engine::{Event, Origin, Result, Routing, Source, SourceContext};

pub use config::{GeneratorOptions, DEFAULT_PAYLOAD};
pub use plan::{BatchPlan, Planner, MAX_PARTITIONS};

use crate::control::now_ms;
use crate::numbers::{put_u64, MAX_DIGITS};
use crate::template::{Vars, XorShift};
use config::Settings;

/// Longest key: `key-` and a `u64`.
const MAX_KEY_LEN: usize = 4 + MAX_DIGITS;

/// Builds a `generator` source from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options: GeneratorOptions = config.options()?;
    let settings = Settings::from_options(options, config)?;
    Ok(Box::new(GeneratorSource { settings }))
}

/// Generates events from a template.
#[derive(Debug)]
pub struct GeneratorSource {
    settings: Settings,
}

impl GeneratorSource {
    /// A source for these options; the error names the option at fault.
    pub fn new(options: GeneratorOptions) -> Result<Self, String> {
        Settings::check(options)
            .map(|settings| GeneratorSource { settings })
            .map_err(|(_, message)| message)
    }
}

/// When the next batch may be made.
enum Due {
    /// At once.
    Now,
    /// At this instant.
    At(Instant),
    /// Never (a rate so low the next batch is beyond the clock's range).
    Never,
}

impl Due {
    /// Waits until the batch is due. Cancel safe.
    async fn wait(self) {
        match self {
            Due::Now => {}
            Due::At(at) => tokio::time::sleep_until(at).await,
            Due::Never => std::future::pending().await,
        }
    }
}

/// Renders batches of events.
struct Renderer {
    settings: Settings,
    buf: BytesMut,
    rng: XorShift,
    /// Upper bound of one event's payload and key bytes.
    per_event: usize,
}

impl Renderer {
    /// The events of `plan`, their payloads and keys in one buffer.
    fn fill(&mut self, planner: &Planner, plan: &BatchPlan, ts_ms: i64) -> Vec<Event> {
        let n = plan.len as usize;
        let mut events = Vec::with_capacity(n);
        let fixed = self.settings.template.fixed().cloned();
        if fixed.is_none() || self.settings.key_cardinality.is_some() {
            self.buf.reserve(self.per_event.saturating_mul(n));
        }
        for offset in plan.first_offset..plan.end() {
            let seq = planner.seq(plan.partition, offset);
            let key = self.settings.key_cardinality.map(|cardinality| {
                self.buf.put_slice(b"key-");
                put_u64(&mut self.buf, seq % cardinality);
                self.buf.split().freeze()
            });
            let value = match &fixed {
                Some(value) => value.clone(),
                None => {
                    let key = key.as_deref().unwrap_or_default();
                    let vars = Vars {
                        seq,
                        partition: plan.partition,
                        key,
                        ts_ms,
                    };
                    self.settings
                        .template
                        .render(&vars, &mut self.rng, &mut self.buf);
                    self.buf.split().freeze()
                }
            };
            let origin = Origin {
                source: 0,
                partition: plan.partition,
                offset,
            };
            events.push(Event {
                key,
                value,
                headers: Vec::new(),
                timestamp_ms: ts_ms,
                origin,
            });
        }
        events
    }
}

/// The generator as a [`Connector`]: the engine's driver runs the loop,
/// parks a batch whose shard is full and pauses its partition (the other
/// partitions keep going), and resumes it once the batch went out.
struct GeneratorConnector {
    planner: Planner,
    renderer: Renderer,
    /// Events per batch.
    batch_len: u64,
    /// Events per second, if limited.
    rate: Option<f64>,
    started: Instant,
    /// Events made so far (paces `rate`).
    emitted: u64,
    routing: Routing,
    /// Partitions the driver paused: no batch of theirs is made.
    paused: Vec<u32>,
}

#[async_trait]
impl Connector for GeneratorConnector {
    async fn read(&mut self) -> Result<Input> {
        let due = match self.rate {
            None => Due::Now,
            Some(rate) => Duration::try_from_secs_f64(self.emitted as f64 / rate)
                .ok()
                .and_then(|after| self.started.checked_add(after))
                .map_or(Due::Never, Due::At),
        };
        due.wait().await; // cancel safe: nothing is made before it completes
        let paused = &self.paused;
        let plan = self
            .planner
            .next_batch_skipping(self.batch_len, |p| paused.contains(&p));
        let Some(plan) = plan else {
            if self.paused.is_empty() {
                return Ok(Input::End);
            }
            // what is left belongs to paused partitions: the driver resumes them
            return std::future::pending().await;
        };
        let events = self.renderer.fill(&self.planner, &plan, now_ms());
        self.emitted += plan.len;
        Ok(Input::Batch {
            partition: plan.partition,
            events,
            end: plan.end(),
        })
    }

    fn routing(&self) -> Routing {
        self.routing
    }

    fn positions(&self) -> Positions {
        Positions::Untracked
    }

    fn can_pause(&self) -> bool {
        true
    }

    fn pause(&mut self, partition: u32, paused: bool) {
        if paused {
            if !self.paused.contains(&partition) {
                self.paused.push(partition);
            }
        } else {
            self.paused.retain(|&p| p != partition);
        }
    }
}

#[async_trait]
impl Source for GeneratorSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let settings = self.settings;
        let partitions = match settings.partitions {
            0 => u32::try_from(ctx.shard_count())
                .unwrap_or(MAX_PARTITIONS)
                .clamp(1, MAX_PARTITIONS),
            n => n,
        };
        let planner = Planner::new(partitions, settings.count);
        let key_len = if settings.key_cardinality.is_some() {
            MAX_KEY_LEN
        } else {
            0
        };
        let per_event = settings.template.max_len(key_len) + key_len;
        let limits = ctx.batch_settings();
        let mut batch_len = limits
            .max_events
            .min((limits.max_bytes / per_event.max(1)).max(1)) as u64;
        if let Some(rate) = settings.rate {
            batch_len = batch_len
                .min((rate * limits.max_wait.as_secs_f64()) as u64)
                .max(1);
        }
        let routing = if settings.key_cardinality.is_some() {
            Routing::Key
        } else {
            Routing::Partition
        };
        let rate = settings.rate;
        let connector = GeneratorConnector {
            planner,
            renderer: Renderer {
                settings,
                buf: BytesMut::new(),
                rng: XorShift::default(),
                per_event,
            },
            batch_len,
            rate,
            started: Instant::now(),
            emitted: 0,
            routing,
            paused: Vec::new(),
        };
        driver::drive(connector, &mut ctx).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::{options_error, Harness, Run};
    use weir_engine::assign;

    async fn run(options: &str, shards: usize) -> Run {
        let config = ComponentConfig::from_toml("gen", "generator", options).unwrap();
        let source = build(&config).unwrap_or_else(|e| panic!("{e}"));
        let run = Harness::new(shards)
            .batch(config.batch.clone())
            .run(source)
            .await;
        run.assert_ok();
        run
    }

    fn seq_of(event: &Event) -> u64 {
        let value: serde_json::Value = serde_json::from_slice(&event.value).unwrap();
        value["id"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn assigns_partitions_and_offsets() {
        let run = run("count = 10\npartitions = 3\nbatch = { max_events = 2 }", 2).await;
        let events = run.events();
        assert_eq!(events.len(), 10);
        let mut seqs: Vec<u64> = events.iter().map(seq_of).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
        for e in &events {
            let seq = seq_of(e);
            assert_eq!(u64::from(e.origin.partition), seq % 3);
            assert_eq!(e.origin.offset, seq / 3);
            assert!(e.key.is_none());
        }
        let mut next_offset: BTreeMap<u32, u64> = BTreeMap::new();
        for batch in &run.batches {
            assert!(batch.events.len() <= 2);
            assert_eq!(
                batch.shard,
                assign::shard_for_partition(0, batch.partition, 2),
                "routed by partition"
            );
            for e in &batch.events {
                assert_eq!(
                    e.origin.partition, batch.partition,
                    "one partition per batch"
                );
                let next = next_offset.entry(batch.partition).or_insert(0);
                assert_eq!(
                    e.origin.offset, *next,
                    "offsets are contiguous per partition"
                );
                *next += 1;
            }
        }
        assert_eq!(next_offset, BTreeMap::from([(0, 4), (1, 3), (2, 3)]));
    }

    #[tokio::test]
    async fn one_partition_per_shard_by_default() {
        let run = run("count = 30\nbatch = { max_events = 4 }", 3).await;
        let partitions: std::collections::BTreeSet<u32> =
            run.events().iter().map(|e| e.origin.partition).collect();
        assert_eq!(partitions, [0, 1, 2].into());
        assert_eq!(run.events().len(), 30);
    }

    #[tokio::test]
    async fn keyed_events_are_routed_by_key() {
        let run = run(
            "count = 200\npartitions = 1\nkey_cardinality = 7\npayload = '{{key}}/{{seq}}'",
            4,
        )
        .await;
        assert_eq!(run.events().len(), 200);
        for batch in &run.batches {
            for e in &batch.events {
                let key = e.key.as_ref().unwrap();
                let offset = e.origin.offset;
                assert_eq!(key.as_ref(), format!("key-{}", offset % 7).as_bytes());
                assert_eq!(
                    e.value.as_ref(),
                    format!("key-{}/{offset}", offset % 7).as_bytes()
                );
                assert_eq!(
                    batch.shard,
                    assign::shard_for_key(assign::hash_key(key), 4),
                    "routed by key"
                );
            }
        }
        let shards: std::collections::BTreeSet<usize> =
            run.batches.iter().map(|b| b.shard).collect();
        assert!(shards.len() > 1, "7 keys spread over several shards");
    }

    #[tokio::test]
    async fn a_batch_renders_into_one_buffer() {
        let run = run(
            "count = 8\npartitions = 1\npayload = '{{seq}}|{{partition}}|{{ts}}'",
            1,
        )
        .await;
        let events = run.events();
        assert_eq!(run.batches.len(), 1);
        for pair in events.windows(2) {
            let end = pair[0].value.as_ptr() as usize + pair[0].value.len();
            assert_eq!(
                pair[1].value.as_ptr() as usize,
                end,
                "payloads are adjacent slices of one buffer"
            );
        }
        let first = String::from_utf8(events[0].value.to_vec()).unwrap();
        let parts: Vec<&str> = first.split('|').collect();
        assert_eq!(&parts[..2], ["0", "0"]);
        assert_eq!(parts[2].parse::<i64>().unwrap(), events[0].timestamp_ms);
    }

    #[tokio::test]
    async fn a_fixed_payload_is_shared() {
        let run = run("count = 5\npayload = 'same'", 1).await;
        let events = run.events();
        assert!(events.iter().all(|e| e.value.as_ref() == b"same"));
        assert!(events
            .iter()
            .all(|e| e.value.as_ptr() == events[0].value.as_ptr()));
    }

    #[tokio::test]
    async fn rate_paces_batches() {
        let started = std::time::Instant::now();
        let run = run("count = 20\nrate = 200\nbatch = { max_wait = '10ms' }", 1).await;
        assert_eq!(run.events().len(), 20);
        assert!(
            run.batches.iter().all(|b| b.events.len() <= 2),
            "rate × max_wait = 2 events per batch"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(85),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn unbounded_runs_until_shutdown() {
        let config = ComponentConfig::from_toml("gen", "generator", "rate = 1000").unwrap();
        let source = build(&config).unwrap_or_else(|e| panic!("{e}"));
        let run = Harness::new(2)
            .shutdown_after(Duration::from_millis(100))
            .run(source)
            .await;
        run.assert_ok();
        assert!(!run.events().is_empty());
    }

    #[test]
    fn options_are_validated_at_their_place() {
        assert_eq!(
            options_error(build, "count = 1\n  cuont = 2"),
            "error: <inline>:2:3: unknown field `cuont`, expected one of `count`, `rate`, `payload`, \
             `key_cardinality`, `partitions`; did you mean `count`?"
        );
        assert_eq!(
            options_error(build, "rate = 0"),
            "error: <inline>:1:8: `rate` must be a positive number of events per second, found 0"
        );
        assert!(options_error(build, "rate = nan").contains("found NaN"));
        assert_eq!(
            options_error(build, "payload = '{{key}}'"),
            "error: <inline>:1:11: `payload` uses `{{key}}` but events have no key; set `key_cardinality`"
        );
        assert!(options_error(build, "payload = '{{nope}}'")
            .starts_with("error: <inline>:1:11: `payload`: unknown placeholder `{{nope}}`"));
        assert_eq!(
            options_error(build, "key_cardinality = 0"),
            "error: <inline>:1:19: `key_cardinality` must be at least 1"
        );
        assert_eq!(
            options_error(build, "partitions = 70000"),
            "error: <inline>:1:14: `partitions` must be at most 65536, found 70000"
        );
        assert!(options_error(build, "count = -1").starts_with("error: <inline>:1:9:"));
    }

    #[test]
    fn defaults() {
        let config = ComponentConfig::from_toml("gen", "generator", "").unwrap();
        let options: GeneratorOptions = config.options().unwrap();
        assert_eq!(options, GeneratorOptions::default());
        assert_eq!(options.payload, DEFAULT_PAYLOAD);
        assert!(GeneratorSource::new(GeneratorOptions {
            rate: Some(-1.0),
            ..GeneratorOptions::default()
        })
        .is_err());
    }
}
