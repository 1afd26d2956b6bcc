//! The weir engine: events and batches, pinned shards running step chains,
//! bounded queues, the ack ledger that turns durable writes into source
//! checkpoints, and the telemetry every part reports through.
//!
//! The path of an event: a [`Source`] dispatches a [`Batch`] through its
//! [`SourceContext`] to the shard that owns the partition; the shard's lane
//! runs the [`Step`]s; the output goes to [`Sink`] queues; each sink task
//! writes and settles the batch's [`AckToken`] share; the source's
//! [`AckLedger`] turns completed batches into [`Checkpoint`]s to commit.

pub mod ack;
pub mod assign;
pub mod batch;
pub mod batch_wait;
pub mod chain;
pub mod checkpoint_store;
pub mod control;
pub mod dead_letter;
pub mod driver;
pub mod error;
pub mod event;
pub mod latency;
pub mod ledger;
pub mod live;
pub mod outputs;
pub mod pause;
pub mod pipeline;
pub mod queue;
pub mod registry;
pub mod reply;
pub mod retry;
pub mod shard;
pub mod shutdown;
pub mod sink;
pub mod source;
#[cfg(test)]
mod spine_tests;
pub mod step;
pub mod tap;
pub mod telemetry;

pub use ack::{AckSet, AckStatus, AckToken, Completion};
pub use batch::{Batch, SinkBatch, SourceId};
pub use chain::{ChainOutput, DeadEvent, StepChain, StepSpec};
pub use checkpoint_store::CheckpointStore;
pub use control::PipelineControl;
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, Origin};
pub use latency::LatencyHistogram;
pub use ledger::{AckLedger, Checkpoint};
pub use pipeline::{Pipeline, RunReport};
pub use registry::{Registry, StepContext};
pub use reply::{reply_channel, EventReply, Outcome, ReplyReceiver, ReplyTo};
pub use shutdown::{shutdown_channel, ShutdownSignal, ShutdownTrigger};
pub use sink::Sink;
pub use source::{Routing, Source, SourceContext, SourceContextParts};
pub use step::{Failure, Health, SinkId, Step, StepFactory, StepOutput};
pub use weir_config;
