//! The pipeline endpoints under `/api/v1/` (besides `/api/v1/functions`):
//!
//! - `GET /api/v1/pipeline` — the live state (`src/admin_live.rs`).
//! - `GET /api/v1/pipeline/stream` — the same, once a second, as
//!   server-sent events (`data: {…}` per second).
//! - `POST /api/v1/reload` — read the pipeline file again and deploy every
//!   function whose file changed (as SIGHUP does).
//! - `POST /api/v1/drain` — stop reading, deliver and commit what is in
//!   flight, exit (as SIGTERM does).
//! - `POST /api/v1/sources/NAME/pause` and `…/resume` — stop and restart a
//!   source's reading (its next dispatch waits; what is in flight goes on).
//! - `POST /api/v1/replay` with `{"file": "PATH"}` — replay a dead-letter
//!   file through this pipeline's steps and sinks (`weir replay`, run as a
//!   child process so its functions and metrics do not mix with this run's);
//!   `GET /api/v1/replay` lists the replays started and how they ended.
//! - `GET /api/v1/tap/STAGE?limit=N` — a live sample of the events leaving
//!   a stage (`source:NAME`, `step:NAME`, `sink:NAME`) as server-sent
//!   events, at most `N` (default 20, at most 1000) within 60 s.
//!
//! Every `POST`, and the tap (it shows event data), needs the admin bearer
//! token (`401` without it or with a wrong one; `403` when no token is
//! configured).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use weir_connectors::http::serve::{Body, HttpResponse, StreamingBody};

use http_body_util::BodyExt;

use crate::admin::AdminState;
use crate::admin_functions::{authorize, error, json};

/// Answers a request under `/api/v1/` other than the functions'.
pub async fn answer(state: &AdminState, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let method = request.method().clone();
    match (path.as_str(), &method) {
        ("/api/v1/pipeline", &Method::GET | &Method::HEAD) => {
            let view = Arc::clone(&state.live.borrow());
            crate::admin::reply(StatusCode::OK, "application/json", Bytes::from(view.to_string()))
        }
        ("/api/v1/pipeline/stream", &Method::GET) => stream(state),
        ("/api/v1/reload", &Method::POST) => {
            if let Some(refused) = authorize(state, &request) {
                return refused;
            }
            let file = state.file.clone();
            // in a task of its own: a client that goes away cannot cancel a deploy halfway
            match tokio::spawn(async move { crate::reload::reload(&file).await }).await {
                Ok(()) => json(StatusCode::OK, &weir_versions::catalog().list()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("reload failed: {e}")),
            }
        }
        ("/api/v1/drain", &Method::POST) => {
            if let Some(refused) = authorize(state, &request) {
                return refused;
            }
            tracing::info!("drain requested through the admin API: stopping sources, draining, committing");
            state.drain.trigger();
            json(StatusCode::ACCEPTED, &serde_json::json!({"draining": true}))
        }
        (source, &Method::POST) if source.starts_with("/api/v1/sources/") => {
            if let Some(refused) = authorize(state, &request) {
                return refused;
            }
            let rest = &source["/api/v1/sources/".len()..];
            let (name, paused) = match rest.rsplit_once('/') {
                Some((name, "pause")) => (name, true),
                Some((name, "resume")) => (name, false),
                _ => return error(StatusCode::NOT_FOUND, "use POST /api/v1/sources/NAME/pause or …/resume"),
            };
            if weir_engine::pause::set(name, paused) {
                tracing::info!(source = name, paused, "source paused or resumed through the admin API");
                json(StatusCode::OK, &serde_json::json!({"source": name, "paused": paused}))
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    &format!("no source `{name}`; sources: {}", weir_engine::pause::sources().join(", ")),
                )
            }
        }
        ("/api/v1/replay", &Method::GET) => json(StatusCode::OK, &replays().list()),
        ("/api/v1/replay", &Method::POST) => {
            if let Some(refused) = authorize(state, &request) {
                return refused;
            }
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Replay {
                file: std::path::PathBuf,
            }
            let body = match http_body_util::Limited::new(request.into_body(), 64 << 10).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
            };
            let asked: Replay = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the body must be {{\"file\": \"PATH\"}}: {e}")),
            };
            match replays().start(&asked.file, &state.file) {
                Ok(v) => json(StatusCode::ACCEPTED, &v),
                Err(e) => error(StatusCode::BAD_REQUEST, &e),
            }
        }
        (tap, &Method::GET) if tap.starts_with("/api/v1/tap/") => {
            if let Some(refused) = authorize(state, &request) {
                return refused;
            }
            let stage = percent_decode(&tap["/api/v1/tap/".len()..]);
            let limit = request
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(20)
                .clamp(1, 1000);
            match weir_engine::tap::find(&stage) {
                Some(tap) => sample(&stage, tap, limit),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no stage `{stage}`; stages: {}", weir_engine::tap::stages().join(", ")),
                ),
            }
        }
        ("/api/v1/pipeline" | "/api/v1/pipeline/stream", _) => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        ("/api/v1/reload" | "/api/v1/drain" | "/api/v1/replay", _) => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        _ => error(
            StatusCode::NOT_FOUND,
            "no such endpoint: /api/v1/pipeline, /api/v1/pipeline/stream, /api/v1/reload, /api/v1/drain, /api/v1/functions",
        ),
    }
}

/// Server-sent events: the current view at once, then each new one.
fn stream(state: &AdminState) -> HttpResponse {
    let live = state.live.clone();
    let events = futures_util::stream::unfold((live, true), |(mut live, first)| async move {
        if !first && live.changed().await.is_err() {
            return None; // the sampler stopped: the pipeline is gone
        }
        let view = Arc::clone(&live.borrow_and_update());
        let chunk = Bytes::from(format!("data: {view}\n\n"));
        Some((Ok::<_, Infallible>(Frame::data(chunk)), (live, false)))
    });
    server_sent(http_body_util::StreamBody::new(Box::pin(events)))
}

/// How long a tap stream stays open at most.
const TAP_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Server-sent events: up to `limit` sampled events of `stage`, one JSON
/// object each, within [`TAP_FOR`].
fn sample(stage: &str, tap: Arc<weir_engine::tap::Tap>, limit: usize) -> HttpResponse {
    let listener = tap.listen();
    let deadline = tokio::time::Instant::now() + TAP_FOR;
    let stage: Arc<str> = stage.into();
    let events = futures_util::stream::unfold((listener, 0usize), move |(mut listener, sent)| {
        let stage = Arc::clone(&stage);
        async move {
            if sent >= limit {
                return None;
            }
            let event = tokio::time::timeout_at(deadline, listener.next())
                .await
                .ok()??;
            let text = serde_json::json!({
                "stage": &*stage,
                "key": event.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                "value": String::from_utf8_lossy(&event.value),
                "headers": event.headers.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), serde_json::Value::from(String::from_utf8_lossy(v).into_owned()))).collect::<serde_json::Map<String, serde_json::Value>>(),
                "timestamp_ms": event.timestamp_ms,
                "partition": event.origin.partition,
                "offset": event.origin.offset,
            });
            let chunk = Bytes::from(format!("data: {text}\n\n"));
            Some((
                Ok::<_, Infallible>(Frame::data(chunk)),
                (listener, sent + 1),
            ))
        }
    });
    server_sent(http_body_util::StreamBody::new(Box::pin(events)))
}

/// `step%3Aenrich` → `step:enrich`: clients may escape the colon of a
/// stage id in a path (stage names themselves are plain TOML keys).
fn percent_decode(text: &str) -> String {
    text.replace("%3A", ":").replace("%3a", ":")
}

/// A `text/event-stream` response over `body`.
fn server_sent(body: StreamingBody) -> HttpResponse {
    let mut response = Response::new(Body::Right(body));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

/// The replays this process started, newest last.
#[derive(Default)]
struct Replays {
    runs: std::sync::Mutex<Vec<ReplayRun>>,
}

struct ReplayRun {
    file: String,
    pid: u32,
    started_unix_ms: u64,
    /// `None` while it runs; the exit code once it ended.
    exit: Arc<std::sync::Mutex<Option<i32>>>,
}

fn replays() -> &'static Replays {
    static REPLAYS: std::sync::OnceLock<Replays> = std::sync::OnceLock::new();
    REPLAYS.get_or_init(Replays::default)
}

impl Replays {
    /// Starts `weir replay FILE PIPELINE` as a child process.
    fn start(
        &self,
        file: &std::path::Path,
        pipeline: &std::path::Path,
    ) -> Result<serde_json::Value, String> {
        if !file.is_file() {
            return Err(format!("no file `{}` on the server", file.display()));
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find weir's own binary: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("replay")
            .arg(file)
            .arg(pipeline)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("cannot start the replay: {e}"))?;
        let pid = child.id().unwrap_or(0);
        let exit = Arc::new(std::sync::Mutex::new(None));
        let ended = Arc::clone(&exit);
        let shown = file.display().to_string();
        tokio::spawn(async move {
            let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
            tracing::info!(file = %shown, code, "replay ended");
            *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
        });
        tracing::info!(file = %file.display(), pid, "replay started through the admin API");
        let run = ReplayRun {
            file: file.display().to_string(),
            pid,
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            exit,
        };
        let shown = run.json();
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(run);
        Ok(shown)
    }

    fn list(&self) -> serde_json::Value {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({ "replays": runs.iter().map(ReplayRun::json).collect::<Vec<_>>() })
    }
}

impl ReplayRun {
    fn json(&self) -> serde_json::Value {
        let exit = *self.exit.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "file": self.file,
            "pid": self.pid,
            "started_unix_ms": self.started_unix_ms,
            "state": match exit { None => "running", Some(0) => "done", Some(_) => "failed" },
            "exit_code": exit,
        })
    }
}
