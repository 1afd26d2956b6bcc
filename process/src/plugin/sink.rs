//! The `plugin` sink: each batch goes to the plugin as one `write` frame;
//! the plugin answers `ack` once the events are durable (only then does
//! weir count them delivered, so the ack ledger holds) or `failed` with a
//! reason. A plugin that dies or times out is started again for the next
//! attempt, and the batch is retried: at least once, nothing lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use weir_config::{ComponentConfig, Diagnostic};
use weir_engine::{Error, Event, Result, Sink};

use super::PluginOptions;
use crate::frame::FrameBuf;
use crate::protocol::{self, Message};
use crate::worker::{Worker, WorkerSpec};

/// Builds a `plugin` sink.
pub fn build(config: &ComponentConfig) -> Result<Box<dyn Sink>, Diagnostic> {
    let (options, spec) = PluginOptions::from_config(config, "sink")?;
    Ok(Box::new(PluginSink {
        spec,
        restart_after: options.restart_after,
        worker: None,
        frame: FrameBuf::default(),
        died: false,
    }))
}

/// A sink run by a plugin process.
pub struct PluginSink {
    spec: Arc<WorkerSpec>,
    restart_after: Duration,
    worker: Option<Worker>,
    frame: FrameBuf,
    /// The last plugin died: wait `restart_after` before the next.
    died: bool,
}

impl PluginSink {
    async fn worker(&mut self) -> Result<&mut Worker> {
        if self.worker.is_none() {
            if self.died {
                tokio::time::sleep(self.restart_after).await;
            }
            let worker = Worker::start(Arc::clone(&self.spec)).await.map_err(|e| {
                Error::retryable(format!("plugin sink `{}`: {e}", self.spec.function))
            })?;
            self.died = false;
            self.worker = Some(worker);
        }
        self.worker
            .as_mut()
            .ok_or_else(|| Error::internal("plugin sink: no worker"))
    }
}

#[async_trait]
impl Sink for PluginSink {
    /// Starts the plugin: a plugin that cannot start stops the pipeline at start.
    async fn open(&mut self) -> Result<()> {
        let worker = Worker::start(Arc::clone(&self.spec))
            .await
            .map_err(|e| Error::user(format!("plugin sink `{}`: {e}", self.spec.function)))?;
        self.worker = Some(worker);
        Ok(())
    }

    async fn write(&mut self, events: &[Event]) -> Result<()> {
        let name = Arc::clone(&self.spec.function);
        protocol::encode_events("write", events, &mut self.frame);
        let frame = std::mem::take(&mut self.frame);
        let worker = self.worker().await?;
        let called = worker.call(&frame).await;
        self.frame = frame;
        let reply = match called {
            Ok(reply) => reply,
            Err(e) => {
                self.worker = None;
                self.died = true;
                return Err(Error::retryable(format!("plugin sink `{name}`: {e}")));
            }
        };
        match protocol::parse(&reply.bytes[..reply.json_end]) {
            Ok(Message::Ack) => Ok(()),
            Ok(Message::Failed { message, retryable }) => {
                let message = format!("plugin sink `{name}`: {message}");
                Err(if retryable {
                    Error::retryable(message)
                } else {
                    Error::user(message)
                })
            }
            Ok(other) => {
                self.worker = None;
                Err(Error::retryable(format!(
                    "plugin sink `{name}` answered a write with {other:?}; restarting it"
                )))
            }
            Err(e) => {
                self.worker = None;
                Err(Error::retryable(format!(
                    "plugin sink `{name}`: {e}; restarting it"
                )))
            }
        }
    }

    /// Closes the plugin's input: it exits at end of input (killed if not).
    async fn close(&mut self) -> Result<()> {
        if let Some(worker) = self.worker.take() {
            worker.stop(Duration::from_secs(5)).await;
        }
        Ok(())
    }
}
