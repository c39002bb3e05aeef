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
    /// Samples with at most two frames.
    pub shallow_samples: u64,
    /// Most samples are one or two frames deep: the code lacks frame pointers (build
    /// with `-C force-frame-pointers=yes`).
    pub frame_pointers_missing: bool,
    /// Upload counters (requests sent, retried, failed, dropped by reason), when a
    /// server address is set.
    pub upload: Option<crate::sink::upload::UploadCounts>,
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
