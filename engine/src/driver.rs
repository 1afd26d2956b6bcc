//! The source driver: the one loop every pull-style connector runs under.
//!
//! A connector only reads ([`Connector::read`]) and makes positions
//! durable upstream ([`Connector::commit`]). The driver owns the rest of
//! the source protocol, written once here instead of once per connector:
//! shutdown before input, the checkpoint tick, dispatch with backpressure
//! (and the stuck-partition, pause and give-up rules of
//! [`SourceContext`]), assigned and revoked partitions (drain within a
//! deadline, fence what did not finish, commit, forget), and at the end a
//! drain bounded by the shutdown timeout and a final commit.
//!
//! The loop's order of wake-ups is fixed: shutdown, then the checkpoint
//! tick, then input. `read` is dropped unfinished when one of the first two
//! wins, so it must be cancel safe (keep partial input in `self`, await only
//! cancel-safe futures such as `read_buf`, `mpsc::Receiver::recv` or
//! `sleep_until`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::ack::AckState;
use crate::error::Result;
use crate::event::{size_of_events, Event};
use crate::ledger::Checkpoint;
use crate::source::{Routing, Source, SourceContext, TryDispatchError};

/// What a connector read.
#[derive(Debug)]
pub enum Input {
    /// Events of `partition`; `end` is the position after the last one:
    /// what a restart resumes from once the batch is delivered.
    Batch {
        /// The partition the events belong to.
        partition: u32,
        /// The events, in order.
        events: Vec<Event>,
        /// The position after the last event.
        end: u64,
    },
    /// A batch ordered against every other: dispatched only once
    /// everything dispatched before it was settled, and nothing after it
    /// is read until it settled (a change that concerns several keys, such
    /// as a truncate). Shutdown while it waits stops the source.
    Ordered {
        /// The partition the events belong to.
        partition: u32,
        /// The events, in order.
        events: Vec<Event>,
        /// The position after the last event.
        end: u64,
    },
    /// Partitions now owned, each resuming after the given position.
    Assigned(Vec<(u32, u64)>),
    /// Partitions no longer owned: the driver drains, fences, commits and
    /// forgets them before the next `read`.
    Revoked(Vec<u32>),
    /// Nothing to hand on this time (a timer fired on an empty batch).
    Idle,
    /// The input ended: drain, commit and stop.
    End,
}

/// Where a connector's positions are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Upstream, by [`Connector::commit`] (a broker's offsets, a
    /// replication slot).
    Upstream,
    /// In the pipeline's local checkpoint store (files); `commit` is then
    /// told what was stored.
    Local,
    /// Nowhere: the input cannot be read again (stdin); positions only
    /// feed the checkpoint metrics.
    Untracked,
}

/// A source reduced to what only it knows: reading and committing.
#[async_trait]
pub trait Connector: Send {
    /// Waits for the next input. Cancel safe (see the module docs).
    async fn read(&mut self) -> Result<Input>;

    /// Makes `positions` durable upstream; `last` is the commit after the
    /// final drain. With [`Positions::Upstream`] it is called at every
    /// checkpoint tick, with what moved since the last call (maybe
    /// nothing: a connector that keeps unconfirmed positions commits them
    /// again). A failed periodic commit is logged and retried at the next
    /// tick; a failed last commit fails the source. While partitions are
    /// being revoked (between [`Input::Revoked`] and
    /// [`revoked`](Self::revoked)) the commit is the revocation's: it
    /// should be synchronous.
    async fn commit(&mut self, positions: &[Checkpoint], last: bool) -> Result<()> {
        let _ = (positions, last);
        Ok(())
    }

    /// Whether positions are committed in epochs: each commit comes only
    /// once everything dispatched before it settled, so a commit covers
    /// exactly the events whose output is written (a Kafka transaction
    /// holding both a sink's records and the consumed offsets). Reading
    /// stops while an epoch ends; a failed commit fails the source (what
    /// the epoch wrote is aborted and read again after a restart), and a
    /// revocation ends the epoch of every partition, not only the revoked.
    fn commits_in_epochs(&self) -> bool {
        false
    }

    /// How dispatched batches are spread over shards.
    fn routing(&self) -> Routing {
        Routing::Partition
    }

    /// Where positions are kept.
    fn positions(&self) -> Positions {
        Positions::Upstream
    }

    /// Longest a revoked partition may take to finish its batches before
    /// they are fenced.
    fn revoke_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    /// Whether the connector can stop reading a single partition
    /// ([`pause`](Self::pause)). If it can (and routes by partition), a
    /// batch that finds its shard full is parked and its partition paused
    /// while the others go on; otherwise the driver waits for room.
    fn can_pause(&self) -> bool {
        false
    }

    /// Stops (`true`) or resumes reading `partition`: while it is paused,
    /// `read` returns no batch of it (and waits if nothing else is left).
    fn pause(&mut self, partition: u32, paused: bool) {
        let _ = (partition, paused);
    }

    /// Whether the connector is told, in order, what became of every
    /// batch it read ([`dispatched`](Self::dispatched)): to settle each
    /// batch upstream (a JetStream ack per message), or to know what was
    /// dispatched. Only for connectors that do not pause
    /// ([`can_pause`](Self::can_pause)).
    fn tracks_batches(&self) -> bool {
        false
    }

    /// Whether the connector settles each batch upstream itself, so a
    /// failed batch does not stop its partition (`on_stuck` does not
    /// apply).
    fn settles_each_batch(&self) -> bool {
        false
    }

    /// The outcome of the oldest batch read and not yet reported: its
    /// completion state to await, or `None` if it was never dispatched
    /// (given up at shutdown, or read ahead and left at the stop). Called
    /// when [`tracks_batches`](Self::tracks_batches).
    fn dispatched(&mut self, outcome: Option<Arc<AckState>>) {
        let _ = outcome;
    }

    /// How many inputs the driver reads ahead while a dispatch waits for
    /// room (0: none). For a source whose server has already sent what it
    /// reads (a JetStream pull): read ahead, those messages can be kept
    /// alive (in-progress acks) instead of timing out unread.
    fn read_ahead(&self) -> usize {
        0
    }

    /// The revoked partitions are drained (or fenced), committed and
    /// forgotten: the connector may release them (a consumer group's
    /// rebalance goes on).
    async fn revoked(&mut self, partitions: &[u32]) {
        let _ = partitions;
    }

    /// Events read and not handed on yet (a batch being built, read ahead
    /// in a channel): with the batches the driver parks, what
    /// `weir_source_held_events` reports.
    fn held(&self) -> usize {
        0
    }

    /// At shutdown: what the connector gathered and has not handed on. A
    /// connector whose input can be read again returns `None` (the next run
    /// reads it); one whose input cannot (core NATS) hands it on, and the
    /// driver dispatches it if there is room before the drain.
    fn rest(&mut self) -> Option<Input> {
        None
    }

    /// Called last, after the final commit: close connections cleanly.
    async fn close(&mut self) {}
}

/// Runs a [`Connector`] as a [`Source`].
pub struct Driven<C>(pub C);

#[async_trait]
impl<C: Connector + 'static> Source for Driven<C> {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        drive(self.0, &mut ctx).await
    }
}

/// The loop: until the input ends or shutdown is requested, then a drain
/// and a final commit.
///
/// The connector is closed whatever the outcome, within what is left of the
/// shutdown timeout (a close that hangs — a broker that does not answer a
/// consumer leaving its group — is left behind rather than overrunning the
/// pipeline's shutdown).
pub async fn drive<C: Connector>(mut connector: C, ctx: &mut SourceContext) -> Result<()> {
    let mut deadline = None;
    let result = run(&mut connector, ctx, &mut deadline).await;
    let deadline = deadline.unwrap_or_else(|| ctx.stop_deadline(Instant::now()));
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, connector.close()).await.is_err() {
        tracing::warn!(source = %ctx.name(), waited = ?left,
            "closing the source's connections did not finish within the shutdown timeout; left behind");
    }
    result
}

/// [`drive`] up to the connector's close: the loop, the drain and the final
/// commit. Sets `deadline` to when the final commit and the close must be
/// done, once the drain is over.
async fn run<C: Connector>(
    connector: &mut C,
    ctx: &mut SourceContext,
    deadline: &mut Option<Instant>,
) -> Result<()> {
    let parking = connector.can_pause() && connector.routing() == Routing::Partition;
    if connector.settles_each_batch() {
        ctx.settle_each_batch();
    }
    let mut parked = Parked::default();
    let mut ahead: VecDeque<Input> = VecDeque::new();
    loop {
        if !parked.is_empty() && parked.retry(connector, ctx)? == Retry::Stop {
            break;
        }
        if let Some(input) = ahead.pop_front() {
            if ctx.is_shutdown() {
                ahead.push_front(input);
                break;
            }
            if handle(connector, ctx, &mut ahead, input).await? == Retry::Stop {
                break;
            }
            continue;
        }
        // room for the oldest parked batch wakes the loop to retry it
        let room = parked.room(ctx);
        let shutdown = ctx.shutdown();
        let input = tokio::select! {
            biased;
            _ = shutdown => break,
            _ = ctx.checkpoint_tick() => {
                // an epoch ends when what it dispatched settled; shutdown
                // while it waits ends it with the final drain instead
                if connector.commits_in_epochs() && !settled(ctx).await {
                    break;
                }
                commit(connector, ctx, false).await?;
                ctx.set_held(parked.events() + connector.held());
                continue;
            }
            _ = room => continue,
            input = connector.read() => input?,
        };
        if parking {
            if let Input::Batch {
                partition,
                events,
                end,
            } = input
            {
                if parked.dispatch(connector, ctx, partition, events, end)? == Retry::Stop {
                    break;
                }
                continue;
            }
            if let Input::Revoked(partitions) = &input {
                // parked batches of them were never dispatched: the next
                // owner reads them
                parked.forget(partitions);
            }
            if matches!(input, Input::End) {
                // the input ended: what is parked goes out, waiting for room
                for (partition, events, end) in parked.batches.drain(..) {
                    ctx.dispatch(partition, events, end, Routing::Partition)
                        .await?;
                }
            }
        }
        if handle(connector, ctx, &mut ahead, input).await? == Retry::Stop {
            break;
        }
    }
    // anything still parked was never dispatched: it is read again after a
    // restart (nothing after it was committed)
    drop(parked);
    if connector.tracks_batches() {
        for input in ahead.drain(..) {
            if matches!(input, Input::Batch { .. } | Input::Ordered { .. }) {
                connector.dispatched(None);
            }
        }
    }
    if let Some(Input::Batch {
        partition,
        events,
        end,
    }) = connector.rest()
    {
        ctx.dispatch(partition, events, end, connector.routing())
            .await?;
    }
    let stopping = Instant::now();
    let drained = ctx.drain().await;
    // after a shutdown the drain's share of the timeout counts; after the
    // input ended, the final commit and close get their own
    let end = ctx.stop_deadline(if ctx.is_shutdown() {
        stopping
    } else {
        Instant::now()
    });
    *deadline = Some(end);
    if connector.commits_in_epochs() && !drained {
        // the epoch's transaction holds writes of batches that did not
        // settle: committing it would write them again after a restart
        return Err(crate::error::Error::external(
            "exactly-once: the last epoch's batches did not settle within the shutdown timeout; it is not committed (its transaction is aborted and its events are read again)",
        ));
    }
    let left = end.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, commit(connector, ctx, true)).await {
        Ok(committed) => committed,
        Err(_) => Err(crate::error::Error::external(format!(
            "the final commit did not finish within the shutdown timeout ({left:?} were left after the drain); what it would have committed is read again"
        ))),
    }
}

/// Handles one input (a batch of a connector that does not pause, or
/// anything else).
async fn handle<C: Connector>(
    connector: &mut C,
    ctx: &mut SourceContext,
    ahead: &mut VecDeque<Input>,
    input: Input,
) -> Result<Retry> {
    match input {
        Input::Batch {
            partition,
            events,
            end,
        } => dispatch(connector, ctx, ahead, partition, events, end).await?,
        Input::Ordered {
            partition,
            events,
            end,
        } => {
            if !settled(ctx).await {
                return Ok(Retry::Stop);
            }
            dispatch(connector, ctx, ahead, partition, events, end).await?;
            if !settled(ctx).await {
                return Ok(Retry::Stop);
            }
        }
        Input::Assigned(partitions) => {
            for (partition, position) in partitions {
                ctx.restore(partition, position);
            }
        }
        Input::Revoked(partitions) => revoke(connector, ctx, &partitions).await?,
        Input::Idle => {}
        Input::End => return Ok(Retry::Stop),
    }
    Ok(Retry::Go)
}

/// Dispatches a batch, waiting for room; meanwhile reads ahead up to
/// [`Connector::read_ahead`] inputs.
async fn dispatch<C: Connector>(
    connector: &mut C,
    ctx: &mut SourceContext,
    ahead: &mut VecDeque<Input>,
    partition: u32,
    events: Vec<Event>,
    end: u64,
) -> Result<()> {
    let routing = connector.routing();
    if !connector.tracks_batches() {
        return ctx.dispatch(partition, events, end, routing).await;
    }
    let limit = connector.read_ahead();
    let outcome = {
        let send = ctx.dispatch_observed(partition, events, end, routing);
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                outcome = &mut send => break outcome?,
                input = connector.read(), if ahead.len() < limit => ahead.push_back(input?),
            }
        }
    };
    connector.dispatched(outcome);
    Ok(())
}

/// Waits until everything dispatched settled; false if shutdown came first.
async fn settled(ctx: &mut SourceContext) -> bool {
    let shutdown = ctx.shutdown();
    tokio::select! {
        biased;
        _ = shutdown => false,
        _ = ctx.drain() => true,
    }
}

/// Whether the loop goes on after a dispatch attempt.
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    Go,
    /// A dispatch was given up at shutdown: stop reading.
    Stop,
}

/// Batches a full shard refused, oldest first, at most one per partition
/// the connector was told to pause (so what a source holds this way is
/// bounded by its partitions, and order per partition holds).
#[derive(Default)]
struct Parked {
    batches: VecDeque<(u32, Vec<Event>, u64)>,
}

impl Parked {
    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Events parked.
    fn events(&self) -> usize {
        self.batches.iter().map(|(_, events, _)| events.len()).sum()
    }

    /// Drops the batches of revoked partitions.
    fn forget(&mut self, partitions: &[u32]) {
        self.batches.retain(|(p, _, _)| !partitions.contains(p));
    }

    /// Dispatches without waiting; a refused batch is parked and its
    /// partition paused.
    fn dispatch<C: Connector>(
        &mut self,
        connector: &mut C,
        ctx: &mut SourceContext,
        partition: u32,
        events: Vec<Event>,
        end: u64,
    ) -> Result<Retry> {
        if self.batches.iter().any(|(p, _, _)| *p == partition) {
            // keep the partition's order behind what is parked already
            self.batches.push_back((partition, events, end));
            return Ok(Retry::Go);
        }
        match ctx.try_dispatch(partition, events, end) {
            Ok(()) => Ok(Retry::Go),
            Err(TryDispatchError::Full(events)) => {
                connector.pause(partition, true);
                self.batches.push_back((partition, events, end));
                Ok(Retry::Go)
            }
            Err(TryDispatchError::ShuttingDown(_)) => Ok(Retry::Stop),
            Err(TryDispatchError::Closed) => Err(shard_gone()),
        }
    }

    /// Dispatches every parked batch whose shard has room now, in order per
    /// partition; resumes the partitions that emptied.
    fn retry<C: Connector>(&mut self, connector: &mut C, ctx: &mut SourceContext) -> Result<Retry> {
        let mut refused: Vec<u32> = Vec::new();
        for _ in 0..self.batches.len() {
            let Some((partition, events, end)) = self.batches.pop_front() else {
                break;
            };
            if refused.contains(&partition) {
                self.batches.push_back((partition, events, end));
                continue;
            }
            match ctx.try_dispatch(partition, events, end) {
                Ok(()) => {
                    if !self.batches.iter().any(|(p, _, _)| *p == partition) {
                        connector.pause(partition, false);
                    }
                }
                Err(TryDispatchError::Full(events)) => {
                    refused.push(partition);
                    self.batches.push_back((partition, events, end));
                }
                Err(TryDispatchError::ShuttingDown(_)) => return Ok(Retry::Stop),
                Err(TryDispatchError::Closed) => return Err(shard_gone()),
            }
        }
        Ok(Retry::Go)
    }

    /// Completes when the oldest parked batch's shard has room; never when
    /// nothing is parked.
    fn room(&self, ctx: &SourceContext) -> impl std::future::Future<Output = ()> + Send + 'static {
        let wait = self
            .batches
            .front()
            .map(|(p, events, _)| ctx.ready(*p, events.len(), size_of_events(events)));
        async move {
            match wait {
                Some(wait) => wait.await,
                None => std::future::pending().await,
            }
        }
    }
}

fn shard_gone() -> crate::error::Error {
    crate::error::Error::internal("a shard stopped while the source runs")
}

/// Takes the moved positions, stores or commits them.
async fn commit<C: Connector>(
    connector: &mut C,
    ctx: &mut SourceContext,
    last: bool,
) -> Result<()> {
    let result = match connector.positions() {
        Positions::Untracked => {
            ctx.take_checkpoints();
            return Ok(());
        }
        Positions::Local => match ctx.commit_local().await {
            Ok(stored) => connector.commit(&stored, last).await,
            Err(e) => Err(e),
        },
        Positions::Upstream => {
            let moved = ctx.take_checkpoints();
            if connector.commits_in_epochs()
                && ctx
                    .incomplete_flag()
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                // a batch of the epoch failed for good: its partition's
                // position stops before it while later writes are in the
                // epoch, so the epoch cannot commit
                Err(crate::error::Error::external(
                    "a batch failed for good (no dead-letter sink took it), so its epoch cannot be committed",
                ))
            } else {
                connector.commit(&moved, last).await
            }
        }
    };
    match result {
        Err(e) if last => Err(e.context("committing the final checkpoint")),
        // the epoch's output is aborted with it: only a restart from the
        // last committed positions writes it again
        Err(e) if connector.commits_in_epochs() => Err(e.context("committing an epoch")),
        Err(e) => {
            tracing::warn!(source = %ctx.name(), error = %e, "checkpoint commit failed; retrying at the next tick");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// How long fenced batches get to settle (skipped by the stages that had
/// not started on them) before a write still in progress fails the source.
const FENCE_GRACE: Duration = Duration::from_secs(1);

/// Revoked partitions: wait for their batches, fence what did not finish,
/// commit what was delivered, forget them, tell the connector.
///
/// A fenced batch that a sink is writing right now cannot be recalled: if
/// such a write is still going after [`FENCE_GRACE`], the source fails
/// (and so leaves its group) rather than let that write land behind the
/// new owner's writes of the same keys.
async fn revoke<C: Connector>(
    connector: &mut C,
    ctx: &mut SourceContext,
    partitions: &[u32],
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + connector.revoke_timeout();
    let mut fenced = 0;
    if connector.commits_in_epochs() && !ctx.drain_by(deadline).await {
        // the epoch cannot end with part of its output unsettled; what it
        // wrote is aborted when the process is gone
        return Err(crate::error::Error::external(
            "exactly-once: the epoch's batches did not settle within `revoke_timeout` of a revocation; stopping, and so leaving the group, so that the open transaction is aborted and its events are read again by the next owner",
        ));
    }
    for &partition in partitions {
        if !ctx.drain_partition(partition, deadline).await {
            let n = ctx.fence_partition(partition);
            fenced += n;
            tracing::warn!(source = %ctx.name(), partition, fenced = n,
                "a revoked partition did not finish in time: its waiting batches are fenced");
        }
    }
    if fenced > 0 {
        let grace = Instant::now() + FENCE_GRACE;
        for &partition in partitions {
            if !ctx.drain_partition(partition, grace).await {
                // the group moves on without this process: nothing of it
                // that waits may be written behind the next owners' writes
                let all = ctx.fence_all();
                tracing::error!(source = %ctx.name(), fenced = all,
                    "a write of a revoked partition is still in progress: fencing every partition and stopping");
                // (the pipeline names the source in front of this)
                return Err(crate::error::Error::external(
                    "a revoked partition still had a write in progress after `revoke_timeout` and the fencing of its waiting batches; stopping, and so leaving the group, rather than let that write land behind the new owner's (raise `revoke_timeout`, up to the group's rebalance timeout)",
                ));
            }
        }
    }
    commit(connector, ctx, false).await?;
    for &partition in partitions {
        ctx.forget_partition(partition);
    }
    connector.revoked(partitions).await;
    tracing::info!(source = %ctx.name(), partitions = partitions.len(), fenced,
        took_ms = started.elapsed().as_millis() as u64, "partitions revoked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::ack::AckStatus;
    use crate::source::tests::context;

    /// Every commit a connector was asked for: (positions, last).
    type Commits = Arc<Mutex<Vec<(Vec<Checkpoint>, bool)>>>;

    /// Hands out scripted inputs, then waits forever; records commits.
    struct Scripted {
        inputs: VecDeque<Input>,
        commits: Commits,
    }

    #[async_trait]
    impl Connector for Scripted {
        async fn read(&mut self) -> Result<Input> {
            match self.inputs.pop_front() {
                Some(input) => Ok(input),
                None => std::future::pending().await,
            }
        }

        async fn commit(&mut self, positions: &[Checkpoint], last: bool) -> Result<()> {
            self.commits
                .lock()
                .unwrap()
                .push((positions.to_vec(), last));
            Ok(())
        }

        fn revoke_timeout(&self) -> Duration {
            Duration::from_millis(50)
        }
    }

    fn batch(partition: u32, n: u64, end: u64) -> Input {
        Input::Batch {
            partition,
            events: (0..n)
                .map(|i| Event::new("x").with_offset(end - n + i))
                .collect(),
            end,
        }
    }

    #[tokio::test]
    async fn the_driver_dispatches_until_the_end_then_drains_and_commits_once_more() {
        let (mut ctx, mut rx, _trigger) = context(1, 1000);
        let commits = Arc::default();
        let connector = Scripted {
            inputs: VecDeque::from([
                Input::Assigned(vec![(0, 10)]),
                batch(0, 3, 13),
                Input::Idle,
                batch(0, 2, 15),
                Input::End,
            ]),
            commits: Arc::clone(&commits),
        };
        let acker = tokio::spawn(async move {
            for _ in 0..2 {
                let (b, _permit) = rx[0].recv().await.unwrap();
                b.ack.ack();
            }
        });
        drive(connector, &mut ctx).await.unwrap();
        acker.await.unwrap();
        let commits = commits.lock().unwrap();
        let (last, is_last) = commits.last().unwrap();
        assert!(is_last, "the final commit comes after the drain");
        assert_eq!(
            last,
            &vec![Checkpoint {
                partition: 0,
                position: 15
            }]
        );
    }

    #[tokio::test]
    async fn a_revoked_partition_that_does_not_finish_is_fenced_committed_and_forgotten() {
        let (mut ctx, mut rx, trigger) = context(1, 1000);
        let commits: Commits = Arc::default();
        let connector = Scripted {
            inputs: VecDeque::from([
                Input::Assigned(vec![(0, 0), (1, 0)]),
                batch(0, 4, 4),
                batch(1, 4, 4),
                Input::Revoked(vec![1]),
            ]),
            commits: Arc::clone(&commits),
        };
        let driver = tokio::spawn(async move {
            let result = drive(connector, &mut ctx).await;
            (result, ctx)
        });
        // partition 0's batch is delivered; partition 1's waits past the revoke timeout
        let (b0, _p0) = rx[0].recv().await.unwrap();
        b0.ack.ack();
        let (b1, _p1) = rx[0].recv().await.unwrap();
        let state = b1.ack.state();
        let started = Instant::now();
        while !state.is_fenced() {
            assert!(started.elapsed() < Duration::from_secs(5), "never fenced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b1.ack.skip_fenced(); // what a lane does with a fenced batch
        trigger.trigger();
        let (result, mut ctx) = driver.await.unwrap();
        result.unwrap();
        assert_eq!(state.status(), AckStatus::Failed);
        let committed: Vec<Checkpoint> = commits
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(c, _)| c.clone())
            .collect();
        assert!(committed.contains(&Checkpoint {
            partition: 0,
            position: 4
        }));
        assert!(
            !committed.iter().any(|c| c.partition == 1 && c.position > 0),
            "nothing of the revoked partition's unfinished batch is committed: {committed:?}"
        );
        assert_eq!(ctx.inflight(), 0, "the revoked partition is forgotten");
        assert!(
            ctx.stuck_partitions().is_empty(),
            "a fenced batch is not a stuck partition"
        );
    }

    /// Hands out scripted inputs (then the end), tracks its batches and
    /// records what it was told of each; reads ahead up to `ahead`.
    struct Tracking {
        inputs: VecDeque<Input>,
        ahead: usize,
        outcomes: Arc<Mutex<Vec<bool>>>,
        reads: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait]
    impl Connector for Tracking {
        async fn read(&mut self) -> Result<Input> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.inputs.pop_front().unwrap_or(Input::End))
        }

        fn routing(&self) -> Routing {
            Routing::Key
        }

        fn positions(&self) -> Positions {
            Positions::Untracked
        }

        fn tracks_batches(&self) -> bool {
            true
        }

        fn dispatched(&mut self, outcome: Option<Arc<AckState>>) {
            self.outcomes.lock().unwrap().push(outcome.is_some());
        }

        fn read_ahead(&self) -> usize {
            self.ahead
        }
    }

    #[tokio::test]
    async fn a_waiting_dispatch_reads_ahead_and_every_batch_gets_its_outcome_in_order() {
        // room for one batch of 5: the second waits while the driver reads
        // ahead two more; then shutdown: the waiting one is given up and
        // the two read ahead are reported never dispatched
        let (mut ctx, mut rx, trigger) = context(1, 5);
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let connector = Tracking {
            inputs: (0..4).map(|i| batch(0, 5, 5 * (i + 1))).collect(),
            ahead: 2,
            outcomes: Arc::clone(&outcomes),
            reads: Arc::clone(&reads),
        };
        let driver = tokio::spawn(async move { drive(connector, &mut ctx).await });
        let (first, _permit) = rx[0].recv().await.unwrap();
        let started = Instant::now();
        while reads.load(std::sync::atomic::Ordering::SeqCst) < 4 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never read ahead"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "read ahead no further than allowed"
        );
        trigger.trigger();
        first.ack.ack();
        driver.await.unwrap().unwrap();
        assert_eq!(*outcomes.lock().unwrap(), vec![true, false, false, false]);
    }

    #[tokio::test]
    async fn an_ordered_batch_waits_for_everything_before_it_and_holds_back_what_follows() {
        let (mut ctx, mut rx, _trigger) = context(1, 1000);
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let connector = Tracking {
            inputs: VecDeque::from([
                batch(0, 3, 3),
                Input::Ordered {
                    partition: 0,
                    events: vec![Event::new("t").with_offset(3)],
                    end: 4,
                },
                batch(0, 2, 6),
            ]),
            ahead: 0,
            outcomes: Arc::clone(&outcomes),
            reads: Arc::clone(&reads),
        };
        let driver = tokio::spawn(async move { drive(connector, &mut ctx).await });
        let (b1, _p1) = rx[0].recv().await.unwrap();
        // the ordered batch is not dispatched while the first is pending
        assert!(
            tokio::time::timeout(Duration::from_millis(100), rx[0].recv())
                .await
                .is_err(),
            "dispatched before what came first settled"
        );
        b1.ack.ack();
        let (b2, _p2) = rx[0].recv().await.unwrap();
        assert_eq!(b2.events.len(), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), rx[0].recv())
                .await
                .is_err(),
            "what follows was dispatched before the ordered batch settled"
        );
        b2.ack.ack();
        let (b3, _p3) = rx[0].recv().await.unwrap();
        assert_eq!(b3.events.len(), 2);
        b3.ack.ack();
        driver.await.unwrap().unwrap();
        assert_eq!(*outcomes.lock().unwrap(), vec![true, true, true]);
    }

    /// Two partitions, six batches of five events each, alternating;
    /// honours pauses; records them.
    struct TwoPartitions {
        next: [u64; 2],
        turn: usize,
        paused: [bool; 2],
        pauses: Arc<Mutex<Vec<(u32, bool)>>>,
    }

    #[async_trait]
    impl Connector for TwoPartitions {
        async fn read(&mut self) -> Result<Input> {
            for _ in 0..2 {
                let p = self.turn;
                self.turn = 1 - self.turn;
                if !self.paused[p] && self.next[p] < 30 {
                    self.next[p] += 5;
                    return Ok(batch(p as u32, 5, self.next[p]));
                }
            }
            if self.next.iter().all(|&n| n >= 30) && !self.paused.contains(&true) {
                return Ok(Input::End);
            }
            std::future::pending().await
        }

        fn positions(&self) -> Positions {
            Positions::Untracked
        }

        fn can_pause(&self) -> bool {
            true
        }

        fn pause(&mut self, partition: u32, paused: bool) {
            self.paused[partition as usize] = paused;
            self.pauses.lock().unwrap().push((partition, paused));
        }
    }

    #[tokio::test]
    async fn a_full_shard_pauses_only_its_partition_until_there_is_room() {
        let (mut ctx, rx, _trigger) = context(2, 10);
        let (s0, s1) = (ctx.shard_of(0), ctx.shard_of(1));
        assert_ne!(s0, s1);
        let pauses = Arc::new(Mutex::new(Vec::new()));
        let connector = TwoPartitions {
            next: [0, 0],
            turn: 0,
            paused: [false, false],
            pauses: Arc::clone(&pauses),
        };
        let mut rx: Vec<Option<crate::queue::QueueReceiver<crate::batch::Batch>>> =
            rx.into_iter().map(Some).collect();
        let mut rx0 = rx[s0].take().unwrap();
        let mut rx1 = rx[s1].take().unwrap();
        let driver = tokio::spawn(async move { drive(connector, &mut ctx).await });
        // partition 1's shard is served: all of its 30 events arrive while
        // partition 0's shard (room for 10) stays full
        let mut got1 = Vec::new();
        while got1.len() < 30 {
            let (b, _permit) = tokio::time::timeout(Duration::from_secs(5), rx1.recv())
                .await
                .expect("partition 1 is not held up by partition 0")
                .unwrap();
            got1.extend(b.events.iter().map(|e| e.origin.offset));
            b.ack.ack();
        }
        assert_eq!(got1, (0..30).collect::<Vec<_>>());
        assert!(
            pauses.lock().unwrap().contains(&(0, true)),
            "partition 0 was paused"
        );
        // now partition 0's shard drains: it resumes and everything arrives in order
        let mut got0 = Vec::new();
        while got0.len() < 30 {
            let (b, permit) = tokio::time::timeout(Duration::from_secs(5), rx0.recv())
                .await
                .expect("partition 0 resumes")
                .unwrap();
            got0.extend(b.events.iter().map(|e| e.origin.offset));
            b.ack.ack();
            drop(permit);
        }
        assert_eq!(got0, (0..30).collect::<Vec<_>>());
        assert!(
            pauses.lock().unwrap().contains(&(0, false)),
            "partition 0 was resumed"
        );
        driver.await.unwrap().unwrap();
    }

    /// Counts what was read and what was acked; commits in epochs and
    /// records whether each commit came with everything read settled.
    struct Epochs {
        inputs: VecDeque<Input>,
        read: Arc<std::sync::atomic::AtomicUsize>,
        acked: Arc<std::sync::atomic::AtomicUsize>,
        /// (positions, whether every batch read was acked then): the
        /// second field means "settled" here, not "last"
        commits: Commits,
        fail_commits: bool,
    }

    #[async_trait]
    impl Connector for Epochs {
        async fn read(&mut self) -> Result<Input> {
            match self.inputs.pop_front() {
                Some(input) => {
                    if matches!(input, Input::Batch { .. }) {
                        self.read.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(input)
                }
                None => std::future::pending().await,
            }
        }

        async fn commit(&mut self, positions: &[Checkpoint], _last: bool) -> Result<()> {
            let settled = self.read.load(std::sync::atomic::Ordering::SeqCst)
                == self.acked.load(std::sync::atomic::Ordering::SeqCst);
            self.commits
                .lock()
                .unwrap()
                .push((positions.to_vec(), settled));
            if self.fail_commits {
                return Err(crate::error::Error::external("the transaction was refused"));
            }
            Ok(())
        }

        fn commits_in_epochs(&self) -> bool {
            true
        }
    }

    fn epochs(inputs: Vec<Input>, fail_commits: bool) -> Epochs {
        Epochs {
            inputs: VecDeque::from(inputs),
            read: Arc::default(),
            acked: Arc::default(),
            commits: Arc::default(),
            fail_commits,
        }
    }

    #[tokio::test]
    async fn an_epoch_commits_only_once_everything_read_has_settled() {
        let (mut ctx, mut rx, trigger) = context(1, 1000);
        let connector = epochs(
            vec![
                Input::Assigned(vec![(0, 0)]),
                batch(0, 3, 3),
                batch(0, 2, 5),
            ],
            false,
        );
        let (acked, commits) = (Arc::clone(&connector.acked), Arc::clone(&connector.commits));
        let driver = tokio::spawn(async move { drive(connector, &mut ctx).await });
        for _ in 0..2 {
            let (b, _permit) = rx[0].recv().await.unwrap();
            // held over several checkpoint ticks (10 ms each)
            tokio::time::sleep(Duration::from_millis(60)).await;
            acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            b.ack.ack();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.trigger();
        driver.await.unwrap().unwrap();
        let commits = commits.lock().unwrap();
        assert!(
            commits.iter().all(|(_, settled)| *settled),
            "a commit came while a batch was unsettled: {commits:?}"
        );
        let committed: Vec<u64> = commits
            .iter()
            .flat_map(|(p, _)| p.iter().map(|c| c.position))
            .collect();
        assert_eq!(committed.last(), Some(&5), "{commits:?}");
    }

    #[tokio::test]
    async fn a_failed_epoch_commit_fails_the_source() {
        let (mut ctx, mut rx, _trigger) = context(1, 1000);
        let connector = epochs(vec![Input::Assigned(vec![(0, 0)]), batch(0, 3, 3)], true);
        let driver = tokio::spawn(async move { drive(connector, &mut ctx).await });
        let (b, _permit) = rx[0].recv().await.unwrap();
        b.ack.ack();
        let result = tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the source stops at the failed commit")
            .unwrap();
        let error = result.expect_err("a failed epoch is not retried");
        assert!(error.to_string().contains("committing an epoch"), "{error}");
    }

    /// A connector whose final commit and close may never finish (a
    /// broker that does not answer).
    struct Unanswered {
        /// The final commit waits forever too.
        commit_hangs: bool,
        closed: Arc<Mutex<bool>>,
    }

    #[async_trait]
    impl Connector for Unanswered {
        async fn read(&mut self) -> Result<Input> {
            std::future::pending().await
        }

        async fn commit(&mut self, _positions: &[Checkpoint], last: bool) -> Result<()> {
            if last && self.commit_hangs {
                std::future::pending::<()>().await;
            }
            Ok(())
        }

        async fn close(&mut self) {
            *self.closed.lock().unwrap() = true;
            std::future::pending::<()>().await;
        }
    }

    #[tokio::test]
    async fn a_final_commit_or_close_that_never_finishes_is_given_up_within_the_shutdown_timeout() {
        for commit_hangs in [false, true] {
            let (mut ctx, _rx, trigger) = context(1, 10);
            let closed = Arc::new(Mutex::new(false));
            let connector = Unanswered {
                commit_hangs,
                closed: Arc::clone(&closed),
            };
            trigger.trigger();
            let started = Instant::now();
            let limit = ctx.stop_deadline(started) - started;
            let result = tokio::time::timeout(Duration::from_secs(10), drive(connector, &mut ctx))
                .await
                .expect("drive returned although the connector never answered");
            assert!(
                started.elapsed() < limit + Duration::from_secs(1),
                "{:?} > {limit:?}",
                started.elapsed()
            );
            assert!(*closed.lock().unwrap(), "the close was tried");
            if commit_hangs {
                let error = result.expect_err("an unfinished final commit fails the source");
                assert!(
                    error.to_string().contains("final commit did not finish"),
                    "{error}"
                );
            } else {
                result.expect("a close left behind does not fail the source");
            }
        }
    }
}
