//! The step contract: a function over a batch of events.
//!
//! A step receives a batch and, per event, keeps it, changes it, drops it,
//! fails it with a reason, routes it to a named sink, or emits more events.
//! It writes those outcomes into a [`StepOutput`]. Steps run on a shard's
//! current-thread runtime, so they need not be `Send` and an `await` on I/O
//! yields the core to other batches. A step keeps its state across batches.

use async_trait::async_trait;

use crate::event::Event;

/// Index of a sink in the pipeline, resolved from its name when a step is built.
pub type SinkId = u16;

/// An event a step could not process, with the reason.
#[derive(Debug)]
pub struct Failure {
    /// The event as the step received it.
    pub event: Event,
    /// Why it failed, for the dead-letter headers and logs.
    pub reason: String,
    /// Whether trying again later may succeed (a timeout, an unavailable
    /// service). Non-retryable failures go to the dead-letter sink at once.
    pub retryable: bool,
}

/// Where a step writes what became of each event.
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Events for the next step (kept, changed or newly emitted).
    pub events: Vec<Event>,
    /// Events sent straight to a named sink, skipping later steps.
    pub routed: Vec<(SinkId, Event)>,
    /// Events that failed.
    pub failed: Vec<Failure>,
    /// Events dropped on purpose (filtered out).
    pub dropped: usize,
}

impl StepOutput {
    /// An empty output.
    pub fn new() -> Self {
        StepOutput::default()
    }

    /// Passes an event (kept, changed or new) to the next step.
    #[inline]
    pub fn emit(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Sends an event to a sink directly.
    #[inline]
    pub fn route(&mut self, sink: SinkId, event: Event) {
        self.routed.push((sink, event));
    }

    /// Drops an event on purpose; it counts as delivered.
    #[inline]
    pub fn drop_event(&mut self, event: Event) {
        drop(event);
        self.dropped += 1;
    }

    /// Fails an event for good: it goes to the dead-letter sink.
    pub fn fail(&mut self, event: Event, reason: impl Into<String>) {
        self.failed.push(Failure {
            event,
            reason: reason.into(),
            retryable: false,
        });
    }

    /// Fails an event for now: it is retried with backoff, then dead-lettered.
    pub fn fail_retryable(&mut self, event: Event, reason: impl Into<String>) {
        self.failed.push(Failure {
            event,
            reason: reason.into(),
            retryable: true,
        });
    }

    /// Empties every list, keeping their capacity.
    pub fn clear(&mut self) {
        self.events.clear();
        self.routed.clear();
        self.failed.clear();
        self.dropped = 0;
    }
}

/// One stage of a pipeline.
#[async_trait(?Send)]
pub trait Step {
    /// Processes a batch. Take events out of `input` (e.g. `input.drain(..)`)
    /// and write every outcome into `output`. Events left in `input` when the
    /// call returns are kept unchanged. An event taken out and given no
    /// outcome counts as delivered once the batch completes, so a step must
    /// not hold events back across calls.
    async fn process(&mut self, input: &mut Vec<Event>, output: &mut StepOutput);

    /// Called once on the lane before the first batch, and on a new
    /// instance before it replaces an old one (a swap): connect, load,
    /// warm caches. An error stops the pipeline at start, or keeps the old
    /// instance in a swap.
    async fn open(&mut self) -> crate::Result<()> {
        Ok(())
    }

    /// Called once when the instance leaves: the lane ends, or a swap
    /// replaced it (after its last batch).
    async fn close(&mut self) {}

    /// What the instance says of itself, asked between batches at most
    /// once a second (see [`crate::health`]): e.g. a worker process that
    /// died or a guest that trapped on the last batch. Must be cheap.
    fn health(&self) -> Health {
        Health::Healthy
    }
}

/// A step instance's own view of its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Working normally.
    Healthy,
    /// Working, or able to, but something is wrong: why.
    Degraded(String),
}

/// Builds instances of a step. Built once from the configuration (where all
/// validation happens), then asked for one instance per lane on each shard's
/// thread, so instances may hold thread-local state.
pub trait StepFactory: Send + Sync {
    /// A new instance.
    fn build(&self) -> Result<Box<dyn Step>, String>;
}

impl<F> StepFactory for F
where
    F: Fn() -> Result<Box<dyn Step>, String> + Send + Sync,
{
    fn build(&self) -> Result<Box<dyn Step>, String> {
        self()
    }
}
