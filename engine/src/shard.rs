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
/// lane finished.
pub fn spawn(plan: ShardPlan) -> std::io::Result<std::thread::JoinHandle<Result<()>>> {
    std::thread::Builder::new().name(format!("weir-shard-{}", plan.index)).spawn(move || {
        if let Some(core) = plan.core {
            if let Err(e) = pin_to_core(core) {
                tracing::warn!(shard = plan.index, core, error = %e, "could not pin shard to its core");
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("shard runtime: {e}")))?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, run(plan))
    })
}

/// The cores this process may run on.
pub fn available_cores() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
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
            let _ = senders[0].send((batch, permit));
            continue;
        }
        match plan.ordering {
            Ordering::Partition => {
                let lane = assign::lane_for_partition(batch.source, batch.partition, lanes);
                let _ = senders[lane].send((batch, permit));
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
                    let _ = senders[lane].send((sub, Rc::clone(&permit)));
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
