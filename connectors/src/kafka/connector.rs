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
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Offset;
use tokio::sync::{mpsc, oneshot};
use weir_engine::driver::{Connector, Input};
use weir_engine::{Checkpoint, Error, Result};

use super::context::{KafkaContext, Message};
use super::transaction::{self, Transactions};

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
    /// The consumer thread, joined at the close.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The revocation the driver is handling.
    revoking: Option<Revoking>,
    /// Longest drain of a revoked partition.
    revoke_timeout: Duration,
    /// `exactly_once_sink`: the transactional sink whose transactions
    /// commit the offsets.
    exactly_once: Option<ExactlyOnce>,
    /// A failure found outside `read` (a seek before a resume), returned
    /// by the next `read`.
    failed: Option<Error>,
    /// The partition of the last batch `read` returned.
    last_batch: Option<u32>,
}

/// The transactional sink a source commits its offsets through.
struct ExactlyOnce {
    /// Its name.
    sink: String,
    /// Found at the first commit.
    transactions: Option<Arc<Transactions>>,
}

/// How long the first exactly-once commit waits for its sink to open.
const SINK_OPEN_WAIT: Duration = Duration::from_secs(30);

impl KafkaConnector {
    /// A connector over `consumer`, receiving from its thread on `rx`.
    pub(crate) fn new(
        consumer: Arc<BaseConsumer<KafkaContext>>,
        rx: mpsc::Receiver<Message>,
        thread: std::thread::JoinHandle<()>,
        revoke_timeout: Duration,
        exactly_once_sink: Option<String>,
    ) -> Self {
        KafkaConnector {
            consumer: Some(consumer),
            rx,
            thread: Some(thread),
            revoking: None,
            revoke_timeout,
            exactly_once: exactly_once_sink.map(|sink| ExactlyOnce {
                sink,
                transactions: None,
            }),
            failed: None,
            last_batch: None,
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

    /// Commits the epoch: `tpl` and the records written for it, in one
    /// transaction of the exactly-once sink.
    async fn commit_transaction(&mut self, tpl: rdkafka::TopicPartitionList) -> Result<()> {
        let name = self.context().name.clone();
        let Some(exactly_once) = self.exactly_once.as_mut() else {
            return Err(Error::internal("not an exactly-once source"));
        };
        let transactions = match &exactly_once.transactions {
            Some(found) => Arc::clone(found),
            None => {
                let found = transaction::find(&exactly_once.sink, &name, SINK_OPEN_WAIT).await?;
                exactly_once.transactions = Some(Arc::clone(&found));
                found
            }
        };
        // partitions lost and not yet reported: their new owners read
        // this epoch's events again, so it must never commit
        if self.consumer().assignment_lost() {
            return Err(Error::external(format!(
                "kafka source `{name}`: partitions lost (the session timed out): not committing the epoch"
            )));
        }
        // the member's generation goes with the offsets: a zombie's commit
        // after a rebalance is refused (KIP-447)
        let group = self.consumer().group_metadata().ok_or_else(|| {
            Error::internal(format!("kafka source `{name}`: no consumer group metadata"))
        })?;
        let list = tpl.clone();
        tokio::task::spawn_blocking(move || transactions.commit(&list, &group))
            .await
            .map_err(|e| Error::internal(format!("kafka transaction task: {e}")))?
            .map_err(|e| e.context(format!("kafka source `{name}`")))?;
        self.context().confirmed(&tpl);
        Ok(())
    }

    /// Commits `tpl` and waits for the broker, retrying until `deadline`.
    ///
    /// librdkafka's synchronous commit has no timeout of its own (while no
    /// group coordinator is known it waits for one): the wait is bounded
    /// here, and a commit still waiting then is left to librdkafka on its
    /// blocking thread.
    async fn commit_sync(&self, tpl: rdkafka::TopicPartitionList, deadline: Instant) -> Result<()> {
        loop {
            let consumer = Arc::clone(self.consumer());
            let list = tpl.clone();
            // the broker round trip blocks: off the runtime's threads
            let task =
                tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync));
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(joined) = tokio::time::timeout(left, task).await else {
                return Err(Error::external(format!(
                    "kafka source `{}`: committing offsets: no answer from the group coordinator within {left:?}",
                    self.context().name
                )));
            };
            let result = joined.map_err(|e| Error::internal(format!("kafka commit task: {e}")))?;
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
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // the driver reads again once it handled the last batch
        if let Some(partition) = self.last_batch.take() {
            self.context().handled(partition);
        }
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
                self.last_batch = Some(partition);
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
                if lost && self.exactly_once.is_some() {
                    // records of them may be in the open transaction, and
                    // their new owner reads their events again: this
                    // transaction must never commit
                    return Err(Error::external(format!(
                        "kafka source `{}`: partitions lost (the session timed out): stopping so that the open transaction is aborted; their new owners read their events again",
                        self.context().name
                    )));
                }
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
        if self.exactly_once.is_some() {
            // also with no offsets: records of the epoch may be open
            return self.commit_transaction(tpl).await;
        }
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
        // what is not confirmed is committed again at the next tick. None
        // while the assignment is lost: the partitions are about to be
        // released uncommitted
        if self.consumer().assignment_lost() {
            return Ok(());
        }
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

    fn commits_in_epochs(&self) -> bool {
        self.exactly_once.is_some()
    }

    fn can_pause(&self) -> bool {
        true
    }

    fn pause(&mut self, partition: u32, paused: bool) {
        tracing::debug!(source = %self.context().name, partition, paused, "kafka partition pause/resume");
        // a pause is weir's only: librdkafka would drop the partition's
        // prefetched messages and fetch them again at the resume, which
        // under steady backpressure (a pause per batch) costs more than
        // the work. The consumer thread waits a little for the resume and
        // only then holds the partition in librdkafka too (`poller.rs`).
        if paused {
            self.context().pause(partition);
            return;
        }
        let Some(refetch) = self.context().unpause(partition) else {
            return;
        };
        if let Some(next) = refetch {
            // the consumer thread dropped messages of it while it was
            // held: fetch again from the first one dropped (a seek drops
            // whatever librdkafka still holds of it from before)
            if let Err(e) = self.seek(partition, next) {
                // resuming without it would skip what was dropped: the
                // source fails instead (nothing past it is committed)
                self.failed = Some(Error::external(format!(
                    "kafka source `{}`: seeking partition {partition} back to offset {next} before resuming it: {e}",
                    self.context().name
                )));
                return;
            }
        }
        let tpl = self.context().list_of(&[partition]);
        if let Err(e) = self.consumer().resume(&tpl) {
            tracing::warn!(source = %self.context().name, partition, error = %e, "kafka resume failed");
        }
    }

    async fn close(&mut self) {
        // the thread sees the flag (or the closed channel), stops, closes
        // the consumer — leaving the group — and ends; the driver gives up
        // on this wait at the shutdown deadline (a coordinator holding a
        // pending join can keep the close waiting for a session)
        let name = self.context_name();
        self.stop();
        let Some(thread) = self.thread.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            _ => tracing::error!(source = %name, "the kafka consumer thread panicked"),
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

impl KafkaConnector {
    /// Sets where partition `id` is fetched from next, without waiting
    /// (librdkafka drops what it fetched of it before, at once).
    fn seek(&self, id: u32, offset: u64) -> rdkafka::error::KafkaResult<()> {
        let mut tpl = self.context().list_of(&[id]);
        let offset = Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX));
        let named = tpl
            .elements()
            .first()
            .map(|e| (e.topic().to_string(), e.partition()));
        if let Some((topic, partition)) = named {
            tpl.set_partition_offset(&topic, partition, offset)?;
        }
        let sought = self.consumer().seek_partitions(tpl, Duration::ZERO)?;
        // per-partition errors are in the list; "in progress" is how a
        // seek that does not wait says it was started
        for e in sought.elements() {
            match e.error() {
                Ok(()) | Err(KafkaError::OffsetFetch(RDKafkaErrorCode::InProgress)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// The source's name, also once the consumer was let go.
    fn context_name(&self) -> String {
        self.consumer
            .as_ref()
            .map_or_else(String::new, |c| c.context().name.clone())
    }

    /// Tells the consumer thread to stop and lets go of the revocation it
    /// may be waiting in (its rebalance callback then returns), of the
    /// consumer (the thread, last owner, closes it) and of the channel (a
    /// thread waiting to send wakes).
    fn stop(&mut self) {
        // a source that failed during a revocation still holds its answer:
        // the consumer thread would wait for it forever
        self.revoking = None;
        if let Some(consumer) = self.consumer.take() {
            consumer.context().stop.store(true, Ordering::Release);
        }
        self.rx.close();
    }
}

impl Drop for KafkaConnector {
    fn drop(&mut self) {
        self.stop();
    }
}
