//! The `http` source: functions behind HTTP routes (synchronous and
//! asynchronous invoke), on hyper.
//!
//! - **Delivery**: synchronous (`mode = "sync"`): the answer is what the
//!   steps made of the request (200 with the output, 204 dropped, 422 / 503
//!   failed), after the steps or, with `respond_after = "sinks"`, after the
//!   sinks acknowledged it. Asynchronous (`mode = "async"`): `202` with the
//!   event's id only once every sink durably wrote it, so a 202 is never
//!   lost. A request not answered with success was not (or not surely)
//!   processed; the client retries.
//! - **Ordering**: requests with the same key (`key_header`) are processed
//!   in arrival order; others are spread over the shards batch by batch.
//! - **Partitions**: batches go round-robin over one partition per shard;
//!   offsets count requests from 0 in each run.
//! - **Backpressure**: a full shard holds dispatch; requests then wait in
//!   the route's in-flight limit (`max_in_flight`), and beyond it a request
//!   waits `overload_wait` and is answered 503 with `Retry-After`.
//! - **Checkpoint**: none; nothing is re-read after a restart (the client
//!   owns the retry).
//! - **End**: at shutdown: new requests get 503, dispatched ones are
//!   answered, connections close gracefully.
//!
//! ```toml
//! [sources.api]
//! type = "http"
//! address = "127.0.0.1:8080"
//! path = "/enrich"
//! ```

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
mod invoke;
mod listener;
mod pacing;
pub mod respond;
pub mod serve;
pub mod sink;
pub mod source;

use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::Source;

pub use invoke::{METHOD_HEADER, PATH_HEADER, QUERY_HEADER, REMOTE_HEADER};

/// Builds an `http` source from its configuration (nothing is bound until
/// it runs).
pub fn build_source(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let checked = config::HttpSourceConfig::from_component(config)?;
    Ok(Box::new(source::HttpSource::new(checked)))
}
