//! The admin server, on the I/O runtime (never on a shard's core): `/`
//! (the dashboard page), `/metrics` (Prometheus text), `/health` (the
//! process is up), `/ready` (the pipeline runs) and `/api/pipeline` (JSON:
//! name, state, shards, sources, steps, sinks, end-to-end latency
//! percentiles), under `/api/v1/functions` the functions' versions and the
//! operations on them (`src/admin_functions.rs`), and the live pipeline
//! state, its stream and the pipeline-wide controls
//! (`src/admin_pipeline.rs`).
//!
//! Served by hyper through the same loop as the `http` source
//! ([`weir_connectors::http::serve`]): keep-alive, HTTP/2, a header read
//! timeout, back-off on accept errors.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use hyper::{Request, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use weir_connectors::http::serve::{
    self, Handler, HttpResponse, ResponseFuture, ServeOptions, StopServer,
};
use weir_engine::LatencyHistogram;

/// What the admin server reports.
pub struct AdminState {
    /// Prometheus handle.
    pub metrics: PrometheusHandle,
    /// Whether the pipeline is running.
    pub ready: AtomicBool,
    /// `/api/pipeline` body.
    pub description: serde_json::Value,
    /// End-to-end latency of delivered batches.
    pub latency: Arc<LatencyHistogram>,
    /// The bearer token mutating endpoints require; without one they are off.
    pub token: Option<String>,
    /// The latest live view (`/api/v1/pipeline`), remade every second.
    pub live: tokio::sync::watch::Receiver<Arc<str>>,
    /// The pipeline file, for `POST /api/v1/reload`.
    pub file: std::path::PathBuf,
    /// Stops the pipeline gracefully, for `POST /api/v1/drain`.
    pub drain: weir_engine::ShutdownTrigger,
}

/// The dashboard: one static page fed by `/api/v1/pipeline/stream`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Longest time a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves on the current runtime until the returned
/// handle is dropped, over HTTPS only when `tls` names a certificate and
/// key. Returns the bound address too.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
    tls: Option<&weir_config::TlsFiles>,
) -> std::io::Result<(SocketAddr, StopServer)> {
    let tls = match tls {
        Some(files) => Some(
            serve::tls_acceptor(&files.cert, &files.key)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let options = ServeOptions {
        header_timeout: HEADER_TIMEOUT,
        tls,
    };
    let stop = serve::spawn(listener, options, Arc::new(Admin(state)));
    Ok((bound, stop))
}

struct Admin(Arc<AdminState>);

impl Handler for Admin {
    fn handle(self: Arc<Self>, request: Request<Incoming>, _remote: SocketAddr) -> ResponseFuture {
        if request
            .uri()
            .path()
            .starts_with(crate::admin_functions::PREFIX)
        {
            let state = Arc::clone(&self.0);
            return Box::pin(async move { crate::admin_functions::answer(&state, request).await });
        }
        if request.uri().path().starts_with("/api/v1/") {
            let state = Arc::clone(&self.0);
            return Box::pin(async move { crate::admin_pipeline::answer(&state, request).await });
        }
        let response = answer(&self.0, request.method(), request.uri().path());
        Box::pin(async move { response })
    }
}

fn answer(state: &AdminState, method: &Method, path: &str) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let ready = state.ready.load(Ordering::Relaxed);
    match path {
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(DASHBOARD.as_bytes()),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render().into(),
        ),
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/ready" => match (ready, stuck_sources()) {
            (true, None) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            (true, Some(why)) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n").into(),
            ),
            (false, _) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".into(),
            ),
        },
        "/api/pipeline" => {
            let mut d = state.description.clone();
            d["state"] = if ready { "running" } else { "stopped" }.into();
            let l = &state.latency;
            d["latency"] = serde_json::json!({
                "count": l.count(),
                "p50_us": l.quantile_micros(0.50),
                "p90_us": l.quantile_micros(0.90),
                "p99_us": l.quantile_micros(0.99),
                "p999_us": l.quantile_micros(0.999),
            });
            reply(StatusCode::OK, "application/json", d.to_string().into())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// A response with a body of one content type.
pub fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> HttpResponse {
    let mut r = Response::new(serve::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

/// Which sources stopped reading partitions whose checkpoint cannot move
/// (`on_stuck = "pause"`), as `source `a`: 1 stuck partition`, or `None`.
fn stuck_sources() -> Option<String> {
    use weir_engine::live::{kind, snapshot};
    let live = snapshot();
    let stuck: Vec<String> = live
        .names(kind::SOURCE)
        .into_iter()
        .filter_map(|name| {
            let n = live.get(kind::SOURCE, &name, "stuck");
            (n > 0).then(|| format!("source `{name}`: {n} stuck partition(s)"))
        })
        .collect();
    (!stuck.is_empty()).then(|| stuck.join(", "))
}
