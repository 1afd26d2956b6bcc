//! The consumer thread: polls librdkafka, gathers messages per partition
//! (max events, max bytes, max wait) and sends each batch to the connector.
//!
//! A thread of its own because librdkafka's poll blocks and calls the
//! rebalance callback, which waits for the source driver: on the runtime
//! that would stall a core. The thread does nothing else: dispatch,
//! backpressure (parking and pausing), commits and revocation all happen
//! in the engine's source driver.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use tokio::sync::mpsc;
use weir_engine::batch_wait::BatchWait;
use weir_engine::{Error, Result};

use super::context::{KafkaContext, Message};
use super::headers::RawHeaders;
use super::partitions::LastId;
use super::staging::Staging;
use crate::control::now_ms;

/// How often the loop looks at the clock and the stop flag while messages
/// keep coming.
const HOUSEKEEPING_EVERY: u32 = 256;
/// Longest poll when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long the loop waits before it looks again at a full channel (and
/// at whether the batch's partition was paused meanwhile).
const CHANNEL_FULL_WAIT: Duration = Duration::from_micros(100);

/// The consumer thread's state.
pub(crate) struct Poller {
    /// The consumer, shared with the connector (commits, pauses).
    pub(crate) consumer: Arc<BaseConsumer<KafkaContext>>,
    /// Batches being built, indexed by weir partition id.
    pub(crate) partitions: Vec<Staging>,
    /// The id of the last message's partition.
    pub(crate) last: LastId,
    /// Batch limits.
    pub(crate) max_events: usize,
    /// Batch limits.
    pub(crate) max_bytes: usize,
    /// How long a partial batch waits (adaptive with a latency target).
    pub(crate) wait: Arc<BatchWait>,
}

impl Poller {
    /// Polls until the connector is gone; a fatal consumer error is sent
    /// to it.
    pub(crate) fn run(mut self) {
        if let Err(e) = self.poll_loop() {
            let _ = self.context().tx.blocking_send(Message::Failed(e));
        }
        // staged batches were never sent: nothing of them is committed, the
        // next owner (or the next run) reads them
        self.partitions.clear();
        self.context().staged.store(0, Ordering::Relaxed);
    }

    fn context(&self) -> &KafkaContext {
        self.consumer.context()
    }

    fn poll_loop(&mut self) -> Result<()> {
        let mut since_housekeeping = 0u32;
        let mut flowing = false;
        // one reference for the whole loop (the messages borrow it while
        // `self` is borrowed mutably), not an atomic add and sub per poll
        let consumer = Arc::clone(&self.consumer);
        loop {
            // while messages flow, poll without waiting (and without
            // computing a timeout); once the queue is empty, wait until the
            // oldest staged batch is due
            let timeout = if flowing {
                Duration::ZERO
            } else {
                self.poll_timeout()
            };
            let message = consumer.poll(timeout);
            flowing = matches!(message, Some(Ok(_)));
            let rebalanced = &self.context().rebalanced;
            if rebalanced.load(Ordering::Relaxed) && rebalanced.swap(false, Ordering::Acquire) {
                self.apply_rebalance();
            }
            let mut housekeeping = true;
            match message {
                None => {}
                Some(Err(e)) => {
                    // a fatal error (e.g. a fenced static member) ends
                    // consumption for good: fail rather than look healthy
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        return Err(Error::external(format!(
                            "kafka source `{}`: fatal consumer error {code:?}: {reason}",
                            self.context().name
                        )));
                    }
                    if let rdkafka::error::KafkaError::MessageConsumptionFatal(code) = e {
                        return Err(Error::external(format!(
                            "kafka source `{}`: fatal consumer error: {code:?}",
                            self.context().name
                        )));
                    }
                    tracing::warn!(source = %self.context().name, error = %e, "kafka consumer error");
                }
                Some(Ok(m)) => {
                    let context = consumer.context();
                    // SAFETY: `ptr` is the message librdkafka lent us for
                    // this borrow; we read one field of it.
                    let topic_handle = unsafe { (*m.ptr()).rkt } as usize;
                    let id = self.last.lookup(topic_handle, m.partition(), || {
                        KafkaContext::lock(&context.ids).id(m.topic(), m.partition())
                    });
                    let (max_events, max_bytes) = (self.max_events, self.max_bytes);
                    let ts = m.timestamp().to_millis().unwrap_or(0);
                    let offset = u64::try_from(m.offset()).unwrap_or(0);
                    let p = self.partition(id);
                    // after a resume librdkafka may deliver again what it
                    // had handed over before the pause
                    let resumed = context.is_resumed(id);
                    let again = resumed && p.is_behind(offset);
                    if again {
                        tracing::warn!(source = %context.name, partition = m.partition(), offset,
                            "librdkafka delivered a message again after a resume; dropped");
                    } else {
                        p.push(
                            m.key(),
                            m.payload(),
                            RawHeaders::of(&m),
                            ts,
                            offset,
                            Instant::now,
                        );
                        if resumed {
                            context.clear_resumed(id);
                        }
                    }
                    if !again
                        && (p.len() >= max_events || p.bytes() >= max_bytes)
                        && !context.is_paused(id)
                    {
                        self.send(id);
                    }
                    since_housekeeping += 1;
                    housekeeping = since_housekeeping >= HOUSEKEEPING_EVERY;
                }
            }
            if housekeeping {
                since_housekeeping = 0;
                if self.context().stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                self.send_due(Instant::now());
                let staged: usize = self.partitions.iter().map(Staging::len).sum();
                self.context().staged.store(staged, Ordering::Relaxed);
            }
        }
    }

    fn partition(&mut self, id: u32) -> &mut Staging {
        let i = id as usize;
        if i >= self.partitions.len() {
            self.partitions.resize_with(i + 1, Staging::default);
        }
        &mut self.partitions[i]
    }

    /// Until the oldest staged batch of a partition not paused is due,
    /// within bounds.
    fn poll_timeout(&self) -> Duration {
        let context = self.context();
        let oldest = self
            .partitions
            .iter()
            .enumerate()
            .filter(|(id, _)| !context.is_paused(*id as u32))
            .filter_map(|(_, p)| p.started())
            .min();
        match oldest {
            Some(t) => (t + self.wait.current())
                .saturating_duration_since(Instant::now())
                .min(IDLE_POLL),
            None => IDLE_POLL,
        }
    }

    /// Sends every staged batch whose wait is over, or that is full, of
    /// the partitions not paused.
    fn send_due(&mut self, now: Instant) {
        let wait = self.wait.current();
        for id in 0..self.partitions.len() {
            let p = &self.partitions[id];
            let due = p.started().is_some_and(|t| now >= t + wait)
                || p.len() >= self.max_events
                || p.bytes() >= self.max_bytes;
            if due && !self.consumer.context().is_paused(id as u32) {
                self.send(id as u32);
            }
        }
    }

    /// Sends a partition's staged batch to the connector once the channel
    /// has room, unless the driver paused the partition meanwhile (then
    /// the batch stays staged: a paused partition never has more than one
    /// batch in the channel). The channel drains quickly: the driver parks
    /// what a full shard refuses instead of waiting.
    fn send(&mut self, id: u32) {
        let consumer = Arc::clone(&self.consumer);
        let context = consumer.context();
        let permit = loop {
            match context.tx.try_reserve() {
                Ok(permit) => break permit,
                Err(mpsc::error::TrySendError::Full(())) => {
                    if context.is_paused(id) || context.stop.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(CHANNEL_FULL_WAIT);
                }
                Err(mpsc::error::TrySendError::Closed(())) => {
                    // the connector is gone: the loop stops at its next look
                    context.stop.store(true, Ordering::Release);
                    return;
                }
            }
        };
        let Some((events, end)) = self.partitions[id as usize].take(now_ms()) else {
            return;
        };
        context.queued.fetch_add(events.len(), Ordering::Relaxed);
        permit.send(Message::Batch {
            partition: id,
            events,
            end,
        });
    }

    /// Drops what was staged for revoked partitions (never sent: the next
    /// owner reads it); resumes newly assigned ones.
    fn apply_rebalance(&mut self) {
        self.last.reset();
        let changes = std::mem::take(&mut *KafkaContext::lock(&self.context().changes));
        // librdkafka may keep a pause across a revoke and a re-assignment
        if !changes.assigned.is_empty() {
            let tpl = self.context().list_of(&changes.assigned);
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(source = %self.context().name, error = %e, "kafka resume of assigned partitions failed");
            }
        }
        for id in changes.revoked.into_iter().chain(changes.assigned) {
            self.partition(id).clear();
            self.context().set_paused(&[id], false);
        }
    }
}
