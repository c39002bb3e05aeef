//! Stacks walked from the current frame (the allocation profiler's entry point).
//!
//! Same walk as the handler, started from the caller's own registers instead of an
//! interrupted `ucontext`: no allocation, no lock, no system call after the thread's
//! first (its tid is cached), reentrant (a SIGPROF may interrupt it and walk too).

use super::bounds;
use super::regs::current_registers;
use super::unwind::unwind;
use super::handler::current_tid;

/// Writes the calling thread's stack into `out`, leaf first, and returns how many frames
/// it wrote. `out[0]` is a PC inside this function; later entries are return addresses.
/// Without published bounds for this thread only that first frame is written.
#[inline(never)]
pub(crate) fn stack_here(out: &mut [usize]) -> usize {
    if out.is_empty() {
        return 0;
    }
    let regs = current_registers();
    let bounds = match bounds::own() {
        Some(own) => Some(own),
        None => bounds::TABLE.get(current_tid()),
    };
    match bounds {
        Some(b) if regs.sp >= b.lo && regs.sp < b.hi => {
            // SAFETY: `b` holds this thread's current SP, so it is this thread's live
            // stack mapping (its own range, or the one the collector published for it,
            // removed only after the thread exited); it stays mapped during the call.
            unsafe { unwind(&regs, b, out) }.len
        }
        _ => {
            out[0] = regs.pc;
            1
        }
    }
}
