//! Ack tokens: how a sink's durable write travels back to the source.
//!
//! Every batch a source dispatches carries an [`AckToken`]. Whoever splits the
//! batch (a shard routing events to several sinks, a lane splitting by key)
//! calls [`AckToken::share`] for each part. Each holder settles its share with
//! [`AckToken::ack`] once its part is durable (or filtered out), or with
//! [`AckToken::fail`]. When the last share settles, the batch is complete: acked
//! if every share acked, failed otherwise. A share dropped without being
//! settled counts as a failure, so a lost batch can never be committed.
//!
//! Completion is pushed, not polled: [`AckState::completed`] is a future that
//! resolves when the last share settles, to [`Completion`] (delivered, or
//! failed with the first reason a share gave).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

use crate::batch_wait::BatchWait;
use crate::latency::LatencyHistogram;

const PENDING: u8 = 0;
const ACKED: u8 = 1;
const FAILED: u8 = 2;

/// Final state of a dispatched batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Some share is still in flight.
    Pending,
    /// Every share was written durably or filtered out.
    Acked,
    /// Some share failed or was dropped: the position must not be committed.
    Failed,
}

/// How a batch ended, as [`AckState::completed`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Every share was written durably or filtered out.
    Delivered,
    /// Some share failed, was dropped unsettled, or the batch was never
    /// handed on.
    Failed {
        /// The first reason a share gave ([`AckToken::fail_with`]); a share
        /// dropped or failed without one says so.
        reason: Arc<str>,
        /// The batch was given up at shutdown before it reached a shard: not
        /// a delivery failure, it is simply read again after a restart.
        given_up: bool,
    },
}

impl Completion {
    /// Whether the batch was delivered.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Completion::Delivered)
    }
}

/// State shared by all shares of one batch and the source's ledger.
#[derive(Debug)]
pub struct AckState {
    shares: AtomicUsize,
    failed: AtomicU8,
    status: AtomicU8,
    /// Set when the batch (or a part of it) was given up at shutdown before it
    /// reached a shard.
    given_up: AtomicBool,
    /// Set when the batch's partition was revoked while it was in flight:
    /// the stages that have not run it yet skip it (see [`AckState::fence`]).
    fenced: AtomicBool,
    /// The first failure reason a share gave.
    reason: OnceLock<Arc<str>>,
    created: Instant,
    /// The source's wake-up (its ledger drains on it).
    notify: Arc<Notify>,
    /// Wakes whoever awaits [`AckState::completed`] on this batch. Inline:
    /// a `Notify` allocates nothing until someone waits.
    done: Notify,
    latency: Option<Arc<LatencyHistogram>>,
    /// The source's adaptive batch wait, fed this batch's latency.
    wait: Option<Arc<BatchWait>>,
}

impl AckState {
    /// Status of the batch.
    pub fn status(&self) -> AckStatus {
        match self.status.load(Ordering::Acquire) {
            PENDING => AckStatus::Pending,
            ACKED => AckStatus::Acked,
            _ => AckStatus::Failed,
        }
    }

    /// When the batch was dispatched.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Whether the batch, or a part of it, was given up at shutdown before it
    /// reached a shard (so its failure is not a delivery failure).
    pub fn was_given_up(&self) -> bool {
        self.given_up.load(Ordering::Acquire)
    }

    fn mark_given_up(&self) {
        self.given_up.store(true, Ordering::Release);
        let _ = self.reason.set(Arc::from("given up at shutdown"));
    }

    /// Fences the batch: its partition now belongs to another consumer,
    /// so a shard or sink that has not started on it skips it instead of
    /// writing it behind the new owner's writes. The batch then fails
    /// without counting as a delivery failure; the new owner reads it.
    /// What a sink is already writing is not recalled.
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
    }

    /// Whether the batch was fenced.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// How the batch ended, or `None` while a share is in flight.
    pub fn completion(&self) -> Option<Completion> {
        match self.status() {
            AckStatus::Pending => None,
            AckStatus::Acked => Some(Completion::Delivered),
            AckStatus::Failed => Some(Completion::Failed {
                reason: self
                    .reason
                    .get()
                    .cloned()
                    .unwrap_or_else(|| Arc::from("a share of the batch failed or was dropped")),
                given_up: self.was_given_up(),
            }),
        }
    }

    /// Resolves when the last share settles. Cancel safe; any number of
    /// tasks may await the same batch.
    pub async fn completed(&self) -> Completion {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            // registered before the check, so a settle in between is not missed
            notified.as_mut().enable();
            if let Some(completion) = self.completion() {
                return completion;
            }
            notified.await;
        }
    }

    fn settle(&self, failed: bool) {
        if failed {
            self.failed.store(1, Ordering::Release);
        }
        if self.shares.fetch_sub(1, Ordering::AcqRel) == 1 {
            let status = if self.failed.load(Ordering::Acquire) == 1 {
                FAILED
            } else {
                ACKED
            };
            self.status.store(status, Ordering::Release);
            if self.latency.is_some() || self.wait.is_some() {
                let elapsed = self.created.elapsed();
                if let Some(latency) = &self.latency {
                    latency.record(elapsed);
                }
                if let Some(wait) = &self.wait {
                    wait.observe(elapsed);
                }
            }
            self.notify.notify_one();
            self.done.notify_waiters();
        }
    }
}

/// One share of a batch's acknowledgement. Not `Clone`: use [`AckToken::share`].
#[derive(Debug)]
#[must_use = "an ack token dropped without ack() counts as a failure"]
pub struct AckToken {
    state: Arc<AckState>,
    settled: bool,
}

impl AckToken {
    /// A fresh token for a new batch. `notify` is woken when the batch
    /// completes; `latency` records dispatch-to-completion time.
    pub fn new(notify: Arc<Notify>, latency: Option<Arc<LatencyHistogram>>) -> Self {
        AckToken::observed(notify, latency, None)
    }

    /// A fresh token whose dispatch-to-completion time also goes to `wait`
    /// (a source's adaptive batch wait).
    pub fn observed(
        notify: Arc<Notify>,
        latency: Option<Arc<LatencyHistogram>>,
        wait: Option<Arc<BatchWait>>,
    ) -> Self {
        let state = Arc::new(AckState {
            shares: AtomicUsize::new(1),
            failed: AtomicU8::new(0),
            status: AtomicU8::new(PENDING),
            given_up: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            reason: OnceLock::new(),
            created: Instant::now(),
            notify,
            done: Notify::new(),
            latency,
            wait,
        });
        AckToken {
            state,
            settled: false,
        }
    }

    /// A token not tied to any source (tests, `weir test`).
    pub fn detached() -> Self {
        AckToken::new(Arc::new(Notify::new()), None)
    }

    /// Another share of the same batch; the batch completes only when this
    /// share is settled too.
    pub fn share(&self) -> AckToken {
        self.state.shares.fetch_add(1, Ordering::AcqRel);
        AckToken {
            state: Arc::clone(&self.state),
            settled: false,
        }
    }

    /// The shared state, for the source's ledger.
    pub fn state(&self) -> Arc<AckState> {
        Arc::clone(&self.state)
    }

    /// Whether two tokens belong to the same batch.
    pub fn same_batch(&self, other: &AckToken) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// This share was written durably, or its events were filtered out.
    pub fn ack(mut self) {
        self.settled = true;
        self.state.settle(false);
    }

    /// Settles a token whose batch was never handed on (a dispatch that found
    /// its shard full): records no latency and does not wake the source's
    /// ledger, but wakes whoever awaits the batch.
    pub(crate) fn abandon(mut self) {
        self.settled = true;
        self.state.mark_given_up();
        self.state.status.store(FAILED, Ordering::Release);
        self.state.done.notify_waiters();
    }

    /// Fails a share whose part was given up at shutdown before it reached a
    /// shard: the batch fails (its position is not committed), but the
    /// failure is not reported as a delivery failure.
    pub(crate) fn give_up(mut self) {
        self.settled = true;
        self.state.mark_given_up();
        self.state.settle(true);
    }

    /// Whether the batch was fenced ([`AckState::fence`]): skip it.
    pub fn is_fenced(&self) -> bool {
        self.state.is_fenced()
    }

    /// Settles a share of a fenced batch that was skipped: the batch fails
    /// (not committed; the partition's new owner reads it) without
    /// counting as a delivery failure.
    pub fn skip_fenced(mut self) {
        self.settled = true;
        let _ = self
            .state
            .reason
            .set(Arc::from("fenced: the partition was revoked"));
        self.state.given_up.store(true, Ordering::Release);
        self.state.settle(true);
    }

    /// This share could not be delivered: the batch's position must not be
    /// committed.
    pub fn fail(mut self) {
        self.settled = true;
        self.state.settle(true);
    }

    /// Like [`fail`](Self::fail), with the reason whoever awaits the batch
    /// sees (the first reason given wins).
    pub fn fail_with(mut self, reason: impl Into<Arc<str>>) {
        self.settled = true;
        let _ = self.state.reason.set(reason.into());
        self.state.settle(true);
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if !self.settled {
            self.state.settle(true);
        }
    }
}

/// The ack shares a sink batch holds: one per source batch it took events from.
///
/// Consecutive events usually come from the same source batch, so pushing a
/// share that belongs to the batch already last in the set is free.
#[derive(Debug, Default)]
pub struct AckSet {
    tokens: Vec<AckToken>,
}

impl AckSet {
    /// An empty set.
    pub fn new() -> Self {
        AckSet::default()
    }

    /// Adds a share; a second share of the last batch is settled at once.
    pub fn push(&mut self, token: AckToken) {
        match self.tokens.last() {
            Some(last) if last.same_batch(&token) => token.ack(),
            _ => self.tokens.push(token),
        }
    }

    /// Moves every share of `other` into this set.
    pub fn append(&mut self, other: &mut AckSet) {
        for token in other.tokens.drain(..) {
            self.push(token);
        }
    }

    /// Number of distinct shares held.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the set holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the set holds shares and every one is of a fenced batch.
    pub fn all_fenced(&self) -> bool {
        !self.tokens.is_empty() && self.tokens.iter().all(AckToken::is_fenced)
    }

    /// Settles every share as a skipped fenced batch
    /// ([`AckToken::skip_fenced`]).
    pub fn skip_all_fenced(&mut self) {
        self.tokens.drain(..).for_each(AckToken::skip_fenced);
    }

    /// Acks every share.
    pub fn ack_all(&mut self) {
        self.tokens.drain(..).for_each(AckToken::ack);
    }

    /// Fails every share.
    pub fn fail_all(&mut self) {
        self.tokens.drain(..).for_each(AckToken::fail);
    }

    /// Fails every share with a reason.
    pub fn fail_all_with(&mut self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        for token in self.tokens.drain(..) {
            token.fail_with(Arc::clone(&reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_when_every_share_acks() {
        let t = AckToken::detached();
        let state = t.state();
        let a = t.share();
        let b = t.share();
        t.ack();
        a.ack();
        assert_eq!(state.status(), AckStatus::Pending);
        b.ack();
        assert_eq!(state.status(), AckStatus::Acked);
    }

    #[test]
    fn one_failed_share_fails_the_batch() {
        let t = AckToken::detached();
        let state = t.state();
        let a = t.share();
        a.fail();
        t.ack();
        assert_eq!(state.status(), AckStatus::Failed);
    }

    #[test]
    fn dropping_an_unsettled_share_fails_the_batch() {
        let t = AckToken::detached();
        let state = t.state();
        drop(t);
        assert_eq!(state.status(), AckStatus::Failed);
    }

    #[tokio::test]
    async fn completion_is_awaited_not_polled() {
        let t = AckToken::detached();
        let state = t.state();
        let share = t.share();
        let waiter = {
            let state = Arc::clone(&state);
            tokio::spawn(async move { state.completed().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        t.ack();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one share is still out");
        share.fail_with("sink `out`: disk full");
        match waiter.await.unwrap() {
            Completion::Failed { reason, given_up } => {
                assert_eq!(&*reason, "sink `out`: disk full");
                assert!(!given_up);
            }
            other => panic!("{other:?}"),
        }
        // a second await of a completed batch resolves at once
        assert!(!state.completed().await.is_delivered());
    }

    #[tokio::test]
    async fn an_abandoned_batch_wakes_its_waiters_as_given_up() {
        let t = AckToken::detached();
        let state = t.state();
        let waiter = {
            let state = Arc::clone(&state);
            tokio::spawn(async move { state.completed().await })
        };
        tokio::task::yield_now().await;
        t.abandon();
        assert!(matches!(
            waiter.await.unwrap(),
            Completion::Failed { given_up: true, .. }
        ));
    }

    #[test]
    fn ack_set_merges_consecutive_shares() {
        let t = AckToken::detached();
        let state = t.state();
        let mut set = AckSet::new();
        set.push(t.share());
        set.push(t.share());
        assert_eq!(set.len(), 1);
        t.ack();
        assert_eq!(state.status(), AckStatus::Pending);
        set.ack_all();
        assert_eq!(state.status(), AckStatus::Acked);
    }
}
