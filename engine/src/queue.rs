//! A queue bounded in events and in bytes.
//!
//! Capacity is one fair semaphore counted in abstract units: an item costs
//! `max(events / max_events, bytes / max_bytes)` of the whole, so the queue
//! holds at most `max_events` events and at most `max_bytes` bytes at once and
//! a sender never holds half of one limit while waiting for the other. The
//! [`Permit`] handed out with each item keeps its capacity taken until it is
//! dropped, so a consumer can bound work in progress, not just work queued.
//! An item larger than the whole queue is admitted alone.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::telemetry::QueueMetrics;

const UNITS: u32 = 1 << 20;

/// Limits of a [`BoundedQueue`].
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most events held at once.
    pub max_events: usize,
    /// Most bytes held at once.
    pub max_bytes: usize,
}

#[derive(Debug)]
struct Shared {
    semaphore: Arc<Semaphore>,
    limits: QueueLimits,
    events: AtomicUsize,
    bytes: AtomicUsize,
    blocked_nanos: AtomicU64,
    metrics: QueueMetrics,
}

impl Shared {
    fn units(&self, events: usize, bytes: usize) -> u32 {
        // rounded down: the limits hold to within one unit (2^-20 of the queue) per item
        let e = events as u128 * UNITS as u128 / self.limits.max_events.max(1) as u128;
        let b = bytes as u128 * UNITS as u128 / self.limits.max_bytes.max(1) as u128;
        e.max(b).clamp(1, UNITS as u128) as u32
    }

    fn taken(&self, events: usize, bytes: usize) {
        let e = self.events.fetch_add(events, Ordering::Relaxed) + events;
        let b = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.metrics.depth(e, b);
    }
}

/// Capacity held by one item until dropped.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    events: usize,
    bytes: usize,
    shared: Arc<Shared>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let e = self.shared.events.fetch_sub(self.events, Ordering::Relaxed) - self.events;
        let b = self.shared.bytes.fetch_sub(self.bytes, Ordering::Relaxed) - self.bytes;
        self.shared.metrics.depth(e, b);
    }
}

/// The sending half. Cloning it adds a sender; the queue closes when every
/// sender is dropped.
#[derive(Debug)]
pub struct QueueSender<T> {
    tx: mpsc::UnboundedSender<(T, Permit)>,
    shared: Arc<Shared>,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct QueueReceiver<T> {
    rx: mpsc::UnboundedReceiver<(T, Permit)>,
}

/// Why a send did not go through.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<T> {
    /// The queue is full; the item is handed back.
    Full(T),
    /// The receiver is gone; the item is handed back.
    Closed(T),
}

/// Creates a queue with the given limits; `metrics` names it in telemetry.
pub fn bounded<T>(
    limits: QueueLimits,
    metrics: QueueMetrics,
) -> (QueueSender<T>, QueueReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        semaphore: Arc::new(Semaphore::new(UNITS as usize)),
        limits,
        events: AtomicUsize::new(0),
        bytes: AtomicUsize::new(0),
        blocked_nanos: AtomicU64::new(0),
        metrics,
    });
    (QueueSender { tx, shared }, QueueReceiver { rx })
}

impl<T> QueueSender<T> {
    /// Sends `item` costing `events` and `bytes`, waiting while the queue is
    /// full. Time spent waiting is added to the queue's blocked time.
    ///
    /// Cancel safety: if the future is dropped before it completes, the item
    /// is dropped with it and nothing is queued.
    pub async fn send(&self, item: T, events: usize, bytes: usize) -> Result<(), SendError<T>> {
        self.send_unless(item, events, bytes, std::future::pending::<()>())
            .await
    }

    /// Like [`send`](Self::send), but gives up when `cancel` completes first:
    /// the item comes back as [`SendError::Full`]. Cancel safe in the same
    /// way as `send`.
    pub async fn send_unless(
        &self,
        item: T,
        events: usize,
        bytes: usize,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<(), SendError<T>> {
        let units = self.shared.units(events, bytes);
        let permit = match Arc::clone(&self.shared.semaphore).try_acquire_many_owned(units) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(SendError::Closed(item)),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let started = Instant::now();
                self.shared.metrics.full();
                let _waiting = self.shared.metrics.waiting();
                let acquired = tokio::select! {
                    biased;
                    p = Arc::clone(&self.shared.semaphore).acquire_many_owned(units) => Some(p),
                    _ = cancel => None,
                };
                let waited = started.elapsed();
                self.shared
                    .blocked_nanos
                    .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
                self.shared.metrics.blocked(waited);
                match acquired {
                    Some(Ok(p)) => p,
                    Some(Err(_)) => return Err(SendError::Closed(item)),
                    None => return Err(SendError::Full(item)),
                }
            }
        };
        self.push(item, permit, events, bytes)
    }

    /// Sends `item` only if it fits now.
    pub fn try_send(&self, item: T, events: usize, bytes: usize) -> Result<(), SendError<T>> {
        let units = self.shared.units(events, bytes);
        match Arc::clone(&self.shared.semaphore).try_acquire_many_owned(units) {
            Ok(permit) => self.push(item, permit, events, bytes),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.shared.metrics.full();
                Err(SendError::Full(item))
            }
            Err(tokio::sync::TryAcquireError::Closed) => Err(SendError::Closed(item)),
        }
    }

    /// Waits until an item of this cost would be admitted (without taking
    /// the capacity). Cancel safe.
    pub async fn ready(&self, events: usize, bytes: usize) {
        let units = self.shared.units(events, bytes);
        let _waiting = self.shared.metrics.waiting();
        if let Ok(p) = self.shared.semaphore.acquire_many(units).await {
            drop(p);
        }
    }

    fn push(
        &self,
        item: T,
        permit: OwnedSemaphorePermit,
        events: usize,
        bytes: usize,
    ) -> Result<(), SendError<T>> {
        self.shared.taken(events, bytes);
        let permit = Permit {
            _permit: permit,
            events,
            bytes,
            shared: Arc::clone(&self.shared),
        };
        self.tx
            .send((item, permit))
            .map_err(|e| SendError::Closed(e.0 .0))
    }

    /// Events currently held (queued or in progress under a permit).
    pub fn events(&self) -> usize {
        self.shared.events.load(Ordering::Relaxed)
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Total time senders spent waiting for capacity.
    pub fn blocked(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.shared.blocked_nanos.load(Ordering::Relaxed))
    }

    /// The limits this queue was made with.
    pub fn limits(&self) -> QueueLimits {
        self.shared.limits
    }
}

impl<T> QueueReceiver<T> {
    /// The next item and the permit holding its capacity; `None` once every
    /// sender is gone and the queue is empty. Cancel safe.
    pub async fn recv(&mut self) -> Option<(T, Permit)> {
        self.rx.recv().await
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Option<(T, Permit)> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn queue(max_events: usize, max_bytes: usize) -> (QueueSender<u32>, QueueReceiver<u32>) {
        bounded(
            QueueLimits {
                max_events,
                max_bytes,
            },
            QueueMetrics::new("test"),
        )
    }

    #[tokio::test]
    async fn full_in_events_refuses_until_a_permit_is_dropped() {
        let (tx, mut rx) = queue(10, 1_000_000);
        tx.try_send(1, 6, 10).unwrap();
        assert_eq!(tx.try_send(2, 6, 10), Err(SendError::Full(2)));
        let (item, permit) = rx.recv().await.unwrap();
        assert_eq!(item, 1);
        assert_eq!(
            tx.try_send(3, 6, 10),
            Err(SendError::Full(3)),
            "capacity is held by the permit"
        );
        drop(permit);
        tx.try_send(4, 6, 10).unwrap();
        assert_eq!(tx.events(), 6);
    }

    #[tokio::test]
    async fn full_in_bytes_refuses() {
        let (tx, _rx) = queue(1_000, 100);
        tx.try_send(1, 1, 60).unwrap();
        assert!(matches!(tx.try_send(2, 1, 60), Err(SendError::Full(2))));
        tx.try_send(3, 1, 40).unwrap();
        assert_eq!(tx.bytes(), 100);
    }

    #[tokio::test]
    async fn an_oversized_item_is_admitted_alone() {
        let (tx, mut rx) = queue(10, 10);
        tx.try_send(1, 50, 500).unwrap();
        assert!(matches!(tx.try_send(2, 1, 1), Err(SendError::Full(2))));
        drop(rx.recv().await);
        tx.try_send(3, 1, 1).unwrap();
    }

    #[tokio::test]
    async fn a_blocked_send_waits_and_counts_blocked_time() {
        let (tx, mut rx) = queue(1, 1_000);
        tx.send(1, 1, 1).await.unwrap();
        let tx2 = tx.clone();
        let sender = tokio::spawn(async move { tx2.send(2, 1, 1).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!sender.is_finished());
        let first = rx.recv().await.unwrap();
        drop(first);
        assert!(sender.await.unwrap());
        assert!(tx.blocked() >= Duration::from_millis(20));
        assert_eq!(rx.recv().await.unwrap().0, 2);
    }

    #[tokio::test]
    async fn send_unless_gives_the_item_back_when_cancelled() {
        let (tx, _rx) = queue(1, 1_000);
        tx.send(1, 1, 1).await.unwrap();
        let cancel = tokio::time::sleep(Duration::from_millis(10));
        assert_eq!(
            tx.send_unless(2, 1, 1, cancel).await,
            Err(SendError::Full(2))
        );
        assert_eq!(tx.events(), 1, "nothing was taken");
    }

    #[tokio::test]
    async fn closes_when_senders_are_gone() {
        let (tx, mut rx) = queue(10, 10);
        tx.send(7, 1, 1).await.unwrap();
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().0, 7);
        assert!(rx.recv().await.is_none());
    }
}
