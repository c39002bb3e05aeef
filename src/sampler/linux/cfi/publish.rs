//! The published tables: one atomic pointer the handler reads, and a count of readers
//! inside a walk, so that replaced tables are freed only once no reader can hold them.
//!
//! Readers ([`with_tables`]) increment `READERS`, load `TABLES`, walk, decrement. The
//! collector ([`Publisher`]) swaps in new tables and keeps the old ones until it sees
//! `READERS == 0` *after* the swap: a reader that loaded the old pointer had
//! incremented before its load, so it is still counted until it is done. This needs the
//! store-load order of both sides (a reader's increment before its load, the
//! collector's swap before its check), which only `SeqCst` gives.
//!
//! Reentrant: a nested signal (or the allocation profiler's walk interrupted by
//! SIGPROF) just counts twice. Nothing here allocates, locks or makes a system call on
//! the reader side.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::SeqCst};

use super::table::Tables;

/// The tables the handler uses (null: none yet). Only [`Publisher`] stores it.
static TABLES: AtomicPtr<Tables> = AtomicPtr::new(std::ptr::null_mut());
/// Readers inside [`with_tables`] right now, process-wide.
static READERS: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` with the published tables (or `None`). Signal-safe and reentrant.
#[inline(always)]
pub(crate) fn with_tables<R>(f: impl FnOnce(Option<&Tables>) -> R) -> R {
    // SeqCst: this increment must be ordered before the load of TABLES below; pairs
    // with the SeqCst swap and the SeqCst load of READERS in `Publisher::reclaim`.
    READERS.fetch_add(1, SeqCst);
    // SeqCst: see above.
    let ptr = TABLES.load(SeqCst);
    // SAFETY: a non-null pointer came from `Box::into_raw` in `Publisher::publish` and
    // is freed only after READERS was seen at 0 following its replacement; this
    // reader is counted in READERS until after its last use below.
    let result = f(unsafe { ptr.as_ref() });
    // Release: the reads of the tables above happen before the collector's SeqCst load
    // that sees this decrement and frees them.
    READERS.fetch_sub(1, std::sync::atomic::Ordering::Release);
    result
}

/// The collector's side: publishes tables and frees replaced ones after the grace.
/// One per process (tables outlive sessions so that the next start can reuse them).
#[derive(Default)]
pub(crate) struct Publisher {
    /// Replaced tables some reader may still hold. Boxes: each was published as a
    /// `Box::into_raw` pointer and is freed as that same allocation.
    #[allow(clippy::vec_box)]
    retired: Vec<Box<Tables>>,
}

impl Publisher {
    /// Makes `tables` the ones readers see; the previous ones wait for the grace.
    pub(crate) fn publish(&mut self, tables: Tables) {
        let fresh = Box::into_raw(Box::new(tables));
        // SeqCst: pairs with the SeqCst increment and load in `with_tables`, ordered
        // before the READERS check in `reclaim`.
        let old = TABLES.swap(fresh, SeqCst);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` above (an earlier publish) and is
            // no longer reachable through TABLES; it is freed once, by `reclaim`.
            self.retired.push(unsafe { Box::from_raw(old) });
        }
        self.reclaim();
    }

    /// Frees retired tables if no reader is inside a walk now. Called on every tick.
    pub(crate) fn reclaim(&mut self) {
        // SeqCst: after the swap in `publish`; pairs with the reader's SeqCst
        // increment (and Release decrement) in `with_tables`.
        if !self.retired.is_empty() && READERS.load(SeqCst) == 0 {
            self.retired.clear();
        }
    }

    /// Bytes of rows in retired tables not freed yet.
    pub(crate) fn retired_bytes(&self) -> usize {
        self.retired.iter().map(|t| t.bytes()).sum()
    }
}

/// Runs `f` with the published tables outside a signal handler (tests, stats).
pub(crate) fn published_bytes() -> usize {
    with_tables(|t| t.map_or(0, Tables::bytes))
}
