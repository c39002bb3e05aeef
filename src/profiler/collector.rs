//! The collector thread: drains the sample buffer about every 100 ms, keeps the sampler
//! maintained (thread discovery, stack bounds), aggregates one window at a time and
//! writes each closed window.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use super::stats::{Dropped, OtelCounts, SamplerCounts, Stats, StopReport, TaskHookCounts};
use super::writer::{self, WriterHandle};
use super::StopError;
use crate::alloc::window::AllocCollector;
use crate::counters::{LogOnce, LABELS};
use crate::error::StartError;
use crate::labels::registry::Registry;
use crate::pprof::ENCODE;
use crate::profiler::builder::Config;
use crate::sampler::{DrainedSample, Sampler, SamplerConfig, SamplerStats, DEFAULT_BUFFER_ENTRIES};
use crate::symbolize::SYMBOLIZE;
use crate::sync::lock_std as lock;
use crate::window::{WindowAggregator, WindowLimits, WINDOW};

/// How often the collector drains the buffer and rescans threads.
const TICK: Duration = Duration::from_millis(100);

/// The sample buffer holds this much sampling at full speed on every CPU, so a collector
/// delayed by a stalled machine loses nothing.
const BUFFER_SECONDS: usize = 2;

/// Largest sample buffer, in entries (about 1 KiB each).
const MAX_BUFFER_ENTRIES: usize = 8192;

/// Fewer samples than this say nothing about frame pointers yet.
const SHALLOW_MIN_SAMPLES: u64 = 50;

/// What the collector thread returns when it stops.
pub(super) struct Outcome {
    report: StopReport,
    final_write_error: Option<(PathBuf, std::io::Error)>,
    writer_panicked: bool,
}

impl Outcome {
    pub(super) fn into_result(self) -> Result<StopReport, StopError> {
        if self.writer_panicked {
            return Err(StopError::CollectorPanicked);
        }
        match self.final_write_error {
            None => Ok(self.report),
            Some((path, source)) => Err(StopError::WriteFailed {
                path,
                source,
                report: Box::new(self.report),
            }),
        }
    }
}

type Spawned = (mpsc::Sender<()>, JoinHandle<Outcome>, Arc<Mutex<Stats>>);

/// Sample-buffer entries for `rate_hz`: two seconds of samples from every CPU (a CPU-time
/// timer fires at most once per kernel tick, so this over-provisions above 250 Hz).
fn buffer_entries(rate_hz: u32) -> usize {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    (rate_hz as usize * cpus * BUFFER_SECONDS).clamp(DEFAULT_BUFFER_ENTRIES, MAX_BUFFER_ENTRIES)
}

/// Starts the writer (and uploader) and the sampler on the calling thread (so their
/// errors reach `start()`), then the collector thread that owns the sampler.
pub(super) fn spawn(config: Config) -> Result<Spawned, StartError> {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let writer = writer::spawn(&config, stats.clone())?;
    let registry = Registry::global().clone();
    registry.set_profiling(true);
    let sampler_config = SamplerConfig {
        sample_rate_hz: config.sample_rate,
        unwinder: config.unwinder,
        buffer_entries: buffer_entries(config.sample_rate),
        ..SamplerConfig::default()
    };
    let sampler = match Sampler::start(sampler_config) {
        Ok(sampler) => sampler,
        Err(err) => {
            registry.set_profiling(false);
            writer.finish();
            return Err(err);
        }
    };
    let (stop_tx, stop_rx) = mpsc::channel();
    let collector = Collector::new(config, sampler, writer, registry.clone(), stats.clone());
    let spawned = thread::Builder::new()
        .name("span-profiler-collector".into())
        .spawn(move || collector.run(stop_rx));
    match spawned {
        Ok(handle) => Ok((stop_tx, handle, stats)),
        Err(source) => {
            // The sampler and the writer moved into the closure, which was dropped unrun:
            // the session is made inert by the sampler's drop, the writer's channel closes.
            registry.set_profiling(false);
            Err(StartError::Os {
                operation: "spawning the collector thread",
                source,
            })
        }
    }
}

struct Collector {
    config: Config,
    sampler: Option<Sampler>,
    writer: Option<WriterHandle>,
    registry: Registry,
    stats: Arc<Mutex<Stats>>,
    window: WindowAggregator,
    /// When the open window is due to close: windows keep a fixed cadence however long
    /// encoding takes.
    next_close: Instant,
    period_ns: u64,
    windows: u64,
    empty_windows: u64,
    last_sampler_stats: SamplerStats,
    /// Allocation windows (`None`: `alloc_sample_bytes(0)`).
    alloc: Option<AllocCollector>,
}

impl Collector {
    fn new(
        config: Config,
        sampler: Sampler,
        writer: WriterHandle,
        registry: Registry,
        stats: Arc<Mutex<Stats>>,
    ) -> Self {
        let limits = limits(&config);
        Self {
            period_ns: 1_000_000_000 / u64::from(config.sample_rate),
            window: WindowAggregator::new(limits, SystemTime::now()),
            next_close: Instant::now() + config.upload_interval,
            config,
            sampler: Some(sampler),
            writer: Some(writer),
            registry,
            stats,
            windows: 0,
            empty_windows: 0,
            last_sampler_stats: SamplerStats::default(),
            alloc: None,
        }
    }

    fn run(mut self, stop_rx: mpsc::Receiver<()>) -> Outcome {
        // Started on this thread, once the session runs: its drain is ours.
        self.alloc = AllocCollector::start(self.config.alloc_sample_bytes);
        loop {
            let stop = match stop_rx.recv_timeout(TICK) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
                Err(RecvTimeoutError::Timeout) => false,
            };
            if stop {
                break;
            }
            if let Some(sampler) = self.sampler.as_mut() {
                sampler.maintain();
            }
            self.drain();
            if Instant::now() >= self.next_close {
                self.close_window();
            }
            self.publish_stats();
        }
        self.shut_down()
    }

    /// Stops the sampler, drains what it recorded, writes the last window.
    fn shut_down(mut self) -> Outcome {
        if let Some(mut sampler) = self.sampler.take() {
            if let Some(alloc) = &self.alloc {
                alloc.stop();
            }
            self.drain_from(&mut sampler);
            self.last_sampler_stats = sampler.stop();
        }
        self.close_window();
        self.registry.set_profiling(false);
        self.publish_stats();
        // The writer encodes what is queued, then uploads within the stop timeout.
        let outcome = self.writer.take().and_then(WriterHandle::finish);
        let stats = {
            let mut stats = lock(&self.stats);
            // The writer encoded and symbolized the last windows after the last publish.
            writer_counts(&mut stats);
            stats.clone()
        };
        let writer_panicked = outcome.is_none();
        let (final_write_error, upload) =
            outcome.map_or((None, None), |o| (o.final_write_error, o.upload));
        Outcome {
            report: StopReport {
                windows: stats.windows,
                files_written: stats.files_written,
                upload,
                stats,
            },
            final_write_error,
            writer_panicked,
        }
    }

    fn drain(&mut self) {
        if let Some(mut sampler) = self.sampler.take() {
            self.drain_from(&mut sampler);
            self.last_sampler_stats = sampler.stats();
            self.sampler = Some(sampler);
        }
    }

    fn drain_from(&mut self, sampler: &mut Sampler) {
        let window = &mut self.window;
        sampler.drain(&mut |sample: &DrainedSample<'_>| {
            window.add(sample.frames, sample.label_id, sample.weight);
        });
        if let Some(alloc) = self.alloc.as_mut() {
            alloc.drain();
        }
        // Every label id drained above is resolved (the aggregator resolves on add).
        self.registry.on_drain();
    }

    /// Closes the open window, opens the next and hands the closed one to the writer.
    fn close_window(&mut self) {
        let now = SystemTime::now();
        let next = WindowAggregator::new(limits(&self.config), now);
        let open = std::mem::replace(&mut self.window, next);
        // The allocation window shares the CPU window's bounds (and file timestamp).
        let alloc_window = self
            .alloc
            .as_mut()
            .and_then(|a| a.close(limits(&self.config), open.start(), now));
        if let (Some(window), Some(writer)) = (alloc_window, &self.writer) {
            writer.send(window);
        }
        let interval = self.config.upload_interval;
        self.next_close += interval;
        if self.next_close <= Instant::now() {
            // Fell behind by a whole window (a stalled machine): restart the cadence.
            self.next_close = Instant::now() + interval;
        }
        self.windows += 1;
        if open.is_empty() {
            self.empty_windows += 1;
            return;
        }
        // Labels were resolved as samples were drained: the window holds their sets.
        let closed = open.close(now);
        if let Some(writer) = &self.writer {
            writer.send(closed);
        }
    }

    fn publish_stats(&mut self) {
        static SHALLOW_LOGGED: LogOnce = LogOnce::new();
        let s = &self.last_sampler_stats;
        let frame_pointers_missing =
            s.samples >= SHALLOW_MIN_SAMPLES && s.shallow_stacks * 2 > s.samples;
        if frame_pointers_missing && SHALLOW_LOGGED.first() {
            log::warn!(
                target: "span_profiler",
                "most samples are one or two frames deep: the code has neither usable unwind \
                 tables (.eh_frame) nor frame pointers; do not strip .eh_frame, or build \
                 with RUSTFLAGS=\"-C force-frame-pointers=yes\" (see the README)"
            );
        }
        let registry_len = self.registry.len();
        let mut stats = lock(&self.stats);
        *stats = Stats {
            samples: s.samples,
            sample_weight: s.weight,
            sampled_cpu: Duration::from_nanos(s.weight.saturating_mul(self.period_ns)),
            process_cpu: Duration::from_nanos(s.process_cpu_ns),
            dropped: Dropped {
                buffer_full: s.dropped_buffer_full,
                other: s.dropped_no_buffer + s.dropped_stale,
            },
            windows: self.windows,
            empty_windows: self.empty_windows,
            label_expired: WINDOW.label_expired.get(),
            label_sets_overflowed: WINDOW.label_sets_overflowed.get(),
            label_sets_overflowed_weight: WINDOW.label_sets_overflowed_weight.get(),
            span_names_overflowed: WINDOW.span_names_overflowed.get(),
            label_keys_removed: WINDOW.label_keys_removed.get(),
            rejected_label_pairs: LABELS.rejected_pairs.get(),
            truncated_label_values: LABELS.truncated_values.get(),
            threads_armed: s.threads_armed,
            threads_not_armed: s.threads_unarmed,
            threads_sigprof_blocked: s.threads_sigprof_blocked,
            handler_replaced: s.handler_replaced,
            shallow_samples: s.shallow_stacks,
            frame_pointers_missing,
            alloc: crate::alloc::AllocStats::now(),
            unwound_dwarf: s.unwound_cfi,
            unwound_frame_pointers: s.unwound_fp,
            unwind_fallbacks: s.unwind_fallbacks,
            truncated_stacks: s.truncated_stacks,
            unwind_incomplete: s.unwind_incomplete,
            unwind_objects: s.unwind_objects,
            unwind_objects_failed: s.unwind_objects_failed,
            unwind_table_bytes: s.unwind_table_bytes,
            stacks_truncated: WINDOW.stacks_truncated.get(),
            empty_samples: WINDOW.samples_empty.get(),
            label_sets_live: registry_len.live as u64,
            label_sets_retired: registry_len.retired as u64,
            sampler: sampler_counts(s),
            otel: otel_counts(),
            task_hooks: task_hook_counts(),
            // The writer's fields.
            ..std::mem::take(&mut *stats)
        };
        writer_counts(&mut stats);
    }
}

/// The counts of the writer thread's stages (encoder, symbolizer): process-wide counters.
fn writer_counts(stats: &mut Stats) {
    stats.profiles_encoded = ENCODE.pieces_encoded.get();
    stats.profiles_oversized = ENCODE.pieces_oversized.get();
    stats.addresses_symbolized = SYMBOLIZE.addresses_symbolized.get();
    stats.addresses_unresolved = SYMBOLIZE.addresses_unresolved.get();
    stats.alloc.windows_not_exported = crate::alloc::COUNTERS.not_exported.get();
}

fn sampler_counts(s: &SamplerStats) -> SamplerCounts {
    SamplerCounts {
        leaf_only_samples: s.leaf_only,
        truncated_stacks: s.truncated_stacks,
        ignored_foreign_signals: s.ignored_not_timer,
        ignored_stale_signals: s.ignored_other_session,
        timers_armed_by_scan: s.armed_by_scan,
        timers_armed_by_thread: s.armed_by_thread,
        timers_deleted: s.timers_deleted,
        arm_failures_eagain: s.arm_failures_eagain,
        arm_failures_other: s.arm_failures_other,
        stack_bounds_published: s.bounds_published,
        stack_bounds_failed: s.bounds_failed,
        thread_scans: s.scans,
        handler_cpu: Duration::from_nanos(s.handler_cpu_ns),
        maintain_cpu: Duration::from_nanos(s.maintain_cpu_ns),
        drain_cpu: Duration::from_nanos(s.drain_cpu_ns),
    }
}

#[cfg(feature = "otel")]
fn otel_counts() -> OtelCounts {
    OtelCounts {
        unknown_spans: crate::otel::OTEL.unknown_spans.get(),
        unknown_parents: crate::otel::OTEL.unknown_parents.get(),
        unlabelled_requests: crate::otel::OTEL.unlabelled_requests.get(),
        live_spans: crate::otel::span_map_len() as u64,
    }
}

#[cfg(not(feature = "otel"))]
fn otel_counts() -> OtelCounts {
    OtelCounts::default()
}

fn task_hook_counts() -> TaskHookCounts {
    let h = crate::tokio_hooks::state::hook_counters();
    TaskHookCounts {
        tasks_labelled: h.tasks_labelled,
        tasks_released: h.tasks_released,
        parent_expired: h.parent_expired,
        unbalanced_polls: h.unbalanced_polls,
        frames_unavailable: h.frames_unavailable,
    }
}

fn limits(config: &Config) -> WindowLimits {
    WindowLimits {
        max_label_sets: config.max_label_sets,
        max_span_names: config.max_span_names,
        max_label_keys: WindowLimits::label_keys_within(config.series_tags),
    }
}
