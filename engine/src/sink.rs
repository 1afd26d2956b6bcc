//! The sink contract and the task that feeds a sink: it gathers batches up to
//! the sink's size and time limits, writes them, retries failed writes with
//! backoff, dead-letters what still fails, and settles the acks.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use weir_config::{BatchSettings, RetrySettings};

use crate::batch::SinkBatch;
use crate::dead_letter;
use crate::error::{Error, Result};
use crate::event::{size_of_events, Event};
use crate::queue::{Permit, QueueReceiver, QueueSender};
use crate::retry::backoff;
use crate::telemetry::SinkMetrics;

/// A destination for events.
#[async_trait]
pub trait Sink: Send {
    /// Connects or opens files; called once before the first write.
    async fn open(&mut self) -> Result<()> {
        Ok(())
    }

    /// Writes `events` and returns once they are durable (flushed, fsynced,
    /// confirmed by the broker). An error fails the whole batch; it is
    /// retried if [`Error::retryable`] and attempts remain.
    async fn write(&mut self, events: &[Event]) -> Result<()>;

    /// Flushes and releases resources at shutdown.
    async fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a sink task needs besides the sink.
pub struct SinkRunner {
    /// The sink's name.
    pub name: Arc<str>,
    /// Where its batches arrive.
    pub input: QueueReceiver<SinkBatch>,
    /// Batching limits.
    pub batch: BatchSettings,
    /// Retry policy for failed writes.
    pub retry: RetrySettings,
    /// The dead-letter sink's queue, unless this is the dead-letter sink or there is none.
    pub dead_letter: Option<QueueSender<SinkBatch>>,
    /// Names of the sources, to label dead letters.
    pub source_names: Arc<[Arc<str>]>,
}

impl SinkRunner {
    /// Runs until the input closes, then closes the sink.
    pub async fn run(mut self, mut sink: Box<dyn Sink>) -> Result<()> {
        let metrics = SinkMetrics::new(&self.name);
        sink.open()
            .await
            .map_err(|e| e.context(format!("opening sink `{}`", self.name)))?;
        let mut pending = SinkBatch::default();
        let mut permits: Vec<Permit> = Vec::new();
        let mut carry: Option<(SinkBatch, Permit)> = None;
        loop {
            let first = match carry.take() {
                Some(item) => item,
                None => match self.input.recv().await {
                    Some(item) => item,
                    None => break,
                },
            };
            let now = tokio::time::Instant::now();
            // an absurdly long max_wait means "wait for a full batch"
            let deadline = now
                .checked_add(self.batch.max_wait)
                .unwrap_or(now + std::time::Duration::from_secs(86_400 * 365));
            let mut bytes = self.absorb(&mut pending, &mut permits, first);
            while pending.events.len() < self.batch.max_events && bytes < self.batch.max_bytes {
                let next = match self.input.try_recv() {
                    Some(item) => Some(item),
                    None => tokio::select! {
                        biased;
                        item = self.input.recv() => item,
                        _ = tokio::time::sleep_until(deadline) => break,
                    },
                };
                let Some(item) = next else { break };
                if pending.events.len() + item.0.events.len() > self.batch.max_events
                    && !pending.events.is_empty()
                {
                    carry = Some(item);
                    break;
                }
                bytes += self.absorb(&mut pending, &mut permits, item);
            }
            self.write(&mut *sink, &mut pending, &metrics).await;
            permits.clear();
        }
        sink.close()
            .await
            .map_err(|e| e.context(format!("closing sink `{}`", self.name)))
    }

    fn absorb(
        &self,
        pending: &mut SinkBatch,
        permits: &mut Vec<Permit>,
        item: (SinkBatch, Permit),
    ) -> usize {
        let (mut batch, permit) = item;
        let bytes = size_of_events(&batch.events);
        // the first batch is taken as is (no copy); later ones are appended
        if pending.events.is_empty() {
            std::mem::swap(&mut pending.events, &mut batch.events);
        } else {
            pending.events.append(&mut batch.events);
        }
        pending.acks.append(&mut batch.acks);
        permits.push(permit);
        bytes
    }

    async fn write(&self, sink: &mut dyn Sink, batch: &mut SinkBatch, metrics: &SinkMetrics) {
        let started = Instant::now();
        let mut attempt = 1;
        let error = loop {
            let t = Instant::now();
            match sink.write(&batch.events).await {
                Ok(()) => {
                    metrics.latency.record(t.elapsed().as_secs_f64());
                    metrics.events.increment(batch.events.len() as u64);
                    metrics.batches.increment(1);
                    metrics.batch_events.record(batch.events.len() as f64);
                    batch.events.clear();
                    batch.acks.ack_all();
                    return;
                }
                Err(e) => {
                    metrics.errors.increment(1);
                    let give_up = !e.retryable
                        || attempt >= self.retry.max_attempts
                        || started.elapsed() >= self.retry.max_age;
                    if give_up {
                        break e;
                    }
                    attempt += 1;
                    let delay = backoff(&self.retry, attempt);
                    tracing::warn!(sink = %self.name, attempt, error = %e, ?delay, "write failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        self.give_up(batch, error, attempt, metrics).await;
    }

    async fn give_up(
        &self,
        batch: &mut SinkBatch,
        error: Error,
        attempts: u32,
        metrics: &SinkMetrics,
    ) {
        let n = batch.events.len();
        let Some(dlq) = &self.dead_letter else {
            metrics.lost.increment(n as u64);
            tracing::error!(sink = %self.name, events = n, %error,
                "write failed for good and there is no dead-letter sink; the checkpoint stops before these events");
            batch.events.clear();
            batch.acks.fail_all();
            return;
        };
        let reason = error.to_string();
        for e in batch.events.iter_mut() {
            let source = self
                .source_names
                .get(e.origin.source as usize)
                .map_or("", |s| s);
            dead_letter::mark(e, &reason, &self.name, attempts, source);
        }
        metrics.dead_letters.increment(n as u64);
        tracing::warn!(sink = %self.name, events = n, %error, "write failed for good; events sent to the dead-letter sink");
        let events = std::mem::take(&mut batch.events);
        let bytes = size_of_events(&events);
        let mut acks = crate::ack::AckSet::new();
        acks.append(&mut batch.acks);
        if let Err(e) = dlq.send(SinkBatch { events, acks }, n, bytes).await {
            let (crate::queue::SendError::Closed(mut b) | crate::queue::SendError::Full(mut b)) = e;
            tracing::error!(sink = %self.name, "dead-letter sink is gone; failing the batch");
            b.acks.fail_all();
        }
    }
}
