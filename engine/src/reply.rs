//! The reply path: what became of each event of a batch at the end of the
//! step chain, sent back to the source that asked for it.
//!
//! A request-response source (synchronous HTTP invoke) dispatches a batch
//! with a [`ReplyTo`] ([`crate::SourceContext::dispatch_with_reply`]). The
//! lane that runs the batch (or each part of it, when key routing splits it
//! over shards and lanes) sends one [`EventReply`] per input event: the
//! events it became, that it was dropped, or that it failed and where. The
//! events are matched to their input by [`crate::Origin::offset`], which the
//! engine's steps keep on every event they emit; a source that wants replies
//! gives each event of a batch its own offset. Whether the sinks then
//! acknowledged the batch is awaited on its [`crate::ack::AckState`].
//!
//! Batches without a `ReplyTo` pay nothing for this path.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::chain::ChainOutput;
use crate::event::Event;
use crate::step::SinkId;

/// What became of one input event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The event passed every step (possibly changed, or as several events).
    Emitted {
        /// Events for the default sinks, in order.
        events: Vec<Event>,
        /// Events a step sent to a named sink.
        routed: Vec<(SinkId, Event)>,
    },
    /// A step dropped the event on purpose (filtered out).
    Dropped,
    /// A step failed the event for good.
    Failed {
        /// The step that gave up.
        stage: Arc<str>,
        /// Why.
        reason: String,
        /// Whether the step called the failure retryable (it then ran out
        /// of attempts): the input may be fine and the trouble elsewhere.
        retryable: bool,
    },
}

/// The outcome of one input event, named by its offset.
#[derive(Debug, Clone, PartialEq)]
pub struct EventReply {
    /// The input event's [`crate::Origin::offset`].
    pub offset: u64,
    /// What became of it.
    pub outcome: Outcome,
}

/// Where a lane sends the replies of a batch. Cloned into every part of a
/// split batch.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    tx: mpsc::UnboundedSender<Vec<EventReply>>,
}

/// The receiving end: one message per batch part, each with the replies of
/// the input events that part held.
pub type ReplyReceiver = mpsc::UnboundedReceiver<Vec<EventReply>>;

/// A reply channel for one source (any number of batches may share it).
pub fn reply_channel() -> (ReplyTo, ReplyReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ReplyTo { tx }, rx)
}

impl ReplyTo {
    /// Sends the replies of one batch part; a receiver that is gone (the
    /// source stopped) makes this a no-op.
    pub fn send(&self, replies: Vec<EventReply>) {
        let _ = self.tx.send(replies);
    }
}

/// Builds the replies of a batch part from the offsets of its input events
/// (in order) and what the chain made of them. Output events whose offset
/// matches no input (a step built an event from nothing) are not part of
/// any reply.
pub fn build_replies(inputs: &[u64], out: &ChainOutput) -> Vec<EventReply> {
    let mut replies: Vec<EventReply> = inputs
        .iter()
        .map(|&offset| EventReply {
            offset,
            outcome: Outcome::Dropped,
        })
        .collect();
    let index: HashMap<u64, usize> = inputs.iter().enumerate().map(|(i, &o)| (o, i)).collect();
    let mut orphans = 0usize;
    let emitted = |replies: &mut Vec<EventReply>, offset: u64| -> Option<usize> {
        let i = *index.get(&offset)?;
        if !matches!(replies[i].outcome, Outcome::Emitted { .. }) {
            replies[i].outcome = Outcome::Emitted {
                events: Vec::new(),
                routed: Vec::new(),
            };
        }
        Some(i)
    };
    for e in &out.events {
        match emitted(&mut replies, e.origin.offset) {
            Some(i) => {
                if let Outcome::Emitted { events, .. } = &mut replies[i].outcome {
                    events.push(e.clone());
                }
            }
            None => orphans += 1,
        }
    }
    for (sink, e) in &out.routed {
        match emitted(&mut replies, e.origin.offset) {
            Some(i) => {
                if let Outcome::Emitted { routed, .. } = &mut replies[i].outcome {
                    routed.push((*sink, e.clone()));
                }
            }
            None => orphans += 1,
        }
    }
    for d in &out.dead {
        if let Some(&i) = index.get(&d.event.origin.offset) {
            // a failure wins over other outputs of the same input: the
            // request did not wholly succeed
            replies[i].outcome = Outcome::Failed {
                stage: Arc::clone(&d.stage),
                reason: d.reason.clone(),
                retryable: d.retryable,
            };
        }
    }
    if orphans > 0 {
        tracing::debug!(
            orphans,
            "output events matched no input offset; not part of any reply"
        );
    }
    replies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::DeadEvent;

    #[test]
    fn every_input_gets_exactly_one_outcome() {
        let mut out = ChainOutput::default();
        out.events.push(Event::new("a1").with_offset(10));
        out.events.push(Event::new("a2").with_offset(10));
        out.routed.push((3, Event::new("c").with_offset(12)));
        out.dead.push(DeadEvent {
            event: Event::new("d").with_offset(13),
            reason: "bad json at 1:2".into(),
            stage: "parse".into(),
            attempts: 1,
            retryable: false,
        });
        out.events.push(Event::new("orphan").with_offset(99));
        let replies = build_replies(&[10, 11, 12, 13], &out);
        assert_eq!(replies.len(), 4);
        match &replies[0].outcome {
            Outcome::Emitted { events, routed } => {
                assert_eq!(events.len(), 2);
                assert!(routed.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(replies[1].outcome, Outcome::Dropped);
        assert!(
            matches!(&replies[2].outcome, Outcome::Emitted { events, routed } if events.is_empty() && routed[0].0 == 3)
        );
        assert!(
            matches!(&replies[3].outcome, Outcome::Failed { stage, reason, retryable: false } if &**stage == "parse" && reason == "bad json at 1:2")
        );
    }
}
