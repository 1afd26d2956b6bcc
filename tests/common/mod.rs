//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

pub mod admin;
pub mod certs;
pub mod dev_server;
pub mod faults;
pub mod http;
pub mod in_process;
pub mod kafka;
pub mod metrics;
pub mod nats;
pub mod postgres;
pub mod stall_sink;
pub mod wasm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `weir` binary built for these tests.
pub fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

/// Runs `weir ARGS` in `dir` and returns its output.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    weir()
        .args(args)
        .current_dir(dir)
        .env("WEIR_LOG", "warn")
        .output()
        .expect("weir runs")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `file in.jsonl → STEPS → out.jsonl` in `dir` on two shards, with
/// dead letters (envelopes) in dlq.jsonl after two attempts; `extra` is
/// more TOML (more sinks).
pub fn run_file_pipeline(
    dir: &Path,
    input: &str,
    steps: &str,
    batch: usize,
    extra: &str,
) -> Output {
    write(dir, "in.jsonl", input);
    let pipeline = write(
        dir,
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "file"
shards = 2
[sources.in]
type = "file"
path = "in.jsonl"
batch = {{ max_events = {batch} }}
{steps}
[sinks.out]
type = "file"
path = "out.jsonl"
[sinks.dlq]
type = "file"
path = "dlq.jsonl"
format = "envelope"
{extra}
[dead_letter]
sink = "dlq"
[retry]
max_attempts = 2
initial_backoff = "10ms"
[checkpoint]
dir = "cp"
"#
        ),
    );
    run_in(dir, &["run", pipeline.to_str().unwrap()])
}

/// Reads a file sink's envelope output: one JSON object per line.
pub fn read_envelopes(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad envelope {l:?}: {e}")))
        .collect()
}

/// Reads a file sink's value output: one line per event.
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The stored checkpoint of `source` in `pipeline` under `dir`.
pub fn stored_position(dir: &Path, pipeline: &str, source: &str, partition: u32) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(pipeline).join(format!("{source}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["partitions"][partition.to_string()].as_u64()
}

/// A string from the output, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Kills the child process when dropped, so a failed assertion never leaves
/// a `weir` running (and holding the test's output pipes open).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `weir run` in the background, its log going to a file (a pipe nobody
/// reads would fill up and stall it).
pub struct Running {
    /// The process.
    pub child: KillOnDrop,
    log: PathBuf,
}

/// Starts `weir run PIPELINE` in `dir` with info logs.
pub fn start_weir(dir: &Path, pipeline: impl AsRef<std::ffi::OsStr>) -> Running {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("weir-{n}.log"));
    let child = weir()
        .arg("run")
        .arg(pipeline)
        .current_dir(dir)
        .env("WEIR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Running {
        child: KillOnDrop(child),
        log,
    }
}

impl Running {
    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// SIGTERM, wait at most a minute, and return the exit status and the log.
pub fn stop_weir(mut running: Running) -> (std::process::ExitStatus, String) {
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(running.child.0.id() as i32, libc::SIGTERM) };
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = running.child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "weir did not exit within a minute of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (
        status,
        std::fs::read_to_string(&running.log).unwrap_or_default(),
    )
}

/// Runs `weir bench ARGS --json` (warnings only), asserts it succeeded and
/// returns its last stdout line parsed, and the line.
pub fn bench_json(args: &[&str]) -> (serde_json::Value, String) {
    let out = weir()
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default().to_string();
    let value = serde_json::from_str(&last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"));
    (value, last)
}

/// Asserts that a run failed and said `message` on stderr.
pub fn assert_failed_with(out: &Output, message: &str) {
    assert!(!out.status.success(), "{}", show(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(message),
        "expected {message:?} on stderr\n{}",
        show(out)
    );
}
