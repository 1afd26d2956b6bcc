//! The `http` source's request handling on an in-memory connection, for
//! the fuzz target `http_request` (fuzz/): raw client bytes go through
//! hyper's HTTP/1 or HTTP/2 server, the route match, the admission (limits,
//! the request made an event) and the answer's shaping from the event's
//! `http.*` headers. Not part of the API.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use weir_config::ComponentConfig;
use weir_engine::reply::Outcome;

use super::config::HttpSourceConfig;
use super::invoke::{Admission, Invocation};
use super::listener;
use super::respond;

/// The route the bytes are served by: `POST /fn`, small limits.
const ROUTE: &str = r#"
address = "127.0.0.1:0"
path = "/fn"
method = "POST"
max_body = 4096
body_timeout = "100ms"
request_timeout = "200ms"
overload_wait = "10ms"
header_timeout = "100ms"
"#;

/// Serves `request` on a fresh connection and returns what was written
/// back. Each admitted request is answered with its own event emitted
/// twice when its body starts with `2` (several outputs), once otherwise,
/// dropped when empty. Call on a runtime with time enabled.
pub async fn serve_bytes(request: &[u8]) -> Vec<u8> {
    let component = ComponentConfig::from_toml("fuzz", "http", ROUTE).expect("the route parses");
    let config = Arc::new(HttpSourceConfig::from_component(&component).expect("the route checks"));
    let (tx, mut rx) = mpsc::unbounded_channel::<Invocation>();
    let admission = Arc::new(Admission::new(Arc::clone(&config), tx));
    let multiple = config.multiple;
    let answer = tokio::spawn(async move {
        while let Some(Invocation { event, respond }) = rx.recv().await {
            let events = match event.value.first() {
                None => Vec::new(),
                Some(b'2') => vec![event.clone(), event],
                Some(_) => vec![event],
            };
            let outcome = Outcome::Emitted {
                events,
                routed: Vec::new(),
            };
            let _ = respond.send(respond::outcome(outcome, multiple));
        }
    });
    let dispatcher = listener::dispatcher_for(&config.path, config.method.clone(), admission);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let serving = tokio::spawn(super::serve::serve_one(
        server,
        config.header_timeout,
        dispatcher,
    ));
    let _ = client.write_all(request).await;
    let _ = client.shutdown().await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut response)).await;
    serving.abort();
    answer.abort();
    response
}
