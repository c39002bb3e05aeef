//! The per-thread label slot: the one place the signal handler reads labels from, and the
//! sampler's first input (the data flow starts here).
//!
//! Each thread has one `const`-initialised thread-local holding the label id in force on
//! it (0 = none). The type has no destructor, so the thread-local needs no lazy
//! initialisation and no destructor registration: in the main executable it is at a
//! fixed offset from the thread pointer and safe to read from a signal handler.
//!
//! Only *scoped* sources write the slot, and each restores the previous value before it
//! returns ([`SlotGuard`]): the future wrapper around each poll and drop, the Tokio poll hooks,
//! the tracing layer, the sync guard. The writer and the handler that reads run on the
//! same thread, so `Relaxed` accesses ordered by `compiler_fence` suffice: a signal
//! interrupts the thread between two instructions, and the fences stop the compiler from
//! moving the slot write across the code it brackets.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};

/// One thread's slot and the flag beside it.
struct SlotCell {
    /// The label id in force on this thread; read by this thread's signal handler.
    id: AtomicU64,
    /// The sampler session this thread last asked to be armed for (0: never).
    armed_session: Cell<u64>,
}

thread_local! {
    static SLOT: SlotCell = const {
        SlotCell { id: AtomicU64::new(0), armed_session: Cell::new(0) }
    };
}

/// Writes `id` into this thread's slot and returns the previous value.
#[inline]
pub(crate) fn replace(id: u64) -> u64 {
    SLOT.with(|slot| {
        // Relaxed: only this thread and its own signal handler touch the slot.
        let prev = slot.id.load(Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        slot.id.store(id, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        if id != 0 {
            arm_once(slot);
        }
        prev
    })
}

/// The label id in force on this thread.
///
/// Signal-safe: a `Relaxed` load of a `const`-initialised, destructor-free thread-local.
#[inline]
pub(crate) fn current() -> u64 {
    // Relaxed: see `replace`.
    SLOT.with(|slot| slot.id.load(Ordering::Relaxed))
}

/// Arms the calling thread's timer now if a sampler session runs and this thread has not
/// asked for it in this session (the public `arm_current_thread`).
pub(crate) fn arm_now() {
    SLOT.with(arm_once);
}

/// Asks for this thread's timer once per sampler session: the first label write of a
/// session, or [`arm_now`].
#[inline]
fn arm_once(slot: &SlotCell) {
    // Relaxed: a hint; a thread that misses a session start is found by the sampler's
    // next discovery scan instead.
    let session = super::SESSION_COOKIE.load(Ordering::Relaxed);
    if session != 0 && slot.armed_session.get() != session {
        slot.armed_session.set(session);
        arm_this_thread(session);
    }
}

#[cold]
#[inline(never)]
fn arm_this_thread(session: u64) {
    super::arm_current_thread(session);
}

/// Sets the slot for a lexical scope and restores the previous id when dropped, also
/// during panic unwinding.
///
/// `!Send`: it must be dropped on the thread whose slot it wrote.
#[must_use = "the labels are restored as soon as the scope is dropped"]
pub(crate) struct SlotGuard {
    prev: u64,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl SlotGuard {
    #[inline]
    pub(crate) fn enter(id: u64) -> Self {
        Self {
            prev: replace(id),
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for SlotGuard {
    #[inline]
    fn drop(&mut self) {
        replace(self.prev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current(), 0);
        {
            let _outer = SlotGuard::enter(7);
            assert_eq!(current(), 7);
            {
                let _inner = SlotGuard::enter(9);
                assert_eq!(current(), 9);
            }
            assert_eq!(current(), 7);
        }
        assert_eq!(current(), 0);
    }

    #[test]
    fn a_panic_inside_a_scope_restores_the_slot() {
        let _outer = SlotGuard::enter(3);
        let result = std::panic::catch_unwind(|| {
            let _inner = SlotGuard::enter(4);
            panic!("boom");
        });
        assert!(result.is_err());
        assert_eq!(current(), 3);
    }

    #[test]
    fn each_thread_has_its_own_slot() {
        let _s = SlotGuard::enter(11);
        std::thread::spawn(|| assert_eq!(current(), 0))
            .join()
            .unwrap();
        assert_eq!(current(), 11);
    }
}
