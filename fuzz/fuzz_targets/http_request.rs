//! Raw bytes from an HTTP client, served by the `http` source's request
//! handling on an in-memory connection: hyper's HTTP/1 and HTTP/2 parsing,
//! the route and method match, the body limits, the request made an event
//! (headers, method, path, query) and the answer shaped from the event's
//! `http.*` headers. Any bytes get an answer or a closed connection, never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _ = runtime.block_on(weir_connectors::http::fuzzing::serve_bytes(data));
});
