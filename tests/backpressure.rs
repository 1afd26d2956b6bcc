//! A stalled sink fills the queues, pauses the source and keeps memory
//! bounded; a sink that fails for good stops the checkpoint exactly before
//! the failed events. In-process pipelines with test sinks registered the
//! way any connector registers.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weir_config::{ComponentConfig, PipelineConfig};
use weir_engine::{shutdown_channel, Event, Pipeline, Sink};

use common::metrics::{metric, recorder as metrics};

static STALLED: AtomicBool = AtomicBool::new(true);
static STALL_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// A sink whose writes wait while `STALLED` is set.
struct StallSink;

#[async_trait]
impl Sink for StallSink {
    async fn write(&mut self, events: &[Event]) -> weir_engine::Result<()> {
        while STALLED.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        STALL_WRITTEN.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// A sink that fails for good on the event whose value is `line-600`.
struct FailOnSink;

#[async_trait]
impl Sink for FailOnSink {
    async fn write(&mut self, events: &[Event]) -> weir_engine::Result<()> {
        if events.iter().any(|e| e.value.as_ref() == b"line-600") {
            return Err(weir_engine::Error::external("refused line-600"));
        }
        Ok(())
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[test]
fn a_stalled_sink_pauses_the_source_and_bounds_memory() {
    metrics();
    let mut registry = weir::registry();
    registry.sink("stall", |_| Ok(Box::new(StallSink)));
    let source = ComponentConfig::from_toml(
        "gen",
        "generator",
        "payload = '{\"id\":{{seq}},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}'\nbatch = { max_events = 256 }\n",
    )
    .unwrap();
    let sink =
        ComponentConfig::from_toml("stuck", "stall", "batch = { max_events = 256 }").unwrap();
    let mut config = PipelineConfig::new_in_code(vec![source], vec![], vec![sink]);
    config.pipeline.name = "stall".into();
    config.pipeline.shards = Some(2);
    config.queues.inbox_max_events = 2048;
    config.queues.sink_max_events = 1024;
    config.checkpoint.dir = tempfile::tempdir().unwrap().keep();
    let pipeline = Pipeline::build(&config, &registry).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (trigger, _) = shutdown_channel();
    let rss_before = rss_bytes();
    let run = runtime.spawn(pipeline.run(trigger.clone()));

    std::thread::sleep(Duration::from_millis(1500));
    let read_1 = metric("weir_source_events_total{source=\"gen\"}");
    std::thread::sleep(Duration::from_millis(500));
    let read_2 = metric("weir_source_events_total{source=\"gen\"}");
    // bound: every shard inbox full, the sink queue full, one batch being built per lane and source
    let bound = (2 * 2048 + 1024 + 4 * 256) as f64;
    assert!(read_2 > 0.0, "the source never ran");
    assert!(
        read_2 <= bound,
        "{read_2} events in flight with a stalled sink, bound {bound}"
    );
    assert_eq!(
        read_1, read_2,
        "the source kept reading while every queue was full"
    );
    assert!(
        metric("weir_source_pauses_total{source=\"gen\"}") >= 1.0,
        "the source was never told to pause"
    );
    assert!(
        metric("weir_queue_full_total{queue=\"shard-0\"}")
            + metric("weir_queue_full_total{queue=\"shard-1\"}")
            >= 1.0
    );
    assert!(metric("weir_queue_events{queue=\"sink-stuck\"}") <= 1024.0);
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024 * 1024,
        "memory grew by {grown} bytes with a stalled sink"
    );
    assert_eq!(STALL_WRITTEN.load(Ordering::Relaxed), 0);

    // release the sink: the backlog flows and shutdown drains it
    STALLED.store(false, Ordering::Relaxed);
    let started = Instant::now();
    while STALL_WRITTEN.load(Ordering::Relaxed) < read_2 as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "backlog did not flow"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    trigger.trigger();
    let report = runtime.block_on(run).unwrap().expect("clean shutdown");
    assert!(report.drained);
}

#[test]
fn a_sink_failing_for_good_stops_the_checkpoint_exactly_before_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (0..1000).map(|i| format!("line-{i}\n")).collect();
    common::write(dir.path(), "in.txt", &input);
    let mut registry = weir::registry();
    registry.sink("fail-on-600", |_| Ok(Box::new(FailOnSink)));
    let source = ComponentConfig::from_toml(
        "in",
        "file",
        &format!(
            "path = '{}'\nbatch = {{ max_events = 1 }}\n",
            dir.path().join("in.txt").display()
        ),
    )
    .unwrap();
    let sink =
        ComponentConfig::from_toml("out", "fail-on-600", "batch = { max_events = 1 }").unwrap();
    let mut config = PipelineConfig::new_in_code(vec![source], vec![], vec![sink]);
    config.pipeline.name = "exact".into();
    config.pipeline.shards = Some(2);
    config.checkpoint.dir = dir.path().join("cp");
    let pipeline = Pipeline::build(&config, &registry).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (trigger, _) = shutdown_channel();
    let result = runtime.block_on(pipeline.run(trigger));
    let report = result.expect("the run itself ends cleanly");
    assert!(
        !report.drained,
        "a batch failed for good: the run must not report everything delivered"
    );
    let committed = common::stored_position(&dir.path().join("cp"), "exact", "in", 0);
    let before_600: u64 = input.lines().take(600).map(|l| l.len() as u64 + 1).sum();
    assert_eq!(
        committed,
        Some(before_600),
        "checkpoint must stop right before line-600"
    );
}
