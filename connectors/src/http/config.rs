//! Options of the `http` source, checked where they are written.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use weir_config::{ComponentConfig, Diagnostic};

/// When a synchronous request is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The response is what the steps made of the request (default).
    #[default]
    Sync,
    /// `202 Accepted` with the event's id, once the sinks durably wrote it.
    Async,
}

/// How long a synchronous response waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RespondAfter {
    /// As soon as the last step ran (default).
    #[default]
    Steps,
    /// Once every sink acknowledged the event's outputs.
    Sinks,
}

/// How several output events of one request are written in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Multiple {
    /// A JSON array: JSON values as they are, anything else as a string
    /// (default).
    #[default]
    JsonArray,
    /// One value per line (`application/x-ndjson`).
    Ndjson,
}

pub use weir_config::TlsFiles;

/// Options of the `http` source as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceOptions {
    /// `HOST:PORT` to listen on; default `127.0.0.1:8080`. Sources with the
    /// same address share one listener (their routes must differ).
    #[serde(default = "default_address")]
    pub address: String,
    /// The route's path, starting with `/`; default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Method the route answers; default `POST`; `*` for any.
    #[serde(default = "default_method")]
    pub method: String,
    /// `sync` (default) or `async`.
    #[serde(default)]
    pub mode: Mode,
    /// Synchronous mode: answer after the `steps` (default) or after the
    /// `sinks` acknowledged.
    #[serde(default)]
    pub respond_after: RespondAfter,
    /// Several outputs as `json-array` (default) or `ndjson`.
    #[serde(default)]
    pub multiple: Multiple,
    /// Largest request body in bytes; default 1 MiB. Larger: 413.
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Longest time to read a request's headers; default 10s. The
    /// connection is closed after it.
    #[serde(
        default = "default_header_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub header_timeout: Duration,
    /// Longest time to read a request's body; default 30s. Slower: 408.
    #[serde(
        default = "default_body_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub body_timeout: Duration,
    /// Longest time from a complete request to its response; default 30s.
    /// Longer: 504 (the event may still be processed).
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub request_timeout: Duration,
    /// Most requests of this route in flight at once; default 4096.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long a request waits for room when `max_in_flight` are in
    /// flight; default 250ms. Then: 503 with `Retry-After`.
    #[serde(
        default = "default_overload_wait",
        deserialize_with = "weir_config::deserialize_duration"
    )]
    pub overload_wait: Duration,
    /// Request header whose value becomes the event's key (events with a
    /// key stay in order per key); default none.
    #[serde(default)]
    pub key_header: Option<String>,
    /// Serve HTTPS with these files; default plain HTTP (HTTP/1.1, and
    /// HTTP/2 with prior knowledge).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

fn default_address() -> String {
    "127.0.0.1:8080".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_method() -> String {
    "POST".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_in_flight() -> usize {
    4096
}
fn default_overload_wait() -> Duration {
    Duration::from_millis(250)
}

/// The checked options.
#[derive(Debug, Clone)]
pub struct HttpSourceConfig {
    /// Where to listen.
    pub address: SocketAddr,
    /// The route's path.
    pub path: String,
    /// The route's method; `None` answers any.
    pub method: Option<http::Method>,
    /// Sync or async.
    pub mode: Mode,
    /// When a sync response is sent.
    pub respond_after: RespondAfter,
    /// How several outputs are written.
    pub multiple: Multiple,
    /// Largest body.
    pub max_body: usize,
    /// Header read limit.
    pub header_timeout: Duration,
    /// Body read limit.
    pub body_timeout: Duration,
    /// Response wait limit.
    pub request_timeout: Duration,
    /// In-flight limit.
    pub max_in_flight: usize,
    /// Wait for room before 503.
    pub overload_wait: Duration,
    /// Header that keys events (lowercase).
    pub key_header: Option<http::HeaderName>,
    /// TLS files.
    pub tls: Option<TlsFiles>,
}

impl HttpSourceConfig {
    /// Checks the options of `config`.
    pub fn from_component(config: &ComponentConfig) -> Result<Self, Diagnostic> {
        let o: HttpSourceOptions = config.options()?;
        let address = o.address.parse::<SocketAddr>().map_err(|e| {
            config.option_error(
                "address",
                format!(
                    "`address` must be HOST:PORT with an IP host, like \"127.0.0.1:8080\": {e}"
                ),
            )
        })?;
        if !o.path.starts_with('/') || o.path.contains(['?', '#', ' ']) {
            return Err(config.option_error(
                "path",
                format!(
                    "`path` must start with `/` and hold no `?`, `#` or space; found `{}`",
                    o.path
                ),
            ));
        }
        let method = match o.method.as_str() {
            "*" => None,
            m => Some(
                http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    config.option_error("method", format!("`{m}` is not an HTTP method"))
                })?,
            ),
        };
        if o.max_body == 0 {
            return Err(config.option_error("max_body", "`max_body` must be at least 1"));
        }
        if o.max_in_flight == 0 {
            return Err(config.option_error("max_in_flight", "`max_in_flight` must be at least 1"));
        }
        for (key, d) in [
            ("header_timeout", o.header_timeout),
            ("body_timeout", o.body_timeout),
            ("request_timeout", o.request_timeout),
        ] {
            if d.is_zero() {
                return Err(config.option_error(key, format!("`{key}` must be greater than 0")));
            }
        }
        let key_header = match &o.key_header {
            None => None,
            Some(h) => Some(
                http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    config.option_error("key_header", format!("`{h}` is not a header name"))
                })?,
            ),
        };
        if let Some(tls) = &o.tls {
            for (what, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                if !path.is_file() {
                    return Err(config.option_error(
                        "tls",
                        format!("`tls.{what}`: no file at {}", path.display()),
                    ));
                }
            }
        }
        Ok(HttpSourceConfig {
            address,
            path: o.path,
            method,
            mode: o.mode,
            respond_after: o.respond_after,
            multiple: o.multiple,
            max_body: o.max_body,
            header_timeout: o.header_timeout,
            body_timeout: o.body_timeout,
            request_timeout: o.request_timeout,
            max_in_flight: o.max_in_flight,
            overload_wait: o.overload_wait,
            key_header,
            tls: o.tls,
        })
    }
}
