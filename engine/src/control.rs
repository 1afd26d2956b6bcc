//! The control channel into running shards: swap a step, pause and resume,
//! barriers — each applied at a batch boundary, in order with the data.
//!
//! Every shard has an unbounded control receiver beside its bounded inbox
//! (commands are few and small; an unbounded channel never makes a control
//! call wait behind data). The shard forwards each command to all its lanes
//! through the lanes' own FIFO channels, so a lane applies it after the
//! batches it already holds and before the ones that come later: a swapped
//! step never sees half a batch, and per-key order holds across the swap
//! (a key's events stay on one lane).
//!
//! Each command carries an [`AckToken`]; every lane settles a share of it,
//! so [`PipelineControl`] awaits the command's [`AckState`](crate::ack::AckState)
//! like any batch and learns why it failed (a step that failed to build or
//! open keeps its old version).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::ack::{AckToken, Completion};
use crate::error::{Error, Result};
use crate::step::StepFactory;

/// A command for one shard.
pub enum ShardControl {
    /// Replaces every lane's instance of step `stage` by a new one from
    /// `factory` (built on the shard's thread and opened in the lane); the
    /// old instance finishes its batch and is closed.
    SwapStep {
        /// The step's name in the pipeline.
        stage: Arc<str>,
        /// Builds the new instances.
        factory: Arc<dyn StepFactory>,
        /// Settled by every lane once it swapped (failed with the reason if
        /// the new instance could not be built or opened).
        done: AckToken,
    },
    /// Stops taking batches from the inbox; as it fills, sources back off
    /// (backpressure, nothing is dropped).
    Pause {
        /// Settled once the shard stopped taking batches.
        done: AckToken,
    },
    /// Takes batches again after a [`ShardControl::Pause`].
    Resume {
        /// Settled once the shard takes batches again.
        done: AckToken,
    },
    /// Passes every lane and then every sink: settled once everything the
    /// shard took before it is durable in every sink.
    Barrier {
        /// Settled by every lane's sinks.
        done: AckToken,
    },
}

/// A handle to steer a running pipeline's shards. Cheap to clone.
#[derive(Clone)]
pub struct PipelineControl {
    shards: Arc<[mpsc::UnboundedSender<ShardControl>]>,
    steps: Arc<[Arc<str>]>,
}

/// The shards' ends of a [`PipelineControl`], handed to the pipeline's run.
pub type ControlReceivers = Vec<mpsc::UnboundedReceiver<ShardControl>>;

impl PipelineControl {
    /// A control handle for `shards` shards running `steps`, and the
    /// receivers the shards read.
    pub fn new(shards: usize, steps: Arc<[Arc<str>]>) -> (Self, ControlReceivers) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
        (
            PipelineControl {
                shards: senders.into(),
                steps,
            },
            receivers,
        )
    }

    /// Names of the pipeline's steps, in order.
    pub fn step_names(&self) -> &[Arc<str>] {
        &self.steps
    }

    /// Replaces step `stage` on every lane of every shard at its next batch
    /// boundary. Returns once every lane runs the new instance; if any lane
    /// could not build or open it, returns why (lanes that did swap keep the
    /// new instance: call again with the old factory to roll back).
    pub async fn swap_step(&self, stage: &str, factory: Arc<dyn StepFactory>) -> Result<()> {
        let Some(stage) = self.steps.iter().find(|s| &***s == stage).cloned() else {
            return Err(Error::user(format!(
                "no step named `{stage}` (steps: {})",
                self.steps
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        self.broadcast("swap", |done| ShardControl::SwapStep {
            stage: Arc::clone(&stage),
            factory: Arc::clone(&factory),
            done,
        })
        .await
    }

    /// Stops every shard taking batches (sources back off as inboxes fill).
    pub async fn pause(&self) -> Result<()> {
        self.broadcast("pause", |done| ShardControl::Pause { done })
            .await
    }

    /// Lets every shard take batches again.
    pub async fn resume(&self) -> Result<()> {
        self.broadcast("resume", |done| ShardControl::Resume { done })
            .await
    }

    /// Returns once everything the shards took before this call is durable
    /// in every sink (or failed: then why).
    pub async fn barrier(&self) -> Result<()> {
        self.broadcast("barrier", |done| ShardControl::Barrier { done })
            .await
    }

    async fn broadcast(
        &self,
        what: &str,
        mut command: impl FnMut(AckToken) -> ShardControl,
    ) -> Result<()> {
        let token = AckToken::detached();
        let state = token.state();
        for shard in self.shards.iter() {
            if shard.send(command(token.share())).is_err() {
                // the dropped command's share fails the token
                token.fail_with("the pipeline is not running");
                return Err(Error::external(format!(
                    "{what}: the pipeline is not running"
                )));
            }
        }
        token.ack();
        match state.completed().await {
            Completion::Delivered => Ok(()),
            Completion::Failed { reason, .. } => Err(Error::external(format!("{what}: {reason}"))),
        }
    }
}
