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

/// A multiplicative hasher for names (the symbolizer's interned strings): eight bytes at
/// a time, each word mixed as [`IdHasher`] mixes an id. Names come from the process's
/// own object files, so they need no protection against chosen collisions either.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl NameHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(GOLDEN);
    }
}

impl Hasher for NameHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // The multiplications leave the low bits (a table's bucket index) depending on
        // the low bits of each word alone: mix the high bits down (splitmix64's
        // finishing steps).
        let mut h = self.0;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length tells `"a\0"` from `"a"`.
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

/// `BuildHasher` of [`NameHasher`] for `HashSet`s of names.
pub(crate) type NameHashBuilder = BuildHasherDefault<NameHasher>;

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
    fn similar_names_hash_apart_and_fill_the_buckets() {
        let build = NameHashBuilder::default();
        let names: Vec<String> = (0..20_000)
            .map(|i| format!("core::ptr::drop_in_place<tokio::task::Task{i}>"))
            .chain((0..5_000).map(|i| "x".repeat(i % 40) + &i.to_string()))
            .chain(["a".to_owned(), "a\0".to_owned(), String::new()])
            .collect();
        let hashes: std::collections::HashSet<u64> =
            names.iter().map(|n| build.hash_one(n.as_str())).collect();
        assert_eq!(hashes.len(), names.len());
        // The low bits choose a table's bucket. 25,003 names in 4,096 buckets: about 6 a
        // bucket, and a random hash leaves about 10 buckets empty (e^-6 of them).
        let mut buckets = vec![0usize; 4096];
        for h in &hashes {
            buckets[(h & 4095) as usize] += 1;
        }
        let empty = buckets.iter().filter(|&&n| n == 0).count();
        let fullest = buckets.iter().max().copied().unwrap_or(0);
        assert!(
            empty < 40 && fullest < 25,
            "{empty} empty, {fullest} in the fullest"
        );
    }

    #[test]
    fn sequential_ids_hash_to_distinct_values() {
        let build = IdHashBuilder::default();
        let hashes: std::collections::HashSet<u64> =
            (0..10_000u64).map(|id| build.hash_one(id)).collect();
        assert_eq!(hashes.len(), 10_000);
    }
}
