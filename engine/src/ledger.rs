//! The ack ledger: per source partition, the batches in flight in dispatch
//! order, and the contiguous watermark below which everything is acked.
//!
//! The ledger is owned by the source's task, so it needs no lock: completion
//! is read from each batch's atomic [`AckState`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::ack::{AckState, AckStatus};

/// A position a source may commit: everything before `position` in
/// `partition` was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The partition.
    pub partition: u32,
    /// The next position to read after a restart (exclusive end of the acked run).
    pub position: u64,
}

#[derive(Debug, Default)]
struct PartitionLedger {
    /// `(end position, state)` of every dispatched batch not yet past the watermark.
    inflight: VecDeque<(u64, Arc<AckState>)>,
    /// Highest contiguous acked end position.
    watermark: Option<u64>,
    /// The watermark last handed out by [`AckLedger::take_checkpoints`].
    reported: Option<u64>,
    /// End position of the last dispatched batch.
    dispatched: Option<u64>,
    /// Whether the head of the queue is a failed batch (the partition is stuck).
    stuck: bool,
    /// Whether `stuck` was already reported.
    stuck_reported: bool,
    /// Whether the failed head was given up at shutdown before it reached a
    /// shard: the partition stops there, but nothing failed delivery.
    given_up: bool,
}

impl PartitionLedger {
    fn advance(&mut self) {
        while let Some((end, state)) = self.inflight.front() {
            match state.status() {
                AckStatus::Acked => {
                    self.watermark = Some(*end);
                    self.inflight.pop_front();
                }
                AckStatus::Failed => {
                    self.stuck = true;
                    self.given_up = state.was_given_up();
                    // the watermark cannot pass the failed head: keep only the
                    // head and what is still in flight, so memory stays bounded
                    let head = self.inflight.pop_front();
                    self.inflight
                        .retain(|(_, s)| s.status() == AckStatus::Pending);
                    if let Some(head) = head {
                        self.inflight.push_front(head);
                    }
                    return;
                }
                AckStatus::Pending => return,
            }
        }
    }
}

/// Per-partition ledgers of one source.
#[derive(Debug, Default)]
pub struct AckLedger {
    partitions: BTreeMap<u32, PartitionLedger>,
}

/// What [`AckLedger::take_checkpoints`] found stuck: a batch that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StuckPartition {
    /// The partition whose watermark cannot move.
    pub partition: u32,
    /// The watermark it is stuck at.
    pub watermark: Option<u64>,
}

impl AckLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        AckLedger::default()
    }

    /// Starts tracking a partition from a restored position (nothing is
    /// reported as a checkpoint until it moves).
    pub fn restore(&mut self, partition: u32, position: u64) {
        let ledger = self.partitions.entry(partition).or_default();
        ledger.watermark = Some(position);
        ledger.reported = Some(position);
    }

    /// Records a dispatched batch that ends at `end` (exclusive).
    pub fn track(&mut self, partition: u32, end: u64, state: Arc<AckState>) {
        let ledger = self.partitions.entry(partition).or_default();
        ledger.dispatched = Some(end);
        ledger.inflight.push_back((end, state));
    }

    /// The completion state of the last batch tracked for `partition`, for
    /// sources that settle each batch upstream on its own (JetStream acks
    /// per message) rather than by the contiguous watermark.
    pub fn last_state(&self, partition: u32) -> Option<Arc<AckState>> {
        self.partitions
            .get(&partition)
            .and_then(|l| l.inflight.back())
            .map(|(_, state)| Arc::clone(state))
    }

    /// Forgets the last batch tracked for `partition` (a dispatch given up
    /// before the batch was handed on).
    pub fn untrack_last(&mut self, partition: u32) {
        if let Some(ledger) = self.partitions.get_mut(&partition) {
            ledger.inflight.pop_back();
            ledger.dispatched = ledger
                .inflight
                .back()
                .map(|(end, _)| *end)
                .or(ledger.watermark);
        }
    }

    /// Moves every watermark forward and returns those that changed since the
    /// last call: the positions to commit.
    pub fn take_checkpoints(&mut self) -> Vec<Checkpoint> {
        let mut out = Vec::new();
        for (&partition, ledger) in &mut self.partitions {
            ledger.advance();
            if ledger.watermark != ledger.reported {
                if let Some(position) = ledger.watermark {
                    out.push(Checkpoint {
                        partition,
                        position,
                    });
                }
                ledger.reported = ledger.watermark;
            }
        }
        out
    }

    /// Partitions that became stuck since the last call.
    pub fn take_newly_stuck(&mut self) -> Vec<StuckPartition> {
        let mut out = Vec::new();
        for (&partition, l) in &mut self.partitions {
            if l.stuck && !l.stuck_reported {
                l.stuck_reported = true;
                if l.given_up {
                    continue; // a stop at shutdown, not a failed delivery
                }
                out.push(StuckPartition {
                    partition,
                    watermark: l.watermark,
                });
            }
        }
        out
    }

    /// Partitions whose watermark is stopped by a failed batch.
    pub fn stuck(&self) -> Vec<StuckPartition> {
        self.partitions
            .iter()
            .filter(|(_, l)| l.stuck)
            .map(|(&partition, l)| StuckPartition {
                partition,
                watermark: l.watermark,
            })
            .collect()
    }

    /// The current watermark of a partition.
    pub fn watermark(&self, partition: u32) -> Option<u64> {
        self.partitions.get(&partition).and_then(|l| l.watermark)
    }

    /// End position of the last dispatched batch of a partition.
    pub fn dispatched(&self, partition: u32) -> Option<u64> {
        self.partitions.get(&partition).and_then(|l| l.dispatched)
    }

    /// Batches of `partition` dispatched and not yet past the watermark.
    pub fn inflight(&mut self, partition: u32) -> usize {
        self.partitions.get_mut(&partition).map_or(0, |l| {
            l.advance();
            l.inflight.len()
        })
    }

    /// When the oldest batch of `partition` still pending (neither
    /// acknowledged nor failed) was dispatched. Moves the watermark past
    /// acknowledged batches first, so the search starts near the first
    /// unsettled one; a failed head is left to the checkpoint tick (which
    /// marks the partition stuck).
    pub fn oldest_pending(&mut self, partition: u32) -> Option<Instant> {
        let l = self.partitions.get_mut(&partition)?;
        while let Some((end, state)) = l.inflight.front() {
            if state.status() != AckStatus::Acked {
                break;
            }
            l.watermark = Some(*end);
            l.inflight.pop_front();
        }
        l.inflight
            .iter()
            .find(|(_, s)| s.status() == AckStatus::Pending)
            .map(|(_, s)| s.created())
    }

    /// Batches in flight over all partitions.
    pub fn inflight_total(&mut self) -> usize {
        self.partitions
            .values_mut()
            .map(|l| {
                l.advance();
                l.inflight.len()
            })
            .sum()
    }

    /// Whether every dispatched batch has completed (acked or failed).
    pub fn is_settled(&self) -> bool {
        self.partitions.values().all(|l| {
            l.inflight
                .iter()
                .all(|(_, s)| s.status() != AckStatus::Pending)
        })
    }

    /// Whether every dispatched batch of `partition` completed.
    pub fn is_partition_settled(&self, partition: u32) -> bool {
        self.partitions.get(&partition).is_none_or(|l| {
            l.inflight
                .iter()
                .all(|(_, s)| s.status() != AckStatus::Pending)
        })
    }

    /// Fences every batch of `partition` still in flight
    /// ([`AckState::fence`]); returns how many.
    pub fn fence(&self, partition: u32) -> usize {
        self.partitions.get(&partition).map_or(0, |l| {
            l.inflight
                .iter()
                .filter(|(_, s)| s.status() == AckStatus::Pending)
                .map(|(_, s)| s.fence())
                .count()
        })
    }

    /// Stops tracking a partition (after it was revoked and committed).
    pub fn forget(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// Partitions currently tracked.
    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckToken;
    use proptest::prelude::*;

    #[test]
    fn watermark_stops_at_the_first_pending_batch() {
        let mut ledger = AckLedger::new();
        let tokens: Vec<AckToken> = (0..3).map(|_| AckToken::detached()).collect();
        for (i, t) in tokens.iter().enumerate() {
            ledger.track(0, (i as u64 + 1) * 10, t.state());
        }
        let mut tokens = tokens.into_iter();
        let (t0, t1, t2) = (
            tokens.next().unwrap(),
            tokens.next().unwrap(),
            tokens.next().unwrap(),
        );
        t1.ack();
        assert_eq!(ledger.take_checkpoints(), vec![]);
        t0.ack();
        assert_eq!(
            ledger.take_checkpoints(),
            vec![Checkpoint {
                partition: 0,
                position: 20
            }]
        );
        assert_eq!(
            ledger.take_checkpoints(),
            vec![],
            "an unchanged watermark is not reported again"
        );
        t2.ack();
        assert_eq!(
            ledger.take_checkpoints(),
            vec![Checkpoint {
                partition: 0,
                position: 30
            }]
        );
        assert!(ledger.is_settled());
    }

    #[test]
    fn a_failed_batch_stops_the_watermark() {
        let mut ledger = AckLedger::new();
        let a = AckToken::detached();
        let b = AckToken::detached();
        ledger.track(3, 5, a.state());
        ledger.track(3, 9, b.state());
        a.fail();
        b.ack();
        assert_eq!(ledger.take_checkpoints(), vec![]);
        assert_eq!(
            ledger.stuck(),
            vec![StuckPartition {
                partition: 3,
                watermark: None
            }]
        );
        assert_eq!(ledger.take_newly_stuck().len(), 1);
        assert!(ledger.take_newly_stuck().is_empty(), "reported once");
    }

    #[test]
    fn a_stuck_partition_keeps_only_its_failed_head_and_pending_batches() {
        let mut ledger = AckLedger::new();
        let failed = AckToken::detached();
        ledger.track(0, 1, failed.state());
        failed.fail();
        let mut pending = Vec::new();
        for i in 0..100u64 {
            let t = AckToken::detached();
            ledger.track(0, i + 2, t.state());
            if i % 10 == 0 {
                pending.push(t);
            } else {
                t.ack();
            }
        }
        assert!(ledger.take_checkpoints().is_empty());
        assert_eq!(ledger.inflight(0), 1 + pending.len());
        pending.into_iter().for_each(AckToken::ack);
    }

    #[test]
    fn restored_position_is_not_reported_until_it_moves() {
        let mut ledger = AckLedger::new();
        ledger.restore(1, 100);
        assert_eq!(ledger.take_checkpoints(), vec![]);
        let t = AckToken::detached();
        ledger.track(1, 150, t.state());
        t.ack();
        assert_eq!(
            ledger.take_checkpoints(),
            vec![Checkpoint {
                partition: 1,
                position: 150
            }]
        );
    }

    proptest! {
        /// Random out-of-order acks never commit past an unacked position, and
        /// once everything is acked the watermark is the last end position.
        #[test]
        fn out_of_order_acks_never_commit_past_a_pending_batch(
            partitions in 1u32..4,
            batches in 1usize..60,
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..60),
        ) {
            let mut ledger = AckLedger::new();
            let mut pending: Vec<(u32, u64, AckToken)> = Vec::new();
            let mut next_end = vec![0u64; partitions as usize];
            for i in 0..batches {
                let p = (i as u32) % partitions;
                next_end[p as usize] += 1 + (i as u64 % 7);
                let t = AckToken::detached();
                ledger.track(p, next_end[p as usize], t.state());
                pending.push((p, next_end[p as usize], t));
            }
            let mut acked: Vec<(u32, u64)> = Vec::new();
            let mut committed = vec![0u64; partitions as usize];
            for idx in order {
                if pending.is_empty() { break; }
                let (p, end, t) = pending.remove(idx.index(pending.len()));
                t.ack();
                acked.push((p, end));
                for cp in ledger.take_checkpoints() {
                    // every batch of this partition ending at or before the
                    // checkpoint must be acked
                    for (q, e, _) in &pending {
                        prop_assert!(!(*q == cp.partition && *e <= cp.position),
                            "committed {} on partition {} past pending batch ending {}", cp.position, q, e);
                    }
                    prop_assert!(cp.position > committed[cp.partition as usize]);
                    committed[cp.partition as usize] = cp.position;
                }
            }
            for (_, _, t) in pending.drain(..) { t.ack(); }
            ledger.take_checkpoints();
            for p in 0..partitions {
                prop_assert_eq!(ledger.watermark(p), ledger.dispatched(p));
            }
        }
    }
}
