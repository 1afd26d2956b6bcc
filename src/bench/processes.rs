//! Scale-out runs of `weir bench`: 1, then 2, then 3 `weir run` processes
//! of one pipeline file sharing a source's work through the engine that
//! already shares it (a Kafka group, a JetStream durable consumer), each
//! run timed by the source's own progress (committed offsets, the ack
//! floor), with CPU and peak memory read from `/proc`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::report::{Baseline, BenchReport};

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProcessRun {
    /// Events per second from the first progress to the last (every
    /// process reading).
    pub(super) steady: f64,
    /// Events per second from the processes' start to the last progress.
    pub(super) overall: f64,
    /// Seconds from the start to the first progress.
    pub(super) first_progress: f64,
    /// Peak resident memory of the largest process, bytes.
    pub(super) rss: u64,
    /// CPU per event over all processes, ns.
    pub(super) cpu_ns: f64,
}

/// Starts `processes` `weir run FILE` in `dir` and samples `progress`
/// (events done, as the source's upstream counts them) until it reaches
/// `events`; then stops them with SIGTERM.
pub(super) fn run_processes(
    dir: &Path,
    file: &Path,
    processes: usize,
    events: u64,
    progress: impl FnMut() -> i64,
) -> Result<ProcessRun, String> {
    let commands = (0..processes)
        .map(|_| weir_run(dir, file))
        .collect::<Result<_, _>>()?;
    run_commands(commands, events, progress)
}

/// `weir run FILE` in `dir` (this executable), logging warnings only.
pub(super) fn weir_run(dir: &Path, file: &Path) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(file)
        .current_dir(dir)
        .env("WEIR_LOG", "warn");
    Ok(command)
}

/// Starts `commands` (their output discarded) and samples `progress`
/// until it reaches `events`; then stops them with SIGTERM.
pub(super) fn run_commands(
    commands: Vec<Command>,
    events: u64,
    mut progress: impl FnMut() -> i64,
) -> Result<ProcessRun, String> {
    let processes = commands.len();
    let started = Instant::now();
    let mut children: Vec<Child> = commands
        .into_iter()
        .map(|mut command| {
            command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {:?}: {e}", command.get_program()))
        })
        .collect::<Result<_, _>>()?;
    let mut first: Option<(Instant, i64)> = None;
    let mut peak_rss = 0u64;
    let deadline = started + Duration::from_secs(600);
    let result = loop {
        let done = progress();
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        for child in &children {
            peak_rss = peak_rss.max(peak_rss_of(child.id()));
        }
        if done >= events as i64 {
            break Ok(Instant::now());
        }
        if Instant::now() > deadline {
            break Err(format!(
                "{processes} processes finished {done} of {events} in 600 s"
            ));
        }
        if let Some(exited) = children
            .iter_mut()
            .find_map(|c| c.try_wait().ok().flatten())
        {
            break Err(format!("a process exited early: {exited}"));
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
    let (first_at, first_count) = first.unwrap_or((started, 0));
    let steady_seconds = (end - first_at).as_secs_f64().max(1e-3);
    Ok(ProcessRun {
        steady: (events as i64 - first_count).max(1) as f64 / steady_seconds,
        overall: events as f64 / (end - started).as_secs_f64(),
        first_progress: (first_at - started).as_secs_f64(),
        rss: peak_rss,
        cpu_ns: cpu * 1e9 / events as f64,
    })
}

/// The report of runs with 1, 2, 3… processes: the last against the first.
pub(super) fn scale_report(
    scenario: &str,
    events: u64,
    runs: &[ProcessRun],
    baseline: &str,
    note: &str,
) -> BenchReport {
    let (one, last) = (runs[0], runs[runs.len() - 1]);
    let mut extra = serde_json::Map::new();
    for (i, r) in runs.iter().enumerate() {
        let n = i + 1;
        extra.insert(
            format!("processes_{n}_events_per_sec"),
            json!(r.steady.round()),
        );
        extra.insert(format!("processes_{n}_ratio"), json!(r.steady / one.steady));
        extra.insert(
            format!("processes_{n}_start_to_end_events_per_sec"),
            json!(r.overall.round()),
        );
        extra.insert(
            format!("processes_{n}_first_progress_s"),
            json!(r.first_progress),
        );
        extra.insert(format!("processes_{n}_rss_peak_bytes"), json!(r.rss));
        extra.insert(
            format!("processes_{n}_cpu_ns_per_event"),
            json!(r.cpu_ns.round()),
        );
    }
    extra.insert("cpu_ns_per_event".into(), json!(last.cpu_ns.round()));
    extra.insert(
        "baseline_cpu_ns_per_event".into(),
        json!(one.cpu_ns.round()),
    );
    extra.insert(
        "cores".into(),
        json!(weir_engine::shard::available_cores().len()),
    );
    extra.insert("note".into(), json!(note));
    BenchReport {
        scenario: scenario.into(),
        events,
        seconds: events as f64 / last.steady,
        events_per_sec: last.steady,
        baseline: Baseline {
            name: baseline.into(),
            events_per_sec: one.steady,
        },
        ratio: last.steady / one.steady,
        rss_peak_bytes: last.rss.max(one.rss),
        p50_us: 0,
        p99_us: 0,
        shards: 0,
        extra,
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
