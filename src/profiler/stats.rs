//! `Stats` and `StopReport`: everything the profiler did, dropped or could not do.

use std::time::Duration;

/// A snapshot of the profiler's counters, from [`Profiler::stats`](crate::Profiler::stats).
///
/// Nothing is lost silently: every dropped sample, cut label, deleted file and thread the
/// sampler could not reach is counted here. Compare `sampled_cpu` with `process_cpu`
/// ([`Stats::coverage`]) to see how much of the process's CPU time the profile explains.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Samples recorded by the signal handler (one per signal).
    pub samples: u64,
    /// Timer expiries those samples stand for (a signal can carry overruns).
    pub sample_weight: u64,
    /// CPU time the samples stand for: `sample_weight` x the sampling period.
    pub sampled_cpu: Duration,
    /// CPU time the whole process used since the profiler started.
    pub process_cpu: Duration,
    /// Samples lost, by reason.
    pub dropped: Dropped,
    /// Windows closed (each one file, or one upload split into pieces).
    pub windows: u64,
    /// Windows with no samples (nothing written for them).
    pub empty_windows: u64,
    /// Windows discarded because the writer thread was several windows behind (a very
    /// slow disk or a stalled machine); their samples are lost.
    pub windows_discarded: u64,
    /// Profile files written.
    pub files_written: u64,
    /// Bytes of profile files written.
    pub file_bytes_written: u64,
    /// Old profile files deleted by the retention caps.
    pub files_deleted: u64,
    /// Profile files that could not be written (see the log).
    pub file_errors: u64,
    /// Times the output directory had been deleted while the profiler ran (e.g. by a
    /// tmp cleaner) and was created again so the window could be written.
    pub output_dir_recreated: u64,
    /// This application's oldest profile files deleted to make room after a write
    /// failed because the disk was full (`ENOSPC`).
    pub files_evicted_for_space: u64,
    /// Samples whose label id was already freed when they were drained (encoded
    /// without labels).
    pub label_expired: u64,
    /// Samples that lost their labels to the per-window label-set cap.
    pub label_sets_overflowed: u64,
    /// The weight (timer expiries) of those samples; their stacks and weights are kept.
    pub label_sets_overflowed_weight: u64,
    /// Samples whose `span_name` became `other` under the per-window name cap.
    pub span_names_overflowed: u64,
    /// Label pairs removed because their key was past the per-window key cap.
    pub label_keys_removed: u64,
    /// `Labels::with` pairs dropped for a reserved or invalid key or an empty value.
    pub rejected_label_pairs: u64,
    /// Label values cut to 2048 bytes.
    pub truncated_label_values: u64,
    /// Threads with a running CPU timer at the last scan.
    pub threads_armed: u64,
    /// Threads the sampler could not arm (timer creation failed, e.g. `EAGAIN`).
    pub threads_not_armed: u64,
    /// Threads that block SIGPROF and so are never sampled.
    pub threads_sigprof_blocked: u64,
    /// Another library replaced our SIGPROF handler; sampling stopped.
    pub handler_replaced: bool,
    /// Samples with at most two frames whose walk did not reach the thread's start.
    pub shallow_samples: u64,
    /// Samples whose stack was deeper than the server keeps (1000 frames) and was cut to
    /// its innermost frames when aggregated.
    pub stacks_truncated: u64,
    /// Samples with no frame or zero weight, dropped when aggregated (nothing to
    /// attribute).
    pub empty_samples: u64,
    /// Gauge: label sets registered now (held by a span, a wrapper, a task or a guard,
    /// or waiting out their grace period).
    pub label_sets_live: u64,
    /// Gauge: released label ids still inside their grace period.
    pub label_sets_retired: u64,
    /// Complete pprof profiles encoded (one per file, or one per upload piece).
    pub profiles_encoded: u64,
    /// Profiles larger than the piece limit because one sample did not fit on its own
    /// (sent whole rather than dropped).
    pub profiles_oversized: u64,
    /// Distinct addresses symbolized.
    pub addresses_symbolized: u64,
    /// Of those, addresses without a function name (shown as `[file+0xoffset]`).
    pub addresses_unresolved: u64,
    /// The sampler's own counters: signals, timers, stack bounds, its CPU time.
    pub sampler: SamplerCounts,
    /// OpenTelemetry lookups that found no labels (feature `otel`).
    pub otel: OtelCounts,
    /// What the Tokio task hooks did ([`tokio_hooks`](crate::tokio_hooks); needs
    /// `--cfg tokio_unstable`).
    pub task_hooks: TaskHookCounts,
    /// Most samples are shallow: the code has neither usable unwind tables nor frame
    /// pointers (keep `.eh_frame`, or build with `-C force-frame-pointers=yes`).
    pub frame_pointers_missing: bool,
    /// Samples whose stack was walked with DWARF call-frame information (at least one
    /// frame; see [`Unwinder`](crate::Unwinder)).
    pub unwound_dwarf: u64,
    /// Samples walked by frame pointers only.
    pub unwound_frame_pointers: u64,
    /// Samples in which a frame without usable call-frame information (JIT code,
    /// hand-written assembly, an object whose CFI could not be read) took a
    /// frame-pointer step.
    pub unwind_fallbacks: u64,
    /// Samples whose stack was deeper than the frame cap: the leaf frames and the
    /// outermost ones (worker loop, thread start) were kept, the middle dropped.
    pub truncated_stacks: u64,
    /// Samples whose walk stopped before the thread's first frame (and was not cut).
    pub unwind_incomplete: u64,
    /// Loaded objects with unwind tables.
    pub unwind_objects: u64,
    /// Loaded objects whose call-frame information could not be used (malformed,
    /// too large): their frames are walked by frame pointer.
    pub unwind_objects_failed: u64,
    /// Memory of the unwind tables, bytes (including replaced tables awaiting their
    /// grace period).
    pub unwind_table_bytes: u64,
    /// Upload counters (requests sent, retried, failed, dropped by reason), when a
    /// server address is set.
    pub upload: Option<crate::sink::upload::UploadCounts>,
    /// The symbolizer's memory and what its budget made it drop.
    pub symbolizer: SymbolizerStats,
    /// Allocation profiles: sampled allocations, dropped records, tracked live pointers.
    pub alloc: crate::alloc::AllocStats,
}

impl Stats {
    /// Sampled CPU time as a fraction of the process's CPU time since start, or `None`
    /// before any CPU time was measured. Near 1.0 when sampling reaches every thread.
    pub fn coverage(&self) -> Option<f64> {
        if self.process_cpu.is_zero() {
            return None;
        }
        Some(self.sampled_cpu.as_secs_f64() / self.process_cpu.as_secs_f64())
    }
}

/// The symbolizer's memory and what its budget made it drop (see
/// [`Symbolization`](crate::Symbolization)); updated after each window.
///
/// ```no_run
/// let profiler = span_profiler::Profiler::builder().application_name("app").start()?;
/// // ... after a window or two ...
/// let s = profiler.stats().symbolizer;
/// println!("{} bytes, {} cached addresses", s.bytes, s.cache_entries);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SymbolizerStats {
    /// Heap bytes held: symbol and unit indexes, parsed debug-info units, the address
    /// cache and its names. Mapped object files are not heap (they show as file pages).
    pub bytes: u64,
    /// Of `bytes`, the symbol and unit indexes of the mapped modules (what no eviction
    /// frees).
    pub index_bytes: u64,
    /// Addresses in the cache.
    pub cache_entries: u64,
    /// Debug-info units parsed and kept.
    pub units_kept: u64,
    /// Debug-info units parsed since start (a unit dropped and parsed again counts twice).
    pub units_parsed: u64,
    /// Parsed units dropped to stay within the budget.
    pub units_evicted: u64,
    /// Times the address cache was emptied to stay within the budget.
    pub cache_flushes: u64,
    /// Cached addresses dropped after a minute without a lookup (the cache keeps what
    /// recent windows needed).
    pub addresses_expired: u64,
    /// Parsed debug-info units dropped after a minute without a lookup.
    pub units_expired: u64,
    /// Addresses named from the symbol table only (no file, line or inlined frames)
    /// because the indexes alone filled the budget.
    pub symbol_only: u64,
    /// Debug-info units that could not be parsed (their addresses keep their
    /// symbol-table names).
    pub dwarf_errors: u64,
}

impl From<crate::symbolize::symbolizer::Footprint> for SymbolizerStats {
    fn from(f: crate::symbolize::symbolizer::Footprint) -> Self {
        Self {
            bytes: f.bytes,
            index_bytes: f.index_bytes,
            cache_entries: f.cache_entries,
            units_kept: f.units_kept,
            units_parsed: f.units_parsed,
            units_evicted: f.units_evicted,
            cache_flushes: f.cache_flushes,
            addresses_expired: f.addresses_expired,
            units_expired: f.units_expired,
            symbol_only: f.symbol_only,
            dwarf_errors: f.dwarf_errors,
        }
    }
}

/// The sampler's own counters since the profiler started (part of [`Stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SamplerCounts {
    /// Samples with only the interrupted PC: the thread's stack bounds were not known yet
    /// (or its stack pointer was outside them, e.g. on an alternate signal stack).
    pub leaf_only_samples: u64,
    /// Samples whose stack walk stopped at the handler's maximum depth.
    pub truncated_stacks: u64,
    /// `SIGPROF` signals not sent by a timer (`kill`, `raise`, `setitimer`), ignored.
    pub ignored_foreign_signals: u64,
    /// Timer signals of another session, or arriving after stop, ignored.
    pub ignored_stale_signals: u64,
    /// Timers created by the thread scans.
    pub timers_armed_by_scan: u64,
    /// Timers created by threads themselves: on their first label, or by
    /// [`arm_current_thread`](crate::arm_current_thread).
    pub timers_armed_by_thread: u64,
    /// Timers deleted because their thread exited.
    pub timers_deleted: u64,
    /// `timer_create` failures with `EAGAIN` (`RLIMIT_SIGPENDING` exhausted).
    pub arm_failures_eagain: u64,
    /// Other timer failures.
    pub arm_failures_other: u64,
    /// Thread stack bounds published for the handler.
    pub stack_bounds_published: u64,
    /// Threads whose stack bounds could not be published.
    pub stack_bounds_failed: u64,
    /// Thread scans of `/proc/self/task`.
    pub thread_scans: u64,
    /// CPU time inside the signal handler (zero unless measured; benches do).
    pub handler_cpu: Duration,
    /// CPU time of thread scans and timer upkeep on the collector thread.
    pub maintain_cpu: Duration,
    /// CPU time of draining the sample buffer on the collector thread.
    pub drain_cpu: Duration,
}

/// OpenTelemetry counters (part of [`Stats`]; zero without the `otel` feature).
/// Process-wide: they count from the process's start, not the profiler's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtelCounts {
    /// `.profiled()`, `.profiled_with()` and guard lookups of a valid span that no live
    /// `ProfilingSpan` has (ended, remote, or from another provider): no labels.
    pub unknown_spans: u64,
    /// Spans started under a local parent that no live `ProfilingSpan` has: their local
    /// root is unknown, so they got no root labels.
    pub unknown_parents: u64,
    /// Requests `ProfileLayer` served without labels because their span did not come from
    /// a [`ProfilingTracerProvider`](crate::ProfilingTracerProvider) (the layer was built
    /// before `global::set_tracer_provider`, or with another provider's tracer); logged
    /// once with the fix. Always 0 without feature `tower`.
    pub unlabelled_requests: u64,
    /// Gauge: live spans of a `ProfilingTracerProvider`.
    pub live_spans: u64,
}

/// Tokio task-hook counters (part of [`Stats`]; they only move on a runtime built with
/// [`tokio_hooks`](crate::tokio_hooks)). Process-wide, all runtimes together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskHookCounts {
    /// Tasks that got labels (inherited, or their spawn location).
    pub tasks_labelled: u64,
    /// Those tasks that terminated (`tasks_labelled - tasks_released` are alive).
    pub tasks_released: u64,
    /// Spawns under a label id that was no longer live: the child got no labels.
    pub parent_expired: u64,
    /// After-poll calls that did not match the thread's innermost before-poll.
    pub unbalanced_polls: u64,
    /// Polls left unlabelled because the thread's frame stack was unavailable
    /// (thread-local destruction).
    pub frames_unavailable: u64,
}

/// Samples lost, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// The sample buffer was full (the collector fell behind).
    pub buffer_full: u64,
    /// Other reasons reported by the sampler.
    pub other: u64,
}

/// What [`Profiler::stop`](crate::Profiler::stop) achieved: the final counters.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StopReport {
    /// Windows closed, including the last, partial one.
    pub windows: u64,
    /// Profile files written, including the last window's.
    pub files_written: u64,
    /// What the uploader delivered and lost, when a server address is set.
    pub upload: Option<crate::sink::upload::UploadReport>,
    /// The final counters.
    pub stats: Stats,
}
