//! The admin dashboard in a real browser: Debian's headless Chromium,
//! driven by playwright-core (tests/browser/dashboard.js), against a
//! running `weir run` whose sink stalls: the page connects, the numbers
//! move, and the sink is highlighted as the stage where backpressure
//! starts. The screenshot is kept in target/test-artifacts/dashboard.png.

mod common;

use std::path::Path;
use std::process::Command;

use common::admin::wait_ready;
use common::http::free_port;
use common::{start_weir, write};

#[test]
fn the_dashboard_renders_moves_and_highlights_the_stalled_sink() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = write(
        dir.path(),
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "dashboard"
shards = 2
[sources.orders]
type = "generator"
rate = 4000
key_cardinality = 20
payload = '{{"n":{{{{seq}}}}}}'
batch = {{ max_events = 50, max_wait = "5ms" }}
[[steps]]
type = "jq"
name = "enrich"
expr = '.seen = true'
[sinks.slow]
type = "http"
url = "http://{}/"
timeout = "120s"
concurrency = 1
batch = {{ max_events = 10 }}
[admin]
listen = "{admin}"
[checkpoint]
dir = "cp"
"#,
            silent.local_addr().unwrap()
        ),
    );
    let _running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("node")
        .arg(root.join("tests/browser/dashboard.js"))
        .arg(format!("http://{admin}/"))
        .arg(&shot)
        .arg("sink:slow")
        .output()
        .expect("node runs (scripts/deps.sh installs playwright-core and chromium)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        seen["bottleneck"].as_str().unwrap().contains("sink:slow"),
        "{seen}"
    );
    assert_eq!(seen["rows"]["shards"], 2, "{seen}");
    assert_eq!(seen["rows"]["steps"], 1, "{seen}");
    let nodes = seen["nodes_stalled"].as_array().unwrap();
    assert!(
        nodes.iter().any(|n| n[0] == "step:enrich" && n[1] != "OK"),
        "the step waits on the sink: {seen}"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot was saved"
    );
    drop(silent);
}
