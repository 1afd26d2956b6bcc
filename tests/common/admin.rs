//! Talking to a running weir's admin API: the token, `curl`, `weir functions`.

use std::process::Command;
use std::time::{Duration, Instant};

use super::weir;

/// The admin token the tests run weir with.
pub const TOKEN: &str = "test-token-5f2c";

/// Sets the token in this process's environment: the weir processes a test starts inherit it.
pub fn set_token() {
    std::env::set_var("WEIR_ADMIN_TOKEN", TOKEN);
}

/// `curl` against the admin server: (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Waits until the admin server answers `/ready`.
pub fn wait_ready(admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if curl(&[&format!("http://{admin}/ready")]).0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("weir did not become ready");
}

/// Runs `weir functions --admin ADMIN ARGS` and parses its JSON.
pub fn functions(admin: &str, args: &[&str]) -> serde_json::Value {
    let out = weir()
        .arg("functions")
        .arg("--admin")
        .arg(admin)
        .args(args)
        .output()
        .expect("weir functions runs");
    assert!(
        out.status.success(),
        "weir functions {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The value of an envelope as JSON, whether the sink wrote it as text or JSON.
pub fn value_of(envelope: &serde_json::Value) -> serde_json::Value {
    match &envelope["value"] {
        serde_json::Value::String(s) => {
            serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.clone()))
        }
        other => other.clone(),
    }
}
