//! The `postgres-cdc` source's connector: reads one replication
//! connection at a time and turns pgoutput messages into batches; the
//! engine's source driver dispatches them. A lost connection is
//! re-established here, with backoff (and the advisory lock taken again
//! with `single_active`), inside [`Connector::read`], so the driver's
//! shutdown and checkpoint tick keep working while it waits.
//!
//! Confirmation: the driver's commits carry the ledger's watermark (events
//! numbered in dispatch order); [`Progress`] turns it into the end LSN of
//! the last transaction whose events are all acked, and the status task,
//! which owns the connection's sending half, reports it to the server.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;
use weir_engine::ack::AckState;
use weir_engine::driver::{Connector, Input};
use weir_engine::telemetry::names;
use weir_engine::{Checkpoint, Error, Event, Origin, Result, Routing};

use super::cdc_config::CdcOptions;
use super::conninfo::ConnInfo;
use super::lsn::Lsn;
use super::pgoutput::{Decoded, Decoder};
use super::progress::Progress;
use super::replication::{self, ReplicationMessage};
use super::source::{acquire_lock, classify};
use super::status::{status_loop, StatusShared};
use super::wire::{quote_ident, quote_literal, Connection, CopyMessage, PgError, ReadSide};
use crate::control::until;
use crate::pending::Pending;

/// Most buffered messages handled in one `read` before it returns.
const BUDGET: usize = 4096;

/// What a connection attempt gives back: the stream, and the advisory
/// lock's session (kept whether or not the attempt succeeded).
type Opened = (Result<Connection, PgError>, Option<Connection>);

/// A live replication connection.
struct Streaming {
    read: ReadSide,
    status: tokio::task::JoinHandle<Result<(), PgError>>,
}

/// The connector of one `postgres-cdc` source.
pub(crate) struct CdcConnector {
    pub(crate) name: String,
    pub(crate) info: ConnInfo,
    pub(crate) options: CdcOptions,
    /// The advisory lock's session (`single_active`).
    pub(crate) lock: Option<Connection>,
    /// A connection opened during setup, used for the first stream.
    pub(crate) first: Option<Connection>,
    stream: Option<Streaming>,
    shared: Arc<StatusShared>,
    progress: Progress,
    decoder: Decoder,
    pending: Pending,
    /// Inputs decoded and not handed on yet (a batch before a barrier, the
    /// barrier's own batch).
    ready: VecDeque<Input>,
    /// Ends of the batches handed on and not yet reported dispatched.
    handed: VecDeque<u64>,
    backoff: Duration,
    /// Whether the next connection follows a failure (the advisory lock is
    /// checked again).
    reconnecting: bool,
    /// When the next connection attempt may start.
    retry_at: Option<tokio::time::Instant>,
    /// The connection attempt under way.
    connecting: Option<tokio::task::JoinHandle<Opened>>,
}

impl CdcConnector {
    /// A connector streaming from `progress.confirmed`.
    pub(crate) fn new(
        name: String,
        info: ConnInfo,
        options: CdcOptions,
        progress: Progress,
        pending: Pending,
    ) -> Self {
        let shared = Arc::new(StatusShared::default());
        shared
            .confirmed
            .store(progress.confirmed.0, Ordering::Release);
        CdcConnector {
            name,
            info,
            options,
            lock: None,
            first: None,
            stream: None,
            shared,
            progress,
            decoder: Decoder::new(),
            pending,
            ready: VecDeque::new(),
            handed: VecDeque::new(),
            backoff: Duration::from_millis(100),
            reconnecting: false,
            retry_at: None,
            connecting: None,
        }
    }

    fn fail(&self, what: &str, e: PgError) -> Error {
        classify(&self.name, &self.info, what, e)
    }

    /// Opens a stream from the confirmed position, after a backoff if the
    /// last one failed. Cancel safe, and progress survives a cancel (the
    /// driver's checkpoint tick cancels `read`): the wait is for a fixed
    /// instant, and the attempt runs as a task that the next call awaits
    /// again.
    async fn connect(&mut self) -> Result<()> {
        if let Some(at) = self.retry_at {
            tokio::time::sleep_until(at).await;
            self.retry_at = None;
        }
        let task = match &mut self.connecting {
            Some(task) => task,
            None => {
                let relock = self.options.single_active && self.reconnecting;
                let start = format!(
                    "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
                    quote_ident(&self.options.slot),
                    self.progress.confirmed,
                    quote_literal(&quote_ident(&self.options.publication)),
                );
                self.connecting.insert(tokio::spawn(open_stream(
                    self.info.clone(),
                    self.options.clone(),
                    self.name.clone(),
                    self.first.take(),
                    self.lock.take(),
                    relock,
                    start,
                )))
            }
        };
        let joined = task.await;
        self.connecting = None;
        let (result, lock) =
            joined.map_err(|e| Error::internal(format!("postgres-cdc connect task: {e}")))?;
        self.lock = lock;
        match result {
            Ok(c) => {
                self.backoff = Duration::from_millis(100);
                self.reconnecting = false;
                tracing::info!(source = %self.name, slot = %self.options.slot, from = %self.progress.confirmed, "streaming changes");
                let (read, write) = c.split();
                self.shared.stop.store(false, Ordering::Release);
                let status = tokio::spawn(status_loop(
                    write,
                    Arc::clone(&self.shared),
                    self.options.status_interval,
                ));
                self.stream = Some(Streaming { read, status });
                Ok(())
            }
            Err(e) => self.lost(e),
        }
    }

    /// The connection failed: a transient failure drops what was not
    /// handed on (the server sends it again from the confirmed position)
    /// and reconnects at the next read; any other fails the source.
    fn lost(&mut self, e: PgError) -> Result<()> {
        if let Some(s) = self.stream.take() {
            s.status.abort();
        }
        if !e.is_transient() {
            return Err(self.fail("streaming", e));
        }
        self.pending.take();
        self.ready.clear();
        self.progress.rewind();
        tracing::warn!(source = %self.name, error = %e, retry_in = ?self.backoff, "replication connection lost; reconnecting");
        metrics::counter!(names::PG_CDC_RECONNECTS, "source" => self.name.clone()).increment(1);
        self.reconnecting = true;
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.options.max_reconnect_backoff);
        Ok(())
    }

    /// Hands the gathered batch on (as `Idle` when there is none).
    fn take(&mut self) -> Input {
        match self.pending.take() {
            Some((events, end)) => {
                self.handed.push_back(end);
                Input::Batch {
                    partition: 0,
                    events,
                    end,
                }
            }
            None => Input::Idle,
        }
    }

    /// Queues the gathered batch (if any) to be handed on next.
    fn queue_gathered(&mut self) {
        let input = self.take();
        if matches!(input, Input::Batch { .. }) {
            self.ready.push_back(input);
        }
    }

    fn event(&mut self, key: Option<Bytes>, value: Bytes) -> Event {
        let offset = self.progress.next_event();
        Event {
            key,
            value,
            headers: Vec::new(),
            timestamp_ms: self.decoder.commit_ms,
            origin: Origin {
                offset,
                ..Origin::default()
            },
        }
    }

    /// Adds a change; queues the batch when it is full.
    fn push(&mut self, key: Option<Bytes>, value: Bytes) {
        if self.pending.would_overflow(value.len()) {
            self.queue_gathered();
        }
        let event = self.event(key, value);
        let end = event.origin.offset + 1;
        self.pending.push(event, end);
        if self.pending.is_full() {
            self.queue_gathered();
        }
    }

    /// A truncate, or an update that changed a row's key, is ordered
    /// against every change on every shard (both are rare; a truncate has
    /// no key, and a key change concerns two keys, possibly on two shards).
    fn barrier(&mut self, changes: Vec<(Option<Bytes>, Bytes)>) {
        self.queue_gathered();
        let events: Vec<Event> = changes
            .into_iter()
            .map(|(key, value)| self.event(key, value))
            .collect();
        let end = self.progress.counter;
        self.handed.push_back(end);
        self.ready.push_back(Input::Ordered {
            partition: 0,
            events,
            end,
        });
    }

    /// Handles one replication message.
    fn handle(&mut self, m: CopyMessage) -> Result<(), PgError> {
        let CopyMessage::Data(data) = m else {
            return Err(PgError::Io(
                "the server ended the replication stream".into(),
            ));
        };
        match replication::parse(data)? {
            ReplicationMessage::XLogData { end, payload } => {
                self.shared.received.fetch_max(end, Ordering::AcqRel);
                let decoded = self
                    .decoder
                    .decode(&payload)
                    .map_err(|e| PgError::Protocol(e.to_string()))?;
                match decoded {
                    Decoded::Begin => self.progress.in_txn = true,
                    Decoded::Change(key, value) => self.push(key, value),
                    Decoded::Changes(values) => {
                        self.barrier(values.into_iter().map(|v| (None, v)).collect())
                    }
                    Decoded::KeyChange(key, value) => self.barrier(vec![(key, value)]),
                    Decoded::Commit { end } => self.progress.commit(end),
                    Decoded::Nothing => {}
                }
            }
            ReplicationMessage::Keepalive { wal_end, reply } => {
                self.progress.keepalive(Lsn(wal_end));
                self.shared.received.fetch_max(wal_end, Ordering::AcqRel);
                if reply {
                    self.shared.wake.notify_one();
                }
            }
            ReplicationMessage::Empty => {}
        }
        Ok(())
    }

    /// Publishes the confirmable position and its metrics.
    fn confirm(&mut self, positions: &[Checkpoint], nothing_gathering: bool) {
        if self.progress.acked(positions, nothing_gathering) {
            self.shared
                .confirmed
                .store(self.progress.confirmed.0, Ordering::Release);
            self.shared.wake.notify_one();
        }
        let confirmed = self.progress.confirmed.0;
        let received = self.shared.received.load(Ordering::Acquire);
        metrics::gauge!(names::PG_CDC_CONFIRMED_LSN, "source" => self.name.clone())
            .set(confirmed as f64);
        metrics::gauge!(names::PG_CDC_UNCONFIRMED_BYTES, "source" => self.name.clone())
            .set(received.saturating_sub(confirmed) as f64);
    }
}

#[async_trait]
impl Connector for CdcConnector {
    async fn read(&mut self) -> Result<Input> {
        loop {
            if let Some(input) = self.ready.pop_front() {
                return Ok(input);
            }
            if self.stream.is_none() {
                self.connect().await?;
                continue;
            }
            let deadline = self.pending.deadline();
            let stream = self.stream.as_mut().expect("connected above");
            // both cancel safe: `next_copy` keeps partial input buffered
            let m = tokio::select! {
                biased;
                _ = until(deadline) => return Ok(self.take()),
                m = stream.read.next_copy() => m,
            };
            let mut result = m.and_then(|m| self.handle(m));
            // what is already buffered, without waiting (a buffered notice
            // would make `next_copy` wait for more: then stop)
            let mut budget = BUDGET;
            while result.is_ok() && budget > 0 && self.ready.is_empty() {
                let stream = self.stream.as_mut().expect("connected");
                if !stream.read.has_buffered_message() {
                    break;
                }
                let Some(m) = stream.read.next_copy().now_or_never() else {
                    break;
                };
                result = m.and_then(|m| self.handle(m));
                budget -= 1;
            }
            if let Err(e) = result {
                self.lost(e)?;
            }
        }
    }

    async fn commit(&mut self, positions: &[Checkpoint], last: bool) -> Result<()> {
        if last {
            // stopping: what was gathered and not dispatched is sent again
            self.pending.take();
            self.ready.clear();
            self.progress.rewind();
        }
        let idle = self.pending.deadline().is_none() && self.ready.is_empty();
        self.confirm(positions, idle);
        Ok(())
    }

    fn routing(&self) -> Routing {
        Routing::Key
    }

    fn tracks_batches(&self) -> bool {
        true
    }

    fn dispatched(&mut self, outcome: Option<Arc<AckState>>) {
        let Some(end) = self.handed.pop_front() else {
            return;
        };
        if outcome.is_some() {
            self.progress.dispatched = end;
        }
    }

    fn held(&self) -> usize {
        self.pending.len()
    }

    async fn close(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        // one last status update with the final confirmed position
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        let abort = stream.status.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), stream.status)
            .await
            .is_err()
        {
            abort.abort();
        }
        tracing::info!(source = %self.name, confirmed = %self.progress.confirmed, "change feed stopped");
    }
}

impl Drop for CdcConnector {
    fn drop(&mut self) {
        if let Some(task) = self.connecting.take() {
            task.abort();
        }
        if let Some(stream) = self.stream.take() {
            stream.status.abort();
        }
    }
}

/// Connects and starts streaming; with `relock`, first makes sure this
/// process still holds the advisory lock (keeps it if its session still
/// answers within the connect timeout — after a failover it may be
/// half-open — else takes it again, waiting as long as it takes: weir
/// never streams without it). Returns the lock's session either way.
async fn open_stream(
    info: ConnInfo,
    options: CdcOptions,
    name: String,
    first: Option<Connection>,
    mut lock: Option<Connection>,
    relock: bool,
    start: String,
) -> Opened {
    if relock {
        let alive = match lock.as_mut() {
            Some(c) => matches!(
                tokio::time::timeout(info.connect_timeout, c.query("SELECT 1")).await,
                Ok(Ok(_))
            ),
            None => false,
        };
        if !alive {
            match acquire_lock(&info, &options.slot, &name).await {
                Ok(c) => lock = Some(c),
                Err(e) => return (Err(e), None),
            }
        }
    }
    let attempt = async {
        let mut c = match first {
            Some(c) => c,
            None => Connection::connect(&info, true).await?,
        };
        c.start_copy_both(&start).await?;
        Ok::<_, PgError>(c)
    };
    (attempt.await, lock)
}
