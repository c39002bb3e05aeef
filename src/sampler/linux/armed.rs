//! The armed-timer registry: which thread has which timer in the running session.
//!
//! Shared by the collector's scans and by application threads that arm their own timer
//! on their first label write, so it sits behind one mutex that only normal code takes,
//! never the handler. The handler sees only atomics: the cookie, the enabled flag, the
//! buffer pointer and the bounds table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, Ordering::*};
use std::sync::Mutex;

use super::bounds::{self, StackBounds};
use super::handler;
use super::timers::{self, ArmError, TimerId};
use crate::counters::LogOnce;
use crate::sampler::SESSION_COOKIE;
use crate::sync::lock;

static LOG_EAGAIN: LogOnce = LogOnce::new();
static LOG_ARM_FAILED: LogOnce = LogOnce::new();

/// Timers of the running session. Touched by the collector and by threads arming
/// themselves, never by the handler.
pub(super) struct Armed {
    /// Cookie of the session these timers belong to (0: none).
    pub(super) cookie: u64,
    pub(super) interval_ns: u64,
    /// False once our handler was replaced: nobody arms any more.
    pub(super) arming: bool,
    pub(super) threads: HashMap<i32, ArmedThread>,
    pub(super) armed_by_thread: u64,
    pub(super) arm_failures_eagain: u64,
    pub(super) arm_failures_other: u64,
}

pub(super) struct ArmedThread {
    /// `None` for a thread that armed itself and was not scanned yet.
    pub(super) starttime: Option<u64>,
    pub(super) timer: TimerId,
}

/// The shared [`Armed`]. Allocated once, never freed; a forked child drops its pointer
/// (the parent's copy may be locked by a thread that does not exist in the child) and
/// allocates a fresh one if it starts a session.
pub(super) static ARMED: AtomicPtr<Mutex<Armed>> = AtomicPtr::new(std::ptr::null_mut());

pub(super) fn armed() -> Option<&'static Mutex<Armed>> {
    // Acquire: pairs with the Release store in `armed_or_init`.
    let ptr = ARMED.load(Acquire);
    // SAFETY: a non-null pointer came from `Box::leak` and is never freed.
    (!ptr.is_null()).then(|| unsafe { &*ptr })
}

/// Only called by `start`, which `RUNNING` serialises.
pub(super) fn armed_or_init() -> &'static Mutex<Armed> {
    if let Some(armed) = armed() {
        return armed;
    }
    let fresh: &'static Mutex<Armed> = Box::leak(Box::new(Mutex::new(Armed {
        cookie: 0,
        interval_ns: 0,
        arming: false,
        threads: HashMap::new(),
        armed_by_thread: 0,
        arm_failures_eagain: 0,
        arm_failures_other: 0,
    })));
    // Release: publishes the initialised mutex; pairs with the Acquire load in `armed`.
    ARMED.store(fresh as *const _ as *mut _, Release);
    fresh
}

/// Logs (once per process and kind) why a timer could not be created. Called outside
/// the registry's lock: a logger may write labels, which can arm a thread, which takes it.
pub(super) fn log_arm_error(tid: i32, err: &ArmError) {
    match err {
        ArmError::Again if LOG_EAGAIN.first() => log::warn!(
            "span-profiler: cannot create a CPU timer for thread {tid} (EAGAIN): the \
             RLIMIT_SIGPENDING limit is reached; raise `ulimit -i` to sample every thread"
        ),
        ArmError::Other(err) if LOG_ARM_FAILED.first() => {
            log::warn!("span-profiler: cannot create a CPU timer for a thread: {err}")
        }
        _ => {}
    }
}

/// This thread's stack range from `pthread_getattr_np` (normal context only: it may
/// allocate and, on the main thread, read `/proc/self/maps`).
fn own_stack_bounds() -> Option<StackBounds> {
    // SAFETY: zero is a valid placeholder; `pthread_getattr_np` initialises it.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: `pthread_self()` is this live thread; `attr` is a valid out-pointer.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) } != 0 {
        return None;
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised above; valid out-pointers.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    // SAFETY: `attr` was initialised by `pthread_getattr_np` and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    let lo = addr as usize;
    (rc == 0 && size > 0).then(|| StackBounds {
        lo,
        hi: lo.saturating_add(size),
    })
}

/// Called on a thread's first label write of a sampler session: arms the thread's own
/// timer (and records its stack range) unless the sampler already did.
pub(crate) fn arm_current_thread(session: u64) {
    // Relaxed: a hint; see `start_locked`.
    if session == 0 || SESSION_COOKIE.load(Relaxed) != session {
        return;
    }
    // The range goes in before the timer exists, so the first signal can unwind.
    if !bounds::has_own() {
        if let Some(own) = own_stack_bounds() {
            bounds::set_own(own);
        }
    }
    let tid = handler::current_tid();
    let Some(armed) = armed() else { return };
    let result = {
        let mut armed = lock(armed);
        if armed.cookie != session || !armed.arming || armed.threads.contains_key(&tid) {
            return;
        }
        let result = timers::arm(tid, session, armed.interval_ns);
        match &result {
            Ok(timer) => {
                armed.threads.insert(
                    tid,
                    ArmedThread {
                        starttime: None,
                        timer: *timer,
                    },
                );
                armed.armed_by_thread += 1;
            }
            Err(ArmError::Gone) => {}
            Err(ArmError::Again) => armed.arm_failures_eagain += 1,
            Err(ArmError::Other(_)) => armed.arm_failures_other += 1,
        }
        result
    };
    if let Err(err) = &result {
        log_arm_error(tid, err);
    }
}
