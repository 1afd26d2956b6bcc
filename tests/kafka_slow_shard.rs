//! No head-of-line blocking across shards: a `kafka` source on a real
//! broker feeds two shards, and a step stops one of them (it blocks its
//! thread, as a function stuck in CPU work would). Every event of the
//! other shard's partitions is still written while it is stopped: the
//! source waits a little for the stopped shard's partitions to be resumed,
//! then holds them (paused in librdkafka) and goes on with the rest. Once
//! the shard runs again, everything is written exactly once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::kafka::Broker;
use common::metrics::{metric, recorder as metrics};
use weir_config::{ComponentConfig, Diagnostic, PipelineConfig};
use weir_engine::{Event, Sink, Step, StepFactory, StepOutput};

const PARTITIONS: i32 = 8;
const SHARDS: usize = 2;

/// Set while the step stops the shard of even partitions.
static STOPPED: AtomicBool = AtomicBool::new(true);
/// Every event written: (weir partition, value).
static WRITTEN: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

/// The shard a partition's events go to (source 0: `partition % shards`,
/// `weir_engine::assign`).
fn shard_of(partition: u32) -> usize {
    weir_engine::assign::shard_for_partition(0, partition, SHARDS)
}

/// Blocks its shard's thread while [`STOPPED`] is set, on a batch of shard
/// 0's partitions; passes everything on.
struct StopShardZero;

#[async_trait(?Send)]
impl Step for StopShardZero {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        if input.iter().any(|e| shard_of(e.origin.partition) == 0) {
            while STOPPED.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for event in input.drain(..) {
            output.emit(event);
        }
    }
}

#[derive(Debug)]
struct StopShardZeroFactory;

impl StepFactory for StopShardZeroFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(StopShardZero))
    }
}

/// Records every event it writes in [`WRITTEN`].
struct RecordSink;

#[async_trait]
impl Sink for RecordSink {
    async fn write(&mut self, events: &[Event]) -> weir_engine::Result<()> {
        let mut written = WRITTEN.lock().unwrap();
        for e in events {
            let value = String::from_utf8_lossy(&e.value).into_owned();
            written.push((e.origin.partition, value));
        }
        Ok(())
    }
}

fn record_sink(_: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    Ok(Box::new(RecordSink))
}

/// Events written so far of shard 0's partitions and of shard 1's.
fn written_by_shard() -> (usize, usize) {
    let written = WRITTEN.lock().unwrap();
    let zero = written.iter().filter(|(p, _)| shard_of(*p) == 0).count();
    (zero, written.len() - zero)
}

#[test]
fn a_stopped_shard_does_not_stop_the_other_shards_partitions() {
    metrics();
    let broker = Broker::start();
    broker.create_topic("in", PARTITIONS);
    // the same number of events in every partition: each shard's four
    // partitions (ids split by `shard_of`) hold half of them
    let n = 40_000usize;
    broker.produce_to_partitions(
        "in",
        (0..n).map(|i| ((i % PARTITIONS as usize) as i32, format!("{{\"id\":{i}}}"))),
    );

    let mut registry = weir::registry();
    registry.step("stop-shard-zero", |_, _| Ok(Arc::new(StopShardZeroFactory)));
    registry.sink("record", record_sink);
    let source = ComponentConfig::from_toml(
        "in",
        "kafka",
        &format!(
            "brokers = \"{}\"\ntopics = [\"in\"]\ngroup = \"slow-shard\"\nbatch = {{ max_events = 100, max_wait = \"20ms\" }}\n",
            broker.bootstrap
        ),
    )
    .unwrap();
    let step = ComponentConfig::from_toml("stop", "stop-shard-zero", "").unwrap();
    let sink = ComponentConfig::from_toml("out", "record", "").unwrap();
    let mut config = PipelineConfig::new_in_code(vec![source], vec![step], vec![sink]);
    config.pipeline.name = "kafka-slow-shard".into();
    config.pipeline.shards = Some(SHARDS);
    config.queues.inbox_max_events = 1_000;
    config.checkpoint.interval = Duration::from_millis(100);
    config.checkpoint.dir = tempfile::tempdir().unwrap().keep();
    let running = common::in_process::start(&config, &registry);

    // shard 0 is stopped: every event of shard 1's partitions is written
    let started = Instant::now();
    let half = n / 2;
    while written_by_shard().1 < half {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "shard 1's partitions stuck behind the stopped shard: {:?} written (shard 0, shard 1)",
            written_by_shard()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "shard 0 stopped: all {half} events of shard 1 written after {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        written_by_shard(),
        (0, half),
        "the stopped shard wrote nothing, the other nothing twice"
    );
    // each of the stopped shard's four partitions has more than its inbox
    // and a batch can take: every one of them ends up held
    let started = Instant::now();
    while metric("weir_kafka_partition_holds_total{source=\"in\"}") < 4.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} partitions of the stopped shard held, expected 4",
            metric("weir_kafka_partition_holds_total{source=\"in\"}")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // shard 0 runs again: everything flows, once
    STOPPED.store(false, Ordering::Relaxed);
    let started = Instant::now();
    while WRITTEN.lock().unwrap().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {n} written after shard 0 ran again",
            WRITTEN.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = running.stop();
    assert!(report.drained);
    assert_eq!(written_by_shard(), (half, half));
    let written = WRITTEN.lock().unwrap();
    let unique: HashSet<&String> = written.iter().map(|(_, v)| v).collect();
    assert_eq!(unique.len(), n, "every event was written");
    assert_eq!(written.len(), n, "{} duplicates", written.len() - n);
}
