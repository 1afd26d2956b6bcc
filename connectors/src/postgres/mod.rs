//! Postgres connectors: the `postgres-cdc` change-feed source (logical
//! replication, pgoutput) and the `postgres` sink (batched inserts or
//! upserts, one transaction per batch).
//!
//! One small frontend ([`wire`]) speaks the protocol for all of them:
//! `tokio-postgres` cannot open a replication stream, and the simple-query
//! protocol's text values are what pgoutput sends too, so one type
//! mapping ([`json`]) serves the stream, the snapshot and the sink.

mod cdc_config;
pub mod conninfo;
mod feed;
pub mod json;
pub mod lsn;
pub mod pgoutput;
mod progress;
pub mod replication;
pub mod sink;
mod sink_config;
pub mod snapshot;
pub mod source;
mod status;
mod tls;
pub mod wire;

pub use cdc_config::{CdcOptions, SnapshotMode};
pub use sink_config::{PgSinkOptions, WriteMode};
