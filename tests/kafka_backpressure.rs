//! The memory bound with many Kafka partitions: a `kafka` source reading 64
//! partitions of a real broker into a stalled sink holds at most the
//! engine's bounded queues plus, per partition, the batch it is building and
//! one batch a full shard refused (it pauses the partition in librdkafka at
//! the first refusal). Before, a partition parked four refused batches
//! before pausing, so the source held 64 × 5 batches beside the queues.
//! Then the sink is released and every event is written exactly once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::kafka::Broker;
use common::metrics::{metric, recorder as metrics};
use common::stall_sink;

const PARTITIONS: i32 = 64;
const BATCH: usize = 100;

#[test]
fn sixty_four_partitions_into_a_stalled_sink_stay_within_the_memory_bound() {
    metrics();
    let broker = Broker::start();
    broker.create_topic("in", PARTITIONS);
    let n = 64_000usize;
    let pad = "x".repeat(80);
    broker.produce(
        "in",
        (0..n).map(|i| {
            (
                Some(format!("k{}", i % 640)),
                format!("{{\"id\":{i},\"pad\":\"{pad}\"}}"),
            )
        }),
    );

    let (registry, config) = stall_sink::pipeline(
        "kafka-memory",
        "kafka",
        &format!(
            "brokers = \"{}\"\ntopics = [\"in\"]\ngroup = \"memory\"",
            broker.bootstrap
        ),
        BATCH,
        1_000,
        500,
    );
    let running = common::in_process::start(&config, &registry);

    // wait until the source stops reading: dispatched and held both steady
    let read = || metric("weir_source_events_total{source=\"in\"}");
    let held = || metric("weir_source_held_events{source=\"in\"}");
    let started = Instant::now();
    let mut last = (-1.0, -1.0);
    let mut peak_held: f64 = 0.0;
    loop {
        std::thread::sleep(Duration::from_millis(1_000));
        let now = (read(), held());
        peak_held = peak_held.max(now.1);
        if now == last && now.0 > 0.0 {
            break;
        }
        last = now;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the source never settled: {now:?}"
        );
    }
    let (dispatched, held_now) = last;
    eprintln!(
        "stalled: {dispatched} dispatched, {held_now} held by the source (peak {peak_held}), after {:?}",
        started.elapsed()
    );
    // the engine's bound: every shard inbox full, the sink queue full, one
    // batch per lane being worked on
    let engine_bound = (2 * 1_000 + 500 + 4 * BATCH) as f64;
    assert!(
        dispatched <= engine_bound,
        "{dispatched} events dispatched into a stalled sink, bound {engine_bound}"
    );
    // the source's own share: per partition one batch being built and one refused
    let source_bound = (PARTITIONS as usize * 2 * BATCH) as f64;
    assert!(
        peak_held <= source_bound,
        "the source held {peak_held} events (now {held_now}) with {PARTITIONS} partitions, bound {source_bound}"
    );
    assert!(
        metric("weir_source_pauses_total{source=\"in\"}") >= 1.0,
        "the source never met a full shard"
    );
    // a stalled shard never makes room within the source's patience: its
    // partitions end up paused in librdkafka too
    assert!(
        metric("weir_kafka_partition_holds_total{source=\"in\"}") >= 1.0,
        "no partition of a stalled shard was held"
    );
    assert!(stall_sink::written().is_empty());

    // release: everything flows, once
    stall_sink::release();
    let started = Instant::now();
    while stall_sink::written().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {n} written after the release",
            stall_sink::written().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = running.stop();
    assert!(report.drained);
    let written = stall_sink::written();
    let unique: HashSet<&String> = written.iter().collect();
    assert_eq!(unique.len(), n, "every event was written");
    assert_eq!(written.len(), n, "{} duplicates", written.len() - n);
}
