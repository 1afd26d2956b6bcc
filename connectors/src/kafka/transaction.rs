//! Kafka transactions shared by a transactional `kafka` sink and the
//! `kafka` source whose offsets they carry: exactly-once Kafka → Kafka.
//!
//! The sink writes its records inside an open transaction (begun lazily by
//! the first write of an epoch). The source's connector commits in epochs
//! (the engine's driver lets an epoch end only once everything it
//! dispatched settled): it hands the consumed offsets and the consumer's
//! group metadata to the transaction and commits it, so the records and
//! the offsets become visible together or not at all. The group metadata
//! carries the member's generation (KIP-447): a process that lost its
//! partitions in a rebalance — a zombie back from a pause — has its commit
//! refused by the broker, aborts, and stops. A restart with the same
//! `transactional_id` fences the previous producer of that id and aborts
//! its open transaction.
//!
//! The two halves find each other by the sink's name in a process-wide
//! table: the sink enters its transactions when it opens, the source claims
//! the sink when it starts and looks its transactions up at its first
//! commit. A transactional sink writes nothing until a source claimed it:
//! records in transactions that no source commits would never become
//! visible, while a source committing offsets on its own would count them
//! delivered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::TopicPartitionList;
use weir_engine::{Error, Result};

use super::sink::DeliveryContext;

/// The producer of a transactional sink and whether a transaction is open.
pub(crate) struct Transactions {
    /// The sink's name, for errors and logs.
    sink: String,
    /// The sink's transactional producer.
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    /// Held while records are sent and while a transaction ends, so no
    /// record goes into a transaction that is being committed.
    state: tokio::sync::Mutex<State>,
    /// Longest a commit or an abort may take.
    timeout: Duration,
    /// A source claimed the sink (seen once, not asked again).
    claimed: AtomicBool,
}

/// Where the current transaction stands.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// A transaction was begun and not ended yet.
    open: bool,
    /// Why the open transaction must not commit (a record of it was
    /// refused before it reached the broker, so it holds part of a batch).
    doomed: Option<String>,
}

impl State {
    /// A record of the open transaction was refused: it must be aborted.
    pub(crate) fn doom(&mut self, reason: String) {
        self.doomed.get_or_insert(reason);
    }
}

impl Transactions {
    /// Wraps `producer`, whose `init_transactions` has succeeded.
    pub(crate) fn new(
        sink: String,
        producer: Arc<ThreadedProducer<DeliveryContext>>,
        timeout: Duration,
    ) -> Self {
        Transactions {
            sink,
            producer,
            state: tokio::sync::Mutex::new(State::default()),
            timeout,
            claimed: AtomicBool::new(false),
        }
    }

    /// Opens a transaction if none is open and returns the guard under
    /// which records are sent (a commit waits for it).
    pub(crate) async fn writing(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        if !self.claimed.load(Ordering::Relaxed) {
            self.await_claim().await?;
        }
        let mut state = self.state.lock().await;
        self.begin(&mut state)?;
        Ok(state)
    }

    /// Begins a transaction unless one is open.
    fn begin(&self, state: &mut State) -> Result<()> {
        if !state.open {
            self.producer
                .begin_transaction()
                .map_err(|e| self.error("beginning a transaction", e))?;
            state.open = true;
        }
        Ok(())
    }

    /// Aborts the open transaction; a failure is only logged (the broker
    /// aborts it at its timeout).
    fn abort_open(&self) {
        if let Err(e) = self.producer.abort_transaction(self.timeout) {
            tracing::warn!(sink = %self.sink, error = %e, "aborting a transaction failed; the broker aborts it at its timeout");
        }
    }

    /// Waits until a source claimed this sink; fails after
    /// [`CLAIM_WAIT`] (no source names it in `exactly_once_sink`).
    async fn await_claim(&self) -> Result<()> {
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            if claims().contains_key(&self.sink) {
                self.claimed.store(true, Ordering::Relaxed);
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::user(format!(
                    "kafka sink `{}` has `transactional_id`, but no kafka source commits its transactions: set `exactly_once_sink = \"{}\"` on the kafka source (nothing was written)",
                    self.sink, self.sink
                )));
            }
            tokio::time::sleep(FIND_INTERVAL).await;
        }
    }

    /// Commits the open transaction with `offsets` of the consumer whose
    /// group metadata is `group` (a transaction is begun for offsets alone
    /// if none is open). On failure the transaction is aborted: neither
    /// its records nor its offsets become visible. Blocks: call off the
    /// runtime.
    pub(crate) fn commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let mut state = self.state.blocking_lock();
        if let Some(reason) = state.doomed.take() {
            // only set while a transaction is open
            state.open = false;
            self.abort_open();
            return Err(Error::external(format!(
                "kafka sink `{}`: the epoch's transaction was aborted: {reason}",
                self.sink
            )));
        }
        if offsets.count() == 0 && !state.open {
            return Ok(());
        }
        self.begin(&mut state)?;
        let result = self.send_offsets_and_commit(offsets, group);
        state.open = false;
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abort_after(&e);
                Err(self.error("committing a transaction (aborted)", e))
            }
        }
    }

    /// `send_offsets_to_transaction` and `commit_transaction`, each tried
    /// again after a retriable error (a timeout: the broker may still be
    /// completing it) until the timeout is spent.
    fn send_offsets_and_commit(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> std::result::Result<(), KafkaError> {
        let deadline = Instant::now() + self.timeout;
        let retry = |e: &KafkaError| {
            matches!(e, KafkaError::Transaction(t) if t.is_retriable()) && Instant::now() < deadline
        };
        if offsets.count() > 0 {
            loop {
                match self
                    .producer
                    .send_offsets_to_transaction(offsets, group, self.timeout)
                {
                    Err(e) if retry(&e) => continue,
                    other => break other?,
                }
            }
        }
        loop {
            match self.producer.commit_transaction(self.timeout) {
                Err(e) if retry(&e) => continue,
                other => return other,
            }
        }
    }

    /// Aborts the open transaction, if any (at close, after a failure).
    /// Blocks: call off the runtime.
    pub(crate) fn abort(&self) {
        let mut state = self.state.blocking_lock();
        state.doomed = None;
        if std::mem::take(&mut state.open) {
            self.abort_open();
        }
    }

    /// After a failed commit: abort what must be aborted (a fatal error —
    /// a fenced producer — cannot be; the broker ends that transaction).
    fn abort_after(&self, error: &KafkaError) {
        let abortable = match error {
            KafkaError::Transaction(e) => e.txn_requires_abort(),
            // not a transaction error: abort to be safe
            _ => true,
        };
        if abortable {
            self.abort_open();
        }
    }

    fn error(&self, what: &str, e: KafkaError) -> Error {
        Error::external(format!("kafka sink `{}`: {what}: {e}", self.sink)).with_cause(e)
    }
}

/// The open transactional sinks of this process, by name.
fn table() -> &'static Mutex<HashMap<String, Weak<Transactions>>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Weak<Transactions>>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// Enters a sink's transactions under its name (replacing a closed one's).
pub(crate) fn enter(sink: &str, transactions: &Arc<Transactions>) {
    table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(sink.to_string(), Arc::downgrade(transactions));
}

/// The sinks a source claimed, by name, with the claiming source's name.
fn claims() -> std::sync::MutexGuard<'static, HashMap<String, String>> {
    static CLAIMS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    CLAIMS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Source `source` will commit its offsets in the transactions of `sink`.
/// A transaction holds one source's epoch: a second source may not claim
/// the same sink (a reload's new source of the same name may).
pub(crate) fn claim(sink: &str, source: &str) -> Result<()> {
    let mut claims = claims();
    match claims.get(sink) {
        Some(other) if other != source => Err(Error::user(format!(
            "kafka source `{source}`: sink `{sink}` already carries the transactions of source `{other}`; a transactional sink takes one source's offsets"
        ))),
        _ => {
            claims.insert(sink.to_string(), source.to_string());
            Ok(())
        }
    }
}

/// Longest a transactional sink waits for a source to claim it.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// How often [`find`] looks again for a sink that is still opening.
const FIND_INTERVAL: Duration = Duration::from_millis(50);

/// The transactions of the sink named `sink`, waiting up to `wait` for it
/// to open.
pub(crate) async fn find(sink: &str, source: &str, wait: Duration) -> Result<Arc<Transactions>> {
    let deadline = Instant::now() + wait;
    loop {
        let found = table()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sink)
            .and_then(Weak::upgrade);
        if let Some(found) = found {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            return Err(Error::user(format!(
                "kafka source `{source}`: `exactly_once_sink = \"{sink}\"` names no open transactional sink: it must be a `kafka` sink of this pipeline with `transactional_id` set"
            )));
        }
        tokio::time::sleep(FIND_INTERVAL).await;
    }
}
