//! The `http` source and sink with real clients and servers: curl over
//! HTTP/1.1, HTTP/2 (prior knowledge and ALPN) and TLS against `weir run`;
//! a Rust client (hyper) with many concurrent requests; the limits (413,
//! 408, 503, 504) against an in-process pipeline with a stalled step; async
//! invoke through kill -9; and the `http` sink against a local server that
//! fails, then succeeds, or rejects.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use common::http::{curl, free_port, listening_port, self_signed};
use common::{read_lines, start_weir, stop_weir, write};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use weir_config::{ComponentConfig, PipelineConfig};
use weir_connectors::http::serve::{self, Handler, HttpResponse, ResponseFuture, ServeOptions};
use weir_engine::{Event, Step, StepFactory, StepOutput};

/// Steps that give every kind of answer, chosen by the request's JSON.
const STEPS: &str = r#"
[[steps]]
name = "parse"
type = "json"
object = true

[[steps]]
name = "logic"
type = "jq"
expr = 'if .drop then empty elif .fan then range(.fan) as $i | {i: $i} else .seen = true end'

[[steps]]
name = "shape"
type = "set-headers"
from_fields = { "http.status" = "status", "http.response.location" = "loc" }
"#;

#[test]
fn sync_invoke_answers_over_http1_http2_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let shared = free_port();
    let pipeline = write(
        dir.path(),
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "http-sync"

[sources.api]
type = "http"
address = "127.0.0.1:{shared}"
path = "/fn"
max_body = 1000

[sources.durable]
type = "http"
address = "127.0.0.1:{shared}"
path = "/durable"
respond_after = "sinks"

[sources.secure]
type = "http"
address = "127.0.0.1:0"
path = "/tls"
tls = {{ cert = "{}", key = "{}" }}
{STEPS}
[sinks.out]
type = "file"
path = "out.jsonl"
"#,
            cert.display(),
            key.display()
        ),
    );
    let running = start_weir(dir.path(), &pipeline);
    listening_port(&running, "/fn");
    let tls_port = listening_port(&running, "/tls");
    let url = |path: &str| format!("http://127.0.0.1:{shared}{path}");

    // a round trip: the output is the body, with the request's content type
    let a = curl(&[
        &url("/fn"),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"a":1}"#,
    ]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"a":1,"seen":true}"#),
        "{a:?}"
    );
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(a.version, "1.1");
    // HTTP/2 with prior knowledge on the same listener
    let a = curl(&["--http2-prior-knowledge", &url("/fn"), "-d", r#"{"b":2}"#]);
    assert_eq!(
        (a.status, a.body.as_str(), a.version.as_str()),
        (200, r#"{"b":2,"seen":true}"#, "2")
    );
    // dropped, fanned out, failed, shaped by a step
    assert_eq!(curl(&[&url("/fn"), "-d", r#"{"drop":true}"#]).status, 204);
    let a = curl(&[&url("/fn"), "-d", r#"{"fan":3}"#]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"[{"i":0},{"i":1},{"i":2}]"#)
    );
    assert_eq!(a.header("content-type"), Some("application/json"));
    let a = curl(&[&url("/fn"), "-d", "not json"]);
    assert_eq!(a.status, 422, "{a:?}");
    let e: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(e["stage"], "parse");
    assert_eq!(e["retryable"], false);
    assert!(e["error"].as_str().unwrap().contains("invalid JSON"), "{e}");
    let a = curl(&[&url("/fn"), "-d", r#"{"status":201,"loc":"/things/7"}"#]);
    assert_eq!(a.status, 201);
    assert_eq!(a.header("location"), Some("/things/7"));
    // routing and limits answered by the server itself
    assert_eq!(curl(&[&url("/nowhere"), "-d", "{}"]).status, 404);
    let a = curl(&[&url("/fn")]);
    assert_eq!((a.status, a.header("allow")), (405, Some("POST")));
    let big = "x".repeat(2000);
    assert_eq!(curl(&[&url("/fn"), "-d", &big]).status, 413);
    // keep-alive: the second request reuses the first one's connection
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "<%{num_connects}>", "-d", "{}"])
        .args([url("/fn"), url("/fn")])
        .output()
        .unwrap();
    let connects: String = String::from_utf8_lossy(&out.stdout)
        .split('<')
        .skip(1)
        .filter_map(|s| s.split_once('>').map(|(n, _)| n.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(connects, "1,0", "the connection was not reused");

    // respond_after = "sinks": once answered, the event is in the file
    let a = curl(&[&url("/durable"), "-d", r#"{"durable":1}"#]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"durable":1,"seen":true}"#)
    );
    let lines = read_lines(&dir.path().join("out.jsonl"));
    assert!(
        lines.contains(&r#"{"durable":1,"seen":true}"#.to_string()),
        "{lines:?}"
    );

    // TLS, HTTP/1.1 and HTTP/2 by ALPN, verified against the certificate
    let tls_url = format!("https://localhost:{tls_port}/tls");
    let cacert = cert.to_str().unwrap();
    let a = curl(&[
        "--cacert",
        cacert,
        "--http1.1",
        &tls_url,
        "-d",
        r#"{"t":1}"#,
    ]);
    assert_eq!(
        (a.status, a.body.as_str(), a.version.as_str()),
        (200, r#"{"t":1,"seen":true}"#, "1.1")
    );
    let a = curl(&["--cacert", cacert, "--http2", &tls_url, "-d", r#"{"t":2}"#]);
    assert_eq!((a.status, a.version.as_str()), (200, "2"));

    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
}

#[test]
fn a_malformed_request_gets_400() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        "[sources.api]\ntype = \"http\"\naddress = \"127.0.0.1:0\"\npath = \"/fn\"\n[sinks.out]\ntype = \"blackhole\"\n",
    );
    let running = start_weir(dir.path(), &pipeline);
    let port = listening_port(&running, "/fn");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"POST /fn HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let (status, log) = stop_weir(running);
    assert!(status.success(), "{log}");
}

/// Async invoke: every 202 is already durable. The process is killed with
/// SIGKILL right after the last 202; each id answered is in the file.
#[test]
fn async_invoke_answers_202_only_for_durable_events_even_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        r#"
[sources.api]
type = "http"
address = "127.0.0.1:0"
path = "/async"
mode = "async"

[sinks.out]
type = "file"
path = "out.jsonl"
format = "envelope"
"#,
    );
    let mut running = start_weir(dir.path(), &pipeline);
    let port = listening_port(&running, "/async");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = client();
    let ids: Vec<(String, serde_json::Value)> = runtime.block_on(async {
        let mut ids = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let client = client.clone();
            tasks.spawn(async move {
                let body = format!("{{\"n\":{i}}}");
                let (status, _, answer) = post(&client, port, "/async", &body).await;
                assert_eq!(status, 202, "{answer}");
                let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
                (
                    v["id"].as_str().unwrap().to_string(),
                    serde_json::from_str(&body).unwrap(),
                )
            });
        }
        while let Some(r) = tasks.join_next().await {
            ids.push(r.unwrap());
        }
        ids
    });
    // no drain, no goodbye
    running.child.0.kill().unwrap();
    running.child.0.wait().unwrap();
    let written: HashMap<String, serde_json::Value> =
        common::read_envelopes(&dir.path().join("out.jsonl"))
            .into_iter()
            .map(|e| {
                let id = e["headers"]["http.id"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_default();
                (id, e["value"].clone())
            })
            .collect();
    assert_eq!(ids.len(), 200);
    for (id, body) in &ids {
        assert_eq!(
            written.get(id),
            Some(body),
            "answered 202 for {id} but it is not in the sink"
        );
    }
}

fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn post(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    port: u16,
    path: &str,
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let request = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.expect("a response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

static STEP_HOLD: AtomicBool = AtomicBool::new(false);
static STEP_SEEN: AtomicUsize = AtomicUsize::new(0);

/// Echoes each event with `"echo": true`, and waits while `STEP_HOLD`.
struct HoldStep;

#[async_trait(?Send)]
impl Step for HoldStep {
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput) {
        while STEP_HOLD.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for mut e in input.drain(..) {
            STEP_SEEN.fetch_add(1, Ordering::Relaxed);
            let mut v = e.value.to_vec();
            v.extend_from_slice(b"!");
            e.value = v.into();
            output.emit(e);
        }
    }
}

struct HoldFactory;

impl StepFactory for HoldFactory {
    fn build(&self) -> Result<Box<dyn Step>, String> {
        Ok(Box::new(HoldStep))
    }
}

/// Many concurrent requests from a Rust client each get their own answer
/// (batching never mixes them up); then, with the step held, the in-flight
/// limit answers 503 with Retry-After, the request timeout 504, and a body
/// that stops arriving 408 — while the shard is held by nothing but the
/// step.
#[test]
fn concurrent_requests_get_their_own_answers_and_limits_answer_clearly() {
    common::metrics::recorder();
    let mut registry = weir::registry();
    registry.step("hold", |_, _| Ok(Arc::new(HoldFactory)));
    let source = ComponentConfig::from_toml(
        "api",
        "http",
        "address = '127.0.0.1:0'\npath = '/echo'\nmax_in_flight = 300\noverload_wait = '100ms'\nrequest_timeout = '4s'\nbody_timeout = '300ms'\n",
    )
    .unwrap();
    let step = ComponentConfig::from_toml("hold", "hold", "").unwrap();
    let sink = ComponentConfig::from_toml("out", "blackhole", "").unwrap();
    let mut config = PipelineConfig::new_in_code(vec![source], vec![step], vec![sink]);
    config.pipeline.shards = Some(2);
    config.checkpoint.dir = tempfile::tempdir().unwrap().keep();
    config.checkpoint.interval = Duration::from_millis(100);
    let running = common::in_process::start(&config, &registry);
    let runtime = &running.runtime;
    let port = runtime.block_on(async {
        let started = Instant::now();
        loop {
            if let Some(port) =
                common::metrics::try_metric("weir_http_listening_port{source=\"api\"}")
            {
                break port as u16;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the source did not listen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let client = client();
    runtime.block_on(async {
        // 2,000 requests, 64 at a time: each answer is its own request's
        let mut tasks = tokio::task::JoinSet::new();
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        for i in 0..2000 {
            let client = client.clone();
            let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
            tasks.spawn(async move {
                let body = format!("req-{i}");
                let (status, _, answer) = post(&client, port, "/echo", &body).await;
                drop(permit);
                assert_eq!((status, answer), (200, format!("{body}!")));
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        assert_eq!(STEP_SEEN.load(Ordering::Relaxed), 2000);

        // hold the step: 300 requests fill the in-flight limit, the next
        // waits 100ms and is refused
        STEP_HOLD.store(true, Ordering::Relaxed);
        let mut held = tokio::task::JoinSet::new();
        for i in 0..300 {
            let client = client.clone();
            held.spawn(async move { post(&client, port, "/echo", &format!("held-{i}")).await });
        }
        let started = Instant::now();
        while common::metrics::metric("weir_http_in_flight{source=\"api\"}") < 300.0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the held requests were not admitted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, headers, answer) = post(&client, port, "/echo", "one too many").await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(
            headers.get("retry-after").map(|v| v.to_str().unwrap()),
            Some("1")
        );
        // the held ones pass request_timeout (2s): 504
        let mut timed_out = 0;
        while let Some(r) = held.join_next().await {
            let (status, _, answer) = r.unwrap();
            assert_eq!(status, 504, "{answer}");
            timed_out += 1;
        }
        assert_eq!(timed_out, 300);
    });
    // a body that stops arriving: 408 after body_timeout
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly a part")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    STEP_HOLD.store(false, Ordering::Relaxed);
    assert!(running.stop().drained);
}

/// A local server for the sink: answers 503 (with Retry-After: 1) to the
/// first `fail_first` requests, 400 to bodies with "bad", 200 otherwise,
/// and records the bodies it accepted and the Authorization it saw.
struct Receiver {
    fail_first: usize,
    seen: AtomicUsize,
    accepted: Mutex<Vec<String>>,
    auth: Mutex<Option<String>>,
}

impl Receiver {
    /// A receiver that answers 503 to the first `fail_first` requests.
    fn new(fail_first: usize) -> Arc<Receiver> {
        Arc::new(Receiver {
            fail_first,
            seen: AtomicUsize::new(0),
            accepted: Mutex::new(Vec::new()),
            auth: Mutex::new(None),
        })
    }
}

impl Handler for Receiver {
    fn handle(
        self: Arc<Self>,
        request: http::Request<Incoming>,
        _remote: SocketAddr,
    ) -> ResponseFuture {
        Box::pin(async move {
            if let Some(a) = request.headers().get("authorization") {
                *self.auth.lock().unwrap() = Some(a.to_str().unwrap().to_string());
            }
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            let n = self.seen.fetch_add(1, Ordering::Relaxed);
            let mut r = HttpResponse::new(serve::full(Bytes::new()));
            if n < self.fail_first {
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("1"));
            } else if body.contains("bad") {
                *r.status_mut() = http::StatusCode::BAD_REQUEST;
                *r.body_mut() = serve::full(Bytes::from_static(b"field `bad` is not allowed"));
            } else {
                self.accepted.lock().unwrap().push(body);
            }
            r
        })
    }
}

#[test]
fn the_http_sink_retries_until_accepted_and_dead_letters_rejections() {
    let receiver = Receiver::new(2);
    let (port, _runtime, _server) = start_receiver(&receiver);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "p.toml",
        &format!(
            r#"
[sources.gen]
type = "generator"
count = 30
payload = '{{"n":{{{{seq}}}},"kind":"{{{{rand:0:9}}}}"}}'
batch = {{ max_events = 1 }}

[[steps]]
name = "mark"
type = "jq"
expr = 'if .n % 10 == 7 then .bad = true else . end'

[sinks.hook]
type = "http"
url = "http://127.0.0.1:{port}/ingest"
encoding = "ndjson"
bearer_token_env = "HOOK_TOKEN"
initial_backoff = "10ms"
batch = {{ max_events = 1 }}

[sinks.dead]
type = "file"
path = "dead.jsonl"
format = "envelope"

[dead_letter]
sink = "dead"
"#
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", pipeline.to_str().unwrap()])
        .current_dir(dir.path())
        .env("HOOK_TOKEN", "s3cret")
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    let mut accepted: Vec<u64> = receiver
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l.trim()).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    accepted.sort_unstable();
    let expected: Vec<u64> = (0..30).filter(|n| n % 10 != 7).collect();
    assert_eq!(
        accepted, expected,
        "every event but the rejected ones, once"
    );
    assert_eq!(
        receiver.auth.lock().unwrap().as_deref(),
        Some("Bearer s3cret")
    );
    let dead = common::read_envelopes(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 3, "{dead:?}");
    for d in &dead {
        let reason = d["headers"]["weir.error"].as_str().unwrap_or_default();
        assert!(
            reason.contains("HTTP 400") && reason.contains("field `bad` is not allowed"),
            "{d}"
        );
    }
}

/// Starts the sink's receiver on a free port in its own runtime.
fn start_receiver(receiver: &Arc<Receiver>) -> (u16, tokio::runtime::Runtime, serve::StopServer) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (port, server) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let options = ServeOptions {
            header_timeout: Duration::from_secs(5),
            tls: None,
        };
        (port, serve::spawn(listener, options, Arc::clone(receiver)))
    });
    (port, runtime, server)
}

/// A generator (partition 0) through an http sink that rejects event 40
/// for good, with no dead-letter sink: the partition's checkpoint cannot
/// move past it, and `on_stuck` decides what happens.
fn stuck_pipeline(dir: &std::path::Path, port: u16, on_stuck: &str) -> std::path::PathBuf {
    write(
        dir,
        "stuck.toml",
        &format!(
            r#"
[sources.gen]
type = "generator"
rate = 400
partitions = 1
payload = '{{"n":{{{{seq}}}}}}'
batch = {{ max_events = 4, max_wait = "5ms" }}

[[steps]]
name = "mark"
type = "jq"
expr = 'if .n == 40 then .bad = true else . end'

[sinks.hook]
type = "http"
url = "http://127.0.0.1:{port}/ingest"
encoding = "ndjson"
batch = {{ max_events = 1 }}

[checkpoint]
interval = "100ms"
on_stuck = "{on_stuck}"
"#
        ),
    )
}

#[test]
fn a_stuck_partition_is_paused_and_the_process_is_not_ready() {
    let receiver = Receiver::new(0);
    let (port, _runtime, _server) = start_receiver(&receiver);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = stuck_pipeline(dir.path(), port, "pause");
    let admin = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("weir.log");
    let child = common::weir()
        .args(["run", "--admin-addr", &admin])
        .arg(&pipeline)
        .current_dir(dir.path())
        .env("WEIR_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = common::KillOnDrop(child);
    // the batch with event 40 is rejected; within a checkpoint tick the
    // partition is paused and /ready turns 503 naming the source
    let started = Instant::now();
    let body = loop {
        let (code, body) = common::admin::curl(&[&format!("http://{admin}/ready")]);
        if code == 503 && body.contains("stuck") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never reported stuck ({code} {body}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(body.contains("source `gen`: 1 stuck partition"), "{body}");
    let (_, metrics) = common::admin::curl(&[&format!("http://{admin}/metrics")]);
    assert!(
        metrics.contains("weir_source_partitions_stuck{source=\"gen\"} 1"),
        "{metrics}"
    );
    // batches dispatched before the pause may still be finishing in the
    // sink (a later batch written again after the failed one): wait until
    // the count holds for half a second
    let settle = Instant::now();
    let mut last = receiver.accepted.lock().unwrap().len();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = receiver.accepted.lock().unwrap().len();
        if now == last {
            break;
        }
        last = now;
        assert!(settle.elapsed() < Duration::from_secs(10), "never settled");
    }
    // the source no longer reads: nothing more reaches the sink (at 400/s
    // it would be another ~400 events in a second)
    let before = receiver.accepted.lock().unwrap().len();
    std::thread::sleep(Duration::from_secs(1));
    let after = receiver.accepted.lock().unwrap().len();
    assert_eq!(
        before, after,
        "reading went on after the partition got stuck"
    );
    assert!(after < 200, "read on for {after} events");
    // SIGTERM: the run did not deliver everything it read, so it exits 1
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("on_stuck = \"pause\""), "{log}");
}

#[test]
fn a_stuck_partition_fails_the_pipeline_when_asked() {
    let receiver = Receiver::new(0);
    let (port, _runtime, _server) = start_receiver(&receiver);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = stuck_pipeline(dir.path(), port, "fail");
    let started = Instant::now();
    let out = common::weir()
        .arg("run")
        .arg(&pipeline)
        .current_dir(dir.path())
        .env("WEIR_LOG", "warn")
        .output()
        .unwrap();
    // the generator never ends by itself: only the stuck partition stops it
    common::assert_failed_with(&out, "partition 0: a batch failed delivery");
    common::assert_failed_with(&out, "on_stuck = \"fail\"");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(receiver.accepted.lock().unwrap().len() < 400);
}
