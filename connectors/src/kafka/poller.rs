//! The consumer thread: takes messages from librdkafka a batch call at a
//! time (`fetch_queue.rs`), serves the consumer's events (rebalances) with
//! `poll`, gathers messages per partition (max events, max bytes, max
//! wait) and sends each batch to the connector.
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
use weir_engine::telemetry::names;
use weir_engine::{Error, Result};

use super::context::{KafkaContext, Message, PauseState};
use super::fetch_queue::FetchQueue;
use super::headers::RawHeaders;
use super::partitions::LastId;
use super::staging::Staging;
use crate::control::now_ms;

/// Longest poll when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long the loop waits before it looks again at a full channel or at a
/// partition whose last batch the driver is handling (and at whether the
/// partition was paused meanwhile).
const CHANNEL_FULL_WAIT: Duration = Duration::from_micros(100);

/// How long the loop waits for a paused partition's resume before it holds
/// the partition (pauses it in librdkafka) and goes on with the others.
const PAUSE_PATIENCE: Duration = Duration::from_millis(50);
/// How long a held partition is held again at once at its next pause,
/// without the loop waiting for it.
const HELD_MEMORY: Duration = Duration::from_secs(1);

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
    /// Partitions whose messages are dropped until their refetch begins,
    /// with the last offset dropped (see [`Poller::gather`]).
    pub(crate) gaps: Vec<(u32, u64)>,
    /// When each partition's (by id) last wait for its resume that ran out
    /// began.
    pub(crate) held_at: Vec<Option<Instant>>,
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
        // one reference for the whole loop (the messages borrow it while
        // `self` is borrowed mutably), not an atomic add and sub per poll
        let consumer = Arc::clone(&self.consumer);
        let mut fetch = FetchQueue::new(&consumer);
        let result = self.fetch_loop(&consumer, &mut fetch);
        // before the consumer's close: the partitions go back to its queue
        drop(fetch);
        result
    }

    fn fetch_loop(
        &mut self,
        consumer: &BaseConsumer<KafkaContext>,
        fetch: &mut FetchQueue,
    ) -> Result<()> {
        let mut flowing = false;
        loop {
            // the consumer queue first: rebalances (served by `poll`, which
            // runs the callbacks) and what was fetched for a partition
            // before it was forwarded, which comes before the rest of it
            while fetch.consumer_queue_pending() {
                match consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => {
                        let id = self.id_of(consumer, m.topic(), m.partition());
                        let offset = u64::try_from(m.offset()).unwrap_or(0);
                        let ts = m.timestamp().to_millis().unwrap_or(0);
                        self.gather(id, m.key(), m.payload(), RawHeaders::of(&m), ts, offset);
                    }
                    Some(Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code))) => {
                        return Err(Error::external(format!(
                            "kafka source `{}`: fatal consumer error: {code:?}",
                            self.context().name
                        )));
                    }
                    Some(Err(e)) => self.consumer_error(consumer, &e.to_string(), false)?,
                }
                self.apply_rebalance_if_any(fetch);
            }
            self.apply_rebalance_if_any(fetch);
            // while messages flow, take what is there without waiting; once
            // the queue is empty, wait until the oldest staged batch is due
            // (an event on the consumer queue wakes the wait)
            // (a rebalance served above can leave more on the consumer
            // queue: then no wait either)
            let timeout = if flowing || fetch.consumer_queue_pending() {
                Duration::ZERO
            } else {
                self.poll_timeout()
            };
            let fetched = fetch.fetch(timeout);
            flowing = fetched.len() > 0;
            for m in fetched.iter() {
                if let Some(code) = m.error() {
                    self.consumer_error(consumer, &format!("{code:?}"), true)?;
                    continue;
                }
                let id = self.last.lookup(m.topic_handle(), m.partition(), || {
                    KafkaContext::lock(&consumer.context().ids).id(m.topic(), m.partition())
                });
                let offset = u64::try_from(m.offset()).unwrap_or(0);
                let ts = m.timestamp_ms().unwrap_or(0);
                self.gather(
                    id,
                    m.key(),
                    m.payload(),
                    RawHeaders::of_fetched(&m),
                    ts,
                    offset,
                );
            }
            // housekeeping once per call: at most FETCH_BATCH messages apart
            if self.context().stop.load(Ordering::Acquire) {
                return Ok(());
            }
            self.send_due(Instant::now());
            let staged: usize = self.partitions.iter().map(Staging::len).sum();
            self.context().staged.store(staged, Ordering::Relaxed);
        }
    }

    /// The weir id of a polled message's partition, looked up by name.
    fn id_of(&mut self, consumer: &BaseConsumer<KafkaContext>, topic: &str, partition: i32) -> u32 {
        // a name lookup: only for messages polled from the consumer queue,
        // which are few (those fetched before their partition was forwarded)
        self.last.reset();
        KafkaContext::lock(&consumer.context().ids).id(topic, partition)
    }

    /// A consumer error: fatal ones end consumption for good (fail rather
    /// than look healthy), others are logged.
    fn consumer_error(
        &self,
        consumer: &BaseConsumer<KafkaContext>,
        error: &str,
        in_batch: bool,
    ) -> Result<()> {
        if let Some((code, reason)) = consumer.client().fatal_error() {
            return Err(Error::external(format!(
                "kafka source `{}`: fatal consumer error {code:?}: {reason}",
                self.context().name
            )));
        }
        tracing::warn!(source = %self.context().name, error, in_batch, "kafka consumer error");
        Ok(())
    }

    fn apply_rebalance_if_any(&mut self, fetch: &mut FetchQueue) {
        let rebalanced = &self.context().rebalanced;
        if rebalanced.load(Ordering::Relaxed) && rebalanced.swap(false, Ordering::Acquire) {
            self.apply_rebalance(fetch);
        }
    }

    /// Gathers one message into its partition's batch, and sends the batch
    /// once it is full (unless the driver paused the partition).
    ///
    /// A message of a paused partition whose batch is full waits (and the
    /// whole loop with it) for the resume, up to [`PAUSE_PATIENCE`]: under
    /// steady backpressure every shard is about as busy, the resume comes
    /// within a batch's work, and reading on would only pile messages up.
    /// A partition not resumed by then is held: paused in librdkafka too
    /// (see [`Poller::hold`]), and the loop goes on with the others.
    ///
    /// A held partition whose batch is full drops the message: a batch
    /// call can hand over up to [`FETCH_BATCH`](super::fetch_queue::FETCH_BATCH)
    /// messages of it after the pause, and keeping them would hold that
    /// much more per partition. librdkafka already counts them as
    /// consumed, so the connector seeks the partition back to the batch's
    /// end before it resumes it (see [`KafkaContext::drop_while_paused`]).
    /// Until the refetch begins — a message at or before the last one
    /// dropped: the stream went back — every message of it is dropped, so
    /// a batch never skips one.
    fn gather<'h>(
        &mut self,
        id: u32,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
        ts: i64,
        offset: u64,
    ) {
        let (max_events, max_bytes) = (self.max_events, self.max_bytes);
        if !self.gaps.is_empty() {
            if let Some(i) = self.gaps.iter().position(|&(g, _)| g == id) {
                if offset > self.gaps[i].1 {
                    self.gaps[i].1 = offset;
                    return;
                }
                self.gaps.swap_remove(i);
            }
        }
        let full = |p: &Staging| p.len() >= max_events || p.bytes() >= max_bytes;
        let p = staging_of(&mut self.partitions, id);
        // a partition's messages go forward: one behind the last gathered
        // is one librdkafka hands over again (after a resume or a seek
        // starts fetching from an earlier position)
        if p.is_behind(offset) {
            return;
        }
        let mut paused = false;
        if full(p) {
            let state = self.consumer.context().pause_state(id);
            paused = state != PauseState::Running;
            if state == PauseState::Running {
                // resumed with its batch still staged: that goes first
                self.send(id);
            } else if state == PauseState::Paused && self.wait_for_resume(id) {
                // the full batch went out: this message starts the next
                paused = false;
            } else if paused {
                let next = self.partitions[id as usize].next_offset();
                // checked again under the pause's lock: a resume that came
                // meanwhile has no refetch to do, and the message is kept
                if let Some(next) = next {
                    if self.consumer.context().drop_while_paused(id, next) {
                        self.gaps.push((id, offset));
                        return;
                    }
                }
            }
        }
        let p = &mut self.partitions[id as usize];
        p.push(key, payload, headers, ts, offset, Instant::now);
        if full(p) && !paused {
            self.send(id);
        }
    }

    /// Waits for paused partition `id`'s resume, up to [`PAUSE_PATIENCE`]
    /// (not at all if a wait of it ran out less than [`HELD_MEMORY`] ago: a
    /// partition whose shard is that much slower than the others must not
    /// stall them at every pause). Resumed: sends its full batch and
    /// returns true. Else holds it.
    fn wait_for_resume(&mut self, id: u32) -> bool {
        let now = Instant::now();
        let slow = self
            .held_at
            .get(id as usize)
            .copied()
            .flatten()
            .is_some_and(|at| now < at + HELD_MEMORY);
        if !slow {
            let deadline = now + PAUSE_PATIENCE;
            loop {
                let context = self.consumer.context();
                if !context.is_paused(id) {
                    self.send(id);
                    return true;
                }
                if context.stop.load(Ordering::Acquire) || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(CHANNEL_FULL_WAIT);
            }
        }
        if !slow {
            // remembered from the wait that ran out, not renewed by the
            // holds at once that follow: a partition gets its patience back
            // after HELD_MEMORY, however often it was paused meanwhile
            self.ran_out(id, now);
        }
        if self.hold(id) {
            return false;
        }
        // resumed meanwhile
        self.send(id);
        true
    }

    /// Remembers that partition `id`'s wait for its resume, begun at `at`,
    /// ran out.
    fn ran_out(&mut self, id: u32, at: Instant) {
        let i = id as usize;
        if i >= self.held_at.len() {
            self.held_at.resize(i + 1, None);
        }
        self.held_at[i] = Some(at);
    }

    /// Pauses partition `id` in librdkafka too, unless the driver resumed
    /// it meanwhile (then returns false).
    fn hold(&mut self, id: u32) -> bool {
        let consumer = &self.consumer;
        let context = consumer.context();
        let mut paused_now = false;
        let held = context.hold(id, || {
            paused_now = true;
            let tpl = context.list_of(&[id]);
            if let Err(e) = consumer.pause(&tpl) {
                tracing::warn!(source = %context.name, partition = id, error = %e, "kafka pause failed");
            }
        });
        if paused_now {
            tracing::debug!(source = %context.name, partition = id, "kafka partition held: paused in librdkafka too");
            metrics::counter!(names::KAFKA_PARTITION_HOLDS, "source" => context.name.clone())
                .increment(1);
        }
        held
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

    /// Sends a partition's staged batch to the connector once the driver
    /// has handled the partition's previous batch and the channel has
    /// room, unless the driver paused the partition meanwhile (then the
    /// batch stays staged: a paused partition never has more than one
    /// batch parked). Both waits are short: the driver parks what a full
    /// shard refuses instead of waiting.
    fn send(&mut self, id: u32) {
        let consumer = Arc::clone(&self.consumer);
        let context = consumer.context();
        let permit = loop {
            if context.is_paused(id) || context.stop.load(Ordering::Acquire) {
                return;
            }
            if context.is_in_flight(id) {
                std::thread::sleep(CHANNEL_FULL_WAIT);
                continue;
            }
            match context.tx.try_reserve() {
                Ok(permit) => break permit,
                Err(mpsc::error::TrySendError::Full(())) => {
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
        context.sent(id);
        permit.send(Message::Batch {
            partition: id,
            events,
            end,
        });
    }

    /// Drops what was staged for revoked partitions (never sent: the next
    /// owner reads it); forwards newly assigned ones to the fetch queue and
    /// resumes them.
    fn apply_rebalance(&mut self, fetch: &mut FetchQueue) {
        self.last.reset();
        let changes = std::mem::take(&mut *KafkaContext::lock(&self.context().changes));
        if !changes.assigned.is_empty() {
            let tpl = self.context().list_of(&changes.assigned);
            for e in tpl.elements() {
                fetch.forward(e.topic(), e.partition());
            }
            // librdkafka may keep a pause across a revoke and a
            // re-assignment
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(source = %self.context().name, error = %e, "kafka resume of assigned partitions failed");
            }
        }
        for id in changes.revoked.into_iter().chain(changes.assigned) {
            staging_of(&mut self.partitions, id).clear();
            self.gaps.retain(|&(g, _)| g != id);
            if let Some(at) = self.held_at.get_mut(id as usize) {
                *at = None;
            }
            self.context().handled(id);
            self.context().unpause(id);
        }
    }
}

/// Partition `id`'s staging, made on first use.
fn staging_of(partitions: &mut Vec<Staging>, id: u32) -> &mut Staging {
    let i = id as usize;
    if i >= partitions.len() {
        partitions.resize_with(i + 1, Staging::default);
    }
    &mut partitions[i]
}
