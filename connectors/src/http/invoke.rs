//! Admission of one request into a route's source: the in-flight limit
//! (503 after `overload_wait`), the body limits (413, 408), the request
//! made an event, and the wait for its answer (504 after
//! `request_timeout`). Runs on the connection's task, never on a shard: a
//! slow client holds only its own connection and permit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::Request;
use tokio::sync::{mpsc, oneshot, Semaphore};
use weir_engine::Event;

use super::config::HttpSourceConfig;
use super::respond;
use super::serve::HttpResponse;
use crate::control::now_ms;

/// Event header with the request's method.
pub const METHOD_HEADER: &str = "http.method";
/// Event header with the request's path.
pub const PATH_HEADER: &str = "http.path";
/// Event header with the request's query string (absent when empty).
pub const QUERY_HEADER: &str = "http.query";
/// Event header with the client's address (`IP:PORT`).
pub const REMOTE_HEADER: &str = "http.remote";

/// How many bytes beyond `max_body` are read and discarded before a 413.
const DRAIN_EXCESS: u64 = 1 << 20;

/// A request on its way into the source, with where its answer goes.
pub(crate) struct Invocation {
    /// The request as an event (offset set by the source).
    pub(crate) event: Event,
    /// The answer.
    pub(crate) respond: oneshot::Sender<HttpResponse>,
}

/// The door of one route.
pub(crate) struct Admission {
    config: Arc<HttpSourceConfig>,
    permits: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Invocation>,
    closed: AtomicBool,
}

impl Admission {
    /// A door that hands requests to `tx`.
    pub(crate) fn new(
        config: Arc<HttpSourceConfig>,
        tx: mpsc::UnboundedSender<Invocation>,
    ) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            tx,
            closed: AtomicBool::new(false),
        }
    }

    /// Refuses every later request with 503 (the source is stopping).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Requests admitted and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.config.max_in_flight - self.permits.available_permits()
    }

    /// Admits `request`, hands it on and waits for its answer.
    pub(crate) async fn invoke(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
    ) -> HttpResponse {
        if self.closed.load(Ordering::Relaxed) {
            return respond::unavailable("the source is stopping");
        }
        let c = &self.config;
        if let Some(len) = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > c.max_body as u64 {
                // read a modest excess away first, so the client sees the
                // 413 rather than a connection reset while it still sends
                if len <= (c.max_body as u64).saturating_add(DRAIN_EXCESS) {
                    let wait = c.body_timeout.min(std::time::Duration::from_secs(1));
                    let _ = tokio::time::timeout(wait, request.into_body().collect()).await;
                }
                return respond::too_large(c.max_body);
            }
        }
        let permit =
            match tokio::time::timeout(c.overload_wait, Arc::clone(&self.permits).acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => return respond::unavailable("the source is stopping"),
                Err(_) => {
                    metrics::counter!("weir_http_overloaded_total").increment(1);
                    return respond::overloaded(c.max_in_flight);
                }
            };
        let (parts, body) = request.into_parts();
        let body =
            match tokio::time::timeout(c.body_timeout, Limited::new(body, c.max_body).collect())
                .await
            {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e))
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some() =>
                {
                    return respond::too_large(c.max_body)
                }
                Ok(Err(e)) => {
                    return respond::plain(
                        StatusCode::BAD_REQUEST,
                        &format!("reading the body failed: {e}\n"),
                    )
                }
                Err(_) => {
                    return respond::plain(
                        StatusCode::REQUEST_TIMEOUT,
                        &format!("the body did not arrive within {:?}\n", c.body_timeout),
                    )
                }
            };
        let event = to_event(&parts, body, remote, c);
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Invocation { event, respond: tx }).is_err() {
            return respond::unavailable("the source is stopping");
        }
        let response = match tokio::time::timeout(c.request_timeout, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => respond::unavailable("the source stopped before answering"),
            Err(_) => {
                metrics::counter!("weir_http_timed_out_total").increment(1);
                respond::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    None,
                    &format!(
                        "no answer within {:?}; the event may still be processed",
                        c.request_timeout
                    ),
                    true,
                )
            }
        };
        drop(permit);
        response
    }
}

/// Where a header lies in the shared buffer: its name's span (or `None`
/// with a static name) and its value's span.
type HeaderSpan = (Option<(usize, usize)>, &'static str, (usize, usize));

/// The request as an event: the body is the value; headers are kept
/// (names lowercase) and the method, path, query and remote address are
/// added as `http.*` headers. Every header byte goes into one buffer that
/// the headers share (one allocation per request, not two per header).
fn to_event(
    parts: &http::request::Parts,
    body: Bytes,
    remote: SocketAddr,
    c: &HttpSourceConfig,
) -> Event {
    use std::fmt::Write as _;
    let path = parts.uri.path().as_bytes();
    let query = parts.uri.query().unwrap_or("").as_bytes();
    let method = parts.method.as_str().as_bytes();
    let size: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum::<usize>()
        + path.len()
        + query.len()
        + method.len()
        + 48;
    let mut buf = bytes::BytesMut::with_capacity(size);
    // (start, end) of names and values in `buf`; static names have no span
    let mut spans: Vec<HeaderSpan> = Vec::with_capacity(parts.headers.len() + 4);
    let put = |buf: &mut bytes::BytesMut, bytes: &[u8]| {
        let start = buf.len();
        buf.extend_from_slice(bytes);
        (start, buf.len())
    };
    spans.push((None, METHOD_HEADER, put(&mut buf, method)));
    spans.push((None, PATH_HEADER, put(&mut buf, path)));
    if !query.is_empty() {
        spans.push((None, QUERY_HEADER, put(&mut buf, query)));
    }
    let start = buf.len();
    let _ = write!(buf, "{remote}");
    spans.push((None, REMOTE_HEADER, (start, buf.len())));
    for (name, value) in &parts.headers {
        let n = put(&mut buf, name.as_str().as_bytes());
        let v = put(&mut buf, value.as_bytes());
        spans.push((Some(n), "", v));
    }
    let all = buf.freeze();
    let headers = spans
        .into_iter()
        .map(|(name, fixed, (vs, ve))| {
            let name = match name {
                Some((ns, ne)) => all.slice(ns..ne),
                None => Bytes::from_static(fixed.as_bytes()),
            };
            (name, all.slice(vs..ve))
        })
        .collect();
    let key = c
        .key_header
        .as_ref()
        .and_then(|h| parts.headers.get(h))
        .map(|v| Bytes::copy_from_slice(v.as_bytes()));
    Event {
        key,
        value: body,
        headers,
        timestamp_ms: now_ms(),
        origin: Default::default(),
    }
}
