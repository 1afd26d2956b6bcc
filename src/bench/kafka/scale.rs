//! `weir bench kafka-scale`: scale-out on a Kafka consumer group. The same
//! preloaded topic (8 partitions) is read by 1, then 2, then 3 `weir run`
//! processes of one pipeline file (kafka → json-add-field → blackhole), each
//! time in a fresh group; a run is timed from the processes' start to the
//! group's committed offsets covering every event, so startup and group
//! joins (a rebalance per member) are in the figures. The baseline is the
//! single process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use super::raw;
use crate::bench::report::{Baseline, BenchReport};

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Events per second from the first commit to the last (the group
    /// settled, every process reading).
    steady: f64,
    /// Events per second from the processes' start to the last commit.
    overall: f64,
    /// Seconds from the start to the group's first commit.
    first_commit: f64,
    /// Peak resident memory of the largest process, bytes.
    rss: u64,
    /// CPU per event over all processes, ns.
    cpu_ns: f64,
}

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
    let mut runs: Vec<Run> = Vec::new();
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
    let (one_process, three) = (runs[0], runs[2]);
    let mut extra = serde_json::Map::new();
    for (i, r) in runs.iter().enumerate() {
        let n = i + 1;
        extra.insert(
            format!("processes_{n}_events_per_sec"),
            json!(r.steady.round()),
        );
        extra.insert(
            format!("processes_{n}_ratio"),
            json!(r.steady / one_process.steady),
        );
        extra.insert(
            format!("processes_{n}_start_to_end_events_per_sec"),
            json!(r.overall.round()),
        );
        extra.insert(
            format!("processes_{n}_first_commit_s"),
            json!(r.first_commit),
        );
        extra.insert(format!("processes_{n}_rss_peak_bytes"), json!(r.rss));
        extra.insert(
            format!("processes_{n}_cpu_ns_per_event"),
            json!(r.cpu_ns.round()),
        );
    }
    extra.insert("cpu_ns_per_event".into(), json!(three.cpu_ns.round()));
    extra.insert(
        "baseline_cpu_ns_per_event".into(),
        json!(one_process.cpu_ns.round()),
    );
    extra.insert(
        "cores".into(),
        json!(weir_engine::shard::available_cores().len()),
    );
    extra.insert(
        "note".into(),
        json!("events_per_sec: from the group's first commit to the last (3 processes); start_to_end includes startup and joins"),
    );
    Ok(BenchReport {
        scenario: "kafka-scale".into(),
        events,
        seconds: events as f64 / three.steady,
        events_per_sec: three.steady,
        baseline: Baseline {
            name: "one weir process of the same pipeline file, from start to the last commit"
                .into(),
            events_per_sec: one_process.steady,
        },
        ratio: three.steady / one_process.steady,
        rss_peak_bytes: three.rss.max(one_process.rss),
        p50_us: 0,
        p99_us: 0,
        shards: 0,
        extra,
    })
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
) -> Result<Run, String> {
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
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let watcher = raw::consumer(b, &group)?;
    let started = Instant::now();
    let mut children: Vec<Child> = (0..processes)
        .map(|_| {
            Command::new(&exe)
                .arg("run")
                .arg(&file)
                .current_dir(dir)
                .env("WEIR_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut first_commit: Option<(Instant, i64)> = None;
    let mut peak_rss = 0u64;
    let deadline = started + Duration::from_secs(600);
    let result = loop {
        let committed = committed(&watcher, input, partitions);
        if committed > 0 && first_commit.is_none() {
            first_commit = Some((Instant::now(), committed));
        }
        for child in &children {
            peak_rss = peak_rss.max(peak_rss_of(child.id()));
        }
        if committed >= events as i64 {
            break Ok(Instant::now());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "{processes} processes committed {committed} of {events} in 600 s"
            ));
        }
        if let Some(exited) = children
            .iter_mut()
            .find_map(|c| c.try_wait().ok().flatten())
        {
            break Err(format!("a weir process exited early: {exited}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut cpu = 0.0;
    for child in &mut children {
        cpu += cpu_seconds_of(child.id());
        // SAFETY: kill sends SIGTERM to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for child in &mut children {
        let _ = child.wait();
    }
    let end = result?;
    let (first_at, first_count) = first_commit.unwrap_or((started, 0));
    let steady_seconds = (end - first_at).as_secs_f64().max(1e-3);
    Ok(Run {
        steady: (events as i64 - first_count).max(1) as f64 / steady_seconds,
        overall: events as f64 / (end - started).as_secs_f64(),
        first_commit: (first_at - started).as_secs_f64(),
        rss: peak_rss,
        cpu_ns: cpu * 1e9 / events as f64,
    })
}

/// Commits once in a throwaway group, so the broker's offsets topic exists.
fn warm_up(b: &str, input: &str) -> Result<(), String> {
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
fn committed(consumer: &rdkafka::consumer::BaseConsumer, topic: &str, partitions: i32) -> i64 {
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

/// Peak resident memory of process `pid` (`VmHWM`), in bytes.
fn peak_rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// CPU seconds (user + system) process `pid` used so far.
fn cpu_seconds_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // after the command's closing parenthesis: state is field 3, utime 14, stime 15
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}
