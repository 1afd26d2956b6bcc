//! The `http` scenario of `weir bench`: wrk on loopback posts a ~100-byte
//! JSON object, with the same connections, threads and duration, first to a
//! bare hyper server that runs the `json-add-field` step on each request
//! body and answers with the result, then to weir's synchronous invoke
//! (`http` source → `json-add-field` → blackhole, answered after the step).
//! Requests per second, p50 / p99 (wrk's) and the ratio are reported.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use weir_config::{ComponentConfig, PipelineConfig};
use weir_engine::{shutdown_channel, Event, Pipeline, Step, StepContext, StepOutput};

use super::report::{self, Baseline, BenchReport};
use super::BenchArgs;

/// Names of the HTTP scenarios.
pub const SCENARIOS: &[&str] = &["http"];

/// The request body.
const BODY: &str =
    r#"{"id":"0a1b2c3d","user":"someone@example.org","amount":125.5,"currency":"EUR","ok":true}"#;

/// The step's options, the same for both servers.
const STEP_OPTIONS: &str = "field = \"seen\"\nvalue = true\n";

/// wrk's measurements of one run.
#[derive(Debug, Default)]
struct WrkRun {
    requests: u64,
    requests_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    non_2xx: u64,
    errors: u64,
}

/// Runs the scenario.
pub fn run(_name: &str, args: &BenchArgs) -> Result<BenchReport, String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("the http scenario needs wrk (apt-get install wrk, or scripts/deps.sh)".into());
    }
    let seconds = args.seconds.unwrap_or(10).max(1);
    let connections = args.connections.unwrap_or(64).max(1);
    let shards = args
        .shards
        .unwrap_or_else(|| weir_engine::shard::available_cores().len())
        .max(1);
    crate::observability::init_metrics();
    let dir = tempfile_dir()?;
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .map_err(|e| format!("writing {}: {e}", script.display()))?;

    // the bare hyper server, on an I/O runtime of the same size as weir's
    eprintln!("http: baseline (bare hyper server with the same step)…");
    let runtime = io_runtime()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = runtime.spawn(bare_server(listener));
    let cpu = report::cpu_seconds();
    let baseline = wrk(&script, addr, "/", seconds, connections)?;
    let baseline_cpu = report::cpu_seconds() - cpu;
    server.abort();
    drop(runtime);

    eprintln!("http: weir (http source → json-add-field → blackhole)…");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let source = ComponentConfig::from_toml(
        "api",
        "http",
        &format!("address = \"127.0.0.1:{port}\"\npath = \"/fn\"\n"),
    )
    .map_err(|d| d.to_string())?;
    let step = ComponentConfig::from_toml("json-add-field", "json-add-field", STEP_OPTIONS)
        .map_err(|d| d.to_string())?;
    let sink =
        ComponentConfig::from_toml("blackhole", "blackhole", "").map_err(|d| d.to_string())?;
    let mut config = PipelineConfig::new_in_code(vec![source], vec![step], vec![sink]);
    config.pipeline.name = "bench-http".into();
    config.pipeline.shards = Some(shards);
    config.checkpoint.dir = std::env::temp_dir().join("weir-bench-checkpoints");
    let pipeline = Pipeline::build(&config, &crate::registry()).map_err(|d| d.to_string())?;
    report::reset_peak_rss();
    let runtime = io_runtime()?;
    let (trigger, _) = shutdown_channel();
    let run = runtime.spawn(pipeline.run(trigger.clone()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr)?;
    let cpu = report::cpu_seconds();
    let weir = wrk(&script, addr, "/fn", seconds, connections)?;
    let weir_cpu = report::cpu_seconds() - cpu;
    trigger.trigger();
    runtime
        .block_on(run)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);

    for (who, r) in [("baseline", &baseline), ("weir", &weir)] {
        if r.non_2xx > 0 || r.errors > 0 {
            return Err(format!(
                "{who}: {} non-2xx answers and {} socket errors; the figure would not be comparable",
                r.non_2xx, r.errors
            ));
        }
    }
    let cores = weir_engine::shard::available_cores().len().max(1);
    let mut extra = serde_json::Map::new();
    extra.insert("connections".into(), json!(connections));
    extra.insert("wrk_threads".into(), json!(wrk_threads()));
    extra.insert("baseline_p50_us".into(), json!(baseline.p50_us));
    extra.insert("baseline_p99_us".into(), json!(baseline.p99_us));
    extra.insert("cores".into(), json!(cores));
    // the server's CPU only (wrk is another process)
    extra.insert(
        "cpu_ns_per_event".into(),
        json!(report::ns_per_event(weir_cpu, weir.requests).round()),
    );
    extra.insert(
        "baseline_cpu_ns_per_event".into(),
        json!(report::ns_per_event(baseline_cpu, baseline.requests).round()),
    );
    extra.insert(
        "requests_per_sec_per_core".into(),
        json!((weir.requests_per_sec / cores as f64).round()),
    );
    Ok(BenchReport {
        scenario: "http".into(),
        events: weir.requests,
        seconds: seconds as f64,
        events_per_sec: weir.requests_per_sec,
        baseline: Baseline {
            name: "a bare hyper server running the same json-add-field step per request".into(),
            events_per_sec: baseline.requests_per_sec,
        },
        ratio: weir.requests_per_sec / baseline.requests_per_sec,
        rss_peak_bytes: report::peak_rss_bytes(),
        p50_us: weir.p50_us,
        p99_us: weir.p99_us,
        shards,
        extra,
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("weir-bench-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn io_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-io")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// wrk gets one thread: on two cores the servers need the rest.
fn wrk_threads() -> usize {
    1
}

fn wait_listening(addr: SocketAddr) -> Result<(), String> {
    for _ in 0..500 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("nothing listens on {addr}"))
}

fn wrk(
    script: &Path,
    addr: SocketAddr,
    path: &str,
    seconds: u64,
    connections: usize,
) -> Result<WrkRun, String> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", wrk_threads()))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}{path}"))
        .output()
        .map_err(|e| format!("running wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// Reads requests, req/s, the 50% and 99% latencies and error counts.
fn parse_wrk(text: &str) -> Option<WrkRun> {
    let mut run = WrkRun::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", rate] => run.requests_per_sec = rate.parse().ok()?,
            [n, "requests", "in", ..] => run.requests = n.parse().ok()?,
            ["50%", d] => run.p50_us = micros(d)?,
            ["99%", d] => run.p99_us = micros(d)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                run.errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    (run.requests_per_sec > 0.0).then_some(run)
}

/// `1.23ms` → 1230.
fn micros(d: &str) -> Option<u64> {
    let (number, scale) = if let Some(n) = d.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = d.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = d.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    Some((number.parse::<f64>().ok()? * scale).round() as u64)
}

thread_local! {
    /// Each I/O thread's instance of the step.
    static STEP: RefCell<Option<Box<dyn Step>>> = const { RefCell::new(None) };
}

/// The bare server: hyper HTTP/1.1 with keep-alive, the step run on each
/// body, its output as the answer.
async fn bare_server(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let value = add_field(body);
                let mut response = Response::new(Full::new(value));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Runs the `json-add-field` step on one body (its work never waits, so
/// the future completes on its first poll).
fn add_field(body: Bytes) -> Bytes {
    STEP.with(|cell| {
        let mut slot = cell.borrow_mut();
        let step = slot.get_or_insert_with(|| {
            let config =
                ComponentConfig::from_toml("json-add-field", "json-add-field", STEP_OPTIONS)
                    .expect("static options");
            crate::registry()
                .build_step(&config, &mut StepContext::new(&[]))
                .expect("json-add-field is registered")
                .build()
                .expect("the step builds")
        });
        let mut input = vec![Event::new(body)];
        let mut output = StepOutput::new();
        step.process(&mut input, &mut output)
            .now_or_never()
            .expect("json-add-field does not wait");
        output.events.pop().map(|e| e.value).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     1.03ms  300.00us   9.00ms   90.00%\n  Latency Distribution\n     50%  840.00us\n     75%    1.10ms\n     90%    1.50ms\n     99%    2.31ms\n  612345 requests in 10.00s, 80.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  61234.50\nTransfer/sec:      8.00MB\n";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 612345);
        assert_eq!(r.requests_per_sec, 61234.5);
        assert_eq!((r.p50_us, r.p99_us), (840, 2310));
        assert_eq!(r.non_2xx, 3);
    }
}
