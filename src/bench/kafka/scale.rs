//! `weir bench kafka-scale`: scale-out on a Kafka consumer group. The same
//! preloaded topic (8 partitions) is read by 1, then 2, then 3 `weir run`
//! processes of one pipeline file (kafka → json-add-field → blackhole), each
//! time in a fresh group; a run is timed from the processes' start to the
//! group's committed offsets covering every event, so startup and group
//! joins (a rebalance per member) are in the figures. The baseline is the
//! single process.

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::raw;
use crate::bench::processes::{run_processes, scale_report, ProcessRun};
use crate::bench::report::BenchReport;

/// Runs the scenario on the preloaded `input`.
pub fn run(
    b: &str,
    input: &str,
    events: u64,
    partitions: i32,
    id: &str,
) -> Result<BenchReport, String> {
    let dir = std::env::temp_dir().join(format!("weir-bench-scale-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // the first group of a fresh broker waits for the offsets topic: make
    // it before the timed runs
    warm_up(b, input)?;
    let mut runs: Vec<ProcessRun> = Vec::new();
    for processes in 1..=3 {
        eprintln!("kafka-scale: {processes} process(es)…");
        runs.push(one(
            b,
            input,
            events,
            partitions,
            &dir,
            &format!("{id}-{processes}"),
            processes,
        )?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(scale_report(
        "kafka-scale",
        events,
        &runs,
        "one weir process of the same pipeline file, from start to the last commit",
        "events_per_sec: from the group's first commit to the last (3 processes); start_to_end includes startup and joins",
    ))
}

/// `processes` weir processes in group `weir-bench-scale-{tag}` until every
/// event is committed.
fn one(
    b: &str,
    input: &str,
    events: u64,
    partitions: i32,
    dir: &Path,
    tag: &str,
    processes: usize,
) -> Result<ProcessRun, String> {
    let group = format!("weir-bench-scale-{tag}");
    let file = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &file,
        format!(
            "[pipeline]\nname = \"scale-{tag}\"\n[sources.in]\ntype = \"kafka\"\nbrokers = \"{b}\"\n\
             topics = [\"{input}\"]\ngroup = \"{group}\"\n[[steps]]\ntype = \"json-add-field\"\n\
             name = \"add\"\nfield = \"seen\"\nvalue = true\n[sinks.out]\ntype = \"blackhole\"\n\
             [checkpoint]\ninterval = \"100ms\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let watcher = raw::consumer(b, &group)?;
    run_processes(dir, &file, processes, events, || {
        committed(&watcher, input, partitions)
    })
}

/// Commits once in a throwaway group, so the broker's offsets topic exists.
pub(super) fn warm_up(b: &str, input: &str) -> Result<(), String> {
    let consumer = raw::consumer(b, &format!("weir-bench-scale-warm-{}", raw::unique()))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(input, 0, Offset::Offset(0))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("warming up the group coordinator: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The sum of the group's committed offsets on `topic`.
pub(super) fn committed(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partitions: i32,
) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(list) => list
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .sum(),
        Err(_) => 0,
    }
}
