//! The `nats` and `jetstream` connectors against a real nats-server with
//! JetStream (started by scripts/nats-dev.sh): exact content, kill -9 and
//! restart, a server restart, two processes on one durable consumer, a
//! core NATS queue group, dead letters, and clear errors.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::nats::Server;
use common::{read_envelopes, read_lines, start_weir, stop_weir, write};

/// Waits until the durable consumer acked everything published.
fn await_all_acked(server: &Server, stream: &str, consumer: &str, total: u64, limit: Duration) {
    let started = Instant::now();
    loop {
        if let Some((floor, pending, ack_pending)) = server.consumer_state(stream, consumer) {
            if floor >= total && pending == 0 && ack_pending == 0 {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "consumer {consumer}: ack floor {floor} of {total}, {pending} pending, {ack_pending} unacked"
            );
        } else {
            assert!(
                started.elapsed() < limit,
                "consumer {consumer} never appeared"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn js_pipeline(dir: &Path, server: &Server, name: &str, expr: &str, extra: &str) -> PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            r#"
[pipeline]
name = "{name}"
[sources.in]
type = "jetstream"
url = "{url}"
stream = "IN"
consumer = "weir"
batch = {{ max_events = 200 }}
[[steps]]
name = "map"
type = "jq"
expr = '{expr}'
[sinks.out]
type = "jetstream"
url = "{url}"
subject = "out.{{{{key}}}}"
[checkpoint]
interval = "100ms"
[shutdown]
timeout = "20s"
{extra}
"#,
            url = server.url
        ),
    )
}

fn numbered(n: u64) -> impl Iterator<Item = (String, String)> {
    (0..n).map(|i| (format!("in.{}", i % 10), format!("{{\"id\":{i}}}")))
}

fn ids(records: &[(String, String)]) -> Vec<u64> {
    records
        .iter()
        .map(|(_, v)| {
            let v: serde_json::Value = serde_json::from_str(v).expect("JSON output");
            v["id"].as_u64().expect("id")
        })
        .collect()
}

#[test]
fn jetstream_to_jetstream_through_jq_keeps_content_and_acks_everything() {
    let server = Server::start();
    server.create_stream("IN", &["in.>"]);
    server.create_stream("OUT", &["out.>"]);
    let n = 2_000;
    server.publish(numbered(n));
    let dir = tempfile::tempdir().unwrap();
    let p = js_pipeline(dir.path(), &server, "exact", ".seen = true", "");
    let weir = start_weir(dir.path(), &p);
    let out = server.read("OUT", n as usize, Duration::from_secs(60));
    await_all_acked(&server, "IN", "weir", n, Duration::from_secs(30));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    assert_eq!(out.len(), n as usize, "{log}");
    let mut seen = HashSet::new();
    for (subject, value) in &out {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        let id = v["id"].as_u64().unwrap();
        assert_eq!(v, serde_json::json!({"id": id, "seen": true}));
        assert_eq!(
            subject,
            &format!("out.in.{}", id % 10),
            "subject from the key"
        );
        assert!(seen.insert(id), "duplicate {id}");
    }
}

#[test]
fn kill_9_and_restart_loses_nothing() {
    let server = Server::start();
    server.create_stream("IN", &["in.>"]);
    server.create_stream("OUT", &["out.>"]);
    let n: u64 = 50_000;
    server.publish(numbered(n));
    let dir = tempfile::tempdir().unwrap();
    let p = js_pipeline(dir.path(), &server, "crash", ".seen = true", "");
    let mut weir = start_weir(dir.path(), &p);
    let started = Instant::now();
    loop {
        let floor = server.consumer_state("IN", "weir").map_or(0, |s| s.0);
        if floor >= n * 3 / 10 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    weir.child.0.kill().unwrap();
    weir.child.0.wait().unwrap();
    let floor = server.consumer_state("IN", "weir").unwrap().0;
    assert!(floor < n, "all done before the kill; make the input larger");
    let weir = start_weir(dir.path(), &p);
    await_all_acked(&server, "IN", "weir", n, Duration::from_secs(120));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    let out = server.read("OUT", 2 * n as usize, Duration::from_secs(10));
    let distinct: HashSet<u64> = ids(&out).into_iter().collect();
    assert_eq!(
        distinct.len(),
        n as usize,
        "every input event is in the output"
    );
    // Nats-Msg-Id lets the stream drop what the restart published again
    assert_eq!(
        out.len(),
        n as usize,
        "no duplicates reach the output stream"
    );
}

#[test]
fn a_server_restart_mid_stream_loses_nothing() {
    let server = Server::start();
    server.create_stream("IN", &["in.>"]);
    server.create_stream("OUT", &["out.>"]);
    let half: u64 = 5_000;
    server.publish(numbered(half));
    let dir = tempfile::tempdir().unwrap();
    let p = js_pipeline(dir.path(), &server, "restart", ".seen = true", "");
    let weir = start_weir(dir.path(), &p);
    await_all_acked(&server, "IN", "weir", half, Duration::from_secs(60));
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    server.publish((half..2 * half).map(|i| (format!("in.{}", i % 10), format!("{{\"id\":{i}}}"))));
    await_all_acked(&server, "IN", "weir", 2 * half, Duration::from_secs(120));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    let out = server.read("OUT", 4 * half as usize, Duration::from_secs(10));
    let distinct: HashSet<u64> = ids(&out).into_iter().collect();
    assert_eq!(
        distinct.len(),
        2 * half as usize,
        "weir reconnected and resumed\n{log}"
    );
}

#[test]
fn two_processes_on_one_durable_consumer_split_the_work() {
    let server = Server::start();
    server.create_stream("IN", &["in.>"]);
    let n: u64 = 20_000;
    let pipeline = |dir: &Path| {
        write(
            dir,
            "p.toml",
            &format!(
                r#"
[pipeline]
name = "split"
[sources.in]
type = "jetstream"
url = "{}"
stream = "IN"
consumer = "shared"
batch = {{ max_events = 50 }}
[sinks.out]
type = "file"
path = "out.jsonl"
"#,
                server.url
            ),
        )
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (pipeline(a.path()), pipeline(b.path()));
    let wa = start_weir(a.path(), &pa);
    let wb = start_weir(b.path(), &pb);
    std::thread::sleep(Duration::from_secs(1));
    server.publish(numbered(n));
    await_all_acked(&server, "IN", "shared", n, Duration::from_secs(120));
    let (sa, la) = stop_weir(wa);
    let (sb, lb) = stop_weir(wb);
    assert!(sa.success() && sb.success(), "{la}\n---\n{lb}");
    let (ra, rb) = (
        read_lines(&a.path().join("out.jsonl")),
        read_lines(&b.path().join("out.jsonl")),
    );
    assert!(
        !ra.is_empty() && !rb.is_empty(),
        "both processes got work: {} and {}",
        ra.len(),
        rb.len()
    );
    let all: HashSet<&String> = ra.iter().chain(rb.iter()).collect();
    assert_eq!(all.len(), n as usize, "nothing lost");
}

#[test]
fn core_nats_queue_group_round_trip_and_poison_to_the_dead_letter_sink() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "core.toml",
        &format!(
            r#"
[pipeline]
name = "core"
[sources.in]
type = "nats"
url = "{url}"
subjects = ["events.>"]
queue_group = "workers"
[[steps]]
name = "parse"
type = "json"
[[steps]]
name = "check"
type = "jq"
expr = 'if .poison then error("poison pill \(.id)") else .ok = true end'
[sinks.out]
type = "nats"
url = "{url}"
subject = "done.{{{{id}}}}"
[sinks.copy]
type = "file"
path = "out.jsonl"
[sinks.dlq]
type = "file"
path = "dlq.jsonl"
format = "envelope"
[dead_letter]
sink = "dlq"
"#,
            url = server.url
        ),
    );
    server.create_stream("DONE", &["done.>"]);
    let weir = start_weir(dir.path(), &p);
    std::thread::sleep(Duration::from_secs(1)); // subscribed
    let n = 1_000u64;
    server.publish_core((0..n).map(|i| {
        let body = match i {
            10 => "{broken".to_string(),
            20 => format!("{{\"id\":{i},\"poison\":true}}"),
            _ => format!("{{\"id\":{i}}}"),
        };
        (format!("events.{}", i % 4), body)
    }));
    let done = server.read("DONE", (n - 2) as usize, Duration::from_secs(30));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    assert_eq!(done.len(), (n - 2) as usize, "{log}");
    for (subject, value) in &done {
        let v: serde_json::Value = serde_json::from_str(value).unwrap();
        assert_eq!(
            subject,
            &format!("done.{}", v["id"]),
            "subject from a field"
        );
    }
    assert_eq!(
        read_lines(&dir.path().join("out.jsonl")).len(),
        (n - 2) as usize
    );
    let dead = read_envelopes(&dir.path().join("dlq.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert!(dead.iter().any(|d| d["headers"]["weir.error"]
        .as_str()
        .unwrap()
        .contains("poison pill 20")));
    assert!(dead.iter().any(|d| d["value"] == "{broken"));
}

#[test]
fn a_missing_stream_and_an_unreachable_server_give_clear_errors() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let missing = write(
        dir.path(),
        "missing.toml",
        &format!(
            r#"
[pipeline]
name = "missing"
[sources.in]
type = "jetstream"
url = "{}"
stream = "NOPE"
consumer = "c"
[sinks.out]
type = "blackhole"
"#,
            server.url
        ),
    );
    let out = common::run_in(dir.path(), &["run", missing.to_str().unwrap()]);
    common::assert_failed_with(&out, "stream `NOPE` not found");
    let down = write(
        dir.path(),
        "down.toml",
        r#"
[pipeline]
name = "down"
[sources.in]
type = "nats"
url = "nats://weir:hunter2@127.0.0.1:1"
subjects = ["x"]
connect_timeout = "2s"
[sinks.out]
type = "blackhole"
"#,
    );
    let started = Instant::now();
    let out = common::run_in(dir.path(), &["run", down.to_str().unwrap()]);
    // the password in the URL is not shown anywhere
    common::assert_failed_with(
        &out,
        "cannot connect to NATS at `nats://weir:***@127.0.0.1:1`",
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("hunter2"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn tls_carries_jetstream_both_ways_and_an_unknown_certificate_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    common::certs::make(certs.path());
    let server = Server::start_tls(certs.path());
    server.create_stream("IN", &["in.>"]);
    server.create_stream("OUT", &["out.>"]);
    let n = 500;
    server.publish(numbered(n));
    let dir = tempfile::tempdir().unwrap();
    let pipeline = |name: &str, ca: &str| {
        write(
            dir.path(),
            &format!("{name}.toml"),
            &format!(
                r#"
[pipeline]
name = "{name}"
[sources.in]
type = "jetstream"
url = "{url}"
stream = "IN"
consumer = "weir"
connect_timeout = "3s"
tls = {{ ca = "{ca}" }}
[sinks.out]
type = "jetstream"
url = "{url}"
subject = "out.{{{{key}}}}"
connect_timeout = "3s"
tls = {{ ca = "{ca}" }}
"#,
                url = server.url,
            ),
        )
    };
    let ca = certs.path().join("ca.crt").display().to_string();
    let other = certs.path().join("other.crt").display().to_string();

    // a certificate signed by a CA the pipeline does not trust: refused
    let refused = pipeline("refused", &other);
    let out = common::run_in(dir.path(), &["run", refused.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", common::show(&out));
    common::assert_failed_with(&out, "cannot connect to NATS");

    // the right CA: every message through, over TLS both ways
    let good = pipeline("tls", &ca);
    let weir = start_weir(dir.path(), &good);
    let got = server.read("OUT", n as usize, Duration::from_secs(60));
    await_all_acked(&server, "IN", "weir", n, Duration::from_secs(30));
    let (status, log) = stop_weir(weir);
    assert!(status.success(), "exit {status:?}\n{log}");
    assert_eq!(got.len(), n as usize, "{log}");

    // a `tls` file that does not exist is a configuration error
    let missing = pipeline("missing", "/nonexistent/ca.pem");
    let out = common::run_in(dir.path(), &["validate", missing.to_str().unwrap()]);
    common::assert_failed_with(&out, "`tls.ca`: no file `/nonexistent/ca.pem`");
}

#[test]
fn a_batch_that_fails_delivery_is_nakked_then_terminated_after_max_deliver() {
    let server = Server::start();
    server.create_stream("IN", &["in.>"]);
    server.create_stream("OUT", &["out.>"]);
    // event 7 has no `kind`: its subject cannot be rendered, so its write
    // fails for good, and there is no dead-letter sink
    server.publish((0..20u64).map(|i| {
        let body = if i == 7 {
            format!("{{\"id\":{i}}}")
        } else {
            format!("{{\"id\":{i},\"kind\":\"k{}\"}}", i % 3)
        };
        (format!("in.{i}"), body)
    }));
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "nak.toml",
        &format!(
            r#"
[pipeline]
name = "nak"
[sources.in]
type = "jetstream"
url = "{url}"
stream = "IN"
consumer = "weir"
max_deliver = 2
batch = {{ max_events = 1 }}
[sinks.out]
type = "jetstream"
url = "{url}"
subject = "out.{{{{kind}}}}"
batch = {{ max_events = 1 }}
[retry]
max_attempts = 1
"#,
            url = server.url
        ),
    );
    let weir = start_weir(dir.path(), &p);
    await_all_acked(&server, "IN", "weir", 20, Duration::from_secs(60));
    let out = server.read("OUT", 19, Duration::from_secs(10));
    let (_, log) = stop_weir(weir);
    assert_eq!(out.len(), 19, "{log}");
    assert!(log.contains("nak'ed for redelivery"), "{log}");
    assert!(log.contains("terminated"), "{log}");
    assert!(!ids(&out).contains(&7));
}
