//! Apache Kafka: the `kafka` source (a consumer-group member whose offsets
//! are committed from the ack ledger) and the `kafka` sink (an idempotent
//! producer whose delivery reports complete the acks).
//!
//! - **Delivery**: at-least-once end to end. The source commits, per
//!   partition, the offset after the longest run of acked messages, so a
//!   crash re-reads at most what was in flight since the last commit.
//!   Exactly-once from a `kafka` source to a transactional `kafka` sink:
//!   records and offsets are committed in one transaction per epoch
//!   (`transaction.rs`).
//! - **Ordering**: per partition. A partition is owned by one shard.
//! - **Backpressure**: per partition; a full shard pauses its partitions in
//!   librdkafka, others keep flowing.
//! - **Rebalances**: cooperative; a revoked partition is drained (within
//!   `revoke_timeout`) and committed before it is released.
//!
//! docs/connectors/kafka.md is the user's guide.

pub mod config;
mod connector;
mod context;
mod fetch_queue;
mod headers;
mod metadata;
mod partitions;
mod poller;
pub mod sink;
pub mod source;
mod staging;
mod transaction;

pub use config::{KafkaSinkOptions, KafkaSourceOptions};
