//! The admin API of a running `weir run` (real processes, curl, promtool):
//! the live pipeline state moves and shows where backpressure starts when
//! a sink stalls; the stream sends a view every second; every mutating
//! endpoint refuses a missing or wrong token; drain stops the pipeline;
//! `/metrics` passes `promtool check metrics`; the alert rules pass
//! `promtool check rules` and their unit tests; every query of the Grafana
//! dashboard compiles and names documented metrics.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin::{curl, wait_ready, TOKEN};
use common::http::free_port;
use common::{start_weir, write};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A generator → jq → SINK pipeline with the admin server on `admin`.
fn pipeline(dir: &Path, admin: &str, sink: &str) -> std::path::PathBuf {
    write(
        dir,
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "admin-api"
shards = 2
[sources.gen]
type = "generator"
rate = 5000
key_cardinality = 20
payload = '{{"n":{{{{seq}}}}}}'
batch = {{ max_events = 50, max_wait = "5ms" }}
[[steps]]
type = "jq"
name = "mark"
expr = '.seen = true'
{sink}
[shutdown]
timeout = "2s"
[admin]
listen = "{admin}"
[checkpoint]
dir = "cp"
"#
        ),
    )
}

fn view(admin: &str) -> serde_json::Value {
    let (status, body) = curl(&[&format!("http://{admin}/api/v1/pipeline")]);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the view until `ok` holds (at most 30 s).
fn wait_view(
    admin: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = view(admin);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_live_state_moves_and_a_stalled_sink_is_where_backpressure_starts() {
    std::env::set_var("WEIR_ADMIN_TOKEN", TOKEN);
    // a server that accepts connections and never answers: the sink stalls
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(
        dir.path(),
        &admin,
        &format!("[sinks.slow]\ntype = \"http\"\nurl = \"http://{silent_addr}/\"\ntimeout = \"120s\"\nconcurrency = 1\nbatch = {{ max_events = 10 }}\n"),
    );
    let _running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let first = view(&admin);
    assert_eq!(first["pipeline"], "admin-api");
    assert_eq!(
        first["graph"]["nodes"].as_array().unwrap().len(),
        3,
        "{first}"
    );
    assert_eq!(
        first["graph"]["edges"],
        serde_json::json!([["source:gen", "step:mark"], ["step:mark", "sink:slow"]])
    );
    let events = |v: &serde_json::Value| v["sources"][0]["events"].as_u64().unwrap();
    let moved = wait_view(&admin, "the source's count moves", |v| {
        events(v) > events(&first)
    });
    assert!(moved["shards"].as_array().unwrap().len() == 2);
    // the sink holds its first write forever: its queue fills, the shards
    // wait on it, then the sources wait on the shards
    let stuck = wait_view(&admin, "the stalled sink is found", |v| {
        v["bottleneck"]["stage"] == "sink:slow"
    });
    // the shards (and so the step) wait on the sink: one shard blocked of two is LOW, both HIGH
    assert_ne!(stuck["steps"][0]["backpressure"], "OK", "{stuck}");
    let sink_node = stuck["graph"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "sink:slow")
        .unwrap()
        .clone();
    assert_eq!(sink_node["bottleneck"], true);
    assert!(
        stuck["sinks"][0]["queue_events"].as_u64().unwrap() > 0,
        "{stuck}"
    );
    assert!(stuck["bottleneck"]["reason"]
        .as_str()
        .unwrap()
        .contains("slow"));
    drop(silent);
}

#[test]
fn every_mutating_endpoint_refuses_a_missing_or_wrong_token_and_drain_stops_the_pipeline() {
    std::env::set_var("WEIR_ADMIN_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(dir.path(), &admin, "[sinks.out]\ntype = \"blackhole\"\n");
    let mut running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let mutating = [
        "/api/v1/reload",
        "/api/v1/drain",
        "/api/v1/sources/gen/pause",
        "/api/v1/sources/gen/resume",
        "/api/v1/replay",
        "/api/v1/functions/mark/deploy",
        "/api/v1/functions/mark/canary",
        "/api/v1/functions/mark/promote",
        "/api/v1/functions/mark/rollback",
    ];
    for path in mutating {
        let url = format!("http://{admin}{path}");
        assert_eq!(curl(&["-X", "POST", &url]).0, 401, "{path} without a token");
        assert_eq!(
            curl(&["-X", "POST", "-H", "Authorization: Bearer wrong", &url]).0,
            401,
            "{path}"
        );
        assert_eq!(
            curl(&[
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {TOKEN}x"),
                &url
            ])
            .0,
            401,
            "{path}"
        );
    }
    let log = running.log();
    assert!(!log.contains(TOKEN), "the token is never logged");
    // reads need no token
    assert_eq!(curl(&[&format!("http://{admin}/api/v1/pipeline")]).0, 200);
    assert_eq!(
        curl(&["-X", "POST", &format!("http://{admin}/api/v1/pipeline")]).0,
        405
    );
    // the stream: a view at once, then one a second
    let out = Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "3.5",
            &format!("http://{admin}/api/v1/pipeline/stream"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let stamps: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["at_unix_ms"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(stamps.len() >= 3, "{text}");
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    // reload with the token: the catalog comes back
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("http://{admin}/api/v1/reload"),
    ]);
    assert_eq!(status, 200, "{body}");
    // drain with the token stops the pipeline cleanly
    let (status, _) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("http://{admin}/api/v1/drain"),
    ]);
    assert_eq!(status, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = running.child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "drain did not stop weir");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", running.log());
}

#[test]
fn changes_are_off_without_a_configured_token() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(dir.path(), &admin, "[sinks.out]\ntype = \"blackhole\"\n");
    let mut command = common::weir();
    let _child = common::KillOnDrop(
        command
            .args(["run", p.to_str().unwrap()])
            .current_dir(dir.path())
            .env_remove("WEIR_ADMIN_TOKEN")
            .env_remove("WEIR_ADMIN_TOKEN_FILE")
            .env("WEIR_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    wait_ready(&admin);
    for path in [
        "/api/v1/drain",
        "/api/v1/reload",
        "/api/v1/functions/mark/rollback",
    ] {
        let (status, _) = curl(&[
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer anything",
            &format!("http://{admin}{path}"),
        ]);
        assert_eq!(status, 403, "{path}");
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/deps.sh installs Debian's prometheus package)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs promtool and asserts it succeeded, showing what it said otherwise.
fn promtool_ok(args: &[&str], stdin: Option<&str>) {
    let out = promtool(args, stdin);
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_alert_rules_and_the_dashboard_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(dir.path(), &admin, "[sinks.out]\ntype = \"blackhole\"\n");
    let _running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    wait_view(&admin, "events flow", |v| {
        v["sinks"][0]["events"].as_u64().unwrap() > 0
    });
    let (status, metrics) = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("# HELP weir_source_events_total events dispatched"),
        "{metrics}"
    );
    promtool_ok(&["check", "metrics"], Some(&metrics));

    promtool_ok(
        &["check", "rules", "deploy/prometheus/weir-alerts.yml"],
        None,
    );
    promtool_ok(
        &["test", "rules", "deploy/prometheus/weir-alerts.test.yml"],
        None,
    );

    // every dashboard query: valid PromQL (compiled by promtool as a
    // recording rule) over metrics the operations guide documents
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/weir-dashboard.json")).unwrap(),
    )
    .unwrap();
    let docs = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for (i, panel) in panels.iter().enumerate() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{panel}");
        for (j, target) in targets.iter().enumerate() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("weir_") {
                    assert!(
                        docs.contains(&format!("`{word}`")),
                        "{word} (panel {}) is not in docs/operations.md",
                        panel["title"]
                    );
                }
            }
            recording.push_str(&format!(
                "      - record: dashboard_{i}_{j}\n        expr: {}\n",
                serde_json::to_string(expr).unwrap()
            ));
        }
    }
    let file = write(dir.path(), "dashboard-rules.yml", &recording);
    promtool_ok(&["check", "rules", file.to_str().unwrap()], None);
}

#[test]
fn weir_top_and_weir_tap_show_the_running_pipeline() {
    std::env::set_var("WEIR_ADMIN_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(dir.path(), &admin, "[sinks.out]\ntype = \"blackhole\"\n");
    let _running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let top = common::weir()
        .args(["top", "--once", "--sort", "rate", "--admin", &admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    for expected in [
        "weir · admin-api",
        "SOURCE",
        "gen",
        "SHARD",
        "STEP",
        "mark",
        "SINK",
        "out",
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    let rate_line = text.lines().find(|l| l.starts_with("gen ")).unwrap();
    let rate: f64 = rate_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches('k')
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{rate_line}");

    let tap = common::weir()
        .args(["tap", "mark", "--limit", "3", "--admin", &admin])
        .output()
        .unwrap();
    assert!(
        tap.status.success(),
        "{}",
        String::from_utf8_lossy(&tap.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&tap.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l["stage"], "step:mark");
        let value: serde_json::Value = serde_json::from_str(l["value"].as_str().unwrap()).unwrap();
        assert_eq!(value["seen"], true, "the step's output: {l}");
        assert!(l["key"].as_str().unwrap().starts_with("key-"));
    }
    let refused = common::weir()
        .args(["tap", "sink:out", "--limit", "1", "--admin", &admin])
        .env("WEIR_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let unknown = common::weir()
        .args(["tap", "nope", "--admin", &admin])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unknown.stderr)
        .contains("no stage `nope`; stages: source:gen, step:mark, sink:out"));
}

#[test]
fn a_paused_source_stops_reading_and_resumes() {
    std::env::set_var("WEIR_ADMIN_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(dir.path(), &admin, "[sinks.out]\ntype = \"blackhole\"\n");
    let _running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let post = |path: &str| curl(&["-X", "POST", "-H", &auth, &format!("http://{admin}{path}")]);
    let events = |v: &serde_json::Value| v["sources"][0]["events"].as_u64().unwrap();
    wait_view(&admin, "events flow", |v| events(v) > 0);
    let (status, body) = post("/api/v1/sources/gen/pause");
    assert_eq!(status, 200, "{body}");
    let paused = wait_view(&admin, "the view says paused", |v| {
        v["sources"][0]["paused"] == true
    });
    // at most the batch that was on its way when the pause came
    std::thread::sleep(Duration::from_millis(300));
    let before = events(&view(&admin));
    std::thread::sleep(Duration::from_millis(1500));
    let after = view(&admin);
    assert_eq!(events(&after), before, "nothing read while paused: {after}");
    assert!(events(&paused) <= before);
    let (status, _) = post("/api/v1/sources/gen/resume");
    assert_eq!(status, 200);
    wait_view(&admin, "reading again", |v| {
        v["sources"][0]["paused"] == false && events(v) > before
    });
    let (status, body) = post("/api/v1/sources/nope/pause");
    assert_eq!(status, 404);
    assert!(body.contains("sources: gen"), "{body}");
}

#[test]
fn dead_letters_replay_through_the_api() {
    std::env::set_var("WEIR_ADMIN_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let dead: String = (0..5)
        .map(|i| format!("{{\"key\":\"k{i}\",\"value\":{{\"n\":{i},\"replayed\":true}},\"headers\":{{\"weir.error\":\"bad\",\"trace\":\"t{i}\"}},\"timestamp_ms\":1,\"source\":0,\"partition\":0,\"offset\":{i}}}\n"))
        .collect();
    let dlq = write(dir.path(), "dlq.replaying.jsonl", &dead);
    let p = pipeline(
        dir.path(),
        &admin,
        "[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\nformat = \"envelope\"\n",
    );
    let _running = start_weir(dir.path(), &p);
    wait_ready(&admin);
    let url = format!("http://{admin}/api/v1/replay");
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-d",
        "{\"file\":\"nope.jsonl\"}",
        &url,
    ]);
    assert_eq!(status, 400, "{body}");
    let (status, body) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-d",
        &serde_json::json!({"file": dlq}).to_string(),
        &url,
    ]);
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = curl(&[&url]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        match v["replays"][0]["state"].as_str() {
            Some("done") => break,
            Some("failed") => panic!("{v}"),
            _ => assert!(Instant::now() < deadline, "{v}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = common::read_envelopes(&dir.path().join("out.jsonl"));
    let replayed: Vec<&serde_json::Value> = out
        .iter()
        .filter(|e| e["value"]["replayed"] == true)
        .collect();
    assert_eq!(replayed.len(), 5, "each dead letter once, through the step");
    for e in replayed {
        assert_eq!(e["value"]["seen"], true, "the pipeline's step ran: {e}");
        assert!(e["headers"].get("weir.error").is_none());
        assert!(e["headers"]["trace"].as_str().unwrap().starts_with('t'));
    }
}

/// With `[admin] tls`, the admin server speaks HTTPS only: curl trusting
/// the CA gets answers (and a change with the token works), curl trusting
/// nothing or another CA and plain HTTP get none, and `weir functions`
/// reaches it at `https://…` trusting the CA in `WEIR_ADMIN_CA`.
#[test]
fn with_tls_the_admin_server_speaks_only_https_and_the_clients_verify_it() {
    common::admin::set_token();
    let dir = tempfile::tempdir().unwrap();
    common::certs::make(dir.path());
    let admin = format!("127.0.0.1:{}", free_port());
    let p = pipeline(dir.path(), &admin, "[sinks.out]\ntype = \"blackhole\"\n");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        &format!("listen = \"{admin}\"\n"),
        &format!("listen = \"{admin}\"\ntls = {{ cert = \"server.crt\", key = \"server.key\" }}\n"),
    );
    std::fs::write(&p, text).unwrap();
    let running = start_weir(dir.path(), &p);
    let ca = dir.path().join("ca.crt");
    let https = format!("https://{admin}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = curl(&["--cacert", ca.to_str().unwrap(), &format!("{https}/ready")]);
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no HTTPS answer:\n{}",
            running.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(running.log().contains("scheme=\"https\"") || running.log().contains("scheme=https"));
    let (status, _) = curl(&[&format!("{https}/ready")]);
    assert_eq!(
        status, 0,
        "a client trusting only the system's roots must refuse the server"
    );
    let other = dir.path().join("other.crt");
    let (status, _) = curl(&[
        "--cacert",
        other.to_str().unwrap(),
        &format!("{https}/ready"),
    ]);
    assert_eq!(
        status, 0,
        "a client trusting another CA must refuse the server"
    );
    let (status, _) = curl(&[&format!("http://{admin}/ready")]);
    assert_ne!(status, 200, "plain HTTP must not be answered");
    let (status, body) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{https}/api/v1/reload"),
    ]);
    assert_eq!(status, 200, "{body}");
    let out = common::weir()
        .args(["functions", "--admin", &https, "list"])
        .env("WEIR_ADMIN_CA", &ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(listed.is_array() || listed.is_object(), "{listed}");
    let out = common::weir()
        .args(["functions", "--admin", &https, "list"])
        .env("WEIR_ADMIN_CA", &other)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a client trusting another CA got through"
    );
}
