//! The status task of a replication connection: it owns the connection's
//! sending half and reports the confirmed position to the server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use tokio::sync::Notify;

use super::wire::{PgError, WriteSide};

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
