//! One sampler session: start, the collector's `drain`, stats and stop. The periodic
//! `maintain` work is in `scan`, the armed-timer registry in `armed`, fork handling in
//! `fork`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::*};

use super::armed::{armed, armed_or_init};
use super::bounds::TABLE;
use super::cfi;
use super::handler::{self, thread_cpu_ns, BUFFER, COUNTERS, ENABLED, MEASURE_CPU};
use super::timers::{self, Disposition};
use super::{fork, pid, RUNNING};
use crate::error::StartError;
use crate::sampler::buffer::{
    SampleBuffer, FLAG_CFI, FLAG_COMPLETE, FLAG_FP_FALLBACK, FLAG_NO_BOUNDS, FLAG_TRUNCATED,
};
use crate::sampler::{
    check_sample_rate, DrainedSample, SamplerConfig, SamplerStats, SESSION_COOKIE,
};
use crate::sync::lock;

/// Makes successive cookies differ even within one clock tick.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// Most SP reports kept between two `maintain` calls.
const MAX_PENDING_REPORTS: usize = 4096;

fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
    pub(super) cookie: u64,
    pub(super) interval_ns: u64,
    buffer: &'static SampleBuffer,
    stopped: bool,
    /// SP reports (tid -> SP) of leaf-only samples, resolved to bounds by `maintain`.
    pub(super) pending_sp: HashMap<i32, usize>,
    /// Threads of the last scan (tid -> start time): the next scan reads `stat` only for
    /// tids not in it.
    pub(super) known_threads: HashMap<i32, u64>,
    /// Tids whose bounds we published.
    pub(super) published: HashSet<i32>,
    /// Armed tids with SIGPROF blocked.
    pub(super) blocked: HashSet<i32>,
    pub(super) buf: Vec<u8>,
    pub(super) replaced: bool,
    pub(super) stats: SamplerStats,
    base: HandlerSnapshot,
    process_cpu_start: u64,
    /// Unwind tables (`None` after stop: handed back for the next session).
    cfi: Option<cfi::Maintainer>,
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
        check_sample_rate("sample_rate_hz", config.sample_rate_hz).map_err(StartError::Build)?;
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
        if !crate::modules::in_main_program(handler::on_sigprof as *const () as usize) {
            return Err(StartError::UnsupportedTlsModel);
        }
        let os = |operation| move |source| StartError::Os { operation, source };
        match timers::disposition().map_err(os("sigaction(SIGPROF) query"))? {
            Disposition::Foreign => return Err(StartError::ForeignSignalHandler),
            Disposition::Default => timers::install().map_err(os("sigaction(SIGPROF)"))?,
            Disposition::Ours => {}
        }
        fork::register().map_err(os("pthread_atfork"))?;
        // Acquire: pairs with the Release store below (an earlier start).
        let mut buffer = BUFFER.load(Acquire);
        if buffer.is_null() {
            buffer = Box::leak(Box::new(SampleBuffer::new(config.buffer_entries)));
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
        // Relaxed (all three): the handler compares the cookie it receives with SESSION_COOKIE
        // and reads nothing published through these flags; timers carrying `cookie`
        // are created only after these stores, by this thread or under `ARMED`'s lock.
        MEASURE_CPU.store(config.measure_handler_cpu, Relaxed);
        cfi::set_mode(config.unwinder);
        SESSION_COOKIE.store(cookie, Relaxed);
        ENABLED.store(true, Relaxed);

        let mut sampler = Sampler {
            pid: pid(),
            cookie,
            interval_ns,
            buffer,
            stopped: false,
            pending_sp: HashMap::new(),
            known_threads: HashMap::new(),
            published: HashSet::new(),
            blocked: HashSet::new(),
            buf: Vec::with_capacity(4096),
            replaced: false,
            stats: SamplerStats::default(),
            base,
            process_cpu_start: process_cpu_ns(),
            cfi: Some(cfi::Maintainer::take()),
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
    /// vanished ones), publishes stack bounds for threads that reported an SP, and
    /// rebuilds the unwind tables when the set of loaded objects changed.
    pub fn maintain(&mut self) {
        if !self.live() {
            return;
        }
        let t0 = thread_cpu_ns();
        self.check_disposition();
        if let Some(cfi) = self.cfi.as_mut() {
            cfi.maintain();
        }
        self.scan();
        self.publish_bounds();
        // After the scan: the first build (inside `start`) then runs on a thread whose
        // timer is armed, so its CPU time is sampled like the rest of the process's.
        if let Some(cfi) = self.cfi.as_mut() {
            cfi.maintain();
        }
        self.stats.maintain_cpu_ns += thread_cpu_ns().saturating_sub(t0);
    }

    /// Moves every recorded sample of this session out of the buffer, calling `f` once
    /// per sample. Records an earlier session left are discarded and counted.
    pub fn drain(&mut self, f: &mut dyn FnMut(&DrainedSample<'_>)) {
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
            let flags = record.flags;
            if frames.len() <= 2 && flags & FLAG_COMPLETE == 0 {
                stats.shallow_stacks += 1;
            }
            if flags & FLAG_TRUNCATED != 0 {
                stats.truncated_stacks += 1;
            }
            if flags & FLAG_NO_BOUNDS == 0 {
                if flags & FLAG_CFI != 0 {
                    stats.unwound_cfi += 1;
                } else {
                    stats.unwound_fp += 1;
                }
                if flags & FLAG_FP_FALLBACK != 0 {
                    stats.unwind_fallbacks += 1;
                }
                if flags & (FLAG_COMPLETE | FLAG_TRUNCATED) == 0 {
                    stats.unwind_incomplete += 1;
                }
            }
            if record.flags & FLAG_NO_BOUNDS != 0 {
                stats.leaf_only += 1;
                if pending.len() < MAX_PENDING_REPORTS || pending.contains_key(&record.tid) {
                    pending.insert(record.tid, record.sp);
                }
            }
            f(&DrainedSample {
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
        if let Some(cfi) = &self.cfi {
            let c = cfi.counts();
            stats.unwind_objects = c.objects;
            stats.unwind_objects_failed = c.objects_failed;
            stats.unwind_table_bytes = c.table_bytes + c.retired_bytes;
            stats.unwind_table_rebuilds = c.rebuilds;
            stats.unwind_table_build_ns = c.build_ns;
        }
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
        SESSION_COOKIE.store(0, Relaxed);
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
        if let Some(cfi) = self.cfi.take() {
            cfi.put_back();
        }
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

