//! The command line as a user meets it: `weir test` on sample events,
//! stdin and cron pipelines through `weir run`, the admin endpoints, and
//! `weir bench --json`'s last line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{bench_json, run_in, show, weir, write};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn weir_test_prints_each_outcome_and_fails_on_failures() {
    let out = run_in(
        root(),
        &[
            "test",
            "examples/file-to-file.toml",
            "--input",
            "examples/orders.jsonl",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failures make it exit 1\n{}",
        show(&out)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&r#"out {"id":1,"user":"ada","amount":250}"#),
        "{stdout}"
    );
    assert!(
        lines.contains(&r#"out {"id":3,"user":"cy","amount":180}"#),
        "{stdout}"
    );
    assert!(
        lines.contains(&r#"out {"id":6,"user":"bob","amount":101}"#),
        "{stdout}"
    );
    assert!(
        !stdout.contains(r#""id":2"#),
        "filtered event printed: {stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("fail line 5 step parse: ")),
        "{stdout}"
    );
    assert!(
        lines.contains(&"summary: 3 out, 0 routed, 1 failed"),
        "{stdout}"
    );

    let out = run_in(
        root(),
        &[
            "test",
            "examples/file-to-file.toml",
            "--input",
            "examples/orders.jsonl",
            "--allow-failures",
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn stdin_pipeline_reads_to_the_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        "[sources.in]\ntype = \"stdin\"\nformat = \"json\"\n[[steps]]\ntype = \"jq\"\nexpr = '.n * 2'\n[sinks.out]\ntype = \"stdout\"\n[checkpoint]\ndir = \"cp\"\n",
    );
    let mut child = weir()
        .args(["run", pipeline.to_str().unwrap()])
        .current_dir(dir.path())
        .env("WEIR_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let mut values: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    values.sort();
    assert_eq!(values, ["2", "4", "6"]);
}

#[test]
fn cron_pipeline_fires_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        "[sources.tick]\ntype = \"cron\"\ninterval = \"100ms\"\ncount = 3\npayload = '{\"n\":{{seq}}}'\n[sinks.out]\ntype = \"stdout\"\n[checkpoint]\ndir = \"cp\"\n",
    );
    let started = Instant::now();
    let out = run_in(dir.path(), &["run", pipeline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#]
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "three fires 100ms apart took {:?}",
        started.elapsed()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[test]
fn admin_server_serves_health_readiness_metrics_and_pipeline_state() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pipeline = write(
        dir.path(),
        "p.toml",
        &format!(
            "[pipeline]\nname = \"admin-test\"\n[sources.gen]\ntype = \"generator\"\nrate = 2000\n[[steps]]\nname = \"keep\"\ntype = \"jq\"\nexpr = '.'\n[sinks.out]\ntype = \"blackhole\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n[checkpoint]\ndir = \"cp\"\n"
        ),
    );
    let mut child = common::KillOnDrop(
        weir()
            .args(["run", pipeline.to_str().unwrap()])
            .current_dir(dir.path())
            .env("WEIR_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let ready = loop {
        if let Some(r) = get(port, "/ready") {
            if r.0.contains("200") {
                break r;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "admin server never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ready.1, "ready\n");
    assert_eq!(
        get(port, "/health").unwrap(),
        ("HTTP/1.1 200 OK".to_string(), "ok\n".to_string())
    );
    std::thread::sleep(Duration::from_millis(500));
    let (status, metrics) = get(port, "/metrics").unwrap();
    assert!(status.contains("200"), "{status}");
    let events: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_source_events_total{source=\"gen\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no source counter in\n{metrics}"));
    assert!(events > 0.0, "{metrics}");
    assert!(
        metrics.contains("weir_step_events_in_total{step=\"keep\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_sink_events_total{sink=\"out\"}"),
        "{metrics}"
    );
    let (_, api) = get(port, "/api/pipeline").unwrap();
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["name"], "admin-test");
    assert_eq!(api["state"], "running");
    assert_eq!(api["steps"][0]["type"], "jq");
    assert!(api["latency"]["count"].as_u64().unwrap() > 0, "{api}");
    assert!(
        api["latency"]["p99_us"].as_u64().unwrap() >= api["latency"]["p50_us"].as_u64().unwrap()
    );
    let (status, page) = get(port, "/").unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(
        page.contains("<title>weir</title>") && page.contains("/api/v1/pipeline/stream"),
        "the dashboard page"
    );
    assert_eq!(get(port, "/nope").unwrap().0, "HTTP/1.1 404 Not Found");
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn bench_json_prints_one_json_object_as_its_last_line() {
    let (v, last) = bench_json(&["passthrough", "--events", "200000"]);
    for key in [
        "scenario",
        "events",
        "seconds",
        "events_per_sec",
        "baseline",
        "ratio",
        "rss_peak_bytes",
        "p50_us",
        "p99_us",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {last}");
    }
    assert_eq!(v["scenario"], "passthrough");
    assert_eq!(v["events"], 200000);
    let ratio =
        v["events_per_sec"].as_f64().unwrap() / v["baseline"]["events_per_sec"].as_f64().unwrap();
    assert!((ratio - v["ratio"].as_f64().unwrap()).abs() < 1e-9);
    assert!(v["rss_peak_bytes"].as_u64().unwrap() > 0);
    assert!(v["cpu_ns_per_event"].as_f64().unwrap() > 0.0, "{last}");
    assert!(
        v["baseline_cpu_ns_per_event"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    // the half-load run: paced at half the measured rate, its latencies
    let half = v["half_load_rate"].as_f64().unwrap();
    let full = v["events_per_sec"].as_f64().unwrap();
    assert!((half - full / 2.0).abs() <= 1.0, "{last}");
    assert!(v["half_load_p99_us"].as_u64().unwrap() >= v["half_load_p50_us"].as_u64().unwrap());
    let unknown = run_in(root(), &["bench", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("known scenarios: passthrough, json-map, jq-map"));
}
