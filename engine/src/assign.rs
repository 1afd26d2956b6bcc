//! Pure functions that decide which shard (and which lane of a shard) owns a
//! partition or a key. Stable across runs and processes.

/// A 64-bit hash of a byte string (FNV-1a folded through a multiply-xorshift
/// finaliser, so every output bit depends on every input byte).
pub fn hash_key(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// Finaliser from SplitMix64.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Maps a hash uniformly onto `0..n` using its high 32 bits.
fn reduce_high(hash: u64, n: usize) -> usize {
    (((hash >> 32) * n as u64) >> 32) as usize
}

/// Maps a hash uniformly onto `0..n` using its low 32 bits.
fn reduce_low(hash: u64, n: usize) -> usize {
    (((hash & 0xffff_ffff) * n as u64) >> 32) as usize
}

/// The shard that owns `partition` of source `source`.
///
/// Partitions of one source are dealt round-robin over the shards, starting
/// at a shard that depends on the source, so a source with as many partitions
/// as there are shards spreads over all of them and several single-partition
/// sources do not pile onto shard 0.
pub fn shard_for_partition(source: u16, partition: u32, shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    ((source as u64 + partition as u64) % shards as u64) as usize
}

/// The shard that owns events with this key hash (sources without partitions).
pub fn shard_for_key(key_hash: u64, shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    reduce_high(key_hash, shards)
}

/// The lane within a shard for this key hash. Uses other bits of the hash
/// than [`shard_for_key`], so the keys of one shard spread over all its lanes.
pub fn lane_for_key(key_hash: u64, lanes: usize) -> usize {
    assert!(lanes > 0, "at least one lane");
    reduce_low(key_hash, lanes)
}

/// The lane within a shard for a whole partition (per-partition ordering).
pub fn lane_for_partition(source: u16, partition: u32, lanes: usize) -> usize {
    assert!(lanes > 0, "at least one lane");
    reduce_low(mix(((source as u64) << 32) | partition as u64), lanes)
}

/// Hands out partition ids for a source whose partitions come and go (a
/// Kafka consumer's assignment), so the partitions it holds right now are
/// spread evenly over the shards: each new partition gets the smallest free
/// id owned by a shard holding the fewest partitions, and a released id is
/// reused. Ids handed out once and never reused would, after rebalances,
/// leave the kept partitions wherever their first ids put them, possibly
/// all on one shard.
///
/// Partitions kept across a rebalance keep their ids (and shards): moving
/// one would reorder its in-flight batches. A rebalance that revokes and
/// re-assigns everything (the eager protocols) is spread evenly again.
#[derive(Debug, Clone)]
pub struct PartitionSlots {
    source: u16,
    shards: usize,
    /// Whether each id is in use, by id.
    used: Vec<bool>,
    /// Ids in use per shard.
    load: Vec<usize>,
}

impl PartitionSlots {
    /// Slots for `source` over `shards` shards, none in use.
    pub fn new(source: u16, shards: usize) -> Self {
        assert!(shards > 0, "at least one shard");
        PartitionSlots {
            source,
            shards,
            used: Vec::new(),
            load: vec![0; shards],
        }
    }

    /// A free id on a least-loaded shard, now in use.
    pub fn take(&mut self) -> u32 {
        let shard = (0..self.shards)
            .min_by_key(|&s| self.load[s])
            .expect("at least one shard");
        // ids owned by `shard` are those with (source + id) % shards == shard
        let first = (shard + self.shards - self.source as usize % self.shards) % self.shards;
        let mut id = first;
        while self.used.get(id).copied().unwrap_or(false) {
            id += self.shards;
        }
        if id >= self.used.len() {
            self.used.resize(id + 1, false);
        }
        self.used[id] = true;
        self.load[shard] += 1;
        debug_assert_eq!(
            shard_for_partition(self.source, id as u32, self.shards),
            shard
        );
        u32::try_from(id).expect("fewer than 2^32 partitions")
    }

    /// Frees `id` (its partition was revoked); unknown ids are ignored.
    pub fn release(&mut self, id: u32) {
        if let Some(used) = self.used.get_mut(id as usize) {
            if *used {
                *used = false;
                self.load[shard_for_partition(self.source, id, self.shards)] -= 1;
            }
        }
    }

    /// Partitions in use per shard.
    pub fn load(&self) -> &[usize] {
        &self.load
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partitions_spread_evenly_over_shards() {
        let mut counts = [0usize; 4];
        for p in 0..64 {
            counts[shard_for_partition(0, p, 4)] += 1;
        }
        assert_eq!(counts, [16, 16, 16, 16]);
    }

    #[test]
    fn single_partition_sources_do_not_all_land_on_shard_zero() {
        let shards: Vec<usize> = (0..4).map(|s| shard_for_partition(s, 0, 4)).collect();
        assert_eq!(shards, vec![0, 1, 2, 3]);
    }

    #[test]
    fn hash_is_stable() {
        // fixed values: a change here moves every key to another shard
        assert_eq!(hash_key(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_key(b"user-1"), hash_key(b"user-1"));
        assert_ne!(hash_key(b"user-1"), hash_key(b"user-2"));
    }

    #[test]
    fn keys_spread_over_shards_and_lanes_of_each_shard() {
        let mut grid = [[0usize; 4]; 2];
        for i in 0..8000 {
            let h = hash_key(format!("key-{i}").as_bytes());
            grid[shard_for_key(h, 2)][lane_for_key(h, 4)] += 1;
        }
        for row in grid {
            for cell in row {
                assert!((700..1300).contains(&cell), "uneven spread: {grid:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn assignment_is_in_range_and_deterministic(source in any::<u16>(), partition in any::<u32>(), shards in 1usize..64, key in any::<Vec<u8>>()) {
            let s = shard_for_partition(source, partition, shards);
            prop_assert!(s < shards);
            prop_assert_eq!(s, shard_for_partition(source, partition, shards));
            let h = hash_key(&key);
            prop_assert!(shard_for_key(h, shards) < shards);
            prop_assert!(lane_for_key(h, shards) < shards);
            prop_assert!(lane_for_partition(source, partition, shards) < shards);
        }
    }

    /// A rebalance: `revoke` of the held ids are released (by index), then
    /// `assign` new partitions are taken.
    #[derive(Debug, Clone)]
    struct Rebalance {
        revoke: Vec<proptest::sample::Index>,
        eager: bool,
        assign: usize,
    }

    fn rebalance() -> impl Strategy<Value = Rebalance> {
        (
            proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
            any::<bool>(),
            0usize..12,
        )
            .prop_map(|(revoke, eager, assign)| Rebalance {
                revoke,
                eager,
                assign,
            })
    }

    proptest! {
        #[test]
        fn partitions_held_after_any_rebalances_are_spread_evenly(
            source in 0u16..4,
            shards in 1usize..6,
            rebalances in proptest::collection::vec(rebalance(), 1..30),
        ) {
            let mut slots = PartitionSlots::new(source, shards);
            let mut held: Vec<u32> = Vec::new();
            for r in rebalances {
                if r.eager {
                    // everything is revoked, then as many as before plus the new ones assigned
                    let n = held.len();
                    for id in held.drain(..) {
                        slots.release(id);
                    }
                    for _ in 0..n + r.assign {
                        held.push(slots.take());
                    }
                    let (min, max) = (slots.load().iter().min().unwrap(), slots.load().iter().max().unwrap());
                    prop_assert!(max - min <= 1, "eager rebalance spread unevenly: {:?}", slots.load());
                } else {
                    // cooperative: some revoked, the rest kept where they are
                    for index in r.revoke {
                        if held.is_empty() {
                            break;
                        }
                        let id = held.swap_remove(index.index(held.len()));
                        slots.release(id);
                    }
                    for _ in 0..r.assign {
                        let least = *slots.load().iter().min().unwrap();
                        let id = slots.take();
                        let shard = shard_for_partition(source, id, shards);
                        // every new partition goes to a shard that held the fewest
                        prop_assert_eq!(slots.load()[shard] - 1, least);
                        held.push(id);
                    }
                }
                // ids in use are distinct and the load matches them
                let distinct: std::collections::HashSet<u32> = held.iter().copied().collect();
                prop_assert_eq!(distinct.len(), held.len());
                let mut load = vec![0usize; shards];
                for &id in &held {
                    load[shard_for_partition(source, id, shards)] += 1;
                }
                prop_assert_eq!(&load[..], slots.load());
            }
        }
    }

    #[test]
    fn kept_partitions_on_one_shard_are_balanced_by_the_next_assignments() {
        // 8 partitions over 2 shards, then the 4 on shard 1 are revoked
        let mut slots = PartitionSlots::new(0, 2);
        let ids: Vec<u32> = (0..8).map(|_| slots.take()).collect();
        assert_eq!(slots.load(), &[4, 4]);
        for &id in ids.iter().filter(|&&id| shard_for_partition(0, id, 2) == 1) {
            slots.release(id);
        }
        assert_eq!(slots.load(), &[4, 0]);
        // the next two partitions both go to shard 1, reusing freed ids
        let a = slots.take();
        let b = slots.take();
        assert_eq!(slots.load(), &[4, 2]);
        assert!(ids.contains(&a) && ids.contains(&b), "freed ids are reused");
    }
}
