//! `weir bench SCENARIO`: throughput of a pipeline against a baseline
//! measured in the same process run, with a progress bar while it runs, a
//! table at the end, and with `--json` one JSON object as the last line.

mod baseline;
mod count_sink;
mod dev_server;
mod http;
mod kafka;
mod nats;
mod postgres;
mod processes;
mod progress;
mod report;
mod scenario;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use weir_config::{ComponentConfig, PipelineConfig};
use weir_engine::{shutdown_channel, Pipeline};

pub use report::{Baseline, BenchReport};
pub use scenario::{Scenario, SCENARIOS};

/// Arguments of `weir bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The scenario: passthrough, json-map, jq-map, wasm-map, python-map,
    /// node-map, kafka, kafka-to-kafka, kafka-scale,
    /// kafka-exactly-once, kafka-streams, jetstream, jetstream-scale, nats, cdc or http.
    pub scenario: String,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Events to push through (default depends on the scenario).
    #[arg(long)]
    pub events: Option<u64>,
    /// Seconds each side of a timed scenario runs (`http`: default 10).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Client connections (`http`: default 64).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Shards (default: one per core).
    #[arg(long)]
    pub shards: Option<usize>,
    /// `kafka-to-kafka`: events per second of the latency run (default:
    /// half the maximum rate just measured).
    #[arg(long)]
    pub latency_rate: Option<f64>,
    /// Kafka scenarios: bootstrap brokers to use; without it a dev broker
    /// is started (scripts/kafka-dev.sh: needs a JDK and Maven) and stopped.
    #[arg(long)]
    pub brokers: Option<String>,
    /// NATS and cdc scenarios: server URL to use; without it a nats-server
    /// (scripts/nats-dev.sh: needs Python 3 with pip) or a Postgres cluster
    /// (scripts/pg-dev.sh: needs Debian's postgresql) is started and stopped.
    #[arg(long)]
    pub url: Option<String>,
}

/// Runs the command.
pub fn bench(args: BenchArgs) -> ExitCode {
    crate::observability::init_logging();
    if kafka::SCENARIOS.contains(&args.scenario.as_str()) {
        return finish(kafka::run(&args.scenario, &args), &args);
    }
    if nats::SCENARIOS.contains(&args.scenario.as_str()) {
        return finish(nats::run(&args.scenario, &args), &args);
    }
    if postgres::SCENARIOS.contains(&args.scenario.as_str()) {
        return finish(postgres::run(&args.scenario, &args), &args);
    }
    if http::SCENARIOS.contains(&args.scenario.as_str()) {
        return finish(http::run(&args.scenario, &args), &args);
    }
    let Some(scenario) = SCENARIOS.iter().find(|s| s.name == args.scenario) else {
        let known: Vec<&str> = SCENARIOS
            .iter()
            .map(|s| s.name)
            .chain(kafka::SCENARIOS.iter().copied())
            .chain(nats::SCENARIOS.iter().copied())
            .chain(postgres::SCENARIOS.iter().copied())
            .chain(http::SCENARIOS.iter().copied())
            .collect();
        eprintln!(
            "error: unknown scenario `{}`; known scenarios: {}",
            args.scenario,
            known.join(", ")
        );
        return ExitCode::from(2);
    };
    finish(run(scenario, &args), &args)
}

fn finish(result: Result<BenchReport, String>, args: &BenchArgs) -> ExitCode {
    match result {
        Ok(report) => {
            report.print_table();
            if args.json {
                println!("{}", report.to_json());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one scenario: the baseline first, then weir, in this process.
pub fn run(scenario: &Scenario, args: &BenchArgs) -> Result<BenchReport, String> {
    let events = args.events.unwrap_or(scenario.default_events);
    let shards = args
        .shards
        .unwrap_or_else(|| weir_engine::shard::available_cores().len())
        .max(1);
    // the recorder production runs with, so its cost is in the figure
    crate::observability::init_metrics();

    eprintln!("{}: baseline ({})…", scenario.name, scenario.baseline_name);
    let cpu = report::cpu_seconds();
    let baseline_eps = (scenario.baseline)(events, shards)?;
    let baseline_cpu = report::cpu_seconds() - cpu;

    let config = pipeline_config(scenario, events, shards, None)?;
    let cpu = report::cpu_seconds();
    let (seconds, latency) = run_pipeline(scenario.name, &config, events)?;
    let cpu = report::cpu_seconds() - cpu;
    let rss_peak_bytes = report::peak_rss_bytes();
    let events_per_sec = events as f64 / seconds;
    let mut extra = serde_json::Map::new();
    extra.insert(
        "cpu_ns_per_event".into(),
        serde_json::json!(report::ns_per_event(cpu, events).round()),
    );
    extra.insert(
        "baseline_cpu_ns_per_event".into(),
        serde_json::json!(report::ns_per_event(baseline_cpu, events).round()),
    );
    half_load_latency(scenario, events, events_per_sec, shards, &mut extra)?;
    Ok(BenchReport {
        scenario: scenario.name.to_string(),
        events,
        seconds,
        events_per_sec,
        baseline: Baseline {
            name: scenario.baseline_name.to_string(),
            events_per_sec: baseline_eps,
        },
        ratio: events_per_sec / baseline_eps,
        rss_peak_bytes,
        p50_us: latency.quantile_micros(0.50),
        p99_us: latency.quantile_micros(0.99),
        shards,
        extra,
    })
}

/// How long the half-load run lasts: long enough for a stable p99.
const HALF_LOAD_SECONDS: f64 = 5.0;

/// Runs the scenario's pipeline again with the generator paced at half the
/// rate just measured (for 5 s, at most the full run's events), and records its latencies (`half_load_rate`,
/// `half_load_p50_us`, `half_load_p99_us`): the latency a user sees below
/// saturation, where the full-speed run measures queueing.
fn half_load_latency(
    scenario: &Scenario,
    full_events: u64,
    full_rate: f64,
    shards: usize,
    extra: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let rate = (full_rate / 2.0).max(1.0);
    let events = ((rate * HALF_LOAD_SECONDS) as u64).clamp(1, full_events);
    let config = pipeline_config(scenario, events, shards, Some(rate))?;
    let (_, latency) = run_pipeline("half load", &config, events)?;
    extra.insert("half_load_rate".into(), serde_json::json!(rate.round()));
    extra.insert(
        "half_load_p50_us".into(),
        serde_json::json!(latency.quantile_micros(0.50)),
    );
    extra.insert(
        "half_load_p99_us".into(),
        serde_json::json!(latency.quantile_micros(0.99)),
    );
    Ok(())
}

/// The baseline of `wasm-map`, `python-map` and `node-map`: the `json-map` scenario's pipeline.
pub fn native_json_map(events: u64, shards: usize) -> Result<f64, String> {
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.name == "json-map")
        .ok_or("no json-map scenario")?;
    let config = pipeline_config(scenario, events, shards, None)?;
    let (seconds, _) = run_pipeline("json-map (baseline)", &config, events)?;
    Ok(events as f64 / seconds)
}

/// Runs a generator pipeline to its end; returns the seconds it took and
/// its latency histogram.
fn run_pipeline(
    name: &'static str,
    config: &PipelineConfig,
    events: u64,
) -> Result<(f64, Arc<weir_engine::LatencyHistogram>), String> {
    let pipeline = Pipeline::build(config, &crate::registry()).map_err(|d| d.to_string())?;
    let latency = pipeline.latency();
    report::reset_peak_rss();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-io")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let progress = progress::Progress::start(
        name,
        events,
        Arc::clone(&latency),
        config.sources[0].batch.max_events,
    );
    let started = Instant::now();
    let (trigger, _) = shutdown_channel();
    runtime
        .block_on(pipeline.run(trigger))
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    Ok((seconds, latency))
}

/// The scenario's pipeline over `events` events, the generator paced at
/// `rate` events per second if given.
fn pipeline_config(
    scenario: &Scenario,
    events: u64,
    shards: usize,
    rate: Option<f64>,
) -> Result<PipelineConfig, String> {
    let pace = rate.map_or_else(String::new, |r| format!("rate = {r:.1}\n"));
    let source = ComponentConfig::from_toml(
        "generator",
        "generator",
        &format!("count = {events}\npayload = '{}'\n{pace}", scenario.payload),
    )
    .map_err(|d| d.to_string())?;
    let steps = match scenario.step {
        Some((kind, options)) => {
            vec![ComponentConfig::from_toml(kind, kind, options).map_err(|d| d.to_string())?]
        }
        None => Vec::new(),
    };
    let sink =
        ComponentConfig::from_toml("blackhole", "blackhole", "").map_err(|d| d.to_string())?;
    let mut config = PipelineConfig::new_in_code(vec![source], steps, vec![sink]);
    config.pipeline.name = format!("bench-{}", scenario.name);
    config.pipeline.shards = Some(shards);
    // nothing to resume: keep benchmark checkpoints out of the working tree
    config.checkpoint.dir = std::env::temp_dir().join("weir-bench-checkpoints");
    Ok(config)
}
