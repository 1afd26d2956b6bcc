//! The fault-injection harness of `tests/faults.rs`: its settings (cycles,
//! seed, freeze time, from the environment), a set of `weir run` members
//! killed and restarted at random moments, process memory, signals to a
//! server, and the one-line report each scenario prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{start_weir, stop_weir, Running};

/// How hard a run of the suite pushes: `WEIR_FAULT_CYCLES` kill -9 cycles
/// per system (3 by default, the CI run; 20 for the recorded long run),
/// `WEIR_FAULT_SEED` for the random moments (printed, so a failure can be
/// replayed), `WEIR_FAULT_FREEZE_SECS` for how long a server is stopped
/// with SIGSTOP (30 by default).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// kill -9 cycles per system.
    pub cycles: usize,
    /// The random generator's seed.
    pub seed: u64,
    /// How long a server stays frozen.
    pub freeze: Duration,
}

impl Settings {
    /// Reads the settings from the environment and prints them.
    pub fn from_env() -> Settings {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let seed = number("WEIR_FAULT_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
        let settings = Settings {
            cycles: number("WEIR_FAULT_CYCLES").unwrap_or(3) as usize,
            seed,
            freeze: Duration::from_secs(number("WEIR_FAULT_FREEZE_SECS").unwrap_or(30)),
        };
        eprintln!("fault settings: {settings:?} (replay with WEIR_FAULT_SEED={seed})");
        settings
    }

    /// The random generator for one scenario.
    pub fn rng(&self, scenario: u64) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.seed ^ scenario.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// A random duration between `low` and `high`.
pub fn between(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    let span = (high - low).as_millis() as u64;
    low + Duration::from_millis(rng.u64(0..=span))
}

/// `(resident, peak resident)` memory of process `pid` in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill only sends a signal; pids are of processes the test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// The pid written in `file`.
pub fn pid_in(file: &Path) -> u32 {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("reading the pid file {}: {e}", file.display()));
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", file.display()))
}

/// `pid` and every process below it (a server and its workers).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // the fields after the command's closing parenthesis: state, ppid, …
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !tree.contains(&child) {
                tree.push(child);
            }
        }
        i += 1;
    }
    tree
}

/// Several `weir run` processes of one pipeline (a file per member, for
/// its instance name and output), started, killed and restarted by index.
pub struct Members {
    dir: PathBuf,
    files: Vec<PathBuf>,
    running: Vec<Option<Running>>,
    /// The highest peak resident memory of any member so far, in KiB.
    pub peak_kib: u64,
    /// kill -9s so far.
    pub kills: usize,
    /// Members that exited on their own and were started again.
    pub exits: usize,
    /// Why each of them exited.
    pub exit_reasons: Vec<String>,
    /// Per member, an output file moved aside (to `NAME.RUN`) before each
    /// start, so a run never appends to a line a kill -9 cut short.
    pub outputs: Vec<PathBuf>,
    runs: usize,
}

impl Members {
    /// Members running `files` in `dir`, none started yet.
    pub fn new(dir: &Path, files: Vec<PathBuf>) -> Members {
        let running = files.iter().map(|_| None).collect();
        Members {
            dir: dir.to_path_buf(),
            files,
            running,
            peak_kib: 0,
            kills: 0,
            exits: 0,
            exit_reasons: Vec::new(),
            outputs: Vec::new(),
            runs: 0,
        }
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Starts member `i`.
    pub fn start(&mut self, i: usize) {
        assert!(self.running[i].is_none(), "member {i} runs already");
        if let Some(out) = self.outputs.get(i) {
            if out.exists() {
                let aside = PathBuf::from(format!("{}.{}", out.display(), self.runs));
                std::fs::rename(out, aside).unwrap();
            }
        }
        self.runs += 1;
        self.running[i] = Some(start_weir(&self.dir, &self.files[i]));
    }

    /// The pid of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.running[i].as_ref().map(|r| r.child.0.id())
    }

    /// The log of member `i`'s current run.
    pub fn log(&self, i: usize) -> String {
        self.running[i]
            .as_ref()
            .map(Running::log)
            .unwrap_or_default()
    }

    /// Notes the peak memory of every running member.
    pub fn sample_memory(&mut self) -> u64 {
        let mut now = 0;
        let pids: Vec<u32> = (0..self.len()).filter_map(|i| self.pid(i)).collect();
        for pid in pids {
            if let Some((rss, peak)) = memory_kib(pid) {
                self.peak_kib = self.peak_kib.max(peak);
                now = now.max(rss);
            }
        }
        now
    }

    /// kill -9 of member `i` (no drain, no final commit).
    pub fn kill_9(&mut self, i: usize) {
        self.sample_memory();
        let mut running = self.running[i].take().expect("member runs");
        running.child.0.kill().unwrap();
        running.child.0.wait().unwrap();
        self.kills += 1;
    }

    /// SIGTERM to member `i`; asserts that it drained and exited 0 (one
    /// that already exited on its own is counted as in [`Members::revive`]).
    pub fn terminate(&mut self, i: usize) {
        self.sample_memory();
        if self.reap(i) {
            return;
        }
        let running = self.running[i].take().expect("member runs");
        let (status, log) = stop_weir(running);
        assert!(status.success(), "member {i} exited {status:?}:\n{log}");
    }

    /// SIGTERM to every running member.
    pub fn terminate_all(&mut self) {
        for i in 0..self.len() {
            if self.running[i].is_some() {
                self.terminate(i);
            }
        }
    }

    /// The last `n` lines of every running member's log.
    pub fn tails(&self, n: usize) -> String {
        let mut out = String::new();
        for i in 0..self.len() {
            let log = self.log(i);
            let lines: Vec<&str> = log.lines().collect();
            out += &format!("--- member {i}\n");
            for l in &lines[lines.len().saturating_sub(n)..] {
                out += l;
                out.push('\n');
            }
        }
        out
    }

    /// [`wait_until`], with the members' last log lines when it times out,
    /// starting again members that exited ([`Members::revive`]).
    pub fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut() -> bool,
    ) -> Duration {
        let started = Instant::now();
        while !done() {
            self.revive();
            assert!(
                started.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}\n{}",
                self.tails(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// The supervisor (what Kubernetes or systemd do): starts again every
    /// member that exited on its own (see [`Members::reap`]).
    pub fn revive(&mut self) {
        for i in 0..self.len() {
            if self.reap(i) {
                eprintln!("member {i}: starting it again");
                self.start(i);
            }
        }
    }

    /// True when member `i` exited on its own: counted in `exits`, with the
    /// reason (its last error line) in `exit_reasons`. A member that exits 0
    /// on its own is a failure.
    fn reap(&mut self, i: usize) -> bool {
        let Some(status) = self.running[i]
            .as_mut()
            .and_then(|r| r.child.0.try_wait().unwrap())
        else {
            return false;
        };
        let log = self.running[i].take().unwrap().log();
        assert!(!status.success(), "member {i} stopped on its own:\n{log}");
        let reason = log
            .lines()
            .rev()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
            .to_string();
        eprintln!("member {i} exited ({status:?}): {reason}");
        self.exits += 1;
        self.exit_reasons.push(reason);
        true
    }
}

/// Waits until `done`, at most `limit`; panics naming `what`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// What one scenario measured, printed as one line of JSON
/// (`fault report: {...}`) and appended to the file `WEIR_FAULT_REPORT`
/// names, if set; docs/reliability.md records these lines.
#[derive(Debug, Default)]
pub struct Report {
    /// The system and fault, e.g. `kafka kill -9 cycles`.
    pub scenario: String,
    /// kill -9s of weir processes.
    pub kills: usize,
    /// Distinct input events.
    pub events: usize,
    /// Input events missing from the output.
    pub lost: usize,
    /// Output events beyond the first copy of each.
    pub duplicated: usize,
    /// Highest peak resident memory of a weir process, in MiB.
    pub peak_rss_mib: u64,
    /// Time from a fault until processing resumed (see the scenario), in ms: each.
    pub resume_ms: Vec<u128>,
    /// Members that exited on their own (and were started again).
    pub exits: usize,
    /// Further figures of the scenario.
    pub extra: Vec<(String, String)>,
}

impl Report {
    /// Prints the report and appends it to `WEIR_FAULT_REPORT`.
    pub fn emit(&self) {
        let resume_max = self.resume_ms.iter().max().copied().unwrap_or(0);
        let resume_mean = if self.resume_ms.is_empty() {
            0
        } else {
            self.resume_ms.iter().sum::<u128>() / self.resume_ms.len() as u128
        };
        let mut line = serde_json::json!({
            "scenario": self.scenario,
            "kills": self.kills,
            "events": self.events,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "peak_rss_mib": self.peak_rss_mib,
            "resume_mean_ms": resume_mean,
            "resume_max_ms": resume_max,
            "exits": self.exits,
        });
        for (k, v) in &self.extra {
            line[k] = serde_json::Value::String(v.clone());
        }
        eprintln!("fault report: {line}");
        if let Ok(path) = std::env::var("WEIR_FAULT_REPORT") {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("WEIR_FAULT_REPORT can be written");
            writeln!(f, "{line}").unwrap();
        }
    }
}

/// Counts the ids in `range` of `ids` against that range: (distinct, lost, duplicated).
pub fn tally_range(ids: &[u64], range: std::ops::Range<u64>) -> (usize, usize, usize) {
    let start = range.start;
    tally(
        ids.iter()
            .copied()
            .filter(|id| range.contains(id))
            .map(|id| id - start),
        range.end - start,
    )
}

/// Counts `ids` against the expected `0..n`: (distinct, lost, duplicated).
pub fn tally(ids: impl IntoIterator<Item = u64>, n: u64) -> (usize, usize, usize) {
    let mut seen = vec![0u32; n as usize];
    let mut stray = 0;
    for id in ids {
        match seen.get_mut(id as usize) {
            Some(c) => *c += 1,
            None => stray += 1,
        }
    }
    assert_eq!(stray, 0, "{stray} output events were never produced");
    let distinct = seen.iter().filter(|c| **c > 0).count();
    let duplicated = seen.iter().map(|c| c.saturating_sub(1) as usize).sum();
    (distinct, n as usize - distinct, duplicated)
}
