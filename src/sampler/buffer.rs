//! The sample buffer: a fixed array of entries that signal handlers on any thread fill and
//! the collector empties. Lock-free, many producers, any number of drainers.
//!
//! Each entry has a state word that moves `EMPTY -> WRITING -> FULL -> READING -> EMPTY`.
//! The state words sit together in their own array, apart from the records (about 1 KiB
//! each): a drain reads every state word, and scanning 32 KiB of them costs a few
//! microseconds where stepping through 4 MiB of records touched a cache line on every
//! fourth of a thousand pages, every 100 ms.
//! A producer (a signal handler) claims an `EMPTY` entry with a CAS, writes its record
//! straight into it (the unwinder writes the frames in place, so the handler needs no
//! stack buffer), then publishes it as `FULL`. A drainer claims a `FULL` entry with a CAS,
//! reads it and hands it back as `EMPTY`. Nobody ever waits: a producer that finds no
//! `EMPTY` entry among its probes drops the sample and the caller counts it; a drainer
//! skips entries that are still being written and takes them on its next pass.
//!
//! The process allocates one buffer on the first `start()` and never frees it, so a
//! handler still running on another thread while `stop()` runs never touches freed
//! memory. Records carry the session cookie, so the next session discards what an
//! earlier one left behind.
//!
//! The type takes its atomics and cell from `crate::sync` / loom, so `loom-tests/` can
//! model it with a small capacity.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::sync::{AtomicU64, AtomicUsize};

/// Frames kept per sample; deeper stacks are cut (and flagged) at this depth.
pub const MAX_FRAMES: usize = 128;

/// How many entries a producer looks at before it gives up and drops its sample.
const MAX_PROBES: usize = 64;

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const FULL: u64 = 2;
const READING: u64 = 3;

// Set by the handler, read by the collector: both only where the sampler runs.
cfg_sampler! {
    /// Record flag: the thread had no published stack bounds (or its SP lay outside them),
    /// so only the leaf PC was recorded; `sp` tells the collector where the stack is.
    pub(crate) const FLAG_NO_BOUNDS: u32 = 1;
    /// Record flag: the walk was longer than `MAX_FRAMES` (middle frames dropped).
    pub(crate) const FLAG_TRUNCATED: u32 = 2;
    /// Record flag: at least one frame was unwound by call-frame information.
    pub(crate) const FLAG_CFI: u32 = 4;
    /// Record flag: a frame without a usable CFI rule took a frame-pointer step.
    pub(crate) const FLAG_FP_FALLBACK: u32 = 8;
    /// Record flag: the walk reached the outermost frame.
    pub(crate) const FLAG_COMPLETE: u32 = 16;
}

/// One recorded sample, as written by a handler.
#[derive(Clone, Copy)]
pub struct Record {
    /// Session cookie of the handler that wrote it.
    pub cookie: u64,
    /// 1 + timer overruns.
    pub weight: u64,
    /// Label id read from the thread's label slot.
    pub label_id: u64,
    /// Interrupted stack pointer.
    pub sp: usize,
    /// Kernel thread id.
    pub tid: i32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Valid entries in `frames`.
    pub len: usize,
    /// `frames[0]` is the interrupted PC, then return addresses, callers in order.
    pub frames: [usize; MAX_FRAMES],
}

impl Record {
    const ZERO: Record = Record {
        cookie: 0,
        weight: 0,
        label_id: 0,
        sp: 0,
        tid: 0,
        flags: 0,
        len: 0,
        frames: [0; MAX_FRAMES],
    };

    /// The valid frames.
    pub fn frames(&self) -> &[usize] {
        match self.frames.get(..self.len) {
            Some(frames) => frames,
            None => &self.frames,
        }
    }
}

#[cfg(not(span_profiler_loom))]
mod cell {
    /// `UnsafeCell` with loom's closure-based access API.
    pub(super) struct Cell<T>(std::cell::UnsafeCell<T>);

    impl<T> Cell<T> {
        pub(super) fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(span_profiler_loom)]
mod cell {
    pub(super) use loom::cell::UnsafeCell as Cell;
}

/// A fixed-capacity, lock-free sample buffer (many producers, any number of drainers).
/// Entry `i` is `states[i]` and `records[i]`.
pub struct SampleBuffer {
    /// `EMPTY`, `WRITING`, `FULL` or `READING`. Only the owner of the current state moves
    /// it on: a producer owns `WRITING`, a drainer owns `READING`.
    states: Box<[AtomicU64]>,
    /// Written only by the producer that holds the entry's `WRITING`, read only by the
    /// drainer that holds its `READING`. As long as `states`.
    records: Box<[cell::Cell<Record>]>,
    /// `states.len() - 1`; the length is a power of two.
    mask: usize,
    /// Where the next producer starts probing (wraps). Spreads producers over the entries.
    cursor: AtomicUsize,
}

// SAFETY: an entry's record is only accessed by the one thread that moved its `state`
// into `WRITING` or `READING` with a CAS; the Release store that leaves that state and
// the Acquire CAS that enters the next one order the accesses (see `Claim::publish` and
// `drain`). Everything else is atomic.
unsafe impl Sync for SampleBuffer {}
// SAFETY: the buffer owns plain data and atomics; nothing is tied to a thread.
unsafe impl Send for SampleBuffer {}

impl SampleBuffer {
    /// A buffer of at least `capacity` entries (rounded up to a power of two, at least 2).
    pub fn new(capacity: usize) -> Self {
        let len = capacity
            .max(2)
            .checked_next_power_of_two()
            .unwrap_or(1 << 20);
        let states = (0..len).map(|_| AtomicU64::new(EMPTY)).collect();
        let records = (0..len).map(|_| cell::Cell::new(Record::ZERO)).collect();
        Self {
            states,
            records,
            mask: len - 1,
            cursor: AtomicUsize::new(0),
        }
    }

    cfg_internal! {
        /// Number of entries.
        pub fn capacity(&self) -> usize {
            self.states.len()
        }
    }

    /// Claims an empty entry for writing, or `None` when none was found (the buffer is
    /// full): the caller counts the drop. Signal-safe: atomics only, bounded probes.
    #[inline]
    pub fn claim(&self) -> Option<Claim<'_>> {
        // Relaxed: the cursor only spreads producers; entry ownership is decided by the
        // CAS on the entry's state.
        let start = self.cursor.fetch_add(1, Relaxed);
        let probes = if MAX_PROBES < self.states.len() {
            MAX_PROBES
        } else {
            self.states.len()
        };
        for i in 0..probes {
            let index = start.wrapping_add(i) & self.mask;
            let (Some(state), Some(record)) = (self.states.get(index), self.records.get(index))
            else {
                return None;
            };
            // Relaxed: a cheap pre-check that saves a cache-line write; the CAS below
            // decides. Left out of the loom model: loom explores no alternative schedule
            // behind a relaxed pre-check (its models then ran once), and skipping the CAS
            // after a stale pre-check is the same outcome as a failed CAS.
            #[cfg(not(span_profiler_loom))]
            if state.load(Relaxed) != EMPTY {
                continue;
            }
            // Acquire: pairs with the Release store of EMPTY in `drain`, so the drainer's
            // reads of the old record happen before our writes.
            if state
                .compare_exchange(EMPTY, WRITING, Acquire, Relaxed)
                .is_ok()
            {
                return Some(Claim { state, record });
            }
        }
        None
    }

    /// Takes every published record out of the buffer, calling `f` on each. Entries still
    /// being written are left for the next call. Returns the number of records taken.
    pub fn drain(&self, mut f: impl FnMut(&Record)) -> usize {
        let mut taken = 0;
        for (state, record) in self.states.iter().zip(self.records.iter()) {
            // Relaxed: a cheap pre-check; the CAS below decides (not modelled: see `claim`).
            #[cfg(not(span_profiler_loom))]
            if state.load(Relaxed) != FULL {
                continue;
            }
            // Acquire: pairs with the Release store of FULL in `Claim::publish`, making
            // the producer's record visible.
            if state
                .compare_exchange(FULL, READING, Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: we hold READING; no producer writes this entry until we store EMPTY.
            record.with(|record| f(unsafe { &*record }));
            // Release: our reads above happen before the next producer's writes; pairs
            // with the Acquire CAS in `claim`.
            state.store(EMPTY, Release);
            taken += 1;
        }
        taken
    }
}

/// An entry held in the `WRITING` state. Dropping it without [`Claim::publish`] hands the
/// entry back empty.
pub struct Claim<'a> {
    state: &'a AtomicU64,
    record: &'a cell::Cell<Record>,
}

impl Claim<'_> {
    /// Gives `f` the entry's record to fill in place.
    #[inline(always)]
    pub fn write<R>(&mut self, f: impl FnOnce(&mut Record) -> R) -> R {
        // SAFETY: we hold WRITING (claimed with an Acquire CAS); no one else touches the
        // record until we publish or release it, and `&mut self` prevents overlapping
        // borrows through this claim.
        self.record.with_mut(|record| f(unsafe { &mut *record }))
    }

    /// Publishes the record for the drainer.
    #[inline]
    pub fn publish(self) {
        // Release: makes the record written above visible to the drainer's Acquire CAS.
        self.state.store(FULL, Release);
        std::mem::forget(self);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Release: our (partial) writes happen before the next owner's; pairs with the
        // Acquire CAS in `claim`.
        self.state.store(EMPTY, Release);
    }
}

#[cfg(all(test, not(span_profiler_loom)))]
mod tests {
    use super::*;

    fn push(buffer: &SampleBuffer, label: u64, frames: &[usize]) -> bool {
        let Some(mut claim) = buffer.claim() else {
            return false;
        };
        claim.write(|r| {
            r.label_id = label;
            r.len = frames.len();
            r.frames[..frames.len()].copy_from_slice(frames);
        });
        claim.publish();
        true
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(SampleBuffer::new(0).capacity(), 2);
        assert_eq!(SampleBuffer::new(5).capacity(), 8);
        assert_eq!(SampleBuffer::new(1024).capacity(), 1024);
    }

    #[test]
    fn a_full_buffer_refuses_claims_until_drained() {
        let buffer = SampleBuffer::new(4);
        for i in 0..4 {
            assert!(push(&buffer, i, &[i as usize]));
        }
        assert!(!push(&buffer, 9, &[9]));
        let mut seen = Vec::new();
        assert_eq!(
            buffer.drain(|r| seen.push((r.label_id, r.frames().to_vec()))),
            4
        );
        seen.sort();
        assert_eq!(
            seen,
            (0..4).map(|i| (i, vec![i as usize])).collect::<Vec<_>>()
        );
        assert!(push(&buffer, 5, &[5]));
        assert_eq!(buffer.drain(|_| {}), 1);
    }

    #[test]
    fn an_unpublished_claim_is_neither_drained_nor_lost() {
        let buffer = SampleBuffer::new(2);
        let claim = buffer.claim().expect("empty buffer");
        assert_eq!(buffer.drain(|_| {}), 0);
        drop(claim);
        assert!(push(&buffer, 1, &[1]));
        assert!(push(&buffer, 2, &[2]));
        assert_eq!(buffer.drain(|_| {}), 2);
    }

    #[test]
    fn producers_on_many_threads_lose_nothing_that_was_not_counted() {
        let buffer = std::sync::Arc::new(SampleBuffer::new(64));
        let drained = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drainer = {
            let (buffer, drained, stop) = (buffer.clone(), drained.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Acquire) {
                    buffer.drain(|r| {
                        assert_eq!(r.frames(), &[r.label_id as usize; 3]);
                        drained.fetch_add(1, Relaxed);
                    });
                }
            })
        };
        // Miri runs a few hundred interleavings, not 80,000 pushes.
        let pushes = if cfg!(miri) { 200 } else { 20_000u64 };
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let buffer = buffer.clone();
                std::thread::spawn(move || {
                    let mut dropped = 0u64;
                    for i in 0..pushes {
                        let label = t * 1_000_000 + i;
                        if !push(&buffer, label, &[label as usize; 3]) {
                            dropped += 1;
                        }
                    }
                    dropped
                })
            })
            .collect();
        let dropped: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        stop.store(true, Release);
        drainer.join().unwrap();
        buffer.drain(|_| {
            drained.fetch_add(1, Relaxed);
        });
        assert_eq!(drained.load(Relaxed) + dropped, 4 * pushes);
    }
}
