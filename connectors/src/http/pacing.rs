//! Group commit for requests: the source sends a batch at once when the
//! pipeline is idle (lowest latency at low load) and, while
//! `limit` of its batches are still in flight, holds the next one open for
//! more requests — until one settles, the batch is full, or `max_wait`
//! passes. Under load batches grow with the load, so the per-batch cost of
//! the engine (dispatch, acks, hand-offs between threads) is shared by
//! many requests instead of paid by each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Counts the source's batches between dispatch and settlement.
#[derive(Debug, Clone)]
pub(crate) struct InFlightBatches {
    count: Arc<AtomicUsize>,
    settled: Arc<Notify>,
    limit: usize,
}

impl InFlightBatches {
    /// At most `limit` (at least 1) batches before the next one is held.
    pub(crate) fn new(limit: usize) -> Self {
        InFlightBatches {
            count: Arc::default(),
            settled: Arc::new(Notify::new()),
            limit: limit.max(1),
        }
    }

    /// A batch was dispatched.
    pub(crate) fn started(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A batch settled (delivered, failed or given up).
    pub(crate) fn settled(&self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.settled.notify_one();
    }

    /// Whether the next batch should wait for company.
    pub(crate) fn busy(&self) -> bool {
        self.count.load(Ordering::Relaxed) >= self.limit
    }

    /// Completes when a batch settles (or one settled since the last wait).
    /// Cancel safe.
    pub(crate) async fn wait_settled(&self) {
        self.settled.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn busy_at_the_limit_and_woken_by_a_settlement() {
        let b = InFlightBatches::new(2);
        b.started();
        assert!(!b.busy());
        b.started();
        assert!(b.busy());
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_settled().await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        b.settled();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!b.busy());
    }
}
