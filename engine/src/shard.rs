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

use crate::ack::AckToken;
use crate::assign;
use crate::batch::Batch;
use crate::chain::{ChainOutput, StepChain, StepSpec};
use crate::control::ShardControl;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::outputs::Outputs;
use crate::queue::{Permit, QueueReceiver};
use crate::reply::build_replies;
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
    /// Commands from a [`crate::control::PipelineControl`], if the pipeline
    /// has one.
    pub control: Option<mpsc::UnboundedReceiver<ShardControl>>,
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

/// What a lane receives, in order: batches and the commands that must
/// apply between them.
enum LaneItem {
    Batch(Batch, Rc<Permit>),
    /// A new instance of stage `stage`, built on this thread.
    Swap {
        stage: usize,
        step: Box<dyn crate::step::Step>,
        done: AckToken,
    },
    /// Settled by the sinks once everything before it is durable.
    Barrier(AckToken),
}

/// What the shard does with one command. Returns whether it is paused.
fn apply_control(
    command: ShardControl,
    plan: &ShardPlan,
    senders: &[mpsc::UnboundedSender<LaneItem>],
    paused: &mut bool,
) {
    match command {
        ShardControl::SwapStep {
            stage,
            factory,
            done,
        } => {
            let Some(index) = plan.steps.iter().position(|s| s.name == stage) else {
                done.fail_with(format!("no step named `{stage}`"));
                return;
            };
            for lane in senders {
                match factory.build() {
                    Ok(step) => {
                        let _ = lane.send(LaneItem::Swap {
                            stage: index,
                            step,
                            done: done.share(),
                        });
                    }
                    Err(e) => {
                        done.share()
                            .fail_with(format!("building step `{stage}`: {e}"));
                        break;
                    }
                }
            }
            done.ack();
        }
        ShardControl::Pause { done } => {
            *paused = true;
            done.ack();
        }
        ShardControl::Resume { done } => {
            *paused = false;
            done.ack();
        }
        ShardControl::Barrier { done } => {
            for lane in senders {
                let _ = lane.send(LaneItem::Barrier(done.share()));
            }
            done.ack();
        }
    }
}

async fn run(mut plan: ShardPlan) -> Result<()> {
    let metrics = ShardMetrics::new(plan.index);
    let lanes = plan.lanes.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut running = Vec::with_capacity(lanes);
    let mut lane_tasks = tokio::task::JoinSet::new();
    let mut lane_ids = std::collections::HashMap::new();
    for index in 0..lanes {
        let mut chain = StepChain::build(&plan.steps, plan.retry.clone())?;
        chain
            .open()
            .await
            .map_err(|e| e.context(format!("shard {}", plan.index)))?;
        running.push(chain.running_stage());
        let (tx, rx) = mpsc::unbounded_channel::<LaneItem>();
        senders.push(tx);
        let task =
            lane_tasks.spawn_local(lane(rx, chain, Arc::clone(&plan.outputs), metrics.clone()));
        lane_ids.insert(task.id(), index);
    }
    // a lane ends before the inbox closes only if a step panicked: that
    // stops the pipeline at once, naming the step
    let died = |joined: std::result::Result<(), tokio::task::JoinError>| -> Error {
        let (lane, message) = match joined {
            Ok(()) => (None, "its lane ended".to_string()),
            Err(e) => (lane_ids.get(&e.id()).copied(), panic_message(e)),
        };
        let step = lane
            .map(|l| running[l].get())
            .and_then(|i| plan.steps.get(i))
            .map_or_else(|| "a step".to_string(), |s| format!("step `{}`", s.name));
        tracing::error!(shard = plan.index, %step, %message, "a step panicked; stopping the pipeline");
        Error::internal(format!("shard {}: {step} panicked: {message}", plan.index))
    };
    let mut split: Vec<Vec<Event>> = vec![Vec::new(); lanes];
    let mut control = plan.control.take();
    let mut paused = false;
    loop {
        let next = tokio::select! {
            biased;
            Some(joined) = lane_tasks.join_next() => return Err(died(joined)),
            command = recv_control(&mut control) => {
                match command {
                    Some(command) => apply_control(command, &plan, &senders, &mut paused),
                    None => control = None, // no controller: data only
                }
                continue;
            }
            item = plan.inbox.recv(), if !paused || control.is_none() => item,
        };
        let Some((batch, permit)) = next else { break };
        let permit = Rc::new(permit);
        if let Some(epoch) = batch.barrier {
            tracing::trace!(shard = plan.index, epoch, "barrier");
            for lane in &senders {
                if lane.send(LaneItem::Barrier(batch.ack.share())).is_err() {
                    return Err(died(lane_tasks.join_next().await.unwrap_or(Ok(()))));
                }
            }
            batch.ack.ack();
            continue;
        }
        if lanes == 1 {
            if senders[0].send(LaneItem::Batch(batch, permit)).is_err() {
                return Err(died(lane_tasks.join_next().await.unwrap_or(Ok(()))));
            }
            continue;
        }
        match plan.ordering {
            Ordering::Partition => {
                let lane = assign::lane_for_partition(batch.source, batch.partition, lanes);
                if senders[lane].send(LaneItem::Batch(batch, permit)).is_err() {
                    return Err(died(lane_tasks.join_next().await.unwrap_or(Ok(()))));
                }
            }
            Ordering::Key => {
                let Batch {
                    source,
                    partition,
                    mut events,
                    ack,
                    reply,
                    barrier: _,
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
                    let mut sub = Batch::new(source, partition, events, ack.share());
                    sub.reply = reply.clone();
                    if senders[lane]
                        .send(LaneItem::Batch(sub, Rc::clone(&permit)))
                        .is_err()
                    {
                        return Err(died(lane_tasks.join_next().await.unwrap_or(Ok(()))));
                    }
                }
                ack.ack();
            }
        }
    }
    drop(senders);
    while let Some(joined) = lane_tasks.join_next().await {
        if joined.is_err() {
            return Err(died(joined));
        }
    }
    Ok(())
}

/// The next command, or never when there is no controller.
async fn recv_control(
    control: &mut Option<mpsc::UnboundedReceiver<ShardControl>>,
) -> Option<ShardControl> {
    match control {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
    }
}

/// What a panicked task said, if it said it with a string.
fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// How often a lane asks its step instances how they are (between
/// batches: an idle lane asks at its next batch).
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

async fn lane(
    mut rx: mpsc::UnboundedReceiver<LaneItem>,
    mut chain: StepChain,
    outputs: Arc<Outputs>,
    metrics: ShardMetrics,
) {
    let mut out = ChainOutput::default();
    let mut next_health = Instant::now();
    while let Some(item) = rx.recv().await {
        match item {
            LaneItem::Batch(batch, permit) => {
                if batch.ack.is_fenced() {
                    // its partition was revoked while it waited here
                    batch.ack.skip_fenced();
                    drop(permit);
                    continue;
                }
                let started = Instant::now();
                // the reply path reads the input offsets before the chain takes the events
                let inputs: Option<Vec<u64>> = batch
                    .reply
                    .as_ref()
                    .map(|_| batch.events.iter().map(|e| e.origin.offset).collect());
                chain.run(batch.events, &mut out).await;
                let finished = Instant::now();
                metrics
                    .busy_micros
                    .increment((finished - started).as_micros() as u64);
                metrics.batches.increment(1);
                // a degraded instance is asked after every batch, so the
                // first clean batch clears it
                if finished >= next_health || chain.is_degraded() {
                    chain.check_health();
                    next_health = finished + HEALTH_EVERY;
                }
                if let (Some(reply), Some(inputs)) = (&batch.reply, inputs) {
                    reply.send(build_replies(&inputs, &out));
                }
                outputs.deliver(&mut out, batch.ack).await;
                drop(permit);
            }
            LaneItem::Swap { stage, step, done } => match chain.swap(stage, step).await {
                Ok(()) => done.ack(),
                Err(e) => done.fail_with(e.to_string()),
            },
            LaneItem::Barrier(done) => outputs.barrier(done).await,
        }
    }
    chain.close().await;
}
