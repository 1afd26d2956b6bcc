//! Shards: one OS thread per shard, pinned to a core, running a
//! current-thread runtime. A shard takes batches from its bounded inbox and
//! hands each to a lane; a lane runs its own instance of the step chain, one
//! batch at a time, so lanes give concurrency on one core while each keeps
//! order: per partition (`ordering = "partition"`) or per key (`"key"`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use weir_config::{Ordering, RetrySettings};

use crate::assign;
use crate::batch::Batch;
use crate::chain::{ChainOutput, StepChain, StepSpec};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::outputs::Outputs;
use crate::queue::{Permit, QueueReceiver};
use crate::telemetry::ShardMetrics;

/// Everything one shard needs.
pub struct ShardPlan {
    /// The shard's index.
    pub index: usize,
    /// The core to pin to, if any.
    pub core: Option<usize>,
    /// Its inbox.
    pub inbox: QueueReceiver<Batch>,
    /// Lanes (batches in flight at once).
    pub lanes: usize,
    /// What order to keep.
    pub ordering: Ordering,
    /// The steps.
    pub steps: Arc<[StepSpec]>,
    /// Retry policy for failed events.
    pub retry: RetrySettings,
    /// Where output goes.
    pub outputs: Arc<Outputs>,
}

/// Starts the shard's thread. The thread ends when the inbox closes and every
/// lane finished; the returned receiver then gets its result (an error if
/// the receiver sees the sender dropped: the thread panicked).
pub fn spawn(plan: ShardPlan) -> std::io::Result<tokio::sync::oneshot::Receiver<Result<()>>> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(format!("weir-shard-{}", plan.index)).spawn(move || {
        if let Some(core) = plan.core {
            if let Err(e) = pin_to_core(core) {
                tracing::warn!(shard = plan.index, core, error = %e, "could not pin shard to its core");
            }
        }
        let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => tokio::task::LocalSet::new().block_on(&runtime, run(plan)),
            Err(e) => Err(Error::internal(format!("shard runtime: {e}"))),
        };
        let _ = done.send(outcome);
    })?;
    Ok(result)
}

/// The cores this process may run on.
pub fn available_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            return (0..n.min(libc::CPU_SETSIZE as usize)).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_to_core(core: usize) -> std::io::Result<()> {
    // SAFETY: as above; sched_setaffinity(0, …) affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

type LaneItem = (Batch, Rc<Permit>);

async fn run(mut plan: ShardPlan) -> Result<()> {
    let metrics = ShardMetrics::new(plan.index);
    let lanes = plan.lanes.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut handles = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let chain = StepChain::build(&plan.steps, plan.retry.clone())?;
        let (tx, rx) = mpsc::unbounded_channel::<LaneItem>();
        senders.push(tx);
        handles.push(tokio::task::spawn_local(lane(
            rx,
            chain,
            Arc::clone(&plan.outputs),
            metrics.clone(),
        )));
    }
    let mut split: Vec<Vec<Event>> = vec![Vec::new(); lanes];
    while let Some((batch, permit)) = plan.inbox.recv().await {
        let permit = Rc::new(permit);
        if lanes == 1 {
            senders[0]
                .send((batch, permit))
                .map_err(|_| lane_died(plan.index))?;
            continue;
        }
        match plan.ordering {
            Ordering::Partition => {
                let lane = assign::lane_for_partition(batch.source, batch.partition, lanes);
                senders[lane]
                    .send((batch, permit))
                    .map_err(|_| lane_died(plan.index))?;
            }
            Ordering::Key => {
                let Batch {
                    source,
                    partition,
                    mut events,
                    ack,
                } = batch;
                let home = assign::lane_for_partition(source, partition, lanes);
                for e in events.drain(..) {
                    let lane = match &e.key {
                        Some(k) => assign::lane_for_key(assign::hash_key(k), lanes),
                        None => home,
                    };
                    split[lane].push(e);
                }
                for (lane, part) in split.iter_mut().enumerate() {
                    if part.is_empty() {
                        continue;
                    }
                    let events = std::mem::take(part);
                    let sub = Batch {
                        source,
                        partition,
                        events,
                        ack: ack.share(),
                    };
                    senders[lane]
                        .send((sub, Rc::clone(&permit)))
                        .map_err(|_| lane_died(plan.index))?;
                }
                ack.ack();
            }
        }
    }
    drop(senders);
    for h in handles {
        h.await
            .map_err(|e| Error::internal(format!("lane task: {e}")))?;
    }
    Ok(())
}

/// A lane's task ended while its shard still runs: a step panicked. The
/// shard stops with an error (so the pipeline shuts down) rather than
/// dropping every later batch of that lane.
fn lane_died(shard: usize) -> Error {
    tracing::error!(
        shard,
        "a lane stopped: a step panicked; stopping the pipeline"
    );
    Error::internal(format!("shard {shard}: a step panicked"))
}

async fn lane(
    mut rx: mpsc::UnboundedReceiver<LaneItem>,
    mut chain: StepChain,
    outputs: Arc<Outputs>,
    metrics: ShardMetrics,
) {
    let mut out = ChainOutput::default();
    while let Some((batch, permit)) = rx.recv().await {
        let started = Instant::now();
        chain.run(batch.events, &mut out).await;
        metrics
            .busy_micros
            .increment(started.elapsed().as_micros() as u64);
        metrics.batches.increment(1);
        outputs.deliver(&mut out, batch.ack).await;
        drop(permit);
    }
}
