//! The live-pointer table: sampled allocations not yet freed (the in-use profile).
//!
//! A fixed open-addressing table in static memory (linear probing within
//! [`MAX_PROBE`] entries of a pointer's home), keys inserted and removed with atomics, no
//! lock, no allocation. In front of it a counting filter (one counter per hash bucket)
//! answers "certainly not sampled" for almost every `dealloc` with one load.
//!
//! Entry states in `ptr`: `EMPTY` (never used), `TOMB` (freed), `BUSY` (being written),
//! or the pointer. An insert takes the first `EMPTY` or `TOMB` entry from the home, a
//! lookup stops at the first `EMPTY`: entries never become `EMPTY` again, so no `EMPTY`
//! can lie between a pointer's home and its entry. A pointer is inserted by the thread
//! that allocated it before the allocation is returned, and freed once by whoever frees
//! it after that: the program's own synchronisation orders the two, so a `dealloc`
//! always sees its pointer's insert.

use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering::*};

/// Entries in the table (a sampled pointer per entry).
pub(crate) const CAPACITY: usize = 1 << 16;
/// Entries probed from a pointer's home before an insert gives up (counted).
const MAX_PROBE: usize = 64;
/// Buckets of the counting filter.
const FILTER_BUCKETS: usize = 1 << 16;

const EMPTY: usize = 0;
const TOMB: usize = 1;
const BUSY: usize = 2;

struct Entry {
    ptr: AtomicUsize,
    /// The sample's serial; written before `ptr` is published.
    serial: AtomicU64,
}

static TABLE: [Entry; CAPACITY] = [const {
    Entry {
        ptr: AtomicUsize::new(EMPTY),
        serial: AtomicU64::new(0),
    }
}; CAPACITY];

/// Per bucket: tracked pointers whose hash falls in it. Pointers of one bucket share a
/// home, so at most `MAX_PROBE` of them are tracked: a `u16` cannot overflow (an
/// insert that finds no entry takes its increment back).
static FILTER: [AtomicU16; FILTER_BUCKETS] = [const { AtomicU16::new(0) }; FILTER_BUCKETS];

/// Pointers tracked now.
static LIVE: AtomicUsize = AtomicUsize::new(0);

#[inline(always)]
fn hash(ptr: usize) -> usize {
    // Fibonacci hashing of the address without its alignment bits.
    ((ptr as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize
}

/// Remembers `ptr` (a sampled allocation) with `serial`. False when its neighbourhood
/// is full (then it is not tracked).
pub(super) fn insert(ptr: usize, serial: u64) -> bool {
    if ptr <= BUSY {
        return false;
    }
    let h = hash(ptr);
    // Relaxed: the filter is read by the thread that frees `ptr`, which the program
    // orders after this allocation returned (see the module docs).
    FILTER[h % FILTER_BUCKETS].fetch_add(1, Relaxed);
    for i in 0..MAX_PROBE {
        let entry = &TABLE[(h + i) % CAPACITY];
        // Relaxed: a hint; the CAS below decides.
        let cur = entry.ptr.load(Relaxed);
        if (cur == EMPTY || cur == TOMB)
            && entry
                .ptr
                .compare_exchange(cur, BUSY, Relaxed, Relaxed)
                .is_ok()
        {
            // Relaxed: published by the Release store below.
            entry.serial.store(serial, Relaxed);
            // Release: publishes `serial`; pairs with the Acquire load in `scan`.
            entry.ptr.store(ptr, Release);
            // Relaxed: a gauge.
            LIVE.fetch_add(1, Relaxed);
            return true;
        }
    }
    FILTER[h % FILTER_BUCKETS].fetch_sub(1, Relaxed);
    false
}

/// Whether `ptr` may be tracked: false means certainly not (one load).
#[inline(always)]
pub(super) fn maybe_tracked(ptr: usize) -> bool {
    // Relaxed: see `insert`.
    FILTER[hash(ptr) % FILTER_BUCKETS].load(Relaxed) != 0
}

/// Forgets `ptr` if it is tracked. True if it was.
#[inline(never)]
pub(super) fn forget(ptr: usize) -> bool {
    let h = hash(ptr);
    for i in 0..MAX_PROBE {
        let entry = &TABLE[(h + i) % CAPACITY];
        // Relaxed: this thread already sees `ptr`'s insert (see the module docs); other
        // pointers' entries are only compared.
        let cur = entry.ptr.load(Relaxed);
        if cur == ptr {
            // Relaxed: the entry carries no data for the next inserter (it writes its own
            // serial before publishing); a scan that still sees `ptr` counts a sample
            // freed a moment ago once more.
            entry.ptr.store(TOMB, Relaxed);
            // Relaxed: see `insert`; a gauge.
            FILTER[h % FILTER_BUCKETS].fetch_sub(1, Relaxed);
            LIVE.fetch_sub(1, Relaxed);
            return true;
        }
        if cur == EMPTY {
            break;
        }
    }
    false
}

/// Calls `f` with the serial of every tracked pointer (the collector, at a window end).
pub(super) fn scan(mut f: impl FnMut(u64)) {
    for entry in &TABLE {
        // Acquire: pairs with the Release store in `insert`, so `serial` is this
        // pointer's (or a later insert's: then a serial the collector may not know yet,
        // which it ignores).
        if entry.ptr.load(Acquire) > BUSY {
            f(entry.serial.load(Relaxed));
        }
    }
}

/// Pointers tracked now.
pub(crate) fn live() -> u64 {
    // Relaxed: a gauge.
    LIVE.load(Relaxed) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_pointers_are_found_forgotten_and_counted() {
        let _table = crate::alloc::TEST_LIVE_TABLE.lock();
        // Addresses no allocator hands out in this test process's heap.
        let base = 0x7000_dead_0000usize;
        let ptrs: Vec<usize> = (0..1000).map(|i| base + i * 64).collect();
        let before = live();
        for (i, &p) in ptrs.iter().enumerate() {
            assert!(insert(p, 1 + i as u64));
            assert!(maybe_tracked(p));
        }
        assert_eq!(live() - before, 1000);
        let mut serials = Vec::new();
        scan(|s| serials.push(s));
        assert!((1..=1000).all(|s| serials.contains(&s)));
        for &p in &ptrs {
            assert!(forget(p));
            assert!(!forget(p), "forgotten twice");
        }
        assert_eq!(live(), before);
        // Never inserted: not found (the filter or the probe says so).
        assert!(!forget(base + 1_000_000 * 64));
    }
}
