//! The `kafka` source: a consumer-group member whose offsets are committed
//! from the ack ledger.
//!
//! A dedicated thread owns the librdkafka consumer. It polls messages,
//! gathers them per partition (max events, max bytes, max wait), and hands
//! each batch to the shard that owns the partition without ever blocking:
//! when that shard is full the batch is parked and the partition is paused
//! in librdkafka, and resumed once the parked batches went out. Other
//! partitions keep flowing. Rebalances are handled in
//! [`super::context`]; offsets are committed every checkpoint interval
//! (asynchronously), on revocation and at shutdown (synchronously).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::source::TryDispatchError;
use weir_engine::{Error, Event, Result, Source, SourceContext};

use super::config::KafkaSourceOptions;
use super::context::{Changes, KafkaContext};
use super::partitions::{LastId, PartitionIds};
use super::staging::Staging;
use crate::control::now_ms;

/// Builds a `kafka` source from its configuration.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let options = KafkaSourceOptions::from_config(config)?;
    Ok(Box::new(KafkaSource { options }))
}

/// Consumes topics as a member of a consumer group.
#[derive(Debug)]
pub struct KafkaSource {
    options: KafkaSourceOptions,
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<()> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let name = format!("weir-kafka-{}", ctx.name());
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let result = consume(self.options, ctx, runtime);
                let _ = done_tx.send(result);
            })
            .map_err(|e| Error::internal(format!("starting the kafka consumer thread: {e}")))?;
        done_rx
            .await
            .unwrap_or_else(|_| Err(Error::internal("the kafka consumer thread panicked")))
    }
}

/// How often the loop looks at the clock, the shutdown signal and parked
/// partitions while messages keep coming.
const HOUSEKEEPING_EVERY: u32 = 256;
/// Poll timeout while some partition is parked.
const PARKED_POLL: Duration = Duration::from_millis(2);
/// Longest poll when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Parked batches a partition may hold before it is paused in librdkafka.
/// One: a partition is paused at its first refused batch, so what the
/// source holds is at most the batch being built and one refused batch per
/// partition, however many partitions it reads (with 4, as before, 64
/// partitions held 64 × 5 batches beside the engine's bounded queues). A
/// pause drops librdkafka's prefetched messages of the partition and the
/// resume fetches them again: a re-fetch is the price of the bound.
const PAUSE_AFTER_PARKED: usize = 1;

/// One assigned partition's state in the loop.
#[derive(Debug, Default)]
struct Partition {
    staging: Staging,
    /// Batches refused by a full shard, oldest first.
    parked: VecDeque<(Vec<Event>, u64)>,
    /// Whether librdkafka was told to pause it.
    paused: bool,
}

/// The consumer thread's body.
fn consume(
    options: KafkaSourceOptions,
    source: SourceContext,
    runtime: tokio::runtime::Handle,
) -> Result<()> {
    let name = source.name().to_string();
    let shutdown = source.shutdown_signal();
    let checkpoint_every = source.checkpoint_interval();
    let batch = source.batch_settings().clone();
    let ids = PartitionIds::new(source.id(), source.shard_count());
    let context = KafkaContext {
        name: name.clone(),
        source: Mutex::new(source),
        ids: Mutex::new(ids),
        uncommitted: Mutex::default(),
        rebalanced: AtomicBool::new(false),
        changes: Mutex::new(Changes::default()),
        commit_failed: AtomicBool::new(false),
        runtime,
        revoke_timeout: options.revoke_timeout,
        fence_failed: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<KafkaContext> = options
        .client_config()
        .create_with_context(context)
        .map_err(|e| {
            Error::user(format!(
                "kafka source `{name}`: invalid client configuration: {e}"
            ))
            .with_cause(e)
        })?;
    check_topics(&consumer, &options, &name)?;
    let subscription = options.subscription();
    let topics: Vec<&str> = subscription.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| {
        Error::user(format!(
            "kafka source `{name}`: subscribing to {topics:?}: {e}"
        ))
        .with_cause(e)
    })?;
    tracing::info!(source = %name, topics = ?topics, group = %options.group, "kafka source subscribed");

    let mut lp = Loop {
        consumer: &consumer,
        partitions: Vec::new(),
        parked_count: 0,
        last: LastId::default(),
        max_events: batch.max_events,
        max_bytes: batch.max_bytes,
        max_wait: batch.max_wait,
        stopping: false,
    };
    let result = lp.run(&shutdown, checkpoint_every);
    // stop: nothing staged or parked was dispatched, so nothing of it is committed
    lp.partitions.clear();
    let context = consumer.context();
    {
        let mut source = KafkaContext::lock(&context.source);
        if result.is_ok() {
            context.runtime.block_on(source.drain());
        }
        // after a failure the pipeline stops only once this returns: commit
        // what is delivered now, without waiting for the rest
        context.commit(&consumer, &mut source, CommitMode::Sync);
    }
    // leaving the group revokes what is left (drained already) and commits nothing new
    drop(consumer);
    result
}

/// The consume loop's state.
struct Loop<'c> {
    consumer: &'c BaseConsumer<KafkaContext>,
    /// Indexed by weir partition id.
    partitions: Vec<Partition>,
    /// Partitions with parked batches.
    parked_count: usize,
    last: LastId,
    max_events: usize,
    max_bytes: usize,
    max_wait: Duration,
    /// Set when dispatch was refused for shutdown.
    stopping: bool,
}

impl<'c> Loop<'c> {
    fn context(&self) -> &'c KafkaContext {
        self.consumer.context()
    }

    fn run(
        &mut self,
        shutdown: &weir_engine::ShutdownSignal,
        checkpoint_every: Duration,
    ) -> Result<()> {
        let mut next_commit = Instant::now() + checkpoint_every;
        let mut since_housekeeping = 0u32;
        let mut flowing = false;
        loop {
            // while messages flow, poll without waiting (and without
            // computing a timeout); once the queue is empty, wait until the
            // oldest staged batch is due
            let timeout = if flowing {
                Duration::ZERO
            } else {
                self.poll_timeout()
            };
            let message = self.consumer.poll(timeout);
            flowing = matches!(message, Some(Ok(_)));
            let rebalanced = &self.context().rebalanced;
            if rebalanced.load(Ordering::Relaxed) && rebalanced.swap(false, Ordering::Acquire) {
                self.apply_rebalance();
                if self.context().fence_failed.load(Ordering::Acquire) {
                    return Err(Error::external(format!(
                        "kafka source `{}`: a revoked partition still had a write in progress after `revoke_timeout` and its fenced batches; leaving the group rather than let that write land behind the new owner's (raise `revoke_timeout`, up to the group's rebalance timeout `max.poll.interval.ms`)",
                        self.context().name
                    )));
                }
            }
            let mut housekeeping = true;
            match message {
                None => {}
                Some(Err(e)) => {
                    // a fatal error (e.g. a fenced static member) ends
                    // consumption for good: fail rather than look healthy
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
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
                    let context = self.consumer.context();
                    // SAFETY: `ptr` is the message librdkafka lent us for
                    // this borrow; we read one field of it.
                    let topic_handle = unsafe { (*m.ptr()).rkt } as usize;
                    let id = self.last.lookup(topic_handle, m.partition(), || {
                        KafkaContext::lock(&context.ids).id(m.topic(), m.partition())
                    });
                    let (max_events, max_bytes) = (self.max_events, self.max_bytes);
                    let p = self.partition(id);
                    let header_iter = RawHeaders::of(&m);
                    let ts = m.timestamp().to_millis().unwrap_or(0);
                    let offset = u64::try_from(m.offset()).unwrap_or(0);
                    p.staging
                        .push(m.key(), m.payload(), header_iter, ts, offset, Instant::now);
                    if p.staging.len() >= max_events || p.staging.bytes() >= max_bytes {
                        self.flush(id)?;
                    }
                    since_housekeeping += 1;
                    housekeeping = since_housekeeping >= HOUSEKEEPING_EVERY;
                }
            }
            if housekeeping {
                since_housekeeping = 0;
                if shutdown.is_triggered() || self.stopping {
                    return Ok(());
                }
                let now = Instant::now();
                self.flush_due(now)?;
                if self.parked_count > 0 {
                    self.retry_parked()?;
                }
                let context = self.consumer.context();
                if now >= next_commit || context.commit_failed.swap(false, Ordering::Relaxed) {
                    next_commit = now + checkpoint_every;
                    let mut source = KafkaContext::lock(&context.source);
                    context.commit(self.consumer, &mut source, CommitMode::Async);
                    source.set_held(self.held());
                }
            }
        }
    }

    /// Events read and not dispatched: staged and parked, all partitions.
    fn held(&self) -> usize {
        self.partitions
            .iter()
            .map(|p| p.staging.len() + p.parked.iter().map(|(e, _)| e.len()).sum::<usize>())
            .sum()
    }

    fn partition(&mut self, id: u32) -> &mut Partition {
        let i = id as usize;
        if i >= self.partitions.len() {
            self.partitions.resize_with(i + 1, Partition::default);
        }
        &mut self.partitions[i]
    }

    /// Until the oldest staged batch is due, within bounds.
    fn poll_timeout(&self) -> Duration {
        if self.parked_count > 0 {
            return PARKED_POLL;
        }
        let oldest = self
            .partitions
            .iter()
            .filter_map(|p| p.staging.started())
            .min();
        match oldest {
            Some(t) => (t + self.max_wait)
                .saturating_duration_since(Instant::now())
                .min(IDLE_POLL),
            None => IDLE_POLL,
        }
    }

    /// Dispatches every staged batch whose wait is over.
    fn flush_due(&mut self, now: Instant) -> Result<()> {
        for id in 0..self.partitions.len() {
            let due = self.partitions[id]
                .staging
                .started()
                .is_some_and(|t| now >= t + self.max_wait);
            if due {
                self.flush(id as u32)?;
            }
        }
        Ok(())
    }

    /// Hands a partition's staged batch on, or parks it behind earlier
    /// parked ones (order per partition holds).
    fn flush(&mut self, id: u32) -> Result<()> {
        let Some(batch) = self.partitions[id as usize].staging.take(now_ms()) else {
            return Ok(());
        };
        if !self.partitions[id as usize].parked.is_empty() {
            let (events, end) = batch;
            self.park(id, events, end);
            return Ok(());
        }
        let (events, end) = batch;
        let refused = {
            let mut source = KafkaContext::lock(&self.context().source);
            source.try_dispatch(id, events, end)
        };
        match refused {
            Ok(()) => Ok(()),
            Err(TryDispatchError::Full(events)) => {
                self.park(id, events, end);
                Ok(())
            }
            Err(TryDispatchError::ShuttingDown(_)) => {
                self.stopping = true;
                Ok(())
            }
            Err(TryDispatchError::Closed) => Err(shard_gone()),
        }
    }

    fn park(&mut self, id: u32, events: Vec<Event>, end: u64) {
        let p = &mut self.partitions[id as usize];
        p.parked.push_back((events, end));
        if p.parked.len() == 1 {
            self.parked_count += 1;
        }
        if !p.paused && p.parked.len() >= PAUSE_AFTER_PARKED {
            p.paused = true;
            self.pause(id, true);
        }
    }

    /// Retries parked batches in order; resumes partitions that emptied.
    fn retry_parked(&mut self) -> Result<()> {
        for id in 0..self.partitions.len() {
            if self.partitions[id].parked.is_empty() {
                continue;
            }
            loop {
                let Some((events, end)) = self.partitions[id].parked.pop_front() else {
                    break;
                };
                let refused = {
                    let mut source = KafkaContext::lock(&self.context().source);
                    source.try_dispatch(id as u32, events, end)
                };
                match refused {
                    Ok(()) => {}
                    Err(TryDispatchError::Full(events)) => {
                        self.partitions[id].parked.push_front((events, end));
                        break;
                    }
                    Err(TryDispatchError::ShuttingDown(_)) => {
                        self.stopping = true;
                        return Ok(());
                    }
                    Err(TryDispatchError::Closed) => return Err(shard_gone()),
                }
            }
            if self.partitions[id].parked.is_empty() {
                self.parked_count -= 1;
                if self.partitions[id].paused {
                    self.partitions[id].paused = false;
                    self.pause(id as u32, false);
                }
            }
        }
        Ok(())
    }

    fn pause(&self, id: u32, pause: bool) {
        let context = self.context();
        let mut tpl = TopicPartitionList::with_capacity(1);
        if let Some((topic, partition)) = KafkaContext::lock(&context.ids).get(id) {
            tpl.add_partition(topic, partition);
        }
        tracing::debug!(source = %context.name, partition = id, pause, "kafka partition pause/resume");
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(source = %context.name, partition = id, error = %e, pause, "kafka pause/resume failed");
        }
    }

    /// Drops what was staged or parked for revoked partitions (never
    /// dispatched: the next owner reads it); new partitions start unpaused.
    fn apply_rebalance(&mut self) {
        self.last.reset();
        let changes = std::mem::take(&mut *KafkaContext::lock(&self.context().changes));
        // librdkafka may keep a pause across a revoke and re-assign: resume them
        for &id in &changes.assigned {
            self.pause(id, false);
        }
        for id in changes.revoked.into_iter().chain(changes.assigned) {
            let p = self.partition(id);
            p.staging.clear();
            let had_parked = !p.parked.is_empty();
            p.parked.clear();
            p.paused = false;
            if had_parked {
                self.parked_count -= 1;
            }
        }
    }
}

/// A message's headers as raw bytes. rdkafka's own header reader panics on
/// a key that is not UTF-8, which any producer may send; weir keeps such a
/// key as it is.
struct RawHeaders<'m> {
    headers: *const rdkafka::bindings::rd_kafka_headers_t,
    index: usize,
    _message: std::marker::PhantomData<&'m ()>,
}

impl<'m> RawHeaders<'m> {
    fn of(message: &'m rdkafka::message::BorrowedMessage<'_>) -> Self {
        let mut headers = std::ptr::null_mut();
        // SAFETY: the message is valid while borrowed; librdkafka fills
        // `headers` with a pointer owned by the message, or leaves it null.
        let err =
            unsafe { rdkafka::bindings::rd_kafka_message_headers(message.ptr(), &mut headers) };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            headers = std::ptr::null_mut();
        }
        RawHeaders {
            headers,
            index: 0,
            _message: std::marker::PhantomData,
        }
    }
}

impl<'m> Iterator for RawHeaders<'m> {
    type Item = (&'m [u8], &'m [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.headers.is_null() {
            return None;
        }
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `headers` belongs to the borrowed message; librdkafka
        // returns pointers into it that live as long as the message.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_get_all(
                self.headers,
                self.index,
                &mut name,
                &mut value,
                &mut size,
            )
        };
        if err != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            || name.is_null()
        {
            return None;
        }
        self.index += 1;
        // SAFETY: as above; a header name is a NUL-terminated string.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value: &[u8] = if value.is_null() {
            &[]
        } else {
            // SAFETY: `value` points at `size` bytes owned by the message.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }
        };
        Some((key, value))
    }
}

fn shard_gone() -> Error {
    Error::internal("a shard stopped while the kafka source runs")
}

/// Fails early and clearly when the brokers cannot be reached or a listed
/// topic does not exist (weir never creates topics).
fn check_topics(
    consumer: &BaseConsumer<KafkaContext>,
    options: &KafkaSourceOptions,
    name: &str,
) -> Result<()> {
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    super::metadata::check_topics(
        consumer.client(),
        &options.brokers,
        None,
        &topics,
        options.connect_timeout,
    )
    .map_err(|e| e.context(format!("kafka source `{name}`")))
}
