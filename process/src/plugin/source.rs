//! The `plugin` source: weir asks the plugin for a batch (`poll`, carrying
//! the positions it may now commit), dispatches what comes back, and polls
//! again only once the batch is in a shard's queue: the plugin never runs
//! ahead of the pipeline, and a slow pipeline slows it.
//!
//! Positions are opaque to weir. Each batch carries the plugin's position
//! after it; weir numbers the batches of each partition, tracks them in
//! the ack ledger like any source's, and once every batch up to one is
//! durable in the sinks, hands that batch's position back in the next
//! `poll` (or in a final `commit` at shutdown). The plugin persists
//! committed positions (its own file, an upstream cursor) and resumes from
//! there when started again, so a crash of the plugin or of weir replays
//! at most what was not committed: at least once, nothing lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Error, Result, Routing, Source, SourceContext};

use super::PluginOptions;
use crate::frame::FrameBuf;
use crate::protocol::{self, Message};
use crate::worker::{Worker, WorkerSpec};

/// Builds a `plugin` source.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Source>, Diagnostic> {
    let (options, spec) = PluginOptions::from_config(config, "source")?;
    Ok(Box::new(PluginSource {
        spec,
        restart_after: options.restart_after,
    }))
}

/// A source run by a plugin process.
pub struct PluginSource {
    spec: Arc<WorkerSpec>,
    restart_after: Duration,
}

/// A partition's batches in flight: weir's batch number → the plugin's position.
#[derive(Default)]
struct Positions {
    next: u64,
    pending: BTreeMap<u64, String>,
    /// The last position committed (sent again to a restarted plugin).
    committed: Option<String>,
}

/// What the source remembers across plugin restarts.
#[derive(Default)]
struct State {
    partitions: HashMap<u32, Positions>,
    /// Commits not yet handed to the plugin.
    unsent: BTreeMap<u32, String>,
}

impl State {
    /// Moves the ledger's new watermarks into `unsent` as plugin positions.
    fn take_commits(&mut self, ctx: &mut SourceContext) {
        for cp in ctx.take_checkpoints() {
            let Some(p) = self.partitions.get_mut(&cp.partition) else {
                continue;
            };
            let done: Vec<u64> = p.pending.range(..=cp.position).map(|(k, _)| *k).collect();
            let mut last = None;
            for k in done {
                last = p.pending.remove(&k);
            }
            if let Some(position) = last {
                p.committed = Some(position.clone());
                self.unsent.insert(cp.partition, position);
            }
        }
    }

    /// `[[partition, position], …]` for the next message; empties `unsent`.
    fn commit_json(&mut self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = std::mem::take(&mut self.unsent)
            .into_iter()
            .map(|(p, pos)| serde_json::json!([p, pos]))
            .collect();
        serde_json::Value::Array(list)
    }

    /// After a restart: the plugin hears every committed position again.
    fn resend_committed(&mut self) {
        for (p, positions) in &self.partitions {
            if let Some(c) = &positions.committed {
                self.unsent.entry(*p).or_insert_with(|| c.clone());
            }
        }
    }
}

#[async_trait]
impl Source for PluginSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<()> {
        let name = Arc::clone(&self.spec.function);
        let mut worker = Some(
            Worker::start(Arc::clone(&self.spec))
                .await
                .map_err(|e| Error::user(format!("plugin source `{name}`: {e}")))?,
        );
        let mut state = State::default();
        let settings = ctx.batch_settings().clone();
        let mut frame = FrameBuf::default();
        let mut ended = false;
        while !ctx.is_shutdown() {
            let Some(current) = worker.as_mut() else {
                tokio::select! {
                    _ = tokio::time::sleep(self.restart_after) => {}
                    _ = ctx.shutdown() => break,
                }
                match Worker::start(Arc::clone(&self.spec)).await {
                    Ok(w) => {
                        state.resend_committed();
                        worker = Some(w);
                    }
                    Err(e) => {
                        tracing::error!(source = %name, error = %e, "plugin source: restart failed; trying again")
                    }
                }
                continue;
            };
            state.take_commits(&mut ctx);
            frame.clear();
            let poll = serde_json::json!({
                "t": "poll",
                "max_events": settings.max_events,
                "wait_ms": settings.max_wait.as_millis() as u64,
                "commit": state.commit_json(),
            });
            let _ = serde_json::to_writer(&mut frame.json, &poll);
            // not raced with shutdown: the plugin answers within `wait_ms`,
            // and a poll left half-done would leave the pipes out of step
            let reply = match current.call(&frame).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::warn!(source = %name, error = %e, "plugin source died; starting it again");
                    // commits in that poll may be lost with it: send them again
                    state.resend_committed();
                    worker = None;
                    continue;
                }
            };
            let blob = reply.bytes.slice(reply.json_end..);
            match protocol::parse(&reply.bytes[..reply.json_end]) {
                Ok(Message::Batch {
                    partition,
                    position,
                    e,
                }) => {
                    let events = match protocol::decode_events(&e, &blob, partition) {
                        Ok(events) => events,
                        Err(reason) => {
                            tracing::error!(source = %name, %reason, "plugin source sent a bad batch; restarting it");
                            worker = None;
                            continue;
                        }
                    };
                    let positions = state.partitions.entry(partition).or_insert_with(|| {
                        ctx.restore(partition, 0);
                        Positions::default()
                    });
                    if events.is_empty() {
                        continue;
                    }
                    positions.next += 1;
                    let end = positions.next;
                    positions.pending.insert(end, position.into_owned());
                    ctx.dispatch(partition, events, end, Routing::Key).await?;
                }
                Ok(Message::End) => {
                    ended = true;
                    break;
                }
                Ok(other) => {
                    tracing::error!(source = %name, "plugin source answered a poll with {other:?}; restarting it");
                    worker = None;
                }
                Err(reason) => {
                    tracing::error!(source = %name, %reason, "plugin source; restarting it");
                    worker = None;
                }
            }
        }
        let drained = ctx.drain().await;
        state.take_commits(&mut ctx);
        if let Some(mut w) = worker {
            if !state.unsent.is_empty() {
                frame.clear();
                let commit = serde_json::json!({ "t": "commit", "commit": state.commit_json() });
                let _ = serde_json::to_writer(&mut frame.json, &commit);
                match w.call(&frame).await {
                    Ok(reply)
                        if matches!(
                            protocol::parse(&reply.bytes[..reply.json_end]),
                            Ok(Message::Ack)
                        ) => {}
                    Ok(_) => {
                        tracing::warn!(source = %name, "plugin source did not ack the final commit")
                    }
                    Err(e) => {
                        tracing::warn!(source = %name, error = %e, "plugin source: the final commit failed")
                    }
                }
            }
            w.stop(Duration::from_secs(5)).await;
        }
        tracing::info!(source = %name, ended, drained, "plugin source stopped");
        Ok(())
    }
}
