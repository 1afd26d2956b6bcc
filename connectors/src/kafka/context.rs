//! The consumer's librdkafka context: where rebalances are handled.
//!
//! librdkafka calls the rebalance callback from inside `poll`, on the
//! source's consumer thread. A revocation is handled there, before the
//! partitions are released: stop dispatching them, wait (up to
//! `revoke_timeout`) until their in-flight batches are acked, commit the
//! acked watermark synchronously, and forget them. The next owner then
//! starts exactly after what this process delivered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, Statistics, TopicPartitionList};
use weir_engine::telemetry::names;
use weir_engine::SourceContext;

use super::partitions::PartitionIds;

/// State shared by the consume loop and the callbacks. Both run on the
/// consumer thread, so the locks are never contended; the loop takes them
/// once per batch, never per message.
pub(crate) struct KafkaContext {
    /// The source's name, for logs and metrics.
    pub(crate) name: String,
    /// The engine's side of the source: dispatch, ledger, drain.
    pub(crate) source: Mutex<SourceContext>,
    /// Topic-partition ↔ weir partition ids.
    pub(crate) ids: Mutex<PartitionIds>,
    /// Acked watermarks not yet known to be committed, by partition id.
    pub(crate) uncommitted: Mutex<BTreeMap<u32, u64>>,
    /// Set by a rebalance; the loop then reads [`changes`](Self::changes).
    pub(crate) rebalanced: AtomicBool,
    /// Partitions revoked and assigned since the loop last looked.
    pub(crate) changes: Mutex<Changes>,
    /// Set when an asynchronous commit failed: commit everything again.
    pub(crate) commit_failed: AtomicBool,
    /// Runs the engine's async drain from the callback.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Longest drain of a revoked partition.
    pub(crate) revoke_timeout: Duration,
    /// Set when a revoked partition still had a write in progress after
    /// its batches were fenced: the loop then fails the source.
    pub(crate) fence_failed: AtomicBool,
}

/// How long fenced batches get to settle (skipped by the stages that had
/// not started on them) before a write still in progress fails the source.
const FENCE_GRACE: Duration = Duration::from_secs(1);

/// What rebalances changed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Revoked partition ids: their staged and parked batches are dropped.
    pub(crate) revoked: Vec<u32>,
    /// Newly assigned partition ids: they start unpaused.
    pub(crate) assigned: Vec<u32>,
}

impl KafkaContext {
    /// Locks a mutex that a panic elsewhere may have poisoned (the data is
    /// still consistent: every critical section is a few assignments).
    pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the moved watermarks into `uncommitted` and returns, as a
    /// commit list, every watermark not yet confirmed committed.
    pub(crate) fn offsets_to_commit(&self, source: &mut SourceContext) -> TopicPartitionList {
        let moved = source.take_checkpoints();
        let mut uncommitted = Self::lock(&self.uncommitted);
        for cp in moved {
            uncommitted.insert(cp.partition, cp.position);
        }
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
    fn confirmed(&self, committed: &TopicPartitionList) {
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

    /// Commits the acked watermarks; `Sync` waits for the broker.
    pub(crate) fn commit(
        &self,
        consumer: &BaseConsumer<KafkaContext>,
        source: &mut SourceContext,
        mode: CommitMode,
    ) {
        let tpl = self.offsets_to_commit(source);
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) if matches!(mode, CommitMode::Sync) => self.confirmed(&tpl),
            Ok(()) => {}
            Err(e) => self.commit_error(&e),
        }
    }

    fn commit_error(&self, e: &KafkaError) {
        self.commit_failed.store(true, Ordering::Relaxed);
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

    fn revoke(&self, consumer: &BaseConsumer<KafkaContext>, tpl: &TopicPartitionList) {
        let started = Instant::now();
        let lost = consumer.assignment_lost();
        let ids = self.ids_of(tpl);
        let mut source = Self::lock(&self.source);
        let deadline = Instant::now() + self.revoke_timeout;
        let mut drained = true;
        for &id in &ids {
            drained &= self.runtime.block_on(source.drain_partition(id, deadline));
        }
        let mut fenced = 0;
        if !drained {
            // the new owner starts once this callback returns: what no stage
            // started on is skipped, so it cannot land behind the new owner's
            // writes (it fails as given up and the new owner reads it)
            for &id in &ids {
                fenced += source.fence_partition(id);
            }
            let grace = Instant::now() + FENCE_GRACE;
            drained = true;
            for &id in &ids {
                drained &= self.runtime.block_on(source.drain_partition(id, grace));
            }
            if !drained {
                // a sink is writing a batch of it right now and cannot be recalled
                self.fence_failed.store(true, Ordering::Release);
            }
        }
        if lost {
            // another member owns them already: a commit would be refused
            tracing::warn!(source = %self.name, partitions = ids.len(), "partitions lost (session timed out); not committing them");
        } else {
            // commit, then release: retry a failed commit (coordinator
            // moving, a rebalance in progress) until the revoke deadline
            loop {
                self.commit_failed.store(false, Ordering::Relaxed);
                self.commit(consumer, &mut source, CommitMode::Sync);
                if !self.commit_failed.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut uncommitted = Self::lock(&self.uncommitted);
        let mut map = Self::lock(&self.ids);
        for &id in &ids {
            source.forget_partition(id);
            uncommitted.remove(&id);
            // the next assignment may reuse it, on the shard that needs one
            map.release(id);
        }
        drop(map);
        drop(uncommitted);
        drop(source);
        metrics::counter!(names::KAFKA_REBALANCES, "source" => self.name.clone(), "kind" => "revoke")
            .increment(1);
        tracing::info!(source = %self.name, partitions = %list(tpl), drained, lost, fenced,
            took_ms = started.elapsed().as_millis() as u64, "partitions revoked");
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
