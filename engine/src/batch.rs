//! [`Batch`]: what a source hands to a shard, and [`SinkBatch`]: what a shard
//! hands to a sink.

use crate::ack::{AckSet, AckToken};
use crate::event::Event;
use crate::reply::ReplyTo;

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
    /// Where to send what became of each event, for a request-response
    /// source; `None` for almost every batch.
    pub reply: Option<ReplyTo>,
    /// `Some(epoch)` marks a barrier, not data: it carries no events, goes
    /// to every lane of the shard and then to every sink, and its ack
    /// completes once everything the source dispatched before it is durable.
    pub barrier: Option<u64>,
}

impl Batch {
    /// A data batch without a reply handle.
    pub fn new(source: SourceId, partition: u32, events: Vec<Event>, ack: AckToken) -> Self {
        Batch {
            source,
            partition,
            events,
            ack,
            reply: None,
            barrier: None,
        }
    }
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
