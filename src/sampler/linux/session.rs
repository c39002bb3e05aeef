//! One sampler session: start, the collector's `maintain` / `drain`, stop; threads that
//! arm themselves; fork.
//!
//! State shared with application threads (which arm their own timer on their first label
//! write) sits in one mutex-guarded [`Armed`] that only normal code touches, never the
//! handler. The handler sees only atomics: the cookie, the enabled flag, the buffer
//! pointer and the bounds table.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering::*};
use std::sync::Mutex;

use super::bounds::{self, StackBounds, TABLE};
use super::handler::{self, thread_cpu_ns, BUFFER, COOKIE, COUNTERS, ENABLED, MEASURE_CPU};
use super::procfs;
use super::timers::{self, ArmError, Disposition, TimerId};
use crate::counters::Once;
use crate::labels::slot::SAMPLER_SESSION;
use crate::sampler::buffer::{SampleBuffer, FLAG_NO_BOUNDS, FLAG_TRUNCATED};
use crate::sampler::{RawSample, SamplerConfig, SamplerStats, MAX_SAMPLE_RATE_HZ};
use crate::sync::lock;
use crate::{BuildError, StartError};

/// One session at a time per process.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Makes successive cookies differ even within one clock tick.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

static LOG_EAGAIN: Once = Once::new();
static LOG_ARM_FAILED: Once = Once::new();
static LOG_REPLACED: Once = Once::new();
static LOG_BLOCKED: Once = Once::new();

/// How often (in scans) every armed thread's `SigBlk` is re-read.
const BLOCKED_CHECK_EVERY: u64 = 10;
/// Most SP reports kept between two `maintain` calls.
const MAX_PENDING_REPORTS: usize = 4096;

/// Timers of the running session. Touched by the collector and by threads arming
/// themselves, never by the handler.
struct Armed {
    /// Cookie of the session these timers belong to (0: none).
    cookie: u64,
    interval_ns: u64,
    /// False once our handler was replaced: nobody arms any more.
    arming: bool,
    threads: HashMap<i32, ArmedThread>,
    armed_by_thread: u64,
    arm_failures_eagain: u64,
    arm_failures_other: u64,
}

struct ArmedThread {
    /// `None` for a thread that armed itself and was not scanned yet.
    starttime: Option<u64>,
    timer: TimerId,
}

/// The shared [`Armed`]. Allocated once, never freed; a forked child drops its pointer
/// (the parent's copy may be locked by a thread that does not exist in the child) and
/// allocates a fresh one if it starts a session.
static ARMED: AtomicPtr<Mutex<Armed>> = AtomicPtr::new(std::ptr::null_mut());

fn armed() -> Option<&'static Mutex<Armed>> {
    // Acquire: pairs with the Release store in `armed_or_init`.
    let ptr = ARMED.load(Acquire);
    // SAFETY: a non-null pointer came from `Box::leak` and is never freed.
    (!ptr.is_null()).then(|| unsafe { &*ptr })
}

/// Only called by `start`, which `RUNNING` serialises.
fn armed_or_init() -> &'static Mutex<Armed> {
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

fn pid() -> i32 {
    // SAFETY: `getpid` has no preconditions.
    unsafe { libc::getpid() }
}

fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `pthread_atfork` child handler: the child has one thread and none of our timers; it
/// must neither sample nor touch state that a vanished thread may hold locked.
extern "C" fn atfork_child() {
    ENABLED.store(false, Relaxed);
    COOKIE.store(0, Relaxed);
    SAMPLER_SESSION.store(0, Relaxed);
    ARMED.store(std::ptr::null_mut(), Relaxed);
    handler::forget_tid();
    // Release: the stores above happen before a later `start` in the child.
    RUNNING.store(false, Release);
}

/// Handler counters at session start, to report per-session deltas.
#[derive(Clone, Copy)]
struct HandlerSnapshot {
    dropped_full: u64,
    dropped_no_buffer: u64,
    ignored_not_timer: u64,
    ignored_other_session: u64,
    cpu_ns: u64,
}

impl HandlerSnapshot {
    fn now() -> Self {
        Self {
            dropped_full: COUNTERS.dropped_full.get(),
            dropped_no_buffer: COUNTERS.dropped_no_buffer.get(),
            ignored_not_timer: COUNTERS.ignored_not_timer.get(),
            ignored_other_session: COUNTERS.ignored_other_session.get(),
            cpu_ns: COUNTERS.cpu_ns.get(),
        }
    }
}

/// The running sampler session (one per process).
///
/// The collector calls [`maintain`](Self::maintain) and [`drain`](Self::drain) about
/// every 100 ms. Dropping it stops the session like [`stop`](Self::stop).
pub struct Sampler {
    /// The process that started the session; in a forked child every method is inert.
    pid: i32,
    cookie: u64,
    interval_ns: u64,
    buffer: &'static SampleBuffer,
    stopped: bool,
    /// SP reports (tid -> SP) of leaf-only samples, resolved to bounds by `maintain`.
    pending_sp: HashMap<i32, usize>,
    /// Tids whose bounds we published.
    published: HashSet<i32>,
    /// Armed tids with SIGPROF blocked.
    blocked: HashSet<i32>,
    buf: Vec<u8>,
    replaced: bool,
    stats: SamplerStats,
    base: HandlerSnapshot,
    process_cpu_start: u64,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("cookie", &format_args!("{:#x}", self.cookie))
            .field("interval_ns", &self.interval_ns)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// Starts sampling every thread of the process.
    ///
    /// Fails with `AlreadyRunning` while another session runs, `UnsupportedTlsModel` when
    /// this crate is in a `dlopen`ed library, `ForeignSignalHandler` when another SIGPROF
    /// handler is installed, `Build` for an out-of-range rate, `Os` when a system call
    /// fails.
    pub fn start(config: SamplerConfig) -> Result<Sampler, StartError> {
        if config.sample_rate_hz == 0 || config.sample_rate_hz > MAX_SAMPLE_RATE_HZ {
            return Err(StartError::Build(BuildError::InvalidOption {
                option: "sample_rate_hz",
                reason: format!(
                    "{} is outside 1..={MAX_SAMPLE_RATE_HZ}; use a rate such as 100",
                    config.sample_rate_hz
                ),
            }));
        }
        // Acquire: pairs with the Release store in `shutdown` / `atfork_child`, so the
        // previous session's teardown happens before this start.
        if RUNNING
            .compare_exchange(false, true, Acquire, Relaxed)
            .is_err()
        {
            return Err(StartError::AlreadyRunning);
        }
        let result = Self::start_locked(&config);
        if result.is_err() {
            // Release: nothing of this failed start stays behind.
            RUNNING.store(false, Release);
        }
        result
    }

    fn start_locked(config: &SamplerConfig) -> Result<Sampler, StartError> {
        if !timers::in_main_program(handler::on_sigprof as *const () as usize) {
            return Err(StartError::UnsupportedTlsModel);
        }
        let os = |operation| move |source| StartError::Os { operation, source };
        match timers::disposition().map_err(os("sigaction(SIGPROF) query"))? {
            Disposition::Foreign => return Err(StartError::ForeignSignalHandler),
            Disposition::Default => timers::install().map_err(os("sigaction(SIGPROF)"))?,
            Disposition::Ours => {}
        }
        static ATFORK: std::sync::Once = std::sync::Once::new();
        let mut atfork_rc = 0;
        ATFORK.call_once(|| {
            // SAFETY: registers a child handler that only stores atomics and a
            // thread-local.
            atfork_rc = unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
        });
        if atfork_rc != 0 {
            return Err(StartError::Os {
                operation: "pthread_atfork",
                source: std::io::Error::from_raw_os_error(atfork_rc),
            });
        }

        // Acquire: pairs with the Release store below (an earlier start).
        let mut buffer = BUFFER.load(Acquire);
        if buffer.is_null() {
            buffer = Box::leak(Box::new(SampleBuffer::new(config.buffer_slots)));
            // Release: publishes the initialised buffer; pairs with the Acquire loads in
            // the handler and above.
            BUFFER.store(buffer, Release);
        }
        // SAFETY: allocated once above (or by an earlier start) and never freed.
        let buffer: &'static SampleBuffer = unsafe { &*buffer };
        TABLE.clear();

        let cookie = new_cookie();
        let interval_ns = 1_000_000_000 / u64::from(config.sample_rate_hz);
        {
            let mut armed = lock(armed_or_init());
            for (_, thread) in armed.threads.drain() {
                timers::delete(thread.timer);
            }
            armed.cookie = cookie;
            armed.interval_ns = interval_ns;
            armed.arming = true;
            armed.armed_by_thread = 0;
            armed.arm_failures_eagain = 0;
            armed.arm_failures_other = 0;
        }
        let base = HandlerSnapshot::now();
        // Relaxed (all four): the handler compares the cookie it receives with COOKIE
        // and reads nothing published through these flags; timers carrying `cookie`
        // are created only after these stores, by this thread or under `ARMED`'s lock.
        MEASURE_CPU.store(config.measure_handler_cpu, Relaxed);
        COOKIE.store(cookie, Relaxed);
        ENABLED.store(true, Relaxed);
        SAMPLER_SESSION.store(cookie, Relaxed);

        let mut sampler = Sampler {
            pid: pid(),
            cookie,
            interval_ns,
            buffer,
            stopped: false,
            pending_sp: HashMap::new(),
            published: HashSet::new(),
            blocked: HashSet::new(),
            buf: Vec::with_capacity(4096),
            replaced: false,
            stats: SamplerStats::default(),
            base,
            process_cpu_start: process_cpu_ns(),
        };
        sampler.maintain();
        Ok(sampler)
    }

    /// False in a forked child or after stop: every method is then a no-op.
    fn live(&self) -> bool {
        !self.stopped && self.pid == pid()
    }

    /// The collector's periodic work (about every 100 ms): re-reads the SIGPROF
    /// disposition, rescans `/proc/self/task` (arms new threads, deletes the timers of
    /// vanished ones) and publishes stack bounds for threads that reported an SP.
    pub fn maintain(&mut self) {
        if !self.live() {
            return;
        }
        let t0 = thread_cpu_ns();
        self.check_disposition();
        self.scan();
        self.publish_bounds();
        self.stats.maintain_cpu_ns += thread_cpu_ns().saturating_sub(t0);
    }

    fn check_disposition(&mut self) {
        if self.replaced {
            return;
        }
        match timers::disposition() {
            Ok(Disposition::Ours) | Err(_) => return,
            Ok(Disposition::Default | Disposition::Foreign) => {}
        }
        self.replaced = true;
        if let Some(armed) = armed() {
            let mut armed = lock(armed);
            armed.arming = false;
            for (_, thread) in armed.threads.drain() {
                timers::delete(thread.timer);
            }
        }
        if LOG_REPLACED.first() {
            log::warn!(
                "span-profiler: another component replaced the SIGPROF handler; sampling \
                 stopped (start other profilers before span-profiler, or not at all)"
            );
        }
    }

    fn scan(&mut self) {
        let Ok(listed) = procfs::threads(&mut self.buf) else {
            return;
        };
        self.stats.scans += 1;
        let listed_map: HashMap<i32, u64> = listed.iter().map(|k| (k.tid, k.starttime)).collect();
        let mut newly_armed = Vec::new();
        let (mut eagain, mut failed) = (None, None);
        let Some(armed) = armed() else { return };
        {
            let mut armed = lock(armed);
            if armed.cookie != self.cookie {
                return;
            }
            // Threads that vanished, or whose tid now names a newer thread.
            let mut gone = Vec::new();
            for (tid, thread) in armed.threads.iter_mut() {
                match (listed_map.get(tid), thread.starttime) {
                    (None, _) => gone.push(*tid),
                    (Some(&now), None) => thread.starttime = Some(now),
                    (Some(&now), Some(then)) if now != then => gone.push(*tid),
                    _ => {}
                }
            }
            for tid in gone {
                if let Some(thread) = armed.threads.remove(&tid) {
                    timers::delete(thread.timer);
                    self.stats.timers_deleted += 1;
                }
                self.forget(tid);
            }
            if armed.arming {
                for key in &listed {
                    if armed.threads.contains_key(&key.tid) {
                        continue;
                    }
                    // No bounds of an older thread may survive under this tid.
                    self.forget(key.tid);
                    match timers::arm(key.tid, self.cookie, self.interval_ns) {
                        Ok(timer) => {
                            armed.threads.insert(
                                key.tid,
                                ArmedThread {
                                    starttime: Some(key.starttime),
                                    timer,
                                },
                            );
                            self.stats.armed_by_scan += 1;
                            newly_armed.push(key.tid);
                        }
                        Err(ArmError::Gone) => {}
                        Err(ArmError::Again) => {
                            armed.arm_failures_eagain += 1;
                            eagain = Some(key.tid);
                        }
                        Err(ArmError::Other(err)) => {
                            armed.arm_failures_other += 1;
                            failed = Some(err);
                        }
                    }
                }
            }
            let armed_listed = listed
                .iter()
                .filter(|k| armed.threads.contains_key(&k.tid))
                .count();
            self.stats.threads_armed = armed.threads.len() as u64;
            self.stats.threads_unarmed = (listed.len() - armed_listed) as u64;
            self.stats.armed_by_thread = armed.armed_by_thread;
            self.stats.arm_failures_eagain = armed.arm_failures_eagain;
            self.stats.arm_failures_other = armed.arm_failures_other;
        }
        // Logging and /proc reads happen outside the lock (a logger may write labels,
        // which can arm a thread, which takes the lock).
        if let Some(tid) = eagain {
            if LOG_EAGAIN.first() {
                log::warn!(
                    "span-profiler: cannot create a CPU timer for thread {tid} (EAGAIN): the \
                     RLIMIT_SIGPENDING limit is reached; raise `ulimit -i` to sample every thread"
                );
            }
        }
        if let Some(err) = failed {
            if LOG_ARM_FAILED.first() {
                log::warn!("span-profiler: cannot create a CPU timer for a thread: {err}");
            }
        }
        self.check_blocked(&listed_map, &newly_armed);
    }

    /// Drops what we know about `tid`'s stack.
    fn forget(&mut self, tid: i32) {
        if self.published.remove(&tid) {
            TABLE.remove(tid);
        }
        self.pending_sp.remove(&tid);
        self.blocked.remove(&tid);
    }

    fn check_blocked(&mut self, listed: &HashMap<i32, u64>, newly_armed: &[i32]) {
        let full = self.stats.scans % BLOCKED_CHECK_EVERY == 1;
        let tids: Vec<i32> = if full {
            listed.keys().copied().collect()
        } else {
            newly_armed.to_vec()
        };
        if full {
            self.blocked.clear();
        }
        for tid in tids {
            if procfs::sigprof_blocked(tid, &mut self.buf) == Some(true) {
                self.blocked.insert(tid);
            }
        }
        self.stats.threads_sigprof_blocked = self.blocked.len() as u64;
        if !self.blocked.is_empty() && LOG_BLOCKED.first() {
            log::warn!(
                "span-profiler: {} thread(s) block SIGPROF and are not sampled; see \
                 `stats().threads_sigprof_blocked`",
                self.blocked.len()
            );
        }
    }

    fn publish_bounds(&mut self) {
        if self.pending_sp.is_empty() {
            return;
        }
        let Ok(mappings) = procfs::stack_mappings(&mut self.buf) else {
            return;
        };
        let Some(armed) = armed() else { return };
        let armed = lock(armed);
        for (tid, sp) in self.pending_sp.drain() {
            // Only threads we know are alive under this tid (their key was scanned).
            if !armed.threads.contains_key(&tid) {
                continue;
            }
            match procfs::mapping_containing(&mappings, sp) {
                Some(bounds) if TABLE.publish(tid, bounds) => {
                    self.published.insert(tid);
                    self.stats.bounds_published += 1;
                }
                _ => self.stats.bounds_failed += 1,
            }
        }
    }

    /// Moves every recorded sample of this session out of the buffer, calling `f` once
    /// per sample. Records an earlier session left are discarded and counted.
    pub fn drain(&mut self, f: &mut dyn FnMut(&RawSample<'_>)) {
        if !self.live() {
            return;
        }
        let t0 = thread_cpu_ns();
        let cookie = self.cookie;
        let stats = &mut self.stats;
        let pending = &mut self.pending_sp;
        self.buffer.drain(|record| {
            if record.cookie != cookie {
                stats.dropped_stale += 1;
                return;
            }
            stats.samples += 1;
            stats.weight += record.weight;
            let frames = record.frames();
            if frames.len() <= 2 {
                stats.shallow_stacks += 1;
            }
            if record.flags & FLAG_TRUNCATED != 0 {
                stats.truncated_stacks += 1;
            }
            if record.flags & FLAG_NO_BOUNDS != 0 {
                stats.leaf_only += 1;
                if pending.len() < MAX_PENDING_REPORTS || pending.contains_key(&record.tid) {
                    pending.insert(record.tid, record.sp);
                }
            }
            f(&RawSample {
                weight: record.weight,
                label_id: record.label_id,
                tid: record.tid,
                frames,
            });
        });
        self.stats.drain_cpu_ns += thread_cpu_ns().saturating_sub(t0);
    }

    /// The session's counters so far.
    pub fn stats(&self) -> SamplerStats {
        let now = HandlerSnapshot::now();
        let mut stats = self.stats.clone();
        stats.dropped_buffer_full = now.dropped_full - self.base.dropped_full;
        stats.dropped_no_buffer = now.dropped_no_buffer - self.base.dropped_no_buffer;
        stats.ignored_not_timer = now.ignored_not_timer - self.base.ignored_not_timer;
        stats.ignored_other_session = now.ignored_other_session - self.base.ignored_other_session;
        stats.handler_cpu_ns = now.cpu_ns - self.base.cpu_ns;
        stats.handler_replaced = self.replaced;
        stats.process_cpu_ns = process_cpu_ns().saturating_sub(self.process_cpu_start);
        stats
    }

    /// Disarms and deletes every timer and makes the session inert. Our handler stays
    /// installed (never `SIG_DFL`: a late signal would kill the process). Records still
    /// in the buffer are discarded by the next session: drain before stopping.
    pub fn stop(mut self) -> SamplerStats {
        self.shutdown()
    }

    fn shutdown(&mut self) -> SamplerStats {
        if !self.live() {
            self.stopped = true;
            return self.stats();
        }
        // Relaxed (all): see `start_locked`; a handler that passed its checks just before
        // still writes a complete record (into a never-freed buffer), which the next
        // session discards by cookie.
        ENABLED.store(false, Relaxed);
        COOKIE.store(0, Relaxed);
        SAMPLER_SESSION.store(0, Relaxed);
        MEASURE_CPU.store(false, Relaxed);
        if let Some(armed) = armed() {
            let mut armed = lock(armed);
            armed.cookie = 0;
            armed.arming = false;
            for (_, thread) in armed.threads.drain() {
                timers::delete(thread.timer);
            }
        }
        self.stats.threads_armed = 0;
        let stats = self.stats();
        self.stopped = true;
        // Release: the teardown above happens before the next start's Acquire CAS.
        RUNNING.store(false, Release);
        stats
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if !self.stopped {
            self.shutdown();
        }
    }
}

fn new_cookie() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let time = (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_007)
        .wrapping_add(ts.tv_nsec as u64);
    // Relaxed: only uniqueness matters.
    let n = SESSIONS.fetch_add(1, Relaxed);
    (time.rotate_left(24) ^ ((pid() as u64) << 40) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
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

/// See [`crate::sampler::arm_current_thread`].
pub(crate) fn arm_current_thread(session: u64) {
    // Relaxed: a hint; see `start_locked`.
    if session == 0 || COOKIE.load(Relaxed) != session {
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
    // Logged outside the lock (see `scan`).
    match result {
        Err(ArmError::Again) if LOG_EAGAIN.first() => log::warn!(
            "span-profiler: cannot create a CPU timer for thread {tid} (EAGAIN): the \
             RLIMIT_SIGPENDING limit is reached; raise `ulimit -i` to sample every thread"
        ),
        Err(ArmError::Other(err)) if LOG_ARM_FAILED.first() => {
            log::warn!("span-profiler: cannot create a CPU timer for a thread: {err}")
        }
        _ => {}
    }
}
