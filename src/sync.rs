//! The one switch between std and loom synchronisation primitives.
//!
//! Structures that really cross threads (the label registry, the sample buffer, the
//! task hooks' per-task state) take their atomics, mutexes and `Arc`s from here, so that
//! the `loom-tests/` crate can model them under `--cfg span_profiler_loom`. Process-wide
//! `static`s keep using `std` directly: loom primitives cannot live in statics, and the
//! per-thread label slot is only ever touched by its own thread and that thread's signal
//! handler, which loom cannot model (a signal is not a thread).

#[cfg(not(span_profiler_loom))]
pub(crate) use std::sync::{
    atomic::{AtomicU64, AtomicUsize},
    Arc, Mutex, MutexGuard,
};

#[cfg(span_profiler_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicU64, AtomicUsize},
    Arc, Mutex, MutexGuard,
};

/// Locks `mutex`, recovering the data if another thread panicked while holding it.
///
/// Every structure guarded this way keeps its invariants between statements that can
/// panic, so the data is still consistent after a poisoning panic; a profiler must never
/// turn one panic in the application into a second one.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// [`lock`] for a `std` mutex, also under loom: for state that loom never models (the
/// profiler handle's statistics shared with its own threads).
pub(crate) fn lock_std<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
