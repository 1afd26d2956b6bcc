//! Connector plugins (`type = "plugin"`) end to end with the example
//! plugins in examples/plugins (real Python processes): a plugin sink and
//! a plugin source deliver everything; `kill -9` of the plugin mid-run and
//! `kill -9` of weir lose nothing (at least once); a plugin that cannot
//! start stops the pipeline with its reason.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{read_lines, run_in, show, start_weir, write};

fn plugin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/plugins")
        .join(name)
}

/// Waits until `path` holds a process id, and returns it.
fn wait_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no pid in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `path` has at least `n` lines.
fn wait_lines(path: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_lines(path).len() < n {
        assert!(
            Instant::now() < deadline,
            "{} has fewer than {n} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most a minute) for weir to exit on its own.
fn wait_exit(running: &mut common::Running) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = running.child.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "weir did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_9(pid: i32) {
    // SAFETY: kill sends a signal to a process these tests started.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 {pid}"
    );
}

/// The `n` values of the lines of `path` (JSON objects with `n`).
fn numbers(path: &Path) -> HashSet<u64> {
    read_lines(path)
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            v["n"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn a_plugin_sink_killed_mid_run_is_restarted_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("sink.pid");
    let p = write(
        dir.path(),
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "plugin-sink"
[sources.gen]
type = "generator"
count = 6000
rate = 2000
payload = '{{"n":{{{{seq}}}}}}'
batch = {{ max_events = 100, max_wait = "20ms" }}
[sinks.archive]
type = "plugin"
command = ["python3", "{}"]
config = {{ path = "archive.jsonl", pid_file = "{}" }}
restart_after = "100ms"
[retry]
max_attempts = 100
initial_backoff = "50ms"
[checkpoint]
dir = "cp"
"#,
            plugin("file_sink.py").display(),
            pid_file.display()
        ),
    );
    let mut running = start_weir(dir.path(), &p);
    let first = wait_pid(&pid_file);
    let archive = dir.path().join("archive.jsonl");
    wait_lines(&archive, 1000);
    std::fs::remove_file(&pid_file).unwrap();
    kill_9(first);
    let second = wait_pid(&pid_file);
    assert_ne!(first, second, "a new plugin process");
    // the generator ends after 6000 events: weir drains and exits
    let status = wait_exit(&mut running);
    let log = running.log();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("plugin sink `archive`"),
        "the death is logged: {log}"
    );
    let seen = numbers(&archive);
    assert_eq!(
        seen.len(),
        6000,
        "every event archived (duplicates allowed)"
    );
    assert!(seen.iter().all(|n| *n < 6000));
}

fn source_pipeline(dir: &Path, delay_ms: u32) -> PathBuf {
    write(
        dir,
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "plugin-source"
[sources.lines]
type = "plugin"
command = ["python3", "{}"]
config = {{ path = "input.jsonl", pid_file = "source.pid", delay_ms = {delay_ms}, max_events = 50 }}
restart_after = "100ms"
[sinks.out]
type = "file"
path = "out.jsonl"
[checkpoint]
dir = "cp"
interval = "50ms"
"#,
            plugin("file_source.py").display(),
        ),
    )
}

fn input(dir: &Path, n: u64) {
    let text: String = (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    write(dir, "input.jsonl", &text);
}

#[test]
fn a_plugin_source_delivers_everything_and_resumes_after_its_own_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    input(dir.path(), 5000);
    let p = source_pipeline(dir.path(), 5);
    let mut running = start_weir(dir.path(), &p);
    let pid_file = dir.path().join("source.pid");
    let first = wait_pid(&pid_file);
    let out = dir.path().join("out.jsonl");
    wait_lines(&out, 500);
    std::fs::remove_file(&pid_file).unwrap();
    kill_9(first);
    let second = wait_pid(&pid_file);
    assert_ne!(first, second);
    // the source ends at the end of the file: weir drains and exits
    let status = wait_exit(&mut running);
    assert!(status.success(), "{}", running.log());
    let seen = numbers(&out);
    assert_eq!(
        seen.len(),
        5000,
        "every line delivered (duplicates allowed)"
    );
    let committed: u64 = std::fs::read_to_string(dir.path().join("input.jsonl.committed"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        committed,
        std::fs::metadata(dir.path().join("input.jsonl"))
            .unwrap()
            .len(),
        "everything committed"
    );
}

#[test]
fn kill_9_of_weir_under_a_plugin_source_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    input(dir.path(), 4000);
    let p = source_pipeline(dir.path(), 10);
    let running = start_weir(dir.path(), &p);
    let out = dir.path().join("out.jsonl");
    wait_lines(&out, 800);
    let plugin_pid = wait_pid(&dir.path().join("source.pid"));
    kill_9(running.child.0.id() as i32);
    drop(running);
    // the plugin dies with weir
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: signal 0 only checks whether the process exists.
    while unsafe { libc::kill(plugin_pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "the plugin outlived weir");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = read_lines(&out).len();
    assert!(before < 4000, "killed mid-stream ({before} lines)");
    let again = run_in(dir.path(), &["run", p.to_str().unwrap()]);
    assert!(again.status.success(), "{}", show(&again));
    let seen = numbers(&out);
    assert_eq!(seen.len(), 4000, "every line delivered across the kill");
}

#[test]
fn a_plugin_that_cannot_start_stops_the_pipeline_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        &format!(
            "[sources.gen]\ntype = \"generator\"\ncount = 10\n[sinks.archive]\ntype = \"plugin\"\ncommand = [\"python3\", \"{}\"]\nconfig = {{ path = \"/nonexistent/dir/x.jsonl\" }}\n",
            plugin("file_sink.py").display()
        ),
    );
    let out = run_in(dir.path(), &["run", p.to_str().unwrap()]);
    common::assert_failed_with(&out, "cannot open config.path");
    let p = write(
        dir.path(),
        "q.toml",
        "[sources.gen]\ntype = \"generator\"\ncount = 10\n[sinks.archive]\ntype = \"plugin\"\ncommand = []\n",
    );
    let out = run_in(dir.path(), &["validate", p.to_str().unwrap()]);
    common::assert_failed_with(&out, "command");
}
