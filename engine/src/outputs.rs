//! Where a lane delivers a chain's output: the default sinks, the sinks a
//! step routed to, and the dead-letter sink.

use std::sync::Arc;

use crate::ack::AckToken;
use crate::batch::SinkBatch;
use crate::chain::ChainOutput;
use crate::dead_letter;
use crate::event::{size_of_events, Event};
use crate::queue::QueueSender;
use crate::step::SinkId;
use crate::telemetry::StepMetrics;

/// The sink queues of a pipeline, shared by every lane.
pub struct Outputs {
    /// Queue of each sink, by [`SinkId`].
    pub sinks: Vec<QueueSender<SinkBatch>>,
    /// Name of each sink.
    pub sink_names: Vec<Arc<str>>,
    /// Sinks that receive what leaves the last step.
    pub default: Vec<SinkId>,
    /// The dead-letter sink.
    pub dead_letter: Option<SinkId>,
    /// Names of the sources, for dead-letter headers.
    pub source_names: Arc<[Arc<str>]>,
    /// Metrics per step name, to count dead letters and losses.
    pub step_metrics: Vec<(Arc<str>, StepMetrics)>,
}

impl Outputs {
    /// Sends everything in `out` on its way and settles the shard's share
    /// of `ack`. Waits while a sink queue is full (backpressure).
    pub async fn deliver(&self, out: &mut ChainOutput, ack: AckToken) {
        if !out.events.is_empty() {
            let n = self.default.len();
            if n == 0 {
                tracing::debug!(events = out.events.len(), "no default sink: output dropped");
                out.events.clear();
            }
            for (i, &sink) in self.default.iter().enumerate() {
                let events = if i + 1 == n {
                    std::mem::take(&mut out.events)
                } else {
                    out.events.clone()
                };
                self.send(sink, events, &ack).await;
            }
        }
        if !out.routed.is_empty() {
            let mut per_sink: Vec<Vec<Event>> = vec![Vec::new(); self.sinks.len()];
            for (sink, event) in out.routed.drain(..) {
                match per_sink.get_mut(sink as usize) {
                    Some(events) => events.push(event),
                    // a step routed to a sink id it did not get from StepContext: a bug
                    None => {
                        tracing::error!(sink, "a step routed an event to an unknown sink; its batch will not be committed");
                        ack.share().fail();
                    }
                }
            }
            for (sink, events) in per_sink.into_iter().enumerate() {
                if !events.is_empty() {
                    self.send(sink as SinkId, events, &ack).await;
                }
            }
        }
        if !out.dead.is_empty() {
            self.dead_letter(out, &ack).await;
        }
        ack.ack();
    }

    /// Passes a barrier to every sink: `done` completes once each sink has
    /// durably written everything queued before it.
    pub async fn barrier(&self, done: AckToken) {
        for sink in 0..self.sinks.len() {
            self.send(sink as SinkId, Vec::new(), &done).await;
        }
        done.ack();
    }

    async fn send(&self, sink: SinkId, events: Vec<Event>, ack: &AckToken) {
        let (n, bytes) = (events.len(), size_of_events(&events));
        // a closed queue drops the batch, whose unsettled share fails the ack
        let _ = self.sinks[sink as usize]
            .send(SinkBatch::new(events, ack.share()), n, bytes)
            .await;
    }

    fn metrics(&self, stage: &str) -> Option<&StepMetrics> {
        self.step_metrics
            .iter()
            .find(|(n, _)| &**n == stage)
            .map(|(_, m)| m)
    }

    async fn dead_letter(&self, out: &mut ChainOutput, ack: &AckToken) {
        match self.dead_letter {
            Some(dlq) => {
                let mut events = Vec::with_capacity(out.dead.len());
                for d in out.dead.drain(..) {
                    let mut event = d.event;
                    let source = self
                        .source_names
                        .get(event.origin.source as usize)
                        .map_or("", |s| s);
                    dead_letter::mark(&mut event, &d.reason, &d.stage, d.attempts, source);
                    if let Some(m) = self.metrics(&d.stage) {
                        m.dead_letters.increment(1);
                    }
                    events.push(event);
                }
                self.send(dlq, events, ack).await;
            }
            None => {
                let first = &out.dead[0];
                tracing::warn!(
                    step = %first.stage, events = out.dead.len(), reason = %first.reason,
                    "events failed and no dead-letter sink is configured: dropped"
                );
                for d in out.dead.drain(..) {
                    if let Some(m) = self.metrics(&d.stage) {
                        m.lost.increment(1);
                    }
                }
            }
        }
    }
}
