//! Starting and stopping the project's dev servers (`scripts/*-dev.sh`)
//! from tests: one way for Kafka, NATS and Postgres.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `scripts/NAME`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `scripts/NAME start --dir DIR [--port P] EXTRA…` and returns the
/// value of the `KEY=` line it prints. A server that cannot start fails the
/// test: a test never skips for that.
pub fn start(name: &str, dir: &Path, port: Option<u16>, extra: &[&str], key: &str) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(script(name)).arg("start").arg("--dir").arg(dir);
    if let Some(p) = port {
        cmd.args(["--port", &p.to_string()]);
    }
    cmd.args(extra);
    let out = cmd.output().unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert!(
        out.status.success(),
        "{name} start failed (a test never skips for that):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("{key}=");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{key} in the output of {name} start"))
        .to_string()
}

/// Runs `scripts/NAME stop ARGS… --dir DIR`, asserting success.
pub fn stop(name: &str, dir: &Path, args: &[&str]) {
    let out = Command::new("bash")
        .arg(script(name))
        .arg("stop")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert!(
        out.status.success(),
        "{name} stop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops and removes the server of DIR, ignoring failures (for `Drop`).
pub fn remove(name: &str, dir: &Path, args: &[&str]) {
    let _ = Command::new("bash")
        .arg(script(name))
        .arg("stop")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output();
}
