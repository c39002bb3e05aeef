//! Process-wide event counters and the log-once helper.
//!
//! Everything the profiler drops, cuts or refuses is counted here and shown by
//! `Profiler::stats()`; nothing is lost silently. Counters are plain `Relaxed` atomics:
//! each is an independent tally read for reporting only, never used to order other
//! memory accesses.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// One monotonically increasing tally.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `n`. Relaxed: an independent tally, see the module docs.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub(crate) fn incr(&self) {
        self.add(1);
    }

    /// Current value. Relaxed: an independent tally, see the module docs.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Label-related tallies (the registry, `Labels::with`, span lookups).
#[derive(Debug)]
pub(crate) struct LabelCounters {
    /// `.with()` pairs dropped because the key was reserved or invalid.
    pub(crate) rejected_pairs: Counter,
    /// Values cut to the server's 2048-byte limit.
    pub(crate) truncated_values: Counter,
}

pub(crate) static LABELS: LabelCounters = LabelCounters {
    rejected_pairs: Counter::new(),
    truncated_values: Counter::new(),
};

/// A flag that lets a message be logged once per process.
#[derive(Debug)]
pub(crate) struct LogOnce(AtomicBool);

impl LogOnce {
    pub(crate) const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    /// True the first time it is called, false afterwards. Relaxed: only this flag's own
    /// value matters; no other memory is published through it.
    pub(crate) fn first(&self) -> bool {
        !self.0.swap(true, Relaxed)
    }
}
