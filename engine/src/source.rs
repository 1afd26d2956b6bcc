//! The source contract and the context the engine hands a running source.
//!
//! A source reads from upstream, groups events into batches (see
//! [`SourceContext::batch_settings`]) and calls [`SourceContext::dispatch`].
//! It commits the positions [`SourceContext::take_checkpoints`] returns, every
//! [`SourceContext::checkpoint_tick`], when a partition is revoked and at the
//! end. On [`SourceContext::shutdown`] it stops reading, calls
//! [`SourceContext::drain`], commits once more and returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use weir_config::{BatchSettings, OnStuck};

use crate::ack::{AckState, AckToken};
use crate::assign;
use crate::batch::{Batch, SourceId};
use crate::batch_wait::BatchWait;
use crate::checkpoint_store::CheckpointStore;
use crate::error::{Error, Result};
use crate::event::{size_of_events, Event};
use crate::latency::LatencyHistogram;
use crate::ledger::{AckLedger, Checkpoint};
use crate::queue::{QueueSender, SendError};
use crate::reply::ReplyTo;
use crate::shutdown::ShutdownSignal;
use crate::telemetry::SourceMetrics;

/// A running source. Built from its configuration by the registry, then run
/// once on the I/O runtime.
#[async_trait]
pub trait Source: Send {
    /// Reads until the input ends or shutdown is requested. Returning `Ok`
    /// after a final [`SourceContext::drain`] and commit is a clean stop.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<()>;
}

/// Why [`SourceContext::try_dispatch`] did not dispatch.
#[derive(Debug)]
pub enum TryDispatchError {
    /// The owning shard is full; the events come back.
    Full(Vec<Event>),
    /// The owning shard is gone (the pipeline is failing).
    Closed,
    /// An earlier dispatch was given up at shutdown: nothing more is
    /// dispatched in this run (a later batch could otherwise be committed
    /// past the one that never went out).
    ShuttingDown(Vec<Event>),
}

/// How a send to a shard ended.
enum Sent {
    Yes,
    Shutdown(Batch),
    Closed,
}

/// How a dispatched batch is spread over shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The whole batch goes to the shard that owns its partition.
    Partition,
    /// Each event goes to the shard that owns its key (unkeyed events stay
    /// with the partition's shard). For sources without real partitions.
    Key,
}

/// Everything a source needs from the engine.
pub struct SourceContext {
    id: SourceId,
    name: Arc<str>,
    shards: Arc<[QueueSender<Batch>]>,
    ledger: AckLedger,
    notify: Arc<Notify>,
    latency: Option<Arc<LatencyHistogram>>,
    shutdown: ShutdownSignal,
    checkpoint: tokio::time::Interval,
    checkpoint_interval: Duration,
    shutdown_timeout: Duration,
    store: Option<CheckpointStore>,
    /// Set when a batch failed for good or a drain gave up: the run did not
    /// deliver everything it dispatched.
    incomplete: Arc<std::sync::atomic::AtomicBool>,
    metrics: SourceMetrics,
    batch: BatchSettings,
    /// How long the source lets a partial batch wait (adaptive with
    /// `batch.latency_target`).
    batch_wait: Arc<BatchWait>,
    split: Vec<Vec<Event>>,
    /// Set when a dispatch was given up at shutdown. From then on nothing is
    /// dispatched: the given-up batch left a gap in its partition, and a
    /// later batch acked behind it would carry the watermark over the gap.
    given_up: bool,
    /// Whether the admin API paused this source ([`crate::pause`]).
    paused: tokio::sync::watch::Receiver<bool>,
    /// What to do with a partition whose checkpoint cannot move.
    on_stuck: OnStuck,
    /// Partitions no longer read (`on_stuck = "pause"`), few: a list.
    stuck: Vec<u32>,
    /// Where `on_stuck = "fail"` reports, to stop the pipeline.
    failures: Option<tokio::sync::mpsc::UnboundedSender<Error>>,
    /// Set once the source watches batches one by one
    /// ([`dispatch_tracked`](Self::dispatch_tracked),
    /// [`dispatch_with_reply`](Self::dispatch_with_reply)): it settles each
    /// failed batch upstream itself (a JetStream nak, an HTTP error answer),
    /// so no position is held behind it and `on_stuck` does not apply.
    acks_per_batch: bool,
}

/// The share of the pipeline's shutdown timeout a source's drain may take
/// ([`SourceContextParts::shutdown_timeout`]); the rest is for the final
/// commit and closing connections.
pub const DRAIN_SHARE: f64 = 0.9;

/// The share of the pipeline's shutdown timeout by which a source must have
/// finished stopping altogether ([`SourceContext::stop_deadline`]).
const STOP_SHARE: f64 = 0.97;

/// Parts to build a [`SourceContext`] (used by the pipeline and by tests).
pub struct SourceContextParts {
    /// Index of the source.
    pub id: SourceId,
    /// Name of the source.
    pub name: Arc<str>,
    /// One inbox per shard.
    pub shards: Arc<[QueueSender<Batch>]>,
    /// Records end-to-end latency of each batch, if set.
    pub latency: Option<Arc<LatencyHistogram>>,
    /// Shutdown signal.
    pub shutdown: ShutdownSignal,
    /// How often to commit.
    pub checkpoint_interval: Duration,
    /// How long a drain after shutdown may take.
    pub shutdown_timeout: Duration,
    /// Local checkpoint store, if the pipeline has a checkpoint directory.
    pub store: Option<CheckpointStore>,
    /// Batching limits for this source.
    pub batch: BatchSettings,
    /// What to do with a partition whose checkpoint cannot move.
    pub on_stuck: OnStuck,
    /// Where the source reports a failure that must stop the pipeline
    /// (`on_stuck = "fail"`); `None` only logs it.
    pub failures: Option<tokio::sync::mpsc::UnboundedSender<Error>>,
}

impl SourceContext {
    /// Builds a context.
    pub fn new(parts: SourceContextParts) -> Self {
        let mut checkpoint =
            tokio::time::interval(parts.checkpoint_interval.max(Duration::from_millis(1)));
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics = SourceMetrics::new(&parts.name);
        metrics.stuck(0);
        let paused = crate::pause::switch(&parts.name).subscribe();
        SourceContext {
            id: parts.id,
            split: vec![Vec::new(); parts.shards.len()],
            name: parts.name,
            shards: parts.shards,
            ledger: AckLedger::new(),
            notify: Arc::new(Notify::new()),
            latency: parts.latency,
            shutdown: parts.shutdown,
            checkpoint,
            checkpoint_interval: parts.checkpoint_interval,
            shutdown_timeout: parts.shutdown_timeout,
            store: parts.store,
            incomplete: Arc::default(),
            metrics,
            batch_wait: Arc::new(BatchWait::for_settings(&parts.batch)),
            batch: parts.batch,
            given_up: false,
            paused,
            on_stuck: parts.on_stuck,
            stuck: Vec::new(),
            failures: parts.failures,
            acks_per_batch: false,
        }
    }

    /// The source's name in the pipeline.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source's index in the pipeline.
    pub fn id(&self) -> SourceId {
        self.id
    }

    /// How often the source commits its acked positions.
    pub fn checkpoint_interval(&self) -> Duration {
        self.checkpoint_interval
    }

    /// How long a drain after shutdown may take.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// When a source that stopped reading at `stopping` must be done with
    /// its final commit and its close: the pipeline's whole shutdown
    /// timeout after `stopping` (the drain had [`DRAIN_SHARE`] of it), less
    /// a margin so that the source ends before the pipeline gives up on it.
    pub fn stop_deadline(&self, stopping: Instant) -> Instant {
        let whole = self.shutdown_timeout.div_f64(DRAIN_SHARE);
        stopping + whole.mul_f64(STOP_SHARE)
    }

    /// Batching limits for this source.
    pub fn batch_settings(&self) -> &BatchSettings {
        &self.batch
    }

    /// How long a partial batch may wait for more events: read it again
    /// for every batch, as it adapts to load when the source has a
    /// `batch.latency_target` (see [`BatchWait`]).
    pub fn batch_wait(&self) -> Arc<BatchWait> {
        Arc::clone(&self.batch_wait)
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard that owns `partition`.
    pub fn shard_of(&self, partition: u32) -> usize {
        assign::shard_for_partition(self.id, partition, self.shards.len())
    }

    /// With an adaptive batch wait: the age of `partition`'s oldest batch
    /// in flight, so that the wait sees work queueing before it settles.
    fn observe_queueing(&mut self, partition: u32) {
        if self.batch_wait.is_adaptive() {
            if let Some(oldest) = self.ledger.oldest_pending(partition) {
                self.batch_wait.observe_in_flight(oldest.elapsed());
            }
        }
    }

    fn new_token(&self) -> AckToken {
        let wait = self
            .batch_wait
            .is_adaptive()
            .then(|| Arc::clone(&self.batch_wait));
        AckToken::observed(Arc::clone(&self.notify), self.latency.clone(), wait)
    }

    fn stamp(&self, partition: u32, events: &mut [Event]) {
        for e in events.iter_mut() {
            e.origin.source = self.id;
            e.origin.partition = partition;
        }
    }

    /// Hands `events` of `partition` to the shards, waiting while the owning
    /// shard is full. `end` is the position after the last event: what a
    /// restart resumes from once this batch is delivered.
    ///
    /// If shutdown is requested while it waits, the batch is given up (it was
    /// never delivered, so it is not committed and is read again after a
    /// restart) and `Ok(())` is returned: the source sees the shutdown at its
    /// next wait and drains. Every later dispatch in this run is refused the
    /// same way (and returns `Ok(())`), so nothing after the gap is committed.
    ///
    /// Cancel safety: not cancel safe. Do not put `dispatch` in a `select!`;
    /// a dropped dispatch leaves a failed batch that stops the partition's
    /// checkpoint for the rest of the run. To wait on something else while a
    /// shard is full, use [`try_dispatch`](Self::try_dispatch) and
    /// [`ready`](Self::ready).
    pub async fn dispatch(
        &mut self,
        partition: u32,
        events: Vec<Event>,
        end: u64,
        routing: Routing,
    ) -> Result<()> {
        self.dispatch_inner(partition, events, end, routing, None)
            .await
            .map(|_| ())
    }

    /// Like [`dispatch`](Self::dispatch), and every lane that runs a part
    /// of the batch sends what became of each event to `reply` (see
    /// [`crate::reply`]). Returns the batch's completion state to await
    /// its sinks' acknowledgement, or `None` if the batch was given up at
    /// shutdown (nothing will be replied).
    pub async fn dispatch_with_reply(
        &mut self,
        partition: u32,
        events: Vec<Event>,
        end: u64,
        routing: Routing,
        reply: ReplyTo,
    ) -> Result<Option<Arc<AckState>>> {
        self.acks_per_batch = true;
        self.dispatch_inner(partition, events, end, routing, Some(reply))
            .await
    }

    async fn dispatch_inner(
        &mut self,
        partition: u32,
        mut events: Vec<Event>,
        end: u64,
        routing: Routing,
        reply: Option<ReplyTo>,
    ) -> Result<Option<Arc<AckState>>> {
        if self.given_up {
            return Ok(None); // read again after a restart; see `given_up`
        }
        let stop = self.shutdown();
        crate::pause::wait_while_paused(&mut self.paused, stop).await;
        if self.is_stuck(partition) {
            // not read on: wait for the shutdown, then forget the batch
            // (the partition's checkpoint is held behind its failed batch,
            // so everything after it is read again after a restart)
            self.shutdown().await;
            return Ok(None);
        }
        self.stamp(partition, &mut events);
        let n = events.len();
        let bytes = size_of_events(&events);
        self.observe_queueing(partition);
        let ack = self.new_token();
        let state = ack.state();
        self.ledger.track(partition, end, Arc::clone(&state));
        self.metrics.dispatched(n, bytes);
        self.metrics.tap().offer(&events);
        let shards = self.shards.len();
        if routing == Routing::Partition || shards == 1 {
            let shard = self.shard_of(partition);
            let mut batch = Batch::new(self.id, partition, events, ack);
            batch.reply = reply;
            return match self.send(shard, batch, n, bytes).await {
                Sent::Yes => Ok(Some(state)),
                Sent::Shutdown(batch) => {
                    // never handed on: forget it rather than leave a failed entry
                    self.given_up = true;
                    self.ledger.untrack_last(partition);
                    batch.ack.abandon();
                    Ok(None)
                }
                Sent::Closed => Err(Error::internal("shard inbox closed while the source runs")),
            };
        }
        let home = self.shard_of(partition);
        for part in &mut self.split {
            part.clear(); // left over only if an earlier dispatch was cancelled
        }
        for e in events.drain(..) {
            let shard = match &e.key {
                Some(k) => assign::shard_for_key(assign::hash_key(k), shards),
                None => home,
            };
            self.split[shard].push(e);
        }
        let mut result = Ok(Some(Arc::clone(&state)));
        for shard in 0..shards {
            if self.split[shard].is_empty() {
                continue;
            }
            let events =
                std::mem::replace(&mut self.split[shard], Vec::with_capacity(n / shards + 1));
            let (n, bytes) = (events.len(), size_of_events(&events));
            if self.given_up {
                // an earlier part was given up: the rest is not sent either
                // (the whole batch is read again after a restart)
                ack.share().give_up();
                continue;
            }
            let mut batch = Batch::new(self.id, partition, events, ack.share());
            batch.reply = reply.clone();
            match self.send(shard, batch, n, bytes).await {
                Sent::Yes => {}
                // the unsent part fails the batch (its position is not
                // committed) without counting as a delivery failure
                Sent::Shutdown(batch) => {
                    self.given_up = true;
                    batch.ack.give_up();
                }
                Sent::Closed => {
                    result = Err(Error::internal("shard inbox closed while the source runs"))
                }
            }
        }
        ack.ack();
        result
    }

    /// Sends a barrier with `epoch` to every shard, in order with this
    /// source's batches: the returned state completes once everything
    /// dispatched before it is durable in every sink (or failed). Waits
    /// for room like [`dispatch`](Self::dispatch); returns `None` when
    /// shutdown gave it up.
    pub async fn barrier(&mut self, epoch: u64) -> Result<Option<Arc<AckState>>> {
        if self.given_up {
            return Ok(None);
        }
        let token = AckToken::detached();
        let state = token.state();
        for shard in 0..self.shards.len() {
            let mut batch = Batch::new(self.id, 0, Vec::new(), token.share());
            batch.barrier = Some(epoch);
            match self.send(shard, batch, 0, 0).await {
                Sent::Yes => {}
                Sent::Shutdown(batch) => {
                    batch.ack.give_up();
                    token.give_up();
                    return Ok(None);
                }
                Sent::Closed => {
                    return Err(Error::internal("shard inbox closed while the source runs"))
                }
            }
        }
        token.ack();
        Ok(Some(state))
    }

    /// Like [`dispatch`](Self::dispatch) with [`Routing::Partition`], but
    /// never waits: when the owning shard is full the events come back
    /// ([`TryDispatchError::Full`]), and the source should pause that
    /// partition until [`ready`](Self::ready) completes (Kafka `pause`, NATS
    /// stop pulling). A refused attempt is not tracked.
    pub fn try_dispatch(
        &mut self,
        partition: u32,
        mut events: Vec<Event>,
        end: u64,
    ) -> Result<(), TryDispatchError> {
        if self.given_up {
            return Err(TryDispatchError::ShuttingDown(events));
        }
        if *self.paused.borrow() || self.is_stuck(partition) {
            // paused by the admin API (the source waits on `ready`, which
            // waits for the resume) or stuck (`ready` waits for shutdown)
            return Err(TryDispatchError::Full(events));
        }
        let shard = self.shard_of(partition);
        self.stamp(partition, &mut events);
        let n = events.len();
        let bytes = size_of_events(&events);
        self.observe_queueing(partition);
        let ack = self.new_token();
        let state = ack.state();
        let batch = Batch::new(self.id, partition, events, ack);
        match self.shards[shard].try_send(batch, n, bytes) {
            Ok(()) => {
                self.ledger.track(partition, end, state);
                self.metrics.dispatched(n, bytes);
                Ok(())
            }
            Err(SendError::Full(b)) => {
                self.metrics.paused();
                b.ack.abandon(); // never tracked in the ledger
                Err(TryDispatchError::Full(b.events))
            }
            Err(SendError::Closed(b)) => {
                b.ack.abandon();
                Err(TryDispatchError::Closed)
            }
        }
    }

    /// Completes when a batch of `events` events and `bytes` bytes for
    /// `partition` would be accepted (or the shard is gone; the next
    /// [`try_dispatch`](Self::try_dispatch) then says so). Cancel safe; the
    /// future does not borrow the context, so a source can wait on it beside
    /// [`shutdown`](Self::shutdown) and [`checkpoint_tick`](Self::checkpoint_tick).
    ///
    /// Room is not reserved: a source blocked in [`dispatch`](Self::dispatch)
    /// on the same shard may take it first, and `try_dispatch` may be refused
    /// again.
    pub fn ready(
        &self,
        partition: u32,
        events: usize,
        bytes: usize,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let queue = self.shards[self.shard_of(partition)].clone();
        let mut paused = self.paused.clone();
        let stuck = self.is_stuck(partition);
        let stop = self.shutdown();
        async move {
            if stuck {
                return stop.await;
            }
            crate::pause::wait_while_paused(&mut paused, stop).await;
            queue.ready(events, bytes).await
        }
    }

    async fn send(&self, shard: usize, batch: Batch, n: usize, bytes: usize) -> Sent {
        let queue = &self.shards[shard];
        let batch = match queue.try_send(batch, n, bytes) {
            Ok(()) => return Sent::Yes,
            Err(SendError::Closed(_)) => return Sent::Closed,
            Err(SendError::Full(batch)) => batch,
        };
        self.metrics.paused();
        match queue.send_unless(batch, n, bytes, self.shutdown()).await {
            Ok(()) => Sent::Yes,
            Err(SendError::Full(batch)) => Sent::Shutdown(batch),
            Err(SendError::Closed(_)) => Sent::Closed,
        }
    }

    /// Completes at every checkpoint interval. Cancel safe.
    pub async fn checkpoint_tick(&mut self) {
        self.checkpoint.tick().await;
    }

    /// Completes when shutdown is requested. Cancel safe; the future does
    /// not borrow the context, so it can sit in one `select!` with
    /// [`checkpoint_tick`](Self::checkpoint_tick) and `dispatch`.
    pub fn shutdown(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut signal = self.shutdown.clone();
        async move { signal.triggered().await }
    }

    /// A handle on the shutdown signal, for tasks the source spawns.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Starts tracking `partition` from a position restored from upstream or
    /// from the local store.
    pub fn restore(&mut self, partition: u32, position: u64) {
        self.ledger.restore(partition, position);
    }

    /// Watermarks that moved since the last call: the positions to commit.
    /// Also records checkpoint metrics and warns about stuck partitions.
    pub fn take_checkpoints(&mut self) -> Vec<Checkpoint> {
        self.metrics.batch_wait(self.batch_wait.current());
        let cps = self.ledger.take_checkpoints();
        for cp in &cps {
            let lag = self
                .ledger
                .dispatched(cp.partition)
                .unwrap_or(cp.position)
                .saturating_sub(cp.position);
            self.metrics.committed(cp.partition, cp.position, lag);
        }
        for stuck in self.ledger.take_newly_stuck() {
            if self.acks_per_batch {
                // handed back (a nak): the server delivers it again, so it
                // neither holds a checkpoint nor makes the run incomplete
                tracing::error!(
                    source = %self.name, partition = stuck.partition,
                    "a batch failed delivery; the source settles it upstream"
                );
                continue;
            }
            self.incomplete
                .store(true, std::sync::atomic::Ordering::Relaxed);
            match self.on_stuck {
                OnStuck::Pause => {
                    tracing::error!(
                        source = %self.name, partition = stuck.partition, watermark = ?stuck.watermark,
                        "a batch failed delivery and nothing took it: the partition is no longer read (on_stuck = \"pause\"); the checkpoint stays before the batch, which a restart reads again"
                    );
                    if !self.stuck.contains(&stuck.partition) {
                        self.stuck.push(stuck.partition);
                    }
                    self.metrics.stuck(self.stuck.len());
                }
                OnStuck::Fail => {
                    let e = Error::external(format!(
                        "partition {}: a batch failed delivery and nothing took it (on_stuck = \"fail\"); the checkpoint stays {} and a restart reads the batch again",
                        stuck.partition, match stuck.watermark {
                            Some(w) => format!("at {w}"),
                            None => "at the start".to_string(),
                        }
                    ));
                    tracing::error!(source = %self.name, partition = stuck.partition, "{e}");
                    if let Some(failures) = &self.failures {
                        let _ = failures.send(e);
                    }
                }
            }
        }
        cps
    }

    /// Reports how many events the source read and holds without having
    /// dispatched them (batches being built, batches a full shard refused):
    /// `weir_source_held_events`, what the memory bound must include.
    pub fn set_held(&self, events: usize) {
        self.metrics.held(events);
    }

    /// Whether `partition` is no longer read (`on_stuck = "pause"`).
    fn is_stuck(&self, partition: u32) -> bool {
        !self.stuck.is_empty() && self.stuck.contains(&partition)
    }

    /// Partitions no longer read because their checkpoint cannot move.
    pub fn stuck_partitions(&self) -> &[u32] {
        &self.stuck
    }

    /// For sources that keep positions in the local store: takes the moved
    /// watermarks and writes them durably. The write and its fsyncs run on
    /// tokio's blocking pool, never on the I/O runtime's workers (a slow
    /// disk must not stall the other sources and the HTTP server).
    pub async fn commit_local(&mut self) -> Result<Vec<Checkpoint>> {
        let cps = self.take_checkpoints();
        let Some(mut store) = self.store.take() else {
            return Ok(cps);
        };
        let saving = cps.clone();
        let (store, saved) = tokio::task::spawn_blocking(move || {
            let saved = store.save(&saving);
            (store, saved)
        })
        .await
        .map_err(|e| Error::internal(format!("checkpoint write task: {e}")))?;
        self.store = Some(store);
        if let Err(e) = saved {
            self.metrics.commit_failed();
            return Err(e);
        }
        Ok(cps)
    }

    /// The local checkpoint store, if the pipeline has one.
    pub fn store(&self) -> Option<&CheckpointStore> {
        self.store.as_ref()
    }

    /// Batches dispatched and not yet past the watermark, over all partitions.
    pub fn inflight(&mut self) -> usize {
        self.ledger.inflight_total()
    }

    /// Waits until every dispatched batch completed (acked or failed). If
    /// shutdown was requested, waits at most the shutdown timeout. Returns
    /// whether everything completed.
    pub async fn drain(&mut self) -> bool {
        let deadline = if self.is_shutdown() {
            after(self.shutdown_timeout)
        } else {
            None
        };
        let drained = self.drain_until(deadline, None).await;
        if !drained {
            self.incomplete
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        drained
    }

    /// A flag that is set once this source failed to deliver something it
    /// dispatched (a batch failed for good, or a drain timed out). The
    /// pipeline reads it after the source returned.
    pub fn incomplete_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.incomplete)
    }

    /// Waits until every dispatched batch completed, or the deadline passes
    /// (the end of an epoch in a revocation). Returns whether it completed.
    pub async fn drain_by(&mut self, deadline: Instant) -> bool {
        self.drain_until(Some(deadline), None).await
    }

    /// Waits until every dispatched batch of `partition` completed, or the
    /// deadline passes (a revoked partition). Returns whether it completed.
    pub async fn drain_partition(&mut self, partition: u32, deadline: Instant) -> bool {
        self.drain_until(Some(deadline), Some(partition)).await
    }

    async fn drain_until(&mut self, deadline: Option<Instant>, partition: Option<u32>) -> bool {
        loop {
            let settled = match partition {
                Some(p) => self.ledger.is_partition_settled(p),
                None => self.ledger.is_settled(),
            };
            if settled {
                return true;
            }
            // every settle wakes this notify (it keeps one permit if no one
            // waits yet), so completion is pushed: no polling
            let notified = self.notify.notified();
            match deadline {
                Some(d) => {
                    if Instant::now() >= d {
                        return false;
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(d.into()) => {}
                    }
                }
                None => {
                    let mut shutdown = self.shutdown.clone();
                    tokio::select! {
                        _ = notified => {}
                        _ = shutdown.triggered() => {
                            let deadline = after(self.shutdown_timeout);
                            return Box::pin(self.drain_until(deadline, partition)).await;
                        }
                    }
                }
            }
        }
    }

    /// Like [`dispatch`](Self::dispatch), and returns the batch's shared
    /// completion state (`None` if the batch was given up at shutdown), so
    /// a source that acknowledges upstream batch by batch — not by the
    /// contiguous watermark — can watch each one.
    pub async fn dispatch_tracked(
        &mut self,
        partition: u32,
        events: Vec<Event>,
        end: u64,
        routing: Routing,
    ) -> Result<Option<Arc<AckState>>> {
        self.settle_each_batch();
        self.dispatch_observed(partition, events, end, routing)
            .await
    }

    /// Like [`dispatch`](Self::dispatch), and returns the batch's
    /// completion state (`None`: given up at shutdown). Unlike
    /// [`dispatch_tracked`](Self::dispatch_tracked) it leaves the
    /// stuck-partition policy on: the source still relies on the ledger's
    /// checkpoints.
    pub async fn dispatch_observed(
        &mut self,
        partition: u32,
        events: Vec<Event>,
        end: u64,
        routing: Routing,
    ) -> Result<Option<Arc<AckState>>> {
        self.dispatch_inner(partition, events, end, routing, None)
            .await
    }

    /// The source settles each batch upstream itself (acks, naks, HTTP
    /// answers): a failed batch does not stop its partition
    /// (`on_stuck` does not apply).
    pub fn settle_each_batch(&mut self) {
        self.acks_per_batch = true;
    }

    /// Fences the in-flight batches of a revoked partition that did not
    /// drain in time: shards and sinks that have not started on them skip
    /// them (they fail as given up, not as delivery failures, and the
    /// partition's next owner reads them). Returns how many were fenced.
    pub fn fence_partition(&mut self, partition: u32) -> usize {
        self.ledger.fence(partition)
    }

    /// Fences the waiting batches of every partition: before a source that
    /// must leave its group stops, so that nothing of it still waiting in
    /// the shards is written after the partitions' next owner took over.
    /// Returns how many were fenced.
    pub fn fence_all(&mut self) -> usize {
        let partitions: Vec<u32> = self.ledger.partitions().collect();
        partitions.iter().map(|&p| self.ledger.fence(p)).sum()
    }

    /// Stops tracking a revoked partition (after its final commit).
    pub fn forget_partition(&mut self, partition: u32) {
        self.ledger.forget(partition);
        if self.is_stuck(partition) {
            // the next owner reads it again from the held checkpoint
            self.stuck.retain(|&p| p != partition);
            self.metrics.stuck(self.stuck.len());
        }
    }
}

/// `now + d`, or `None` (no deadline) when that is past what `Instant` holds.
fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::queue::{bounded, QueueLimits, QueueReceiver};
    use crate::shutdown::shutdown_channel;
    use crate::telemetry::QueueMetrics;

    /// A context over `shards` fresh inboxes of `max_events` each, with
    /// their receivers and the shutdown trigger (also used by other
    /// modules' tests).
    pub(crate) fn context(
        shards: usize,
        max_events: usize,
    ) -> (
        SourceContext,
        Vec<QueueReceiver<Batch>>,
        crate::ShutdownTrigger,
    ) {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..shards {
            let (tx, rx) = bounded(
                QueueLimits {
                    max_events,
                    max_bytes: 1 << 20,
                },
                QueueMetrics::new(&format!("t-{i}")),
            );
            senders.push(tx);
            receivers.push(rx);
        }
        let (trigger, signal) = shutdown_channel();
        let ctx = SourceContext::new(SourceContextParts {
            id: 0,
            name: "src".into(),
            shards: senders.into(),
            latency: None,
            shutdown: signal,
            checkpoint_interval: Duration::from_millis(10),
            shutdown_timeout: Duration::from_millis(200),
            store: None,
            batch: BatchSettings::default(),
            on_stuck: OnStuck::Pause,
            failures: None,
        });
        (ctx, receivers, trigger)
    }

    fn events(n: u64) -> Vec<Event> {
        (0..n).map(|i| Event::new("x").with_offset(i)).collect()
    }

    #[tokio::test]
    async fn try_dispatch_hands_events_back_when_the_shard_is_full_and_ready_waits_for_room() {
        let (mut ctx, mut rx, _trigger) = context(1, 10);
        ctx.try_dispatch(0, events(8), 8).unwrap();
        let Err(TryDispatchError::Full(back)) = ctx.try_dispatch(0, events(8), 16) else {
            panic!("the shard is full")
        };
        assert_eq!(back.len(), 8, "the events come back for the source to hold");
        let (first, permit) = rx[0].recv().await.unwrap();
        let ready = ctx.ready(0, 8, 8);
        tokio::pin!(ready);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut ready)
                .await
                .is_err(),
            "still full"
        );
        drop(permit);
        tokio::time::timeout(Duration::from_secs(1), ready)
            .await
            .expect("room after the permit is released");
        ctx.try_dispatch(0, back, 16).unwrap();
        first.ack.ack();
        assert_eq!(
            ctx.take_checkpoints(),
            vec![Checkpoint {
                partition: 0,
                position: 8
            }]
        );
        assert_eq!(ctx.inflight(), 1, "the refused attempt is not tracked");
    }

    #[tokio::test]
    async fn a_revoked_partition_drains_within_its_deadline_then_commits() {
        let (mut ctx, mut rx, _trigger) = context(2, 1000);
        ctx.dispatch(0, events(3), 3, Routing::Partition)
            .await
            .unwrap();
        ctx.dispatch(1, events(3), 3, Routing::Partition)
            .await
            .unwrap();
        let b0 = rx[ctx.shard_of(0)].recv().await.unwrap().0;
        let b1 = rx[ctx.shard_of(1)].recv().await.unwrap().0;
        let deadline = Instant::now() + Duration::from_millis(30);
        assert!(
            !ctx.drain_partition(0, deadline).await,
            "partition 0 is still in flight"
        );
        assert!(Instant::now() >= deadline);
        let acker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            b0.ack.ack();
        });
        assert!(
            ctx.drain_partition(0, Instant::now() + Duration::from_secs(5))
                .await
        );
        acker.await.unwrap();
        // partition 1 is still pending and does not hold partition 0 back
        assert_eq!(
            ctx.take_checkpoints(),
            vec![Checkpoint {
                partition: 0,
                position: 3
            }]
        );
        ctx.forget_partition(0);
        assert_eq!(ctx.inflight(), 1);
        b1.ack.ack();
    }

    #[tokio::test]
    async fn key_routing_splits_a_batch_over_shards_and_acks_once_all_parts_are_done() {
        let (mut ctx, mut rx, _trigger) = context(2, 1000);
        let keyed: Vec<Event> = (0..64)
            .map(|i| Event::new("v").with_key(format!("k{i}")).with_offset(i))
            .collect();
        ctx.dispatch(0, keyed, 64, Routing::Key).await.unwrap();
        let a = rx[0].recv().await.unwrap().0;
        let b = rx[1].recv().await.unwrap().0;
        assert_eq!(a.events.len() + b.events.len(), 64);
        for e in a.events.iter() {
            assert_eq!(
                assign::shard_for_key(assign::hash_key(e.key.as_ref().unwrap()), 2),
                0
            );
        }
        a.ack.ack();
        assert_eq!(
            ctx.take_checkpoints(),
            vec![],
            "half a batch is not a checkpoint"
        );
        b.ack.ack();
        assert_eq!(
            ctx.take_checkpoints(),
            vec![Checkpoint {
                partition: 0,
                position: 64
            }]
        );
    }

    #[tokio::test]
    async fn drain_after_shutdown_gives_up_at_the_timeout() {
        let (mut ctx, mut rx, trigger) = context(1, 1000);
        ctx.dispatch(0, events(1), 1, Routing::Partition)
            .await
            .unwrap();
        let _held = rx[0].recv().await.unwrap();
        trigger.trigger();
        let started = Instant::now();
        assert!(!ctx.drain().await);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn after_a_dispatch_is_given_up_at_shutdown_no_later_batch_is_committed_past_it() {
        let (mut ctx, mut rx, trigger) = context(1, 10);
        ctx.dispatch(0, events(10), 10, Routing::Partition)
            .await
            .unwrap();
        // the shard is full: this dispatch waits until shutdown gives it up
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            trigger.trigger();
            trigger
        });
        ctx.dispatch(0, events(10), 20, Routing::Partition)
            .await
            .unwrap();
        let _trigger = stop.await.unwrap();
        // the shard drains: there is room again, but the batch 10..20 never went out
        let (first, permit) = rx[0].recv().await.unwrap();
        first.ack.ack();
        drop(permit);
        ctx.dispatch(0, events(10), 30, Routing::Partition)
            .await
            .unwrap();
        assert!(matches!(
            ctx.try_dispatch(0, events(10), 30),
            Err(TryDispatchError::ShuttingDown(_))
        ));
        assert!(rx[0].try_recv().is_none(), "nothing after the gap went out");
        assert_eq!(
            ctx.take_checkpoints(),
            vec![Checkpoint {
                partition: 0,
                position: 10
            }]
        );
    }
}
