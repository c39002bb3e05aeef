//! One hasher for the crate's maps keyed by ids (span ids, label ids, Tokio task ids).
//!
//! Ids need no protection against chosen collisions, but they may count up (Tokio's task
//! ids, custom span-id generators), so every `u64` written is mixed by a multiplication
//! with the 64-bit golden ratio (Fibonacci hashing): the high and middle bits of the
//! result spread well for shard choice, and the hash table's buckets stay balanced.

use std::hash::{BuildHasherDefault, Hasher};

/// The 64-bit golden-ratio constant of Fibonacci hashing.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A multiplicative hasher for integer ids.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Ids arrive as integers; fold anything else in byte by byte.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(GOLDEN);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// `BuildHasher` of [`IdHasher`] for `HashMap`s.
pub(crate) type IdHashBuilder = BuildHasherDefault<IdHasher>;

/// Index of the shard (of `shards`, a power of two) for `id`: the top bits of its mix,
/// the best-mixed ones.
#[inline]
pub(crate) fn shard_index(id: u64, shards: usize) -> usize {
    debug_assert!(shards.is_power_of_two());
    let mixed = id.wrapping_mul(GOLDEN);
    (mixed >> (64 - shards.trailing_zeros())) as usize & (shards - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_every_shard() {
        let mut seen = [0usize; 64];
        for id in 0..64_000u64 {
            seen[shard_index(id, 64)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
    }

    #[test]
    fn sequential_ids_hash_to_distinct_values() {
        let build = IdHashBuilder::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000u64).map(|id| build.hash_one(id)).collect();
        assert_eq!(hashes.len(), 10_000);
    }
}
