//! `weir bench kafka-streams`: weir against the engine a Kafka user would
//! pick instead. A Kafka Streams 4.1 application (benches/kafka-streams: two
//! stream threads; Jackson parse, set a field, serialize) and a `weir run`
//! process of the same work (kafka → json-add-field → kafka) read the same
//! preloaded topic one after the other, each in a fresh group and into a
//! fresh topic; then both again with no step (passthrough). Each run is
//! timed from the process's start to the last record in its output topic,
//! so startup and the group join are in the figure; the time to the first
//! output record and the rate from the first to the last are reported
//! separately.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use super::{raw, Watermarks, PARTITIONS};
use crate::bench::processes::{run_commands, weir_run, ProcessRun};
use crate::bench::report::{Baseline, BenchReport};

/// Stream threads of the Kafka Streams application (one per core here).
const STREAM_THREADS: usize = 2;

/// The two kinds of work compared.
const MODES: [&str; 2] = ["json", "passthrough"];

/// Runs the scenario on the preloaded `input`.
pub fn run(b: &str, input: &str, events: u64, id: &str) -> Result<BenchReport, String> {
    let classpath = build()?;
    let dir = std::env::temp_dir().join(format!("weir-bench-streams-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    super::scale::warm_up(b, input)?;
    let mut runs = Vec::new();
    for mode in MODES {
        eprintln!("kafka-streams: Kafka Streams ({mode})…");
        let out = format!("weir-bench-streams-out-{mode}-{id}");
        raw::create_topic(b, &out, PARTITIONS)?;
        let mut java = Command::new("java");
        java.arg("-cp")
            .arg(&classpath)
            .arg("weir.bench.StreamsApp")
            .args([
                b,
                input,
                &out,
                &format!("weir-bench-streams-{mode}-{id}"),
                mode,
                &STREAM_THREADS.to_string(),
            ]);
        let streams = timed(b, &out, java, events)?;

        eprintln!("kafka-streams: weir ({mode})…");
        let out = format!("weir-bench-weir-out-{mode}-{id}");
        raw::create_topic(b, &out, PARTITIONS)?;
        let file = pipeline_file(&dir, b, input, &out, mode, id)?;
        let weir = timed(b, &out, weir_run(&dir, &file)?, events)?;
        runs.push((streams, weir));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report(events, &runs))
}

/// Builds the application (once; scripts/kafka-streams-bench.sh) and
/// returns its class path.
fn build() -> Result<String, String> {
    let script = Path::new("scripts/kafka-streams-bench.sh");
    if !script.exists() {
        return Err(format!(
            "{} not found: run the kafka-streams scenario from the repository's root",
            script.display()
        ));
    }
    let out = Command::new("bash")
        .arg(script)
        .arg("classpath")
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "building the Kafka Streams application failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `command` until `out` holds `events` records.
fn timed(b: &str, out: &str, command: Command, events: u64) -> Result<ProcessRun, String> {
    let watcher = Watermarks::new(b, out)?;
    run_commands(vec![command], events, || watcher.total())
}

/// weir's pipeline file for `mode`.
fn pipeline_file(
    dir: &Path,
    b: &str,
    input: &str,
    out: &str,
    mode: &str,
    id: &str,
) -> Result<std::path::PathBuf, String> {
    let step = if mode == "json" {
        "[[steps]]\nname = \"add\"\ntype = \"json-add-field\"\nfield = \"seen\"\nvalue = true\n"
    } else {
        ""
    };
    let text = format!(
        "[pipeline]\nname = \"peer-{mode}\"\n\
         [sources.in]\ntype = \"kafka\"\nbrokers = \"{b}\"\ntopics = [\"{input}\"]\ngroup = \"weir-bench-peer-{mode}-{id}\"\n\
         {step}\
         [sinks.out]\ntype = \"kafka\"\nbrokers = \"{b}\"\ntopic = \"{out}\"\n"
    );
    let file = dir.join(format!("peer-{mode}.toml"));
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(file)
}

/// The report: weir against Kafka Streams on the json work, passthrough
/// and the startup times in `extra`.
fn report(events: u64, runs: &[(ProcessRun, ProcessRun)]) -> BenchReport {
    let (streams, weir) = runs[0];
    let mut extra = serde_json::Map::new();
    for (mode, (s, w)) in MODES.iter().zip(runs) {
        let m = mode.replace('-', "_");
        extra.insert(format!("{m}_weir_events_per_sec"), json!(w.overall.round()));
        extra.insert(
            format!("{m}_streams_events_per_sec"),
            json!(s.overall.round()),
        );
        extra.insert(format!("{m}_ratio"), json!(w.overall / s.overall));
        extra.insert(
            format!("{m}_weir_steady_events_per_sec"),
            json!(w.steady.round()),
        );
        extra.insert(
            format!("{m}_streams_steady_events_per_sec"),
            json!(s.steady.round()),
        );
        extra.insert(format!("{m}_steady_ratio"), json!(w.steady / s.steady));
        extra.insert(
            format!("{m}_weir_first_output_seconds"),
            json!(w.first_progress),
        );
        extra.insert(
            format!("{m}_streams_first_output_seconds"),
            json!(s.first_progress),
        );
        extra.insert(
            format!("{m}_weir_cpu_ns_per_event"),
            json!(w.cpu_ns.round()),
        );
        extra.insert(
            format!("{m}_streams_cpu_ns_per_event"),
            json!(s.cpu_ns.round()),
        );
        extra.insert(format!("{m}_weir_rss_peak_bytes"), json!(w.rss));
        extra.insert(format!("{m}_streams_rss_peak_bytes"), json!(s.rss));
    }
    extra.insert("stream_threads".into(), json!(STREAM_THREADS));
    extra.insert(
        "note".into(),
        json!("events_per_sec: process start to the last output record (startup and group join included); *_steady_*: first output record to the last; latencies are not measured here (kafka-to-kafka measures them)"),
    );
    BenchReport {
        scenario: "kafka-streams".into(),
        events,
        seconds: events as f64 / weir.overall,
        events_per_sec: weir.overall,
        baseline: Baseline {
            name: format!("a Kafka Streams 4.1 application ({STREAM_THREADS} stream threads, Jackson) doing the same parse, add-field, serialize"),
            events_per_sec: streams.overall,
        },
        ratio: weir.overall / streams.overall,
        rss_peak_bytes: weir.rss,
        p50_us: 0,
        p99_us: 0,
        shards: weir_engine::shard::available_cores().len().max(1),
        extra,
    }
}
