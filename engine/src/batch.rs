//! [`Batch`]: what a source hands to a shard, and [`SinkBatch`]: what a shard
//! hands to a sink.

use crate::ack::{AckSet, AckToken};
use crate::event::Event;

/// Index of a source in the pipeline.
pub type SourceId = u16;

/// Events of one source partition, in order, with the ack token that turns
/// their delivery into a checkpoint.
#[derive(Debug)]
pub struct Batch {
    /// The source.
    pub source: SourceId,
    /// The partition every event belongs to.
    pub partition: u32,
    /// The events, in partition order.
    pub events: Vec<Event>,
    /// Completes when every event was delivered or filtered.
    pub ack: AckToken,
}

/// Events bound for one sink, with the ack shares of the batches they came from.
#[derive(Debug, Default)]
pub struct SinkBatch {
    /// The events, in arrival order.
    pub events: Vec<Event>,
    /// Shares to settle once the events are durable.
    pub acks: AckSet,
}

impl SinkBatch {
    /// A batch holding `events` and one ack share.
    pub fn new(events: Vec<Event>, ack: AckToken) -> Self {
        let mut acks = AckSet::new();
        acks.push(ack);
        SinkBatch { events, acks }
    }
}
