//! Reading one replication connection: pgoutput messages become events,
//! batched and dispatched by key; acked transactions are confirmed by a
//! status task that owns the connection's sending half.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::sync::Notify;
use weir_engine::telemetry::names;
use weir_engine::{Error, Event, Origin, Routing, SourceContext};

use super::lsn::Lsn;
use super::pgoutput::{Decoded, Decoder};
use super::progress::Progress;
use super::wire::{CopyMessage, PgError, ReadSide, WriteSide};
use crate::pending::Pending;

/// Why a stream ended.
#[derive(Debug)]
pub enum Failure {
    /// The connection or server failed (maybe transient: reconnect).
    Pg(PgError),
    /// The engine or the stream's content failed: stop the source.
    Fatal(Error),
    /// Shutdown came while a barrier waited: stop reading at once (the
    /// rest of the transaction must not be taken as delivered).
    Shutdown,
}

impl From<PgError> for Failure {
    fn from(e: PgError) -> Self {
        Failure::Pg(e)
    }
}

/// What the reader shares with the status task.
#[derive(Debug, Default)]
pub struct StatusShared {
    /// The confirmed (flushed) position.
    pub confirmed: AtomicU64,
    /// The last position received.
    pub received: AtomicU64,
    /// Send a status update now.
    pub wake: Notify,
    /// Send one last update and stop.
    pub stop: AtomicBool,
}

/// Sends standby status updates every `interval`, when woken (the server
/// asked, or the confirmed position moved) and once more when stopped.
pub async fn status_loop(
    mut writer: WriteSide,
    shared: Arc<StatusShared>,
    interval: Duration,
) -> Result<(), PgError> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut msg = BytesMut::with_capacity(34);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.wake.notified() => {}
        }
        // `stop` is read first: the final position is stored before it is set
        let last = shared.stop.load(Ordering::Acquire);
        let confirmed = shared.confirmed.load(Ordering::Acquire);
        let received = shared.received.load(Ordering::Acquire).max(confirmed);
        msg.clear();
        msg.put_u8(b'r');
        msg.put_u64(received); // written
        msg.put_u64(confirmed); // flushed
        msg.put_u64(confirmed); // applied
        msg.put_i64(pg_now_micros());
        msg.put_u8(0);
        writer.send_copy(&msg).await?;
        if last {
            return Ok(());
        }
    }
}

/// Microseconds since 2000-01-01 UTC, the protocol's clock.
fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix - 946_684_800_000_000
}

/// What ended a wait of the reader.
enum Wake {
    Shutdown,
    Checkpoint,
    Deadline,
    Message(Result<CopyMessage, PgError>),
}

/// Reads one replication stream.
pub struct Reader<'a> {
    /// The source's name, for messages.
    pub name: &'a str,
    /// The engine.
    pub ctx: &'a mut SourceContext,
    /// Numbering and confirmable positions.
    pub progress: &'a mut Progress,
    /// Events gathering for the next dispatch.
    pub pending: &'a mut Pending,
    /// The pgoutput decoder.
    pub decoder: &'a mut Decoder,
    /// Shared with the status task.
    pub shared: &'a StatusShared,
}

/// Most messages handled between two looks at shutdown and the checkpoint tick.
const BUDGET: usize = 4096;

impl Reader<'_> {
    /// Reads until shutdown (`Ok`) or a failure.
    pub async fn run(&mut self, stream: &mut ReadSide) -> Result<(), Failure> {
        match self.read(stream).await {
            Err(Failure::Shutdown) => Ok(()),
            other => other,
        }
    }

    async fn read(&mut self, stream: &mut ReadSide) -> Result<(), Failure> {
        // made once, not per wake-up: the server sends small messages, and
        // a fresh timer and shutdown future per message cost more than the
        // message itself
        let shutdown = self.ctx.shutdown();
        tokio::pin!(shutdown);
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            let deadline = self.pending.deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at);
                }
                armed = deadline;
            }
            let wake = tokio::select! {
                biased;
                _ = &mut shutdown => Wake::Shutdown,
                _ = self.ctx.checkpoint_tick() => Wake::Checkpoint,
                _ = &mut timer, if armed.is_some() => Wake::Deadline,
                m = stream.next_copy() => Wake::Message(m),
            };
            match wake {
                Wake::Shutdown => return Ok(()),
                Wake::Checkpoint => self.checkpoint(),
                Wake::Deadline => {
                    armed = None;
                    self.flush().await?
                }
                Wake::Message(m) => {
                    self.handle(m?).await?;
                    let mut budget = BUDGET;
                    // what is already buffered, without waiting (a buffered
                    // notice would make `next_copy` wait for more: then stop)
                    while budget > 0 && stream.has_buffered_message() {
                        let Some(m) = stream.next_copy().now_or_never() else {
                            break;
                        };
                        self.handle(m?).await?;
                        budget -= 1;
                    }
                }
            }
        }
    }

    /// Takes acks and publishes the confirmable position.
    pub fn checkpoint(&mut self) {
        let cps = self.ctx.take_checkpoints();
        if self.progress.acked(&cps, self.pending.deadline().is_none()) {
            self.shared
                .confirmed
                .store(self.progress.confirmed.0, Ordering::Release);
            self.shared.wake.notify_one();
        }
        let confirmed = self.progress.confirmed.0;
        let received = self.shared.received.load(Ordering::Acquire);
        let source = self.name.to_string();
        metrics::gauge!(names::PG_CDC_CONFIRMED_LSN, "source" => source.clone())
            .set(confirmed as f64);
        metrics::gauge!(names::PG_CDC_UNCONFIRMED_BYTES, "source" => source)
            .set(received.saturating_sub(confirmed) as f64);
    }

    async fn handle(&mut self, m: CopyMessage) -> Result<(), Failure> {
        let CopyMessage::Data(mut data) = m else {
            return Err(Failure::Pg(PgError::Io(
                "the server ended the replication stream".into(),
            )));
        };
        if data.is_empty() {
            return Ok(());
        }
        match data[0] {
            b'w' if data.len() >= 25 => {
                data.advance(9);
                let end = data.get_u64();
                data.advance(8);
                self.shared.received.fetch_max(end, Ordering::AcqRel);
                let decoded = self.decoder.decode(&data).map_err(|e| {
                    Failure::Fatal(Error::external(format!(
                        "postgres-cdc source `{}`: {e}",
                        self.name
                    )))
                })?;
                match decoded {
                    Decoded::Begin => self.progress.in_txn = true,
                    Decoded::Change(key, value) => self.push(key, value).await?,
                    Decoded::Changes(values) => {
                        self.barrier(values.into_iter().map(|v| (None, v)).collect())
                            .await?
                    }
                    Decoded::KeyChange(key, value) => self.barrier(vec![(key, value)]).await?,
                    Decoded::Commit { end } => self.progress.commit(end),
                    Decoded::Nothing => {}
                }
            }
            b'k' if data.len() >= 18 => {
                data.advance(1);
                let wal_end = data.get_u64();
                data.advance(8);
                let reply = data.get_u8();
                self.progress.keepalive(Lsn(wal_end));
                self.shared.received.fetch_max(wal_end, Ordering::AcqRel);
                if reply == 1 {
                    self.checkpoint();
                    self.shared.wake.notify_one();
                }
            }
            other => {
                return Err(Failure::Fatal(Error::external(format!(
                    "postgres-cdc source `{}`: unknown replication message `{}`",
                    self.name, other as char
                ))))
            }
        }
        Ok(())
    }

    /// A truncate, or an update that changed a row's key, is ordered
    /// against every change on every shard: what came before it is
    /// delivered first, and nothing after it is dispatched until it is
    /// delivered (both are rare; a truncate has no key, and a key change
    /// concerns two keys, possibly on two shards).
    async fn barrier(&mut self, events: Vec<(Option<Bytes>, Bytes)>) -> Result<(), Failure> {
        self.flush().await?;
        self.delivered().await?;
        for (key, value) in events {
            self.push(key, value).await?;
        }
        self.flush().await?;
        self.delivered().await?;
        self.checkpoint();
        Ok(())
    }

    /// Waits until everything dispatched is settled, or shutdown.
    async fn delivered(&mut self) -> Result<(), Failure> {
        let shutdown = self.ctx.shutdown();
        tokio::select! {
            biased;
            _ = shutdown => Err(Failure::Shutdown),
            _ = self.ctx.drain() => Ok(()),
        }
    }

    async fn push(&mut self, key: Option<Bytes>, value: Bytes) -> Result<(), Failure> {
        let offset = self.progress.next_event();
        let event = Event {
            key,
            value,
            headers: Vec::new(),
            timestamp_ms: self.decoder.commit_ms,
            origin: Origin {
                offset,
                ..Origin::default()
            },
        };
        if self.pending.would_overflow(event.value.len()) {
            self.dispatch_gathered(offset).await?;
        }
        self.pending.push(event, offset + 1);
        if self.pending.is_full() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Dispatches what was gathered before event `upto`.
    async fn dispatch_gathered(&mut self, upto: u64) -> Result<(), Failure> {
        if let Some((events, end)) = self.pending.take() {
            debug_assert_eq!(end, upto);
            self.dispatch(events, end).await?;
        }
        Ok(())
    }

    /// Dispatches what was gathered.
    pub async fn flush(&mut self) -> Result<(), Failure> {
        if let Some((events, end)) = self.pending.take() {
            self.dispatch(events, end).await?;
        }
        Ok(())
    }

    async fn dispatch(&mut self, events: Vec<Event>, end: u64) -> Result<(), Failure> {
        // waits while the shards are full: the stream is not read meanwhile
        // (the status task keeps the connection alive)
        self.ctx
            .dispatch(0, events, end, Routing::Key)
            .await
            .map_err(Failure::Fatal)?;
        self.progress.dispatched = end;
        Ok(())
    }
}
