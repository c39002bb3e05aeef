//! The SIGPROF handler.
//!
//! # Contract (everything reachable from [`on_sigprof`])
//! - Runs on any thread, at any instruction, possibly inside `malloc`, a lock, or the
//!   collector's own drain. So it may **not** allocate, take any lock (not even
//!   `try_lock`), touch a lazily initialised thread-local, format, panic, or call a
//!   function outside signal-safety(7) or this crate's functions documented signal-safe.
//! - It uses: atomics, `const`-initialised destructor-free thread-locals of the main
//!   executable (the label slot, the cached tid, the own-stack range, the in-handler
//!   flag), `syscall(SYS_gettid)` once per thread, `clock_gettime` when handler timing is
//!   on, reads of the interrupted stack inside published bounds, and binary searches of
//!   the published unwind tables (`cfi`: a reader count, no lock).
//! - `errno` is saved on entry and restored on exit.
//! - Entry checks, in order, before reading anything else: `si_code == SI_TIMER`
//!   (ignores `kill`, `raise`, `tgkill` and `setitimer`), `si_value` equals the current
//!   session cookie, the `enabled` flag. Each refusal is counted.
//! - Stack use stays small (std's alternate signal stack is small): frames are written
//!   straight into the claimed buffer entry.
//!
//! `tests/sampler_no_alloc_*.rs` prove the first rule two ways (malloc interposition and
//! disassembly of this function and its callees).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::*};

use super::bounds::{self, StackBounds};
use super::regs::{registers, Registers};
use super::unwind;
use crate::counters::Counter;
use crate::sampler::buffer::{
    SampleBuffer, FLAG_CFI, FLAG_COMPLETE, FLAG_FP_FALLBACK, FLAG_NO_BOUNDS, FLAG_TRUNCATED,
};
use crate::sampler::SESSION_COOKIE;

/// Whether the running session records samples.
pub(crate) static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether the handler measures its own CPU time (two `clock_gettime` calls).
pub(crate) static MEASURE_CPU: AtomicBool = AtomicBool::new(false);
/// The process's one sample buffer, set once and never freed.
pub(crate) static BUFFER: AtomicPtr<SampleBuffer> = AtomicPtr::new(std::ptr::null_mut());

/// Tallies the handler keeps (process-wide, monotonically increasing).
pub(crate) struct HandlerCounters {
    /// Samples dropped: no free buffer entry.
    pub dropped_full: Counter,
    /// Samples dropped: no buffer (cannot happen once a session started).
    pub dropped_no_buffer: Counter,
    /// SIGPROF not sent by a POSIX timer (`kill`, `raise`, `setitimer`).
    pub ignored_not_timer: Counter,
    /// Timer signals carrying another cookie, or arriving while disabled.
    pub ignored_other_session: Counter,
    /// Nanoseconds of thread CPU spent inside the handler (when measured).
    pub cpu_ns: Counter,
}

/// The handler's tallies.
pub(crate) static COUNTERS: HandlerCounters = HandlerCounters {
    dropped_full: Counter::new(),
    dropped_no_buffer: Counter::new(),
    ignored_not_timer: Counter::new(),
    ignored_other_session: Counter::new(),
    cpu_ns: Counter::new(),
};

thread_local! {
    /// This thread's kernel tid, cached (0: not yet known). Reset in a forked child.
    static TID: Cell<i32> = const { Cell::new(0) };
    /// True while this thread runs the handler (read by the malloc-interposition test).
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Offsets inside the 64-bit `siginfo_t` (same on x86_64 and aarch64).
const SI_CODE_OFFSET: usize = 8;
const SI_OVERRUN_OFFSET: usize = 20;
const SI_VALUE_OFFSET: usize = 24;
/// Largest overrun count believed; beyond it the value is clamped.
const MAX_OVERRUN: i32 = 1_000_000;

/// The calling thread's kernel tid. Signal-safe (a raw syscall once per thread).
#[inline]
pub(crate) fn current_tid() -> i32 {
    // Trivial closures only: they keep `LocalKey::with` inlined, so the thread-local is
    // a direct `%fs`-relative access (checked by `tests/sampler_no_alloc_disasm.rs`).
    let cached = TID.with(Cell::get);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `gettid` has no preconditions and is async-signal-safe.
    let fresh = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    TID.with(|tid| tid.set(fresh));
    fresh
}

/// Forgets the cached tid (in a forked child, whose one thread has a new tid).
pub(crate) fn forget_tid() {
    TID.with(|tid| tid.set(0));
}

cfg_internal! {
    /// Whether the calling thread is inside the SIGPROF handler right now.
    pub fn in_handler() -> bool {
        IN_HANDLER.with(|flag| flag.get())
    }

    /// Sets the in-handler flag for a scope (tests use it as a positive control).
    pub fn set_in_handler(value: bool) {
        IN_HANDLER.with(|flag| flag.set(value));
    }
}

#[inline(always)]
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` is async-signal-safe; `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The SIGPROF handler installed with `SA_SIGINFO | SA_RESTART` (see `timers::install`).
///
/// # Safety
/// Called by the kernel only, with the `siginfo_t` and `ucontext_t` of the signal.
pub(crate) unsafe extern "C" fn on_sigprof(
    _signo: libc::c_int,
    info: *mut libc::siginfo_t,
    ucontext: *mut libc::c_void,
) {
    // SAFETY: `__errno_location` returns this thread's errno, valid for its lifetime.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved_errno = unsafe { *errno };
    IN_HANDLER.with(|flag| flag.set(true));
    let measure = MEASURE_CPU.load(Relaxed);
    let t0 = if measure { thread_cpu_ns() } else { 0 };

    // SAFETY: the kernel passes valid `siginfo_t` / `ucontext_t` pointers to an
    // SA_SIGINFO handler.
    unsafe { sample(info, ucontext) };

    if measure {
        COUNTERS.cpu_ns.add(thread_cpu_ns().wrapping_sub(t0));
    }
    IN_HANDLER.with(|flag| flag.set(false));
    // SAFETY: as above.
    unsafe { *errno = saved_errno };
}

/// # Safety
/// `info` and `ucontext` are the kernel's arguments to an `SA_SIGINFO` handler (or null).
#[inline(always)]
unsafe fn sample(info: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
    if info.is_null() || ucontext.is_null() {
        return;
    }
    let base = info as *const u8;
    // SAFETY: `si_code` is at offset 8 of every `siginfo_t` (128 bytes), aligned.
    let code = unsafe { std::ptr::read(base.add(SI_CODE_OFFSET) as *const i32) };
    if code != libc::SI_TIMER {
        COUNTERS.ignored_not_timer.incr();
        return;
    }
    // SAFETY: for SI_TIMER the timer union is valid: `si_value` at offset 24 (8 bytes).
    let value = unsafe { std::ptr::read(base.add(SI_VALUE_OFFSET) as *const u64) };
    // Relaxed (both): a stale value only makes us ignore one signal or record one
    // sample into an entry the next drain discards by cookie.
    let cookie = SESSION_COOKIE.load(Relaxed);
    if cookie == 0 || value != cookie || !ENABLED.load(Relaxed) {
        COUNTERS.ignored_other_session.incr();
        return;
    }
    // SAFETY: `si_overrun` at offset 20 of the timer union (i32).
    let overrun = unsafe { std::ptr::read(base.add(SI_OVERRUN_OFFSET) as *const i32) };
    let weight = 1 + overrun.clamp(0, MAX_OVERRUN) as u64;

    // Acquire: pairs with the Release store that published the buffer in `session`.
    let buffer = BUFFER.load(Acquire);
    if buffer.is_null() {
        COUNTERS.dropped_no_buffer.incr();
        return;
    }
    // SAFETY: the buffer is allocated once and never freed.
    let buffer = unsafe { &*buffer };
    let Some(mut claim) = buffer.claim() else {
        COUNTERS.dropped_full.incr();
        return;
    };
    let label_id = crate::sampler::slot::current();
    let tid = current_tid();
    // SAFETY: `ucontext` is the kernel's `ucontext_t` (checked non-null above).
    let regs = unsafe { registers(ucontext as *const libc::ucontext_t) };
    let bounds = stack_bounds(tid, &regs);
    claim.write(|record| {
        record.cookie = cookie;
        record.weight = weight;
        record.label_id = label_id;
        record.sp = regs.sp;
        record.tid = tid;
        match bounds {
            Some(bounds) => {
                // SAFETY: `bounds` holds `regs.sp`, so it is the interrupted thread's
                // live stack mapping (its own range, or the mapping the collector found
                // for an SP of this very thread, removed before the tid could be reused);
                // it stays mapped while this thread is stopped in its handler.
                let walk = unsafe { unwind::unwind(&regs, bounds, &mut record.frames) };
                record.len = walk.len;
                let mut flags = 0;
                if walk.truncated {
                    flags |= FLAG_TRUNCATED;
                }
                if walk.complete {
                    flags |= FLAG_COMPLETE;
                }
                if walk.cfi_frames > 0 {
                    flags |= FLAG_CFI;
                    if walk.fp_frames > 0 {
                        flags |= FLAG_FP_FALLBACK;
                    }
                }
                record.flags = flags;
            }
            None => {
                record.frames[0] = regs.pc;
                record.len = 1;
                record.flags = FLAG_NO_BOUNDS;
            }
        }
    });
    claim.publish();
}

/// The bounds to unwind in: this thread's own range, else the published one, and only
/// when the interrupted SP lies inside (not on an alternate signal stack).
#[inline(always)]
fn stack_bounds(tid: i32, regs: &Registers) -> Option<StackBounds> {
    let bounds = match bounds::own() {
        Some(own) => own,
        None => bounds::TABLE.get(tid)?,
    };
    if regs.sp >= bounds.lo && regs.sp < bounds.hi {
        Some(bounds)
    } else {
        None
    }
}
