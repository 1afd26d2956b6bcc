//! `kafka-exactly-once`: what transactions cost. The same preloaded topic
//! goes through `kafka → json-add-field → kafka` twice in one run: first
//! at-least-once (the baseline), then exactly-once (the source's offsets
//! committed in the sink's transactions, one per checkpoint interval).
//! Both are timed from the first record written to the output topic until
//! the group committed every offset — for the exactly-once run that is
//! when the last record became visible to a `read_committed` reader — so
//! group joins are not in the figures, and both include up to one
//! checkpoint interval of commit lag.

use std::time::{Duration, Instant};

use serde_json::json;
use weir_config::{ComponentConfig, PipelineConfig};

use super::{cpu_seconds, ns_per_event, raw, run_weir, PARTITIONS};
use crate::bench::report::{Baseline, BenchReport};

/// Runs both passes over `input` (already holding `events` events).
pub(super) fn run(
    b: &str,
    input: &str,
    events: u64,
    shards: usize,
    id: &str,
) -> Result<BenchReport, String> {
    eprintln!("kafka-exactly-once: baseline (at-least-once kafka → json-add-field → kafka)…");
    let (baseline, baseline_cpu) = pass(b, input, events, shards, &format!("{id}-alo"), None)?;
    let baseline_eps = events as f64 / baseline.seconds;
    eprintln!("kafka-exactly-once: weir with transactions…");
    let transactional_id = format!("weir-bench-{id}");
    let (run, cpu) = pass(
        b,
        input,
        events,
        shards,
        &format!("{id}-eos"),
        Some(&transactional_id),
    )?;
    let mut report = run.report(
        "kafka-exactly-once",
        events,
        run.seconds,
        Baseline {
            name: "weir at-least-once on the same topic and pipeline, until the group committed every offset".into(),
            events_per_sec: baseline_eps,
        },
        shards,
        (ns_per_event(cpu, events), ns_per_event(baseline_cpu, events)),
    );
    report
        .extra
        .insert("epoch_ms".into(), json!(EPOCH.as_millis() as u64));
    report.extra.insert(
        "note".into(),
        json!("both passes timed from the first record in the output topic to the group's commit of every offset"),
    );
    Ok(report)
}

/// The checkpoint interval of both passes: an epoch of the exactly-once one.
const EPOCH: Duration = Duration::from_secs(1);

/// One pass with group `weir-bench-{suffix}` into a new topic; exactly-once
/// when a transactional id is given. Returns the run and its CPU seconds.
fn pass(
    b: &str,
    input: &str,
    events: u64,
    shards: usize,
    suffix: &str,
    transactional_id: Option<&str>,
) -> Result<(super::WeirRun, f64), String> {
    let out = format!("weir-bench-out-{suffix}");
    raw::create_topic(b, &out, PARTITIONS)?;
    let group = format!("weir-bench-{suffix}");
    let config = pipeline(b, input, &out, &group, shards, transactional_id)?;
    let offsets = raw::consumer(b, &group)?;
    let written = super::Watermarks::new(b, &out)?;
    let mut first: Option<Instant> = None;
    let mut last_check = Instant::now();
    let cpu = cpu_seconds();
    let run = run_weir(&config, || {
        // each check asks the broker: keep the measurement's own load low
        if last_check.elapsed() < Duration::from_millis(50) {
            return None;
        }
        last_check = Instant::now();
        if first.is_none() {
            // the first record, in an open transaction or not
            if written.total() > 0 {
                first = Some(Instant::now());
            }
            return None;
        }
        let committed = super::scale::committed(&offsets, input, PARTITIONS);
        (committed >= events as i64).then_some(first).flatten()
    })?;
    Ok((run, cpu_seconds() - cpu))
}

/// `kafka` (maybe exactly-once) → `json-add-field` → `kafka`.
fn pipeline(
    b: &str,
    input: &str,
    out: &str,
    group: &str,
    shards: usize,
    transactional_id: Option<&str>,
) -> Result<PipelineConfig, String> {
    let mut source = format!("brokers = \"{b}\"\ntopics = [\"{input}\"]\ngroup = \"{group}\"\n");
    let mut sink = format!("brokers = \"{b}\"\ntopic = \"{out}\"\n");
    if let Some(id) = transactional_id {
        source.push_str("exactly_once_sink = \"out\"\n");
        sink.push_str(&format!("transactional_id = \"{id}\"\n"));
    }
    let source = ComponentConfig::from_toml("in", "kafka", &source).map_err(|d| d.to_string())?;
    let step = ComponentConfig::from_toml(
        "json-add-field",
        "json-add-field",
        "field = \"seen\"\nvalue = true\n",
    )
    .map_err(|d| d.to_string())?;
    let sink = ComponentConfig::from_toml("out", "kafka", &sink).map_err(|d| d.to_string())?;
    let mut config = PipelineConfig::new_in_code(vec![source], vec![step], vec![sink]);
    config.pipeline.name = format!("bench-{group}");
    config.pipeline.shards = Some(shards);
    config.checkpoint.interval = EPOCH;
    config.checkpoint.dir = std::env::temp_dir().join("weir-bench-checkpoints");
    Ok(config)
}
