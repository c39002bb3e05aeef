//! fork(): the child of a profiled process gets an inert sampler.
//!
//! The child has one thread and none of the parent's timers; it must neither sample nor
//! touch state that a thread that does not exist in the child may hold locked.

use std::io;
use std::sync::atomic::Ordering::*;

use super::armed::ARMED;
use super::handler::{self, ENABLED};
use super::RUNNING;
use crate::sampler::SESSION_COOKIE;

/// Registers [`atfork_child`] once per process.
pub(super) fn register() -> io::Result<()> {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    let mut rc = 0;
    ATFORK.call_once(|| {
        // SAFETY: registers a child handler that only stores atomics and a thread-local.
        rc = unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    });
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// `pthread_atfork` child handler: the child has one thread and none of our timers; it
/// must neither sample nor touch state that a vanished thread may hold locked.
extern "C" fn atfork_child() {
    ENABLED.store(false, Relaxed);
    SESSION_COOKIE.store(0, Relaxed);
    ARMED.store(std::ptr::null_mut(), Relaxed);
    handler::forget_tid();
    // Release: the stores above happen before a later `start` in the child.
    RUNNING.store(false, Release);
}
