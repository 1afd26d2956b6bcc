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
}
