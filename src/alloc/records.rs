//! The record buffer: sampled allocations on their way to the collector.
//!
//! A fixed array in static memory (zero pages until used, never freed, nothing to
//! allocate), many producers (any allocating thread), one drainer (the collector). Each
//! entry has a state: `FREE` -> `WRITING` (a producer claimed it with a CAS) -> `READY`
//! (published) -> `FREE` (drained). A producer probes a few entries from a shared cursor
//! and never waits: with none free the record is dropped and counted, and its weight goes
//! to [`Dropped`] so the window's totals stay unbiased.
//!
//! The states sit in their own 4 KiB array, apart from the 2.4 MiB of records: the
//! collector reads every state on each drain (every 100 ms), and stepping through the
//! records to read them touched hundreds of pages each time.
//!
//! An entry left `WRITING` by a thread that did not survive `fork()` stays claimed in the
//! child: one entry fewer, never a wait.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::*};

/// Frames kept per sampled allocation (innermost first).
pub(crate) const MAX_FRAMES: usize = 64;
/// Entries in the buffer (about 600 bytes each).
pub(crate) const CAPACITY: usize = 4096;
/// Entries a producer tries before it drops its record.
const PROBES: usize = 16;

const FREE: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// One sampled allocation.
#[derive(Clone, Copy)]
pub(crate) struct Record {
    /// Bytes requested.
    pub(crate) size: usize,
    /// Allocations this sample stands for (Poisson-corrected).
    pub(crate) objects: f64,
    /// Bytes this sample stands for (Poisson-corrected).
    pub(crate) bytes: f64,
    /// The label id in force when it was allocated (0: none).
    pub(crate) label_id: u64,
    /// Its serial in the live table, or 0 when it is not tracked there.
    pub(crate) serial: u64,
    /// Frames used in `frames`.
    pub(crate) len: usize,
    /// The stack, leaf first.
    pub(crate) frames: [usize; MAX_FRAMES],
}

impl Record {
    const EMPTY: Record = Record {
        size: 0,
        objects: 0.0,
        bytes: 0.0,
        label_id: 0,
        serial: 0,
        len: 0,
        frames: [0; MAX_FRAMES],
    };
}

/// Entry `i`'s record; `STATES[i]` says who owns it.
struct RecordCell(UnsafeCell<Record>);

// SAFETY: a record is accessed only by the one thread that owns its entry through the
// entry's state (the producer that won the `FREE -> WRITING` CAS, or the drainer after an
// Acquire load of `READY`); the state transitions order those accesses.
unsafe impl Sync for RecordCell {}

/// `FREE`, `WRITING` or `READY` per entry; only the claiming producer writes the entry's
/// record while `WRITING`, only the drainer reads it while `READY`.
static STATES: [AtomicU8; CAPACITY] = [const { AtomicU8::new(FREE) }; CAPACITY];

static RECORDS: [RecordCell; CAPACITY] =
    [const { RecordCell(UnsafeCell::new(Record::EMPTY)) }; CAPACITY];

/// Where the next producer starts probing.
static CURSOR: AtomicUsize = AtomicUsize::new(0);

/// Claims an entry, lets `fill` write the record, publishes it. False (and `fill` not
/// called) when no free entry was found. Never allocates, never waits.
pub(super) fn push(fill: impl FnOnce(&mut Record)) -> bool {
    // Relaxed: the cursor only spreads producers; the state CAS is the claim.
    let start = CURSOR.fetch_add(1, Relaxed);
    for i in 0..PROBES {
        let index = (start + i) % CAPACITY;
        let state = &STATES[index];
        // Acquire: pairs with the drainer's Release store of `FREE`, so its reads of the
        // old record are done before this producer writes.
        if state
            .compare_exchange(FREE, WRITING, Acquire, Relaxed)
            .is_ok()
        {
            // SAFETY: this thread won the claim; nobody else touches the record now.
            fill(unsafe { &mut *RECORDS[index].0.get() });
            // Release: publishes the record written above; pairs with the Acquire load
            // of `READY` in `drain`.
            state.store(READY, Release);
            return true;
        }
    }
    false
}

/// Hands every published record to `f` and frees its entry. One drainer at a time (the
/// collector thread of the one running profiler).
pub(super) fn drain(mut f: impl FnMut(&Record)) {
    for (state, record) in STATES.iter().zip(&RECORDS) {
        // Acquire: pairs with the producer's Release store of `READY`.
        if state.load(Acquire) == READY {
            // SAFETY: `READY` entries are written by nobody until freed below.
            f(unsafe { &*record.0.get() });
            // Release: our reads of the record happen before the next claim.
            state.store(FREE, Release);
        }
    }
}

/// Slots of the dropped-weight table (label ids with records dropped since the last drain).
const DROP_SLOTS: usize = 256;

struct DropSlot {
    /// Label id + 1 (0: free slot).
    key: AtomicU64,
    /// Allocations dropped, in thousandths.
    milli_objects: AtomicU64,
    bytes: AtomicU64,
}

/// The weight of records that found no free entry, per label id, until drained.
struct DropTable {
    slots: [DropSlot; DROP_SLOTS],
    /// Weight of drops that found no slot (encoded without labels).
    overflow_milli_objects: AtomicU64,
    overflow_bytes: AtomicU64,
}

static DROPS: DropTable = DropTable {
    slots: [const {
        DropSlot {
            key: AtomicU64::new(0),
            milli_objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }; DROP_SLOTS],
    overflow_milli_objects: AtomicU64::new(0),
    overflow_bytes: AtomicU64::new(0),
};

/// Adds a dropped record's weight to its label id's tally. Lock-free, no allocation.
pub(super) fn add_dropped(label_id: u64, objects: f64, bytes: f64) {
    let milli = (objects * 1000.0) as u64;
    let bytes = bytes as u64;
    let key = label_id.wrapping_add(1);
    let home = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
    for i in 0..DROP_SLOTS {
        let slot = &DROPS.slots[(home + i) % DROP_SLOTS];
        // Relaxed (all accesses here): the tallies are plain sums read by the drainer
        // with `swap`; a key is only ever compared, never used to reach other memory.
        let mut cur = slot.key.load(Relaxed);
        if cur == 0 {
            cur = match slot.key.compare_exchange(0, key, Relaxed, Relaxed) {
                Ok(_) => key,
                Err(actual) => actual,
            };
        }
        if cur == key {
            slot.milli_objects.fetch_add(milli, Relaxed);
            slot.bytes.fetch_add(bytes, Relaxed);
            return;
        }
    }
    DROPS.overflow_milli_objects.fetch_add(milli, Relaxed);
    DROPS.overflow_bytes.fetch_add(bytes, Relaxed);
}

/// The collector's side of the dropped-weight table: hands each label id's dropped
/// (objects, bytes) since the last call to `f`, and frees slots idle for two drains.
pub(crate) struct DropDrainer {
    idle: [u8; DROP_SLOTS],
}

impl Default for DropDrainer {
    fn default() -> Self {
        Self {
            idle: [0; DROP_SLOTS],
        }
    }
}

impl DropDrainer {
    pub(super) fn drain(&mut self, mut f: impl FnMut(u64, f64, f64)) {
        for (i, slot) in DROPS.slots.iter().enumerate() {
            // Relaxed: see `add_dropped`.
            let key = slot.key.load(Relaxed);
            if key == 0 {
                continue;
            }
            let milli = slot.milli_objects.swap(0, Relaxed);
            let bytes = slot.bytes.swap(0, Relaxed);
            if milli != 0 || bytes != 0 {
                self.idle[i] = 0;
                f(key - 1, milli as f64 / 1000.0, bytes as f64);
            } else {
                self.idle[i] = self.idle[i].saturating_add(1);
                if self.idle[i] >= 2 {
                    // A producer that read this key more than two drains ago and adds
                    // only now would land in the next owner's tally: a stall of over
                    // 200 ms inside two instructions, accepted.
                    let _ = slot.key.compare_exchange(key, 0, Relaxed, Relaxed);
                    self.idle[i] = 0;
                }
            }
        }
        let milli = DROPS.overflow_milli_objects.swap(0, Relaxed);
        let bytes = DROPS.overflow_bytes.swap(0, Relaxed);
        if milli != 0 || bytes != 0 {
            f(0, milli as f64 / 1000.0, bytes as f64);
        }
    }
}
