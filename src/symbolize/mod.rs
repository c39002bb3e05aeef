//! Symbolization: addresses of a closed window become functions, files and lines (with
//! inlined frames), read from the loaded modules' files on the writer thread, within a
//! memory budget.

/// Per-unit DWARF: line rows and inlined calls, parsed on demand.
pub(crate) mod dwarf;
/// A unit's line table, packed to a few bytes a row.
pub(crate) mod lines;
/// A read-only memory map of a file.
pub(crate) mod mapped;
/// Readable names: demangling, generics removed, module paths from source files.
pub(crate) mod names;
/// One mapped object file: build id, symbol index, DWARF sections.
pub(crate) mod objfile;
/// Interned strings with their bytes counted.
pub(crate) mod strings;
/// `Symbolization`: the public options (detail, memory budget).
pub(crate) mod symbolization;
/// `Symbolizer`: addresses to frames, cached, within the budget.
pub(crate) mod symbolizer;

pub(crate) use symbolizer::{lookup_address, lookup_addresses, Symbolizer};

use crate::counters::Counter;

/// Tallies of what symbolization did, for `stats()`.
#[derive(Debug)]
pub(crate) struct SymbolizeCounters {
    /// Distinct addresses symbolized (cache misses of the symbolizer).
    pub(crate) addresses_symbolized: Counter,
    /// Of those, addresses for which no function name was found (encoded with a hex name).
    pub(crate) addresses_unresolved: Counter,
}

/// The process-wide symbolization tallies.
pub(crate) static SYMBOLIZE: SymbolizeCounters = SymbolizeCounters {
    addresses_symbolized: Counter::new(),
    addresses_unresolved: Counter::new(),
};

/// Heap bytes one allocation of `requested` bytes takes from the allocator. glibc's
/// malloc puts an 8-byte header before each chunk and rounds chunks up to 16 bytes, 32
/// at least (other allocators round similarly). The budget counts these, so that it
/// bounds what the heap really holds rather than what was asked for: for the many small
/// strings and entries the symbolizer keeps, the difference is a tenth.
pub(crate) fn allocation_bytes(requested: usize) -> usize {
    match requested {
        0 => 0,
        n => (n + 8).next_multiple_of(16).max(32),
    }
}

/// Whether a table with room for `capacity` entries and `len` in it uses at most a
/// quarter of its memory (small tables are never sparse), so its memory is worth giving back.
pub(crate) fn sparse(capacity: usize, len: usize) -> bool {
    capacity > 4 * len.max(64)
}

/// A xorshift sequence from `seed` (nonzero) for tests' fixed random cases: each call
/// `next(n)` gives a number in `0..n`.
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// Heap bytes of a `Vec<T>` with `capacity` elements.
pub(crate) fn vec_bytes<T>(v: &Vec<T>) -> usize {
    allocation_bytes(v.capacity() * std::mem::size_of::<T>())
}

/// Heap bytes of a hash table (std's `HashMap`/`HashSet`, i.e. hashbrown) whose
/// `capacity()` is `capacity` and whose entries are `T`: a power of two of buckets, of
/// which at most seven eighths are used, each an entry and a control byte, plus one
/// group of control bytes.
pub(crate) fn table_bytes<T>(capacity: usize) -> usize {
    let buckets = match capacity {
        0 => return 0,
        c if c < 8 => c + 1,
        c => c / 7 * 8,
    };
    allocation_bytes(buckets * (std::mem::size_of::<T>() + 1) + 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn table_bytes_follow_the_tables_buckets() {
        let mut map: HashMap<u64, u64> = HashMap::new();
        assert_eq!(table_bytes::<(u64, u64)>(map.capacity()), 0);
        map.insert(1, 1);
        // 3 usable of 4 buckets.
        assert_eq!(map.capacity(), 3);
        assert_eq!(table_bytes::<(u64, u64)>(3), allocation_bytes(4 * 17 + 16));
        for i in 0..100 {
            map.insert(i, i);
        }
        // 112 usable of 128 buckets.
        assert_eq!(map.capacity(), 112);
        assert_eq!(
            table_bytes::<(u64, u64)>(112),
            allocation_bytes(128 * 17 + 16)
        );
    }

    #[test]
    fn allocations_round_like_malloc_chunks() {
        assert_eq!(allocation_bytes(0), 0);
        assert_eq!(allocation_bytes(1), 32);
        assert_eq!(allocation_bytes(24), 32);
        assert_eq!(allocation_bytes(25), 48);
        assert_eq!(allocation_bytes(4096), 4112);
    }
}
