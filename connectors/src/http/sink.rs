//! The `http` sink: POSTs batches to a URL (HTTP or HTTPS) and acks them
//! only after a 2xx.
//!
//! - **Encoding**: `json-array` (one request per batch, values as a JSON
//!   array: JSON values as they are, others as strings), `ndjson` (one
//!   request per batch, a value per line) or `single` (one request per
//!   event, the value as the body, sent `concurrency` at a time).
//! - **Retries**: a refused or broken connection, a timeout, 429 and 5xx
//!   are retried `retries` times with exponential backoff and jitter (a delay
//!   between half and all of the doubled step);
//!   a `Retry-After` in seconds is waited at least. After that the write
//!   fails retryably and the pipeline's `[retry]` policy applies.
//! - **Rejection**: any other status (4xx) is final: the batch goes to the
//!   dead-letter sink with the status and the first 256 bytes of the body.
//! - **Concurrency**: up to `concurrency` batches in flight, settled in
//!   order.
//!
//! ```toml
//! [sinks.hook]
//! type = "http"
//! url = "https://example.internal/ingest"
//! encoding = "ndjson"
//! bearer_token_env = "HOOK_TOKEN"
//! headers = { "x-source" = "weir" }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::sink::Delivery;
use weir_engine::{Error, Event, Result, Sink};

use super::config::Multiple;
use super::respond::join_values;

/// How events become requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// One request per batch with a JSON array (default).
    #[default]
    JsonArray,
    /// One request per batch with one value per line.
    Ndjson,
    /// One request per event.
    Single,
}

/// Options of the `http` sink as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkOptions {
    /// `http://` or `https://` URL (required).
    pub url: String,
    /// Method; default `POST`.
    #[serde(default = "default_method")]
    pub method: String,
    /// `json-array` (default), `ndjson` or `single`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Environment variable holding a bearer token for `Authorization`.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Batches (or, with `single`, events of a batch) in flight; default 4.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Longest time for one request and its response; default 30s.
    #[serde(
        default = "default_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub timeout: Duration,
    /// Retries of a request on connection errors, 429 and 5xx; default 5.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay (before jitter); default 100ms.
    #[serde(
        default = "default_backoff",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub initial_backoff: Duration,
    /// Longest retry delay; default 10s.
    #[serde(
        default = "default_max_backoff",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub max_backoff: Duration,
}

fn default_method() -> String {
    "POST".into()
}
fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_retries() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_millis(100)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Everything a request needs; cloned into each delivery (cheap: the
/// client and headers are shared).
#[derive(Clone)]
struct Target {
    client: Client<Https, Full<Bytes>>,
    uri: Uri,
    /// `uri` fit for logs and dead-letter reasons (no credentials).
    shown: std::sync::Arc<str>,
    method: Method,
    headers: std::sync::Arc<HeaderMap>,
    timeout: Duration,
    retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

/// The running sink.
pub struct HttpSink {
    target: Target,
    encoding: Encoding,
    concurrency: usize,
}

/// Builds an `http` sink from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let o: HttpSinkOptions = config.options()?;
    let uri: Uri = o
        .url
        .parse()
        .map_err(|e| config.option_error("url", format!("`url` is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(config.option_error("url", "`url` must start with http:// or https://"));
        }
    }
    if uri.host().is_none() {
        return Err(config.option_error("url", "`url` has no host"));
    }
    let method = Method::from_bytes(o.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
        config.option_error("method", format!("`{}` is not an HTTP method", o.method))
    })?;
    if o.concurrency == 0 {
        return Err(config.option_error("concurrency", "`concurrency` must be at least 1"));
    }
    let mut headers = HeaderMap::new();
    let content_type = match o.encoding {
        Encoding::JsonArray => "application/json",
        Encoding::Ndjson => "application/x-ndjson",
        Encoding::Single => "application/octet-stream",
    };
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    for (name, value) in &o.headers {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            config.option_error("headers", format!("`{name}` is not a header name"))
        })?;
        let v = HeaderValue::from_str(value).map_err(|_| {
            config.option_error(
                "headers",
                format!("the value of `{name}` is not a header value"),
            )
        })?;
        headers.insert(n, v);
    }
    if let Some(var) = &o.bearer_token_env {
        let token = std::env::var(var).map_err(|_| {
            config.option_error(
                "bearer_token_env",
                format!("the environment variable `{var}` is not set"),
            )
        })?;
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
            config.option_error(
                "bearer_token_env",
                format!("the token in `{var}` is not a valid header value"),
            )
        })?;
        v.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| config.error(format!("loading the system's TLS roots: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    Ok(Box::new(HttpSink {
        target: Target {
            client,
            shown: crate::redact::url(&o.url).into(),
            uri,
            method,
            headers: std::sync::Arc::new(headers),
            timeout: o.timeout,
            retries: o.retries,
            initial_backoff: o.initial_backoff,
            max_backoff: o.max_backoff.max(o.initial_backoff),
        },
        encoding: o.encoding,
        concurrency: o.concurrency,
    }))
}

/// A batch's values in one body.
fn encode(events: &[Event], encoding: Encoding) -> Bytes {
    let multiple = match encoding {
        Encoding::Ndjson => Multiple::Ndjson,
        _ => Multiple::JsonArray,
    };
    join_values(events, multiple)
}

/// How one attempt ended.
enum Attempt {
    Done,
    /// Worth retrying, after at least this long if the server said so.
    Retry(String, Option<Duration>),
    /// Final.
    Rejected(String),
}

impl Target {
    /// Sends `body`, retrying as configured.
    async fn send(&self, body: Bytes) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            let (reason, after) = match self.attempt(body.clone()).await {
                Attempt::Done => return Ok(()),
                Attempt::Rejected(reason) => return Err(Error::external(reason)),
                Attempt::Retry(reason, after) => (reason, after),
            };
            if attempt >= self.retries {
                return Err(Error::retryable(format!(
                    "{reason} (after {} retries)",
                    self.retries
                )));
            }
            attempt += 1;
            let delay = jittered(self.initial_backoff, self.max_backoff, attempt)
                .max(after.unwrap_or_default());
            tracing::debug!(uri = %self.shown, attempt, %reason, ?delay, "http request failed; retrying");
            metrics::counter!("weir_http_sink_retries_total").increment(1);
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: Bytes) -> Attempt {
        let mut request = http::Request::new(Full::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = (*self.headers).clone();
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                // the error's chain says what failed (connect, TLS, I/O)
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    text.push_str(": ");
                    text.push_str(&s.to_string());
                    source = s.source();
                }
                text
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(300)));
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((status, retry_after, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Attempt::Retry(
                format!("no response from {} within {:?}", self.shown, self.timeout),
                None,
            ),
            Ok(Err(e)) => Attempt::Retry(format!("request to {} failed: {e}", self.shown), None),
            Ok(Ok((status, retry_after, body))) => {
                if status.is_success() {
                    return Attempt::Done;
                }
                let excerpt = String::from_utf8_lossy(&body[..body.len().min(256)])
                    .trim()
                    .to_string();
                let reason = format!("HTTP {status} from {}: {excerpt}", self.shown);
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    Attempt::Retry(reason, retry_after)
                } else {
                    Attempt::Rejected(reason)
                }
            }
        }
    }
}

/// Exponential backoff with jitter: a random delay between half and all of
/// `initial * 2^(attempt-1)`, capped at `max`.
fn jittered(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let nanos = cap.as_nanos() as u64;
    if nanos == 0 {
        return cap;
    }
    // a cheap random source is enough to spread retries
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Duration::from_nanos(nanos / 2 + seed % (nanos / 2 + 1))
}

#[async_trait]
impl Sink for HttpSink {
    async fn write(&mut self, events: &[Event]) -> Result<()> {
        self.start_write(events).await?.await
    }

    async fn start_write(&mut self, events: &[Event]) -> Result<Delivery> {
        let target = self.target.clone();
        match self.encoding {
            Encoding::Single => {
                let bodies: Vec<Bytes> = events.iter().map(|e| e.value.clone()).collect();
                let concurrency = self.concurrency;
                Ok(Box::pin(async move {
                    let mut results = stream::iter(bodies)
                        .map(|body| target.send(body))
                        .buffer_unordered(concurrency);
                    let mut first_error = None;
                    while let Some(r) = results.next().await {
                        if let Err(e) = r {
                            // a final rejection outranks a retryable failure
                            match &first_error {
                                Some(Error {
                                    retryable: false, ..
                                }) => {}
                                _ => first_error = Some(e),
                            }
                        }
                    }
                    first_error.map_or(Ok(()), Err)
                }))
            }
            encoding => {
                let body = encode(events, encoding);
                Ok(Box::pin(async move { target.send(body).await }))
            }
        }
    }

    fn max_inflight(&self) -> usize {
        match self.encoding {
            Encoding::Single => 1,
            _ => self.concurrency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_arrays_and_lines() {
        let events = vec![Event::new("{\"a\":1}"), Event::new("text")];
        assert_eq!(encode(&events, Encoding::JsonArray), "[{\"a\":1},\"text\"]");
        assert_eq!(encode(&events, Encoding::Ndjson), "{\"a\":1}\ntext\n");
    }

    #[test]
    fn jitter_stays_within_half_to_full_cap() {
        for attempt in 1..10 {
            let d = jittered(Duration::from_millis(100), Duration::from_secs(1), attempt);
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(Duration::from_secs(1));
            assert!(d <= cap && d >= cap / 2, "{attempt}: {d:?} vs {cap:?}");
        }
    }

    #[test]
    fn options_are_checked_where_written() {
        let err = |opts: &str| match build(&ComponentConfig::from_toml("h", "http", opts).unwrap())
        {
            Err(e) => e.to_string(),
            Ok(_) => panic!("built with {opts}"),
        };
        assert_eq!(
            err("url = 'ftp://x/'"),
            "error: <inline>:1:7: `url` must start with http:// or https://"
        );
        assert_eq!(
            err("url = 'http://x/'\nbearer_token_env = 'WEIR_TEST_SURELY_UNSET'"),
            "error: <inline>:2:20: the environment variable `WEIR_TEST_SURELY_UNSET` is not set"
        );
        assert_eq!(
            err("url = 'http://x/'\nconcurrency = 0"),
            "error: <inline>:2:15: `concurrency` must be at least 1"
        );
    }
}
