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

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::Result;
use crate::event::Event;
use crate::ledger::Checkpoint;
use crate::source::{Routing, Source, SourceContext};

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
    /// final drain. A failed periodic commit is logged and retried at the
    /// next tick; a failed last commit fails the source.
    async fn commit(&mut self, positions: &[Checkpoint], last: bool) -> Result<()> {
        let _ = (positions, last);
        Ok(())
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
pub async fn drive<C: Connector>(mut connector: C, ctx: &mut SourceContext) -> Result<()> {
    loop {
        let shutdown = ctx.shutdown();
        let input = tokio::select! {
            biased;
            _ = shutdown => break,
            _ = ctx.checkpoint_tick() => {
                commit(&mut connector, ctx, false).await?;
                continue;
            }
            input = connector.read() => input?,
        };
        match input {
            Input::Batch {
                partition,
                events,
                end,
            } => {
                ctx.dispatch(partition, events, end, connector.routing())
                    .await?
            }
            Input::Assigned(partitions) => {
                for (partition, position) in partitions {
                    ctx.restore(partition, position);
                }
            }
            Input::Revoked(partitions) => revoke(&mut connector, ctx, &partitions).await?,
            Input::Idle => {}
            Input::End => break,
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
    ctx.drain().await;
    let committed = commit(&mut connector, ctx, true).await;
    connector.close().await;
    committed
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
            if moved.is_empty() && !last {
                return Ok(());
            }
            connector.commit(&moved, last).await
        }
    };
    match result {
        Err(e) if last => Err(e.context("committing the final checkpoint")),
        Err(e) => {
            tracing::warn!(source = %ctx.name(), error = %e, "checkpoint commit failed; retrying at the next tick");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// A revoked partition: wait for its batches, fence what did not finish,
/// commit what was delivered, forget it.
async fn revoke<C: Connector>(
    connector: &mut C,
    ctx: &mut SourceContext,
    partitions: &[u32],
) -> Result<()> {
    let deadline = Instant::now() + connector.revoke_timeout();
    for &partition in partitions {
        if !ctx.drain_partition(partition, deadline).await {
            let fenced = ctx.fence_partition(partition);
            tracing::warn!(source = %ctx.name(), partition, fenced,
                "a revoked partition did not finish in time: its waiting batches are fenced");
        }
    }
    commit(connector, ctx, false).await?;
    for &partition in partitions {
        ctx.forget_partition(partition);
    }
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
}
