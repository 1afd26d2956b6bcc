//! NATS: core NATS (`nats` source and sink) and JetStream (`jetstream`
//! source and sink), over async-nats.
//!
//! - **Core NATS is at-most-once.** The server does not keep messages: what
//!   is published while weir is down, or what a slow subscriber cannot take,
//!   is gone. weir sizes the subscription buffer from `capacity` and counts
//!   every slow-consumer event (`weir_nats_slow_consumer_total`, plus an
//!   error log line); it never drops silently on its own side.
//! - **JetStream is at-least-once.** The `jetstream` source acks a message
//!   only when every sink confirmed it; the `jetstream` sink completes a
//!   batch when the server acknowledged every publish (`PubAck`).
//!
//! docs/connectors/nats.md is the user's guide.

mod client;
pub mod config;
pub mod core_sink;
pub mod core_source;
pub mod js_acker;
pub mod js_sink;
pub mod js_source;
mod subject;

pub use config::{
    JetStreamSinkOptions, JetStreamSourceOptions, NatsSinkOptions, NatsSourceOptions,
};
