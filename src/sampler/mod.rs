//! The signal-based sampler: per-thread CPU-time timers send SIGPROF to every thread of
//! the process; the handler reads the thread's label slot, walks the frame pointers and
//! writes a record into a lock-free buffer that the collector drains.
//!
//! - [`buffer`]: the never-freed lock-free sample buffer (many producers, any drainer).
//! - `handler`: the SIGPROF handler and its contract.
//! - `unwind`: the unwinder trait and the frame-pointer unwinder.
//! - `bounds`: stack bounds published for the handler.
//! - `timers`: timer_create / sigaction / main-program check.
//! - `procfs`: thread discovery, `SigBlk`, `/proc/self/maps`.
//! - `session`: [`Sampler`]: start, maintain, drain, stop, fork handling.
//!
//! Supported on Linux x86_64 and aarch64. Elsewhere (and under loom) the crate compiles
//! and [`Sampler::start`] returns [`StartError::Unsupported`](crate::StartError).

pub(crate) mod buffer;
pub(crate) mod slot;

cfg_sampler! {
    mod linux;
    use linux::session;
    pub use session::Sampler;
    pub(crate) use linux::armed::arm_current_thread;
    pub(crate) use linux::here::stack_here;
}

cfg_no_sampler! {
    mod unsupported;
    pub use unsupported::Sampler;
    pub(crate) use unsupported::{arm_current_thread, stack_here};
}

// Test hooks for the allocation-proof test (see `handler`).
cfg_internal! {
    cfg_sampler! {
        pub use linux::handler::{in_handler, set_in_handler};
    }
    cfg_no_sampler! {
        pub use unsupported::{in_handler, set_in_handler};
    }
}

use std::sync::atomic::AtomicU64;

use crate::error::BuildError;

/// The running session's cookie (0: none). Timers carry it in `sigev_value`; the handler
/// refuses signals with another; a thread's first label write compares it with the
/// session it last armed for. Written only by session start, stop and the fork child
/// handler.
pub(crate) static SESSION_COOKIE: AtomicU64 = AtomicU64::new(0);

/// Default sampling rate: 100 Hz (one sample per 10 ms of a thread's CPU time).
pub const DEFAULT_SAMPLE_RATE_HZ: u32 = 100;
/// Highest accepted sampling rate (samples per second of one thread's CPU time).
pub const MAX_SAMPLE_RATE_HZ: u32 = 10_000;
/// Checks a sampling rate given as option `option`: 1 to [`MAX_SAMPLE_RATE_HZ`].
pub(crate) fn check_sample_rate(option: &'static str, hz: u32) -> Result<(), BuildError> {
    if hz == 0 || hz > MAX_SAMPLE_RATE_HZ {
        return Err(BuildError::invalid(
            option,
            format!("{hz} Hz is out of range; use 1 to {MAX_SAMPLE_RATE_HZ} Hz (100 is typical)"),
        ));
    }
    Ok(())
}

/// Default number of buffer entries (about 1 KiB each), used by the first start only.
pub(crate) const DEFAULT_BUFFER_ENTRIES: usize = 1024;

/// Sampler options.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Samples per second of each thread's CPU time (1 ..= [`MAX_SAMPLE_RATE_HZ`]).
    pub sample_rate_hz: u32,
    /// Entries of the process's one sample buffer (rounded up to a power of two). Only the
    /// first start in a process allocates; later starts reuse that buffer.
    pub buffer_entries: usize,
    /// Measure the thread CPU time spent inside the handler (two `clock_gettime` calls
    /// per sample) into [`SamplerStats::handler_cpu_ns`].
    pub measure_handler_cpu: bool,
    /// How the handler walks stacks.
    pub unwinder: Unwinder,
}

/// How the signal handler walks a sampled thread's stack.
///
/// DWARF call-frame information (`.eh_frame`, present in every Rust and C/C++ build
/// unless explicitly stripped with `-C force-unwind-tables=no` / `panic=abort` plus
/// stripping) lets the profiler unwind code built *without* frame pointers. The tables
/// are compiled once per loaded object outside the handler (and again only for objects
/// loaded later); the handler only binary-searches them.
///
/// ```no_run
/// let profiler = span_profiler::Profiler::builder()
///     .application_name("checkout")
///     .unwinder(span_profiler::Unwinder::Auto) // the default
///     .start()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unwinder {
    /// Call-frame information wherever an object has it, frame pointers for frames
    /// without (JIT code, hand-written assembly, objects whose CFI cannot be read).
    /// Complete stacks whether or not the code was built with frame pointers.
    #[default]
    Auto,
    /// Call-frame information only: a frame without it ends the stack.
    Dwarf,
    /// Frame pointers only (the fastest walk; needs `-C force-frame-pointers=yes` for
    /// complete stacks, and builds no tables).
    FramePointers,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            sample_rate_hz: DEFAULT_SAMPLE_RATE_HZ,
            buffer_entries: DEFAULT_BUFFER_ENTRIES,
            measure_handler_cpu: false,
            unwinder: Unwinder::Auto,
        }
    }
}

/// One sample as the handler recorded it, lent to the drain callback.
#[derive(Debug, Clone, Copy)]
pub struct DrainedSample<'a> {
    /// Timer expirations this sample stands for: 1 + `si_overrun` (clamped).
    pub weight: u64,
    /// The thread's label id when it was interrupted (0: none).
    pub label_id: u64,
    /// Kernel thread id (read by the sampler tests: per-thread accuracy).
    #[cfg_attr(not(any(test, feature = "__internal")), allow(dead_code))]
    pub tid: i32,
    /// `frames[0]` is the interrupted PC (the leaf); `frames[1..]` are return addresses,
    /// callers in order (symbolize them at `address - 1`).
    pub frames: &'a [usize],
}

/// What the sampler did in its session. Counters count from the session's start;
/// fields marked *gauge* are values at the last `maintain()`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SamplerStats {
    /// Samples drained.
    pub samples: u64,
    /// Sum of drained sample weights (timer expirations).
    pub weight: u64,
    /// Samples dropped in the handler because the buffer had no free entry.
    pub dropped_buffer_full: u64,
    /// Samples dropped in the handler because no buffer existed (never expected).
    pub dropped_no_buffer: u64,
    /// Records of an earlier session found in the buffer and discarded.
    pub dropped_stale: u64,
    /// SIGPROF signals not sent by a POSIX timer (`kill`, `raise`, `setitimer`), ignored.
    pub ignored_not_timer: u64,
    /// Timer signals with another session's cookie or after stop, ignored.
    pub ignored_other_session: u64,
    /// Samples with at most two frames whose walk did not reach the thread's start
    /// (shallow stacks: no unwind tables and no frame pointers?).
    pub shallow_stacks: u64,
    /// Samples whose walk used call-frame information for at least one frame.
    pub unwound_cfi: u64,
    /// Samples walked by frame pointers only.
    pub unwound_fp: u64,
    /// Samples where a frame without a usable CFI rule took a frame-pointer step
    /// inside a CFI walk (mixed stacks).
    pub unwind_fallbacks: u64,
    /// Samples whose walk stopped before the outermost frame (not truncated): a
    /// frame could not be unwound.
    pub unwind_incomplete: u64,
    /// Gauge: loaded objects with unwind tables.
    pub unwind_objects: u64,
    /// Gauge: loaded objects whose CFI could not be used (malformed, too large): their
    /// frames are walked by frame pointer.
    pub unwind_objects_failed: u64,
    /// Gauge: bytes of published unwind tables (plus replaced ones awaiting their grace).
    pub unwind_table_bytes: u64,
    /// Unwind table rebuilds (the first one and one per change of the loaded objects).
    pub unwind_table_rebuilds: u64,
    /// Wall time spent compiling unwind tables, ns.
    pub unwind_table_build_ns: u64,
    /// Samples recorded with only the leaf PC because the thread's stack bounds were not
    /// published yet (or its SP was outside them, e.g. on an alternate signal stack).
    pub leaf_only: u64,
    /// Samples whose stacks were cut at the maximum depth.
    pub truncated_stacks: u64,
    /// Gauge: threads with a running timer.
    pub threads_armed: u64,
    /// Timers created by discovery scans.
    pub armed_by_scan: u64,
    /// Timers created by threads themselves on their first label write.
    pub armed_by_thread: u64,
    /// Gauge: live threads without a timer (arming failed or is off).
    pub threads_unarmed: u64,
    /// `timer_create` failures with `EAGAIN` (RLIMIT_SIGPENDING exhausted).
    pub arm_failures_eagain: u64,
    /// Other `timer_create` / `timer_settime` failures (`EINVAL`, a thread that just
    /// exited, is not counted).
    pub arm_failures_other: u64,
    /// Timers deleted because their thread exited.
    pub timers_deleted: u64,
    /// Gauge: armed threads that have SIGPROF blocked (checked about once a second).
    pub threads_sigprof_blocked: u64,
    /// Whether someone replaced our SIGPROF handler (arming stopped then).
    pub handler_replaced: bool,
    /// Stack bounds published for threads.
    pub bounds_published: u64,
    /// Threads whose bounds could not be published (table probe window full, or no
    /// stack-like mapping held the reported SP).
    pub bounds_failed: u64,
    /// Discovery scans run.
    pub scans: u64,
    /// Process CPU time (`CLOCK_PROCESS_CPUTIME_ID`) since the session started, ns.
    pub process_cpu_ns: u64,
    /// Thread CPU time inside the handler, ns (0 unless `measure_handler_cpu`).
    pub handler_cpu_ns: u64,
    /// Thread CPU time spent in `maintain()`, ns.
    pub maintain_cpu_ns: u64,
    /// Thread CPU time spent in `drain()` (excluding the callback), ns.
    pub drain_cpu_ns: u64,
}

cfg_internal! {
impl SamplerStats {
    /// Sampled CPU time: weight times the sampling period, ns.
    pub fn sampled_cpu_ns(&self, sample_rate_hz: u32) -> u64 {
        self.weight
            .saturating_mul(1_000_000_000 / u64::from(sample_rate_hz.max(1)))
    }

    /// CPU the sampler itself used (handler + maintain + drain), ns.
    pub fn sampler_cpu_ns(&self) -> u64 {
        self.handler_cpu_ns + self.maintain_cpu_ns + self.drain_cpu_ns
    }
}
}
