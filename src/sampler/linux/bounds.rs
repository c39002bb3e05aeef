//! Stack bounds per thread, published ahead of time for the signal handler.
//!
//! The handler may not ask for its own stack range (`pthread_getattr_np` allocates), so
//! the unwinder's limits come from two places, both readable without locks:
//! - a thread that armed its own timer (first label write) stored its range in a
//!   destructor-free thread-local first ([`set_own`]);
//! - for every other thread, the collector publishes the `/proc/self/maps` mapping that
//!   holds an SP the thread reported (a leaf-only sample) in [`TABLE`], keyed by tid.
//!
//! The table is open-addressed with a per-entry sequence lock. Only the collector writes
//! it (one writer); handlers read an entry and retry nothing: a torn or in-progress read
//! means "no bounds", and the sample keeps only its leaf PC. The collector removes a
//! thread's entry when the thread vanishes and before it arms a timer on a reused tid, so
//! a thread never receives our signal while an older thread's bounds sit under its tid.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicI32, AtomicU64, AtomicUsize, Ordering::*};

/// A thread's stack range: frames must lie in `[lo, hi)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackBounds {
    /// Lowest address of the stack mapping.
    pub lo: usize,
    /// One past the highest address.
    pub hi: usize,
}

const TABLE_LEN: usize = 4096;
const MAX_PROBES: usize = 16;
const EMPTY: i32 = 0;
const TOMBSTONE: i32 = -1;

struct Entry {
    /// Even: stable; odd: the collector is writing. Bumped twice per write.
    seq: AtomicU64,
    /// `EMPTY`, `TOMBSTONE` or a tid.
    tid: AtomicI32,
    lo: AtomicUsize,
    hi: AtomicUsize,
}

/// The published table. Written only by the collector of the running session.
pub(crate) struct BoundsTable {
    entries: [Entry; TABLE_LEN],
}

/// The process-wide table (128 KiB of zero pages until used).
pub(crate) static TABLE: BoundsTable = BoundsTable {
    entries: [const {
        Entry {
            seq: AtomicU64::new(0),
            tid: AtomicI32::new(EMPTY),
            lo: AtomicUsize::new(0),
            hi: AtomicUsize::new(0),
        }
    }; TABLE_LEN],
};

#[inline(always)]
fn home(tid: i32) -> usize {
    // Fibonacci hashing spreads consecutive tids.
    ((tid as u32).wrapping_mul(0x9E37_79B9) >> 20) as usize
}

impl BoundsTable {
    /// Looks up `tid`. Signal-safe: atomics only, bounded probes, never waits.
    #[inline]
    pub(crate) fn get(&self, tid: i32) -> Option<StackBounds> {
        let start = home(tid);
        for i in 0..MAX_PROBES {
            let entry = self.entries.get((start + i) & (TABLE_LEN - 1))?;
            // Acquire: pairs with the Release store that ended the last write, so the
            // fields read below are at least that new.
            let seq1 = entry.seq.load(Acquire);
            if seq1 & 1 == 1 {
                return None;
            }
            // Relaxed (these three): validated by the sequence re-check below.
            let t = entry.tid.load(Relaxed);
            if t == EMPTY {
                return None;
            }
            if t != tid {
                continue;
            }
            let lo = entry.lo.load(Relaxed);
            let hi = entry.hi.load(Relaxed);
            // Acquire fence: orders the field loads above before the re-check; pairs with
            // the Release fence in `write`.
            fence(Acquire);
            let seq2 = entry.seq.load(Relaxed);
            return if seq1 == seq2 && lo < hi {
                Some(StackBounds { lo, hi })
            } else {
                None
            };
        }
        None
    }

    fn write(&self, index: usize, tid: i32, bounds: StackBounds) {
        let Some(entry) = self.entries.get(index) else {
            return;
        };
        // Relaxed: only the collector writes `seq`.
        let seq = entry.seq.load(Relaxed);
        entry.seq.store(seq.wrapping_add(1), Relaxed);
        // Release fence: readers that see any field written below also see the odd
        // sequence; pairs with the Acquire fence in `get`.
        fence(Release);
        entry.tid.store(tid, Relaxed);
        entry.lo.store(bounds.lo, Relaxed);
        entry.hi.store(bounds.hi, Relaxed);
        // Release: publishes the fields; pairs with the Acquire load of `seq` in `get`.
        entry.seq.store(seq.wrapping_add(2), Release);
    }

    /// Publishes `bounds` for `tid`. Collector only. False when the probe window is full.
    pub(crate) fn publish(&self, tid: i32, bounds: StackBounds) -> bool {
        let start = home(tid);
        let mut free = None;
        for i in 0..MAX_PROBES {
            let index = (start + i) & (TABLE_LEN - 1);
            // Relaxed: the collector is the only writer, it reads its own stores.
            let t = self.entries[index].tid.load(Relaxed);
            if t == tid {
                self.write(index, tid, bounds);
                return true;
            }
            if free.is_none() && (t == EMPTY || t == TOMBSTONE) {
                free = Some(index);
            }
            if t == EMPTY {
                break;
            }
        }
        match free {
            Some(index) => {
                self.write(index, tid, bounds);
                true
            }
            None => false,
        }
    }

    /// Removes `tid`'s entry, if any. Collector only.
    pub(crate) fn remove(&self, tid: i32) {
        let start = home(tid);
        for i in 0..MAX_PROBES {
            let index = (start + i) & (TABLE_LEN - 1);
            // Relaxed: the collector is the only writer.
            let t = self.entries[index].tid.load(Relaxed);
            if t == EMPTY {
                return;
            }
            if t == tid {
                self.write(index, TOMBSTONE, StackBounds { lo: 0, hi: 0 });
                return;
            }
        }
    }

    /// Empties the table (at session start: threads may have died since the last one).
    pub(crate) fn clear(&self) {
        for index in 0..TABLE_LEN {
            // Relaxed: the collector is the only writer.
            if self.entries[index].tid.load(Relaxed) != EMPTY {
                self.write(index, EMPTY, StackBounds { lo: 0, hi: 0 });
            }
        }
    }
}

thread_local! {
    /// Low end of this thread's own stack range (0: unknown), set before it arms its own
    /// timer and written after `OWN_HI` (ordered by a compiler fence): `lo != 0` means
    /// `hi` is valid too. Const-initialised, no destructor: safe to read in a handler.
    static OWN_LO: Cell<usize> = const { Cell::new(0) };
    /// High end of this thread's own stack range.
    static OWN_HI: Cell<usize> = const { Cell::new(0) };
}

/// Records the calling thread's stack range for its own handler.
pub(crate) fn set_own(bounds: StackBounds) {
    OWN_HI.with(|hi| hi.set(bounds.hi));
    std::sync::atomic::compiler_fence(SeqCst);
    OWN_LO.with(|lo| lo.set(bounds.lo));
}

/// The calling thread's own range, if it set one. Signal-safe.
#[inline(always)]
pub(crate) fn own() -> Option<StackBounds> {
    // Trivial closures keep `LocalKey::with` inlined (see `handler::current_tid`). No
    // fence needed here: nothing changes while this thread's handler runs.
    let lo = OWN_LO.with(Cell::get);
    let hi = OWN_HI.with(Cell::get);
    if lo != 0 && lo < hi {
        Some(StackBounds { lo, hi })
    } else {
        None
    }
}

/// Whether the calling thread already has its own range.
pub(crate) fn has_own() -> bool {
    own().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_bounds_are_found_and_removed() {
        let table = BoundsTable {
            entries: [const {
                Entry {
                    seq: AtomicU64::new(0),
                    tid: AtomicI32::new(EMPTY),
                    lo: AtomicUsize::new(0),
                    hi: AtomicUsize::new(0),
                }
            }; TABLE_LEN],
        };
        // Tids that share a home index probe onward.
        let tids: Vec<i32> = (1..1_000_000)
            .filter(|t| home(*t) == home(1))
            .take(3)
            .collect();
        for (i, tid) in tids.iter().enumerate() {
            assert!(table.publish(
                *tid,
                StackBounds {
                    lo: 4096 * (i + 1),
                    hi: 8192 * (i + 1)
                }
            ));
        }
        for (i, tid) in tids.iter().enumerate() {
            assert_eq!(
                table.get(*tid),
                Some(StackBounds {
                    lo: 4096 * (i + 1),
                    hi: 8192 * (i + 1)
                })
            );
        }
        table.remove(tids[0]);
        assert_eq!(table.get(tids[0]), None);
        assert_eq!(
            table.get(tids[2]),
            Some(StackBounds {
                lo: 4096 * 3,
                hi: 8192 * 3
            })
        );
        assert!(table.publish(tids[0], StackBounds { lo: 1, hi: 2 }));
        assert_eq!(table.get(tids[0]), Some(StackBounds { lo: 1, hi: 2 }));
        table.clear();
        assert!(tids.iter().all(|t| table.get(*t).is_none()));
    }
}
