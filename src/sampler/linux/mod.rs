//! The sampler on Linux x86_64 / aarch64.
//!
//! - `slot` (in the parent): the label id the handler reads.
//! - `handler`: the SIGPROF handler and its contract.
//! - `unwind`: the unwinder trait, the frame-pointer and the DWARF unwinders.
//! - `cfi`: unwind tables compiled from `.eh_frame`, their publication and the walk.
//! - `bounds`: stack bounds published for the handler.
//! - `timers`: `timer_create` / `sigaction`.
//! - `procfs`: thread discovery, `SigBlk`, `/proc/self/maps`.
//! - `session`: [`Sampler`](session::Sampler): start, drain, stats, stop.
//! - `scan`: the collector's periodic work (disposition, thread scan, bounds).
//! - `armed`: the armed-timer registry; threads that arm themselves.
//! - `fork`: the forked child's inert sampler.
//! - `here`: stacks walked from the current frame (allocation samples).

pub(crate) mod armed;
pub(super) mod bounds;
pub(super) mod cfi;
pub(super) mod fork;
pub(super) mod handler;
pub(crate) mod here;
pub(super) mod procfs;
pub(super) mod regs;
pub(super) mod scan;
pub(super) mod session;
pub(super) mod timers;
pub(super) mod unwind;

use std::sync::atomic::AtomicBool;

/// One session at a time per process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// This process's id.
fn pid() -> i32 {
    // SAFETY: `getpid` has no preconditions.
    unsafe { libc::getpid() }
}
