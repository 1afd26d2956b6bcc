//! The Kafka scenarios of `weir bench`:
//!
//! - `kafka`: a preloaded topic (8 partitions, ~100-byte events) read by
//!   weir into a counting sink, against a raw rdkafka `BaseConsumer` of a
//!   fresh group that only counts the same topic.
//! - `kafka-to-kafka`: the same topic through a trivial step
//!   (`json-add-field`) into another topic, against a raw consume → produce
//!   copy loop; then the end-to-end latency (record timestamp at produce →
//!   read back from the output topic) at half of weir's maximum rate,
//!   through weir (with the step; with a batch latency target; without
//!   the step) and through the raw loop, one after the other.
//! - `kafka-scale`: the same topic read by 1, 2 and 3 `weir run`
//!   processes in one group (see `scale.rs`).
//! - `kafka-exactly-once`: `kafka-to-kafka` with transactions against
//!   the same pipeline at-least-once (see `exactly_once.rs`).
//! - `kafka-streams`: a `weir run` process against a Kafka Streams
//!   application doing the same work (see `streams.rs`).
//!
//! The first two time from the first event to the last, so group joins are
//! not in their figures; `kafka-scale` includes them.

mod broker;
mod exactly_once;
mod raw;
mod scale;
mod streams;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use weir_config::{ComponentConfig, PipelineConfig};
use weir_connectors::template::XorShift;
use weir_engine::{shutdown_channel, LatencyHistogram, Pipeline};

use super::count_sink;
use super::dev_server::DevServer;
use super::report::{self, Baseline, BenchReport};
use super::BenchArgs;

/// Names of the Kafka scenarios.
pub const SCENARIOS: &[&str] = &[
    "kafka",
    "kafka-to-kafka",
    "kafka-scale",
    "kafka-exactly-once",
    "kafka-streams",
];

const PARTITIONS: i32 = 8;
const DEFAULT_EVENTS: u64 = 2_000_000;

/// Runs a Kafka scenario.
pub fn run(name: &str, args: &BenchArgs) -> Result<BenchReport, String> {
    let events = args.events.unwrap_or(DEFAULT_EVENTS);
    let shards = args
        .shards
        .unwrap_or_else(|| weir_engine::shard::available_cores().len())
        .max(1);
    crate::observability::init_metrics();
    let broker = DevServer::get(args.brokers.as_deref(), &broker::SCRIPT)?;
    let b = broker.address.as_str();
    let id = raw::unique();
    let input = format!("weir-bench-in-{id}");
    let report = raw::create_topic(b, &input, PARTITIONS).and_then(|()| {
        eprintln!("{name}: preloading {events} events into {input} ({PARTITIONS} partitions)…");
        raw::preload(b, &input, events)?;
        match name {
            "kafka" => to_blackhole(b, &input, events, shards, &id),
            "kafka-scale" => scale::run(b, &input, events, PARTITIONS, &id),
            "kafka-exactly-once" => exactly_once::run(b, &input, events, shards, &id),
            "kafka-streams" => streams::run(b, &input, events, &id),
            _ => to_kafka(b, &input, events, shards, &id, args.latency_rate),
        }
    });
    // the run's topics go, whatever its outcome (a dev broker started for
    // the run is removed with its directory anyway)
    match raw::delete_topics_of_run(b, &id) {
        Ok(n) => eprintln!("{name}: deleted the run's {n} topics"),
        Err(e) => eprintln!("{name}: could not delete the run's topics: {e}"),
    }
    report
}

pub(super) use super::report::{cpu_seconds, ns_per_event};

fn to_blackhole(
    b: &str,
    input: &str,
    events: u64,
    shards: usize,
    id: &str,
) -> Result<BenchReport, String> {
    eprintln!("kafka: baseline (raw BaseConsumer, counting)…");
    let cpu = cpu_seconds();
    let baseline = raw::count(b, input, events)?;
    let baseline_cpu = cpu_seconds() - cpu;
    eprintln!("kafka: weir (kafka → blackhole)…");
    let config = pipeline(
        b,
        input,
        &format!("weir-bench-{id}"),
        None,
        ("bench-count", ""),
        shards,
    )?;
    let cpu = cpu_seconds();
    let run = run_weir(&config, || {
        let n = count_sink::COUNTED.load(Ordering::Relaxed);
        (n >= events)
            .then(|| count_sink::FIRST.get().copied())
            .flatten()
    })?;
    let weir_cpu = cpu_seconds() - cpu;
    Ok(run.report(
        "kafka",
        events,
        run.seconds,
        Baseline {
            name: "raw rdkafka BaseConsumer of a fresh group counting the same topic".into(),
            events_per_sec: baseline,
        },
        shards,
        (
            ns_per_event(weir_cpu, events),
            ns_per_event(baseline_cpu, events),
        ),
    ))
}

fn to_kafka(
    b: &str,
    input: &str,
    events: u64,
    shards: usize,
    id: &str,
    latency_rate: Option<f64>,
) -> Result<BenchReport, String> {
    let raw_out = format!("weir-bench-raw-out-{id}");
    let out = format!("weir-bench-out-{id}");
    raw::create_topic(b, &raw_out, PARTITIONS)?;
    raw::create_topic(b, &out, PARTITIONS)?;
    eprintln!("kafka-to-kafka: baseline (raw consume → produce loop)…");
    let cpu = cpu_seconds();
    let baseline = raw::copy(b, input, &raw_out, events)?;
    let baseline_cpu = cpu_seconds() - cpu;
    eprintln!("kafka-to-kafka: weir (kafka → json-add-field → kafka)…");
    let config = add_field_to_kafka(b, input, &out, &format!("weir-bench-{id}"), shards)?;
    let watcher = Watermarks::new(b, &out)?;
    let mut first = None;
    let mut last_check = Instant::now();
    let cpu = cpu_seconds();
    let run = run_weir(&config, || {
        // each check asks the broker: keep the measurement's own load low
        if last_check.elapsed() < Duration::from_millis(25) {
            return None;
        }
        last_check = Instant::now();
        let n = watcher.total();
        if n > 0 {
            first.get_or_insert_with(Instant::now);
        }
        (n >= events as i64).then_some(first).flatten()
    })?;
    let weir_cpu = cpu_seconds() - cpu;
    let eps = events as f64 / run.seconds;

    let rate = latency_rate.unwrap_or((eps / 2.0).max(100.0));
    eprintln!("kafka-to-kafka: end-to-end latency at {rate:.0} events/s…");
    // the first latency run on a broker is slower whatever copies (a
    // fresh broker measured 66 ms / 369 ms for weir first, then 9 ms / 21 ms
    // and 8 ms / 36 ms for the next two): one run warms it, not measured
    eprintln!("kafka-to-kafka: warming the broker up with a latency run (not measured)…");
    latency_at(b, rate, Copier::Raw, &format!("{id}-warm"))?;
    let weir = |latency_target, step| Copier::Weir {
        shards,
        latency_target,
        step,
    };
    let copiers = [
        weir(None, true),
        weir(Some(ADAPTIVE_TARGET), true),
        weir(None, false),
        Copier::Raw,
    ];
    // the copiers run one after the other on the same broker, and a
    // copier's place in a fixed series (and the copier before it) may move
    // its p99: each run takes them in a random order
    let order = latency_order(copiers.len());
    let mut runs: [Option<LatencyRun>; 4] = copiers.map(|_| None);
    for &i in &order {
        eprintln!(
            "kafka-to-kafka: the latency run through {}…",
            copiers[i].describe()
        );
        runs[i] = Some(latency_at(b, rate, copiers[i], id)?);
    }
    let [Some(latency), Some(adaptive), Some(no_step), Some(raw_latency)] = runs else {
        return Err("a latency run did not report".into());
    };
    let mut report = run.report(
        "kafka-to-kafka",
        events,
        run.seconds,
        Baseline {
            name: "raw rdkafka consume → produce loop copying the same topic".into(),
            events_per_sec: baseline,
        },
        shards,
        (
            ns_per_event(weir_cpu, events),
            ns_per_event(baseline_cpu, events),
        ),
    );
    report.p50_us = latency.p50_us;
    report.p99_us = latency.p99_us;
    let extra = &mut report.extra;
    extra.insert("latency_rate_events_per_sec".into(), json!(rate));
    extra.insert(
        "latency_order".into(),
        json!(order.iter().map(|&i| copiers[i].tag()).collect::<Vec<_>>()),
    );
    extra.insert("latency_events".into(), json!(latency.measured));
    extra.insert("latency_inside_p50_us".into(), json!(latency.inside_p50_us));
    extra.insert("latency_inside_p99_us".into(), json!(latency.inside_p99_us));
    extra.insert("latency_adaptive_p50_us".into(), json!(adaptive.p50_us));
    extra.insert("latency_adaptive_p99_us".into(), json!(adaptive.p99_us));
    extra.insert(
        "latency_adaptive_inside_p50_us".into(),
        json!(adaptive.inside_p50_us),
    );
    extra.insert(
        "latency_adaptive_inside_p99_us".into(),
        json!(adaptive.inside_p99_us),
    );
    extra.insert("latency_no_step_p50_us".into(), json!(no_step.p50_us));
    extra.insert("latency_no_step_p99_us".into(), json!(no_step.p99_us));
    extra.insert("latency_baseline_p50_us".into(), json!(raw_latency.p50_us));
    extra.insert("latency_baseline_p99_us".into(), json!(raw_latency.p99_us));
    extra.insert(
        "latency_note".into(),
        json!(format!("p50_us/p99_us: produce timestamp to read back from the output topic, at latency_rate_events_per_sec, after a {LATENCY_WARM_UP:?} warm-up that is not measured; millisecond resolution; latency_baseline_*: the same through the raw copy loop; latency_inside_*: weir's batch dispatch to sink confirmation; latency_adaptive_*: the same with the source's batch.latency_target = {ADAPTIVE_TARGET:?}; latency_no_step_*: weir without the json-add-field step, as the raw loop copies; the copiers run one after the other in latency_order, a random order")),
    );
    Ok(report)
}

/// The `kafka-to-kafka` pipeline: `input` → json-add-field → `out`.
fn add_field_to_kafka(
    b: &str,
    input: &str,
    out: &str,
    group: &str,
    shards: usize,
) -> Result<PipelineConfig, String> {
    let step = ("json-add-field", "field = \"seen\"\nvalue = true\n");
    let sink_options = format!("brokers = \"{b}\"\ntopic = \"{out}\"\n");
    pipeline(
        b,
        input,
        group,
        Some(step),
        ("kafka", &sink_options),
        shards,
    )
}

/// The in-code pipeline: kafka → optional step → sink.
fn pipeline(
    b: &str,
    topic: &str,
    group: &str,
    step: Option<(&str, &str)>,
    sink: (&str, &str),
    shards: usize,
) -> Result<PipelineConfig, String> {
    let source = ComponentConfig::from_toml(
        "in",
        "kafka",
        &format!("brokers = \"{b}\"\ntopics = [\"{topic}\"]\ngroup = \"{group}\"\n"),
    )
    .map_err(|d| d.to_string())?;
    let steps = match step {
        Some((kind, options)) => {
            vec![ComponentConfig::from_toml(kind, kind, options).map_err(|d| d.to_string())?]
        }
        None => Vec::new(),
    };
    let sink = ComponentConfig::from_toml("out", sink.0, sink.1).map_err(|d| d.to_string())?;
    let mut config = PipelineConfig::new_in_code(vec![source], steps, vec![sink]);
    config.pipeline.name = format!("bench-{group}");
    config.pipeline.shards = Some(shards);
    config.checkpoint.dir = std::env::temp_dir().join("weir-bench-checkpoints");
    Ok(config)
}

pub(super) struct WeirRun {
    pub(super) seconds: f64,
    pub(super) rss_peak_bytes: u64,
    pub(super) latency: Arc<LatencyHistogram>,
}

impl WeirRun {
    /// The report of `events` events through weir in `seconds` against
    /// `baseline`, with the batch latency of this run and both sides' CPU
    /// per event (`cpu_ns`: weir's, the baseline's).
    pub(super) fn report(
        &self,
        scenario: &str,
        events: u64,
        seconds: f64,
        baseline: Baseline,
        shards: usize,
        cpu_ns: (f64, f64),
    ) -> BenchReport {
        let eps = events as f64 / seconds;
        let mut extra = serde_json::Map::new();
        extra.insert("cpu_ns_per_event".into(), json!(cpu_ns.0.round()));
        extra.insert("baseline_cpu_ns_per_event".into(), json!(cpu_ns.1.round()));
        BenchReport {
            scenario: scenario.into(),
            events,
            seconds,
            events_per_sec: eps,
            ratio: eps / baseline.events_per_sec,
            baseline,
            rss_peak_bytes: self.rss_peak_bytes,
            p50_us: self.latency.quantile_micros(0.50),
            p99_us: self.latency.quantile_micros(0.99),
            shards,
            extra,
        }
    }
}

/// Runs `config` until its counting sink counted `events` more events,
/// timed from the first one; returns the run and the CPU seconds it took.
pub(super) fn run_until_counted(
    config: &PipelineConfig,
    events: u64,
) -> Result<(WeirRun, f64), String> {
    let start = count_sink::COUNTED.load(Ordering::Relaxed);
    let cpu = cpu_seconds();
    let mut first = None;
    let run = run_weir(config, || {
        let n = count_sink::COUNTED.load(Ordering::Relaxed) - start;
        if n > 0 {
            first.get_or_insert_with(Instant::now);
        }
        (n >= events).then_some(first).flatten()
    })?;
    Ok((run, cpu_seconds() - cpu))
}

/// Runs the pipeline until `done` returns when the first event went
/// through (it returns `None` until every event did).
pub(super) fn run_weir(
    config: &PipelineConfig,
    mut done: impl FnMut() -> Option<Instant>,
) -> Result<WeirRun, String> {
    let mut registry = crate::registry();
    registry.sink("bench-count", count_sink::build);
    let pipeline = Pipeline::build(config, &registry).map_err(|d| d.to_string())?;
    let latency = pipeline.latency();
    report::reset_peak_rss();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-io")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (trigger, _) = shutdown_channel();
    let task = runtime.spawn(pipeline.run(trigger.clone()));
    let deadline = Instant::now() + Duration::from_secs(900);
    let first = loop {
        if let Some(first) = done() {
            break first;
        }
        if task.is_finished() || Instant::now() > deadline {
            trigger.trigger();
            let result = runtime.block_on(task).map_err(|e| e.to_string())?;
            return Err(match result {
                Ok(_) => "weir stopped before every event went through".into(),
                Err(e) => format!("weir failed: {e}"),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let seconds = first.elapsed().as_secs_f64();
    let rss_peak_bytes = report::peak_rss_bytes();
    trigger.trigger();
    runtime
        .block_on(task)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(WeirRun {
        seconds,
        rss_peak_bytes,
        latency,
    })
}

/// The sum of a topic's high watermarks: records written to it.
pub(super) struct Watermarks {
    consumer: BaseConsumer,
    topic: String,
}

impl Watermarks {
    /// Watches `topic`'s end offsets.
    pub(super) fn new(b: &str, topic: &str) -> Result<Self, String> {
        Ok(Watermarks {
            consumer: raw::consumer(b, "weir-bench-watermarks")?,
            topic: topic.to_string(),
        })
    }

    /// Records in the topic, all partitions.
    pub(super) fn total(&self) -> i64 {
        (0..PARTITIONS)
            .filter_map(|p| {
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(5))
                    .ok()
            })
            .map(|(_, high)| high)
            .sum()
    }
}

/// Produces at `rate` for [`LATENCY_WARM_UP`] and then [`LATENCY_MEASURED`]
/// through a running copier and measures produce-to-read-back latency of
/// the records produced after the warm-up. Returns p50 and p99 in
/// microseconds and how many events were measured.
fn latency_at(b: &str, rate: f64, copier: Copier, id: &str) -> Result<LatencyRun, String> {
    let produce_for = LATENCY_WARM_UP + LATENCY_MEASURED;
    let id = &format!("{id}-{}", copier.tag());
    let input = format!("weir-bench-lat-in-{id}");
    let out = format!("weir-bench-lat-out-{id}");
    raw::create_topic(b, &input, PARTITIONS)?;
    raw::create_topic(b, &out, PARTITIONS)?;
    let running = copier.start(b, &input, &out, id)?;

    // the reader: every partition of the output from the start
    let reader = raw::consumer(b, &format!("weir-bench-lat-reader-{id}"))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&out, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    reader.assign(&tpl).map_err(|e| e.to_string())?;
    // the copier joined its group and copies: a first record went through
    // (a fixed wait let a slow group join count as seconds of latency)
    warm_up_copy(b, &input, &reader)?;

    let mut producer = Some({
        let b = b.to_string();
        let input = input.clone();
        std::thread::spawn(move || -> Result<u64, String> {
            let producer: rdkafka::producer::ThreadedProducer<
                rdkafka::producer::DefaultProducerContext,
            > = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("linger.ms", "1")
                .create()
                .map_err(|e| e.to_string())?;
            let tick = Duration::from_millis(5);
            let per_tick = (rate * tick.as_secs_f64()).max(1.0);
            let started = Instant::now();
            let mut sent = 0u64;
            let mut value = Vec::with_capacity(128);
            while started.elapsed() < produce_for {
                let due = (started.elapsed().as_secs_f64() / tick.as_secs_f64() + 1.0) * per_tick;
                while (sent as f64) < due {
                    raw::payload(sent, &mut value);
                    raw::send(
                        &producer,
                        &input,
                        format!("k{}", sent % 1000).as_bytes(),
                        &value,
                    );
                    sent += 1;
                }
                std::thread::sleep(tick);
            }
            rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            Ok(sent)
        })
    });
    // records produced before this are the warm-up: read, not measured
    let measure_from = now_ms() + i64::try_from(LATENCY_WARM_UP.as_millis()).unwrap_or(0);
    let mut latencies: Vec<u64> = Vec::new();
    let mut read = 0u64;
    let mut sent = None;
    let mut idle_since = Instant::now();
    loop {
        match reader.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let now = now_ms();
                read += 1;
                if let Some(ts) = m.timestamp().to_millis().filter(|ts| *ts >= measure_from) {
                    latencies.push(u64::try_from(now - ts).unwrap_or(0) * 1000);
                }
                idle_since = Instant::now();
            }
            Some(Err(e)) => return Err(format!("latency reader: {e}")),
            None => {}
        }
        if producer.as_ref().is_some_and(|p| p.is_finished()) {
            let p = producer.take().expect("checked");
            sent = Some(p.join().map_err(|_| "producer panicked".to_string())??);
        }
        if let Some(s) = sent {
            if read >= s || idle_since.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
    }
    let inside = running.stop()?;
    latencies.sort_unstable();
    let q = |f: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * f) as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(LatencyRun {
        p50_us: q(0.50),
        p99_us: q(0.99),
        measured: latencies.len(),
        inside_p50_us: inside.as_ref().map_or(0, |h| h.quantile_micros(0.50)),
        inside_p99_us: inside.as_ref().map_or(0, |h| h.quantile_micros(0.99)),
    })
}

/// How long a latency run produces before what it produces is measured:
/// a new topic's first writes and fetches and a copier's first batches
/// (its sink's first produce requests, its buffers growing) are slower than
/// its steady state, and which copier ran first decided how much of that
/// landed in its p99.
const LATENCY_WARM_UP: Duration = Duration::from_secs(2);
/// The source's `batch.latency_target` of the adaptive latency run.
const ADAPTIVE_TARGET: Duration = Duration::from_millis(20);

/// How long a latency run produces records that are measured.
const LATENCY_MEASURED: Duration = Duration::from_secs(10);

/// Produces one record to `input` and waits until `reader` read its copy.
fn warm_up_copy(b: &str, input: &str, reader: &BaseConsumer) -> Result<(), String> {
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", b)
            .create()
            .map_err(|e| e.to_string())?;
    let mut value = Vec::with_capacity(128);
    raw::payload(u64::MAX, &mut value);
    raw::send(&producer, input, b"warm-up", &value);
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => return Err(format!("latency reader: {e}")),
            None if Instant::now() > deadline => {
                return Err(
                    "the latency run's copier did not copy a first record within 120 s".into(),
                )
            }
            None => {}
        }
    }
}

/// What copies the latency run's input topic to its output.
#[derive(Clone, Copy)]
enum Copier {
    /// weir: kafka → json-add-field → kafka.
    Weir {
        /// Shards of the pipeline.
        shards: usize,
        /// The source's `batch.latency_target`, if set.
        latency_target: Option<Duration>,
        /// Whether the pipeline has its `json-add-field` step (without
        /// it weir copies as the raw loop does, and the two latencies
        /// compare weir's path alone).
        step: bool,
    },
    /// The raw consume → produce loop (keeping each record's timestamp).
    Raw,
}

/// A copier at work.
enum Running {
    Weir {
        runtime: tokio::runtime::Runtime,
        trigger: weir_engine::ShutdownTrigger,
        task: tokio::task::JoinHandle<weir_engine::Result<weir_engine::pipeline::RunReport>>,
        latency: Arc<LatencyHistogram>,
    },
    Raw {
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: std::thread::JoinHandle<Result<(), String>>,
    },
}

/// A random order of `n` latency copiers (indices), seeded from the
/// process id and the clock: a bench needs no better randomness than that.
fn latency_order(n: usize) -> Vec<usize> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut rng = XorShift::new(u64::from(std::process::id()) << 32 | u64::from(nanos));
    let mut order: Vec<usize> = (0..n).collect();
    // Fisher–Yates
    for i in (1..n).rev() {
        order.swap(i, rng.between(0, i as i64) as usize);
    }
    order
}

impl Copier {
    /// What it is, for the progress lines.
    fn describe(self) -> String {
        match self {
            Copier::Weir { step: false, .. } => "weir without the step (kafka → kafka)".into(),
            Copier::Weir {
                latency_target: None,
                ..
            } => "weir (kafka → json-add-field → kafka)".into(),
            Copier::Weir {
                latency_target: Some(t),
                ..
            } => format!("weir with batch.latency_target = {t:?}"),
            Copier::Raw => "the raw copy loop".into(),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Copier::Weir { step: false, .. } => "weir-no-step",
            Copier::Weir {
                latency_target: None,
                ..
            } => "weir",
            Copier::Weir { .. } => "weir-adaptive",
            Copier::Raw => "raw",
        }
    }

    fn start(self, b: &str, input: &str, out: &str, id: &str) -> Result<Running, String> {
        match self {
            Copier::Weir {
                shards,
                latency_target,
                step,
            } => {
                let group = format!("weir-bench-lat-{id}");
                let mut config = if step {
                    add_field_to_kafka(b, input, out, &group, shards)?
                } else {
                    let sink_options = format!("brokers = \"{b}\"\ntopic = \"{out}\"\n");
                    pipeline(b, input, &group, None, ("kafka", &sink_options), shards)?
                };
                for source in &mut config.sources {
                    source.batch.latency_target = latency_target;
                }
                let pipeline =
                    Pipeline::build(&config, &crate::registry()).map_err(|d| d.to_string())?;
                let latency = pipeline.latency();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let (trigger, _) = shutdown_channel();
                let task = runtime.spawn(pipeline.run(trigger.clone()));
                Ok(Running::Weir {
                    runtime,
                    trigger,
                    task,
                    latency,
                })
            }
            Copier::Raw => {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let thread = {
                    let (b, input, out, stop) = (
                        b.to_string(),
                        input.to_string(),
                        out.to_string(),
                        Arc::clone(&stop),
                    );
                    let group = format!("weir-bench-lat-raw-{id}");
                    std::thread::spawn(move || raw::copy_until(&b, &input, &out, &group, &stop))
                };
                Ok(Running::Raw { stop, thread })
            }
        }
    }
}

impl Running {
    /// Stops the copier; weir's own batch latencies.
    fn stop(self) -> Result<Option<Arc<LatencyHistogram>>, String> {
        match self {
            Running::Weir {
                runtime,
                trigger,
                task,
                latency,
            } => {
                trigger.trigger();
                runtime
                    .block_on(task)
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                Ok(Some(latency))
            }
            Running::Raw { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                thread.join().map_err(|_| "the raw copy loop panicked")??;
                Ok(None)
            }
        }
    }
}

/// The figures of a latency run.
struct LatencyRun {
    /// Produce timestamp to read back, median.
    p50_us: u64,
    /// Produce timestamp to read back, 99th percentile.
    p99_us: u64,
    /// Records read back.
    measured: usize,
    /// Inside weir (a batch's dispatch to its sink's confirmation), median.
    inside_p50_us: u64,
    /// Inside weir, 99th percentile.
    inside_p99_us: u64,
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
