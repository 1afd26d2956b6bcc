//! The consumer's librdkafka context: rebalance and commit callbacks, and
//! the state the consumer thread shares with the source's connector.
//!
//! librdkafka calls the rebalance callback from inside `poll`, on the
//! consumer thread. A revocation is handed to the source driver (through
//! the same channel as the batches, so it comes after every batch of the
//! partitions already read) and the callback waits until the driver has
//! drained, fenced, committed and forgotten the partitions: only then does
//! librdkafka release them, and the next owner starts exactly after what
//! this process delivered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, Statistics, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use weir_engine::telemetry::names;
use weir_engine::{Checkpoint, Error, Event};

use super::partitions::PartitionIds;

/// What the consumer thread hands the connector, in order.
#[derive(Debug)]
pub(crate) enum Message {
    /// A batch of one partition.
    Batch {
        /// The weir partition id.
        partition: u32,
        /// The events, in offset order.
        events: Vec<Event>,
        /// The offset after the last event.
        end: u64,
    },
    /// Partitions being revoked: `done` is answered once the driver
    /// committed and forgot them; librdkafka releases them after that.
    Revoked {
        /// Their weir partition ids.
        partitions: Vec<u32>,
        /// The assignment was lost (the session timed out): another member
        /// owns them already, so nothing of them is committed.
        lost: bool,
        /// Answered when the driver is done with them.
        done: oneshot::Sender<()>,
    },
    /// The consumer failed for good.
    Failed(Error),
}

/// State shared by the consumer thread (loop and callbacks) and the
/// connector on the runtime. The locks are taken per batch, rebalance or
/// commit, never per message.
pub(crate) struct KafkaContext {
    /// The source's name, for logs and metrics.
    pub(crate) name: String,
    /// To the connector: batches, revocations, failures.
    pub(crate) tx: mpsc::Sender<Message>,
    /// Topic-partition ↔ weir partition ids.
    pub(crate) ids: Mutex<PartitionIds>,
    /// Acked watermarks not yet known to be committed, by partition id.
    pub(crate) uncommitted: Mutex<BTreeMap<u32, u64>>,
    /// Set by a rebalance; the loop then reads [`changes`](Self::changes).
    pub(crate) rebalanced: AtomicBool,
    /// Partitions revoked and assigned since the loop last looked.
    pub(crate) changes: Mutex<Changes>,
    /// Events in batches the loop is building (updated at its
    /// housekeeping).
    pub(crate) staged: AtomicUsize,
    /// Events sent and not yet received by the connector.
    pub(crate) queued: AtomicUsize,
    /// Set when the connector is gone: the loop stops.
    pub(crate) stop: AtomicBool,
    /// Partitions the driver paused: the loop keeps their batches staged
    /// instead of sending them, so a paused partition holds at most the
    /// batch the driver parked and the one being built, however far the
    /// loop had read ahead.
    paused: IdSet,
    /// Partitions with a batch sent that the driver has not finished
    /// handling (dispatching it, or parking it and pausing the partition):
    /// the loop sends a partition's next batch only after that, so a
    /// partition the driver pauses has at most one batch parked.
    in_flight: IdSet,
    /// Paused partitions the loop also paused in librdkafka (held: it
    /// stopped waiting for their resume), with the offset to fetch them
    /// again from if it dropped messages of them: the connector seeks
    /// there and resumes them in librdkafka. Changed only under the lock
    /// of [`paused`](Self::paused).
    held: Mutex<HashMap<u32, Option<u64>>>,
}

/// Where a partition stands with respect to the driver's backpressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseState {
    /// Not paused: its batches are sent.
    Running,
    /// Paused by the driver: its batches stay staged, and librdkafka still
    /// fetches it (a pause there would drop what it prefetched, to be
    /// fetched again at the resume).
    Paused,
    /// Paused in librdkafka too: the loop stopped waiting for the resume.
    Held,
}

/// A set of partition ids that the consumer loop asks about for every
/// message: an empty set (nearly always) is answered without the lock.
#[derive(Debug, Default)]
struct IdSet {
    ids: Mutex<HashSet<u32>>,
    /// Whether `ids` is not empty.
    any: AtomicBool,
}

impl IdSet {
    fn contains(&self, id: u32) -> bool {
        self.any.load(Ordering::Acquire) && KafkaContext::lock(&self.ids).contains(&id)
    }

    /// Applies `change` to the ids under the lock.
    fn update<T>(&self, change: impl FnOnce(&mut HashSet<u32>) -> T) -> T {
        let mut ids = KafkaContext::lock(&self.ids);
        let out = change(&mut ids);
        self.any.store(!ids.is_empty(), Ordering::Release);
        out
    }
}

/// What rebalances changed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Revoked partition ids: their staged batches are dropped.
    pub(crate) revoked: Vec<u32>,
    /// Newly assigned partition ids: they start unpaused.
    pub(crate) assigned: Vec<u32>,
}

impl KafkaContext {
    /// A context sending to `tx`.
    pub(crate) fn new(name: String, ids: PartitionIds, tx: mpsc::Sender<Message>) -> Self {
        KafkaContext {
            name,
            tx,
            ids: Mutex::new(ids),
            uncommitted: Mutex::default(),
            rebalanced: AtomicBool::new(false),
            changes: Mutex::new(Changes::default()),
            staged: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            paused: IdSet::default(),
            held: Mutex::default(),
            in_flight: IdSet::default(),
        }
    }

    /// The loop sent a batch of partition `id`.
    pub(crate) fn sent(&self, id: u32) {
        self.in_flight.update(|set| set.insert(id));
    }

    /// The driver finished handling the last batch of partition `id` (or
    /// the partition was revoked or assigned anew).
    pub(crate) fn handled(&self, id: u32) {
        self.in_flight.update(|set| set.remove(&id));
    }

    /// Whether a batch of partition `id` was sent and not yet handled.
    pub(crate) fn is_in_flight(&self, id: u32) -> bool {
        self.in_flight.contains(id)
    }

    /// The loop stopped waiting for paused partition `id` to resume: pauses
    /// it in librdkafka too (`pause_client`, called under the pause's lock
    /// so that a resume comes either before it, and this returns false, or
    /// after it and resumes it in librdkafka).
    pub(crate) fn hold(&self, id: u32, pause_client: impl FnOnce()) -> bool {
        self.paused.update(|set| {
            let paused = set.contains(&id);
            if paused {
                Self::lock(&self.held).entry(id).or_insert_with(|| {
                    pause_client();
                    None
                });
            }
            paused
        })
    }

    /// The loop is about to drop a message of held partition `id`, whose
    /// batch is full: records that it must be fetched again from `next`.
    /// Checked under the pause's lock, so a resume either comes first
    /// (then this returns false and the message is kept) or finds the
    /// offset to seek to.
    pub(crate) fn drop_while_paused(&self, id: u32, next: u64) -> bool {
        self.paused.update(|set| {
            let paused = set.contains(&id);
            if paused {
                let mut held = Self::lock(&self.held);
                held.entry(id).or_default().get_or_insert(next);
            }
            paused
        })
    }

    /// Unpauses partition `id`. `None` if the loop never held it (nothing
    /// to do in librdkafka); else it must be resumed there, after a seek
    /// back to the offset returned, if the loop dropped messages of it
    /// (for a partition revoked or assigned anew: forgets it).
    pub(crate) fn unpause(&self, id: u32) -> Option<Option<u64>> {
        self.paused.update(|set| {
            set.remove(&id);
            Self::lock(&self.held).remove(&id)
        })
    }

    /// Marks partition `id` paused (in weir only: see [`PauseState`]).
    pub(crate) fn pause(&self, id: u32) {
        self.paused.update(|set| set.insert(id));
    }

    /// Whether the driver paused partition `id`.
    pub(crate) fn is_paused(&self, id: u32) -> bool {
        self.paused.contains(id)
    }

    /// Partition `id`'s pause state.
    pub(crate) fn pause_state(&self, id: u32) -> PauseState {
        if !self.paused.contains(id) {
            return PauseState::Running;
        }
        if Self::lock(&self.held).contains_key(&id) {
            PauseState::Held
        } else {
            PauseState::Paused
        }
    }

    /// Locks a mutex that a panic elsewhere may have poisoned (the data is
    /// still consistent: every critical section is a few assignments).
    pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the moved watermarks into `uncommitted` and returns, as a
    /// commit list, every watermark not yet confirmed committed, except
    /// those of `skip` (lost partitions: dropped).
    pub(crate) fn offsets_to_commit(
        &self,
        moved: &[Checkpoint],
        skip: &[u32],
    ) -> TopicPartitionList {
        let mut uncommitted = Self::lock(&self.uncommitted);
        for cp in moved {
            uncommitted.insert(cp.partition, cp.position);
        }
        uncommitted.retain(|id, _| !skip.contains(id));
        let ids = Self::lock(&self.ids);
        let mut tpl = TopicPartitionList::with_capacity(uncommitted.len());
        for (&id, &position) in uncommitted.iter() {
            if let Some((topic, partition)) = ids.get(id) {
                let offset = Offset::Offset(i64::try_from(position).unwrap_or(i64::MAX));
                let _ = tpl.add_partition_offset(topic, partition, offset);
            }
        }
        tpl
    }

    /// Forgets confirmed commits: everything in `committed` at or below
    /// the offset committed.
    pub(crate) fn confirmed(&self, committed: &TopicPartitionList) {
        let ids = Self::lock(&self.ids);
        let mut uncommitted = Self::lock(&self.uncommitted);
        uncommitted.retain(|&id, &mut position| {
            let Some((topic, partition)) = ids.get(id) else {
                return false;
            };
            match committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => u64::try_from(o).map_or(true, |o| o < position),
                _ => true,
            }
        });
    }

    /// Counts and logs a failed commit (retried at the next tick: the
    /// watermark stays in `uncommitted`).
    pub(crate) fn commit_error(&self, e: &KafkaError) {
        metrics::counter!(names::CHECKPOINT_ERRORS, "source" => self.name.clone()).increment(1);
        tracing::warn!(source = %self.name, error = %e, "committing offsets failed; retrying at the next checkpoint");
    }

    /// The weir ids of a list's partitions.
    fn ids_of(&self, tpl: &TopicPartitionList) -> Vec<u32> {
        let mut map = Self::lock(&self.ids);
        tpl.elements()
            .iter()
            .map(|e| map.id(e.topic(), e.partition()))
            .collect()
    }

    /// The topic-partition list of weir ids.
    pub(crate) fn list_of(&self, ids: &[u32]) -> TopicPartitionList {
        let map = Self::lock(&self.ids);
        let mut tpl = TopicPartitionList::with_capacity(ids.len());
        for &id in ids {
            if let Some((topic, partition)) = map.get(id) {
                tpl.add_partition(topic, partition);
            }
        }
        tpl
    }

    fn revoke(&self, consumer: &BaseConsumer<KafkaContext>, tpl: &TopicPartitionList) {
        let started = Instant::now();
        let lost = consumer.assignment_lost();
        let ids = self.ids_of(tpl);
        let (done, finished) = oneshot::channel();
        let sent = self
            .tx
            .blocking_send(Message::Revoked {
                partitions: ids.clone(),
                lost,
                done,
            })
            .is_ok();
        // the driver drains, fences and commits them; a driver that is gone
        // (stopping, failed) drops `done`
        let handled = sent && finished.blocking_recv().is_ok();
        let mut uncommitted = Self::lock(&self.uncommitted);
        let mut map = Self::lock(&self.ids);
        for &id in &ids {
            uncommitted.remove(&id);
            // the next assignment may reuse it, on the shard that needs one
            map.release(id);
        }
        drop(map);
        drop(uncommitted);
        metrics::counter!(names::KAFKA_REBALANCES, "source" => self.name.clone(), "kind" => "revoke")
            .increment(1);
        tracing::info!(source = %self.name, partitions = %list(tpl), lost, handled,
            took_ms = started.elapsed().as_millis() as u64, "kafka partitions released");
        Self::lock(&self.changes).revoked.extend(ids);
        self.rebalanced.store(true, Ordering::Release);
    }

    fn assign(&self, tpl: &TopicPartitionList) {
        let ids = self.ids_of(tpl);
        metrics::counter!(names::KAFKA_REBALANCES, "source" => self.name.clone(), "kind" => "assign")
            .increment(1);
        tracing::info!(source = %self.name, partitions = %list(tpl), "partitions assigned");
        Self::lock(&self.changes).assigned.extend(ids);
        self.rebalanced.store(true, Ordering::Release);
    }
}

/// `topic[p,q]` lists for logs.
fn list(tpl: &TopicPartitionList) -> String {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for e in tpl.elements() {
        by_topic
            .entry(e.topic().to_string())
            .or_default()
            .push(e.partition());
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| format!("{t}{ps:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_to_tracing(&self.name, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(source = %self.name, %error, reason, "kafka client error");
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.consumer_lag < 0 {
                    continue; // the internal UA partition, or lag not known yet
                }
                metrics::gauge!(names::KAFKA_CONSUMER_LAG,
                    "source" => self.name.clone(), "topic" => topic.clone(), "partition" => partition.to_string())
                .set(p.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                tracing::error!(source = %self.name, error = %e, "rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.assign(tpl);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.confirmed(offsets),
            // an empty commit ("no offset to commit") is not a failure
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => self.commit_error(&e),
        }
    }
}

/// Forwards a librdkafka log line to `tracing` at a matching level.
pub(crate) fn log_to_tracing(name: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(component = name, fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(component = name, fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(component = name, fac, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(component = name, fac, "librdkafka: {message}"),
    }
}
