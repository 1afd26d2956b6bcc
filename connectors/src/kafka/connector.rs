//! The `kafka` source's side on the runtime: a [`Connector`] that receives
//! the consumer thread's batches and revocations and commits offsets.
//!
//! Everything else of the source protocol — dispatch, parking a refused
//! batch and pausing its partition, draining, fencing and committing a
//! revoked partition, the final drain — is the engine's source driver.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tokio::sync::{mpsc, oneshot};
use weir_engine::driver::{Connector, Input};
use weir_engine::{Checkpoint, Error, Result};

use super::context::{KafkaContext, Message};

/// How long a failed synchronous commit waits before it is tried again.
const COMMIT_RETRY: Duration = Duration::from_millis(100);

/// Partitions being revoked: the consumer thread waits for `done`.
struct Revoking {
    /// Lost partitions are not committed (another member owns them).
    lost: Vec<u32>,
    /// Answered in [`Connector::revoked`].
    done: oneshot::Sender<()>,
    /// The revocation's commit is retried until then.
    deadline: Instant,
}

/// The connector of one `kafka` source.
pub(crate) struct KafkaConnector {
    /// Shared with the consumer thread; dropped first when the connector
    /// goes, so the thread is the last owner and closes the consumer.
    consumer: Option<Arc<BaseConsumer<KafkaContext>>>,
    /// From the consumer thread.
    rx: mpsc::Receiver<Message>,
    /// The revocation the driver is handling.
    revoking: Option<Revoking>,
    /// Longest drain of a revoked partition.
    revoke_timeout: Duration,
}

impl KafkaConnector {
    /// A connector over `consumer`, receiving from its thread on `rx`.
    pub(crate) fn new(
        consumer: Arc<BaseConsumer<KafkaContext>>,
        rx: mpsc::Receiver<Message>,
        revoke_timeout: Duration,
    ) -> Self {
        KafkaConnector {
            consumer: Some(consumer),
            rx,
            revoking: None,
            revoke_timeout,
        }
    }

    fn consumer(&self) -> &Arc<BaseConsumer<KafkaContext>> {
        self.consumer
            .as_ref()
            .expect("the consumer is only taken when the connector is dropped")
    }

    fn context(&self) -> &KafkaContext {
        self.consumer().context()
    }

    /// Commits `tpl` and waits for the broker, retrying until `deadline`.
    async fn commit_sync(&self, tpl: rdkafka::TopicPartitionList, deadline: Instant) -> Result<()> {
        loop {
            let consumer = Arc::clone(self.consumer());
            let list = tpl.clone();
            // the broker round trip blocks: off the runtime's threads
            let result =
                tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
                    .await
                    .map_err(|e| Error::internal(format!("kafka commit task: {e}")))?;
            match result {
                Ok(()) => {
                    self.context().confirmed(&tpl);
                    return Ok(());
                }
                Err(e) => {
                    self.context().commit_error(&e);
                    if Instant::now() + COMMIT_RETRY >= deadline {
                        return Err(Error::external(format!(
                            "kafka source `{}`: committing offsets: {e}",
                            self.context().name
                        ))
                        .with_cause(e));
                    }
                    tokio::time::sleep(COMMIT_RETRY).await;
                }
            }
        }
    }
}

#[async_trait]
impl Connector for KafkaConnector {
    async fn read(&mut self) -> Result<Input> {
        // `recv` is cancel safe: a message is either returned or kept
        match self.rx.recv().await {
            Some(Message::Batch {
                partition,
                events,
                end,
            }) => {
                self.context()
                    .queued
                    .fetch_sub(events.len(), Ordering::Relaxed);
                Ok(Input::Batch {
                    partition,
                    events,
                    end,
                })
            }
            Some(Message::Revoked {
                partitions,
                lost,
                done,
            }) => {
                self.revoking = Some(Revoking {
                    lost: if lost { partitions.clone() } else { Vec::new() },
                    done,
                    deadline: Instant::now() + self.revoke_timeout,
                });
                if lost {
                    tracing::warn!(source = %self.context().name, partitions = partitions.len(),
                        "partitions lost (session timed out); not committing them");
                }
                Ok(Input::Revoked(partitions))
            }
            Some(Message::Failed(e)) => Err(e),
            None => Err(Error::internal(format!(
                "kafka source `{}`: the consumer thread stopped",
                self.context().name
            ))),
        }
    }

    async fn commit(&mut self, positions: &[Checkpoint], last: bool) -> Result<()> {
        let skip = self.revoking.as_ref().map_or(&[][..], |r| &r.lost[..]);
        let tpl = self.context().offsets_to_commit(positions, skip);
        if tpl.count() == 0 {
            return Ok(());
        }
        if let Some(revoking) = &self.revoking {
            // the partitions are released after this: wait for the broker
            return self.commit_sync(tpl, revoking.deadline).await;
        }
        if last {
            return self
                .commit_sync(tpl, Instant::now() + self.revoke_timeout)
                .await;
        }
        // periodic: the commit callback confirms it on the consumer thread;
        // what is not confirmed is committed again at the next tick
        self.consumer()
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| {
                self.context().commit_error(&e);
                Error::external(format!(
                    "kafka source `{}`: committing offsets: {e}",
                    self.context().name
                ))
                .with_cause(e)
            })
    }

    fn revoke_timeout(&self) -> Duration {
        self.revoke_timeout
    }

    fn can_pause(&self) -> bool {
        true
    }

    fn pause(&mut self, partition: u32, paused: bool) {
        let tpl = self.context().list_of(&[partition]);
        tracing::debug!(source = %self.context().name, partition, paused, "kafka partition pause/resume");
        // librdkafka drops the partition's prefetched messages at a pause
        // and fetches again from the last one polled at the resume
        self.context().set_paused(&[partition], paused);
        let result = if paused {
            self.consumer().pause(&tpl)
        } else {
            self.consumer().resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(source = %self.context().name, partition, error = %e, paused, "kafka pause/resume failed");
        }
    }

    async fn revoked(&mut self, _partitions: &[u32]) {
        if let Some(revoking) = self.revoking.take() {
            let _ = revoking.done.send(());
        }
    }

    fn held(&self) -> usize {
        let context = self.context();
        context.staged.load(Ordering::Relaxed) + context.queued.load(Ordering::Relaxed)
    }
}

impl Drop for KafkaConnector {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            consumer.context().stop.store(true, Ordering::Release);
        }
        // then `rx` is dropped: a thread waiting to send wakes and stops
    }
}
