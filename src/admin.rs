//! The admin HTTP server, off the hot path: `/` (the dashboard page),
//! `/metrics` (Prometheus text), `/health` (the process is up), `/ready`
//! (the pipeline runs) and `/api/pipeline` (JSON: name, state, shards,
//! sources, steps, sinks, end-to-end latency percentiles).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection,
//! GET only, so the admin port pulls in no web framework.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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
}

/// The dashboard: one static page that polls `/api/pipeline` and `/metrics`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Binds `addr` and serves until the process ends. Returns the bound address.
pub async fn serve(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let _ = handle(stream, &state).await;
            });
        }
    });
    Ok(bound)
}

async fn handle(mut stream: TcpStream, state: &AdminState) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", DASHBOARD.to_string()),
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4",
            state.metrics.render(),
        ),
        ("GET", "/health") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/ready") if state.ready.load(Ordering::Relaxed) => {
            ("200 OK", "text/plain", "ready\n".to_string())
        }
        ("GET", "/ready") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        ("GET", "/api/pipeline") => {
            let mut d = state.description.clone();
            d["state"] = if state.ready.load(Ordering::Relaxed) {
                "running"
            } else {
                "stopped"
            }
            .into();
            let l = &state.latency;
            d["latency"] = serde_json::json!({
                "count": l.count(),
                "p50_us": l.quantile_micros(0.50),
                "p90_us": l.quantile_micros(0.90),
                "p99_us": l.quantile_micros(0.99),
                "p999_us": l.quantile_micros(0.999),
            });
            ("200 OK", "application/json", d.to_string())
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
