//! Which events a generator batch holds.
//!
//! Event `seq` (the global sequence, from 0) belongs to partition
//! `seq % partitions` at offset `seq / partitions`. Batches rotate over the
//! partitions, each taking the next offsets of one partition, so a batch
//! never mixes partitions and every partition's offsets are contiguous.

/// Most partitions a generator may have (each keeps a counter).
pub const MAX_PARTITIONS: u32 = 65_536;

/// One batch: `len` events of `partition` from `first_offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    /// The partition.
    pub partition: u32,
    /// Offset of the first event within the partition.
    pub first_offset: u64,
    /// Number of events.
    pub len: u64,
}

impl BatchPlan {
    /// The position after the batch: its last offset + 1.
    pub fn end(&self) -> u64 {
        self.first_offset + self.len
    }
}

/// Hands out batches in rotation until `count` events were planned.
#[derive(Debug, Clone)]
pub struct Planner {
    partitions: u32,
    count: Option<u64>,
    next: Vec<u64>,
    cursor: u32,
}

impl Planner {
    /// A planner over `partitions` partitions (at least 1, at most
    /// [`MAX_PARTITIONS`]) for `count` events (`None`: unbounded).
    pub fn new(partitions: u32, count: Option<u64>) -> Self {
        let partitions = partitions.clamp(1, MAX_PARTITIONS);
        Planner {
            partitions,
            count,
            next: vec![0; partitions as usize],
            cursor: 0,
        }
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Global sequence number of the event at `offset` of `partition`.
    pub fn seq(&self, partition: u32, offset: u64) -> u64 {
        offset
            .wrapping_mul(u64::from(self.partitions))
            .wrapping_add(u64::from(partition))
    }

    /// Events partition `partition` gets in total; `None` when unbounded.
    pub fn partition_len(&self, partition: u32) -> Option<u64> {
        let p = u64::from(partition);
        self.count.map(|count| {
            if count > p {
                (count - p - 1) / u64::from(self.partitions) + 1
            } else {
                0
            }
        })
    }

    /// The next batch of at most `max` events (at least 1), or `None` when
    /// every partition has all its events.
    pub fn next_batch(&mut self, max: u64) -> Option<BatchPlan> {
        self.next_batch_skipping(max, |_| false)
    }

    /// Like [`next_batch`](Self::next_batch), passing over partitions for
    /// which `paused` is true (their shard is full). `None` when no
    /// unpaused partition has events left.
    pub fn next_batch_skipping(
        &mut self,
        max: u64,
        paused: impl Fn(u32) -> bool,
    ) -> Option<BatchPlan> {
        for _ in 0..self.partitions {
            let partition = self.cursor;
            self.cursor = (self.cursor + 1) % self.partitions;
            if paused(partition) {
                continue;
            }
            let first_offset = self.next[partition as usize];
            let remaining = self
                .partition_len(partition)
                .map_or(u64::MAX, |len| len - first_offset);
            if remaining > 0 {
                let len = max.max(1).min(remaining);
                self.next[partition as usize] = first_offset + len;
                return Some(BatchPlan {
                    partition,
                    first_offset,
                    len,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(partitions: u32, count: Option<u64>, max: u64, take: usize) -> Vec<(u32, u64, u64)> {
        let mut planner = Planner::new(partitions, count);
        std::iter::from_fn(|| planner.next_batch(max))
            .take(take)
            .map(|b| (b.partition, b.first_offset, b.end()))
            .collect()
    }

    #[test]
    fn rotates_over_partitions_with_contiguous_offsets() {
        assert_eq!(
            plans(3, Some(10), 2, 100),
            [
                (0, 0, 2),
                (1, 0, 2),
                (2, 0, 2),
                (0, 2, 4),
                (1, 2, 3),
                (2, 2, 3)
            ]
        );
        assert_eq!(plans(1, Some(5), 2, 100), [(0, 0, 2), (0, 2, 4), (0, 4, 5)]);
        assert_eq!(
            plans(2, None, 3, 4),
            [(0, 0, 3), (1, 0, 3), (0, 3, 6), (1, 3, 6)]
        );
    }

    #[test]
    fn every_sequence_number_is_planned_once() {
        for (partitions, count, max) in [
            (1, 0, 1),
            (3, 10, 4),
            (4, 3, 1000),
            (7, 1000, 13),
            (5, 5, 1),
        ] {
            let mut planner = Planner::new(partitions, Some(count));
            let mut seen = vec![false; count as usize];
            while let Some(plan) = planner.next_batch(max) {
                assert!(plan.len <= max);
                for offset in plan.first_offset..plan.end() {
                    let seq = planner.seq(plan.partition, offset);
                    assert_eq!(seq % u64::from(partitions), u64::from(plan.partition));
                    assert!(
                        !std::mem::replace(&mut seen[seq as usize], true),
                        "seq {seq} twice"
                    );
                }
            }
            assert!(seen.iter().all(|&s| s), "{partitions} {count} {max}");
        }
    }

    #[test]
    fn paused_partitions_are_passed_over_and_resume_where_they_stopped() {
        let mut planner = Planner::new(3, Some(12));
        let first = planner.next_batch_skipping(2, |p| p == 1).unwrap();
        let second = planner.next_batch_skipping(2, |p| p == 1).unwrap();
        assert_eq!((first.partition, second.partition), (0, 2));
        assert!(planner.next_batch_skipping(2, |_| true).is_none());
        let resumed = planner.next_batch_skipping(2, |p| p != 1).unwrap();
        assert_eq!((resumed.partition, resumed.first_offset), (1, 0));
    }

    #[test]
    fn partition_lengths() {
        let planner = Planner::new(4, Some(10));
        let lens: Vec<_> = (0..4).map(|p| planner.partition_len(p).unwrap()).collect();
        assert_eq!(lens, [3, 3, 2, 2]);
        assert_eq!(Planner::new(4, Some(2)).partition_len(3), Some(0));
        assert_eq!(Planner::new(4, None).partition_len(3), None);
        assert_eq!(Planner::new(0, None).partitions(), 1);
    }
}
