//! The `Profiler` handle: start, stop, stats.

/// `ProfilerBuilder`: options, defaults, validation, environment variables.
pub(crate) mod builder;
mod collector;
mod error;
mod stats;
mod writer;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use error::StopError;
pub use stats::{
    Dropped, OtelCounts, SamplerCounts, Stats, StopReport, SymbolizerStats, TaskHookCounts,
};

use crate::error::StartError;
use crate::sync::lock_std as lock;
use builder::{Config, ProfilerBuilder};

/// True while a profiler runs in this process (one at a time: the sampler and the
/// label registry are process-wide).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// A running CPU profiler. Stop it with [`stop`](Self::stop) to write the last window;
/// dropping it stops it the same way (errors are logged).
///
/// ```no_run
/// let profiler = span_profiler::Profiler::builder().application_name("checkout").start()?;
/// // ... the application runs; labelled work is attributed to its spans ...
/// let stats = profiler.stats();
/// println!("coverage: {:?}", stats.coverage());
/// let report = profiler.stop()?;
/// println!("{} windows, {} files", report.windows, report.files_written);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Profiler {
    running: Option<Running>,
    /// Switched off by `SPAN_PROFILER_ENABLED=false`: nothing runs, `stop()` succeeds.
    inert: bool,
}

struct Running {
    stop_tx: mpsc::Sender<()>,
    collector: JoinHandle<collector::Outcome>,
    stats: Arc<Mutex<Stats>>,
}

impl Profiler {
    /// Starts configuring a profiler.
    ///
    /// ```
    /// let builder = span_profiler::Profiler::builder().application_name("checkout");
    /// # let _ = builder;
    /// ```
    pub fn builder() -> ProfilerBuilder {
        ProfilerBuilder::default()
    }

    pub(crate) fn start(config: Config) -> Result<Profiler, StartError> {
        if !config.enabled {
            log::info!(target: "span_profiler", "SPAN_PROFILER_ENABLED is off: not profiling");
            return Ok(Profiler {
                running: None,
                inert: true,
            });
        }
        // Acquire: pairs with the Release store in `finish`, so a new session sees the
        // previous one's teardown complete.
        if RUNNING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(StartError::AlreadyRunning);
        }
        #[cfg(feature = "otel")]
        let (application_name, namespace) = (
            config.application_name.clone(),
            config
                .upload
                .as_ref()
                .and_then(|u| u.service_namespace.clone()),
        );
        match collector::spawn(config) {
            Ok((stop_tx, collector, stats)) => {
                // Grafana's span-to-profile link needs this name to equal the traces'
                // `service.name`: warns once if a `ProfilingTracerProvider` says otherwise.
                // Likewise the namespace: Grafana's link selects `service_namespace` too when
                // the traces' resource has `service.namespace`.
                #[cfg(feature = "otel")]
                {
                    crate::otel::note_application_name(&application_name);
                    crate::otel::note_profiler_namespace(namespace.as_deref());
                }
                Ok(Profiler {
                    running: Some(Running {
                        stop_tx,
                        collector,
                        stats,
                    }),
                    inert: false,
                })
            }
            Err(err) => {
                // Release: pairs with the Acquire in `start`.
                RUNNING.store(false, Ordering::Release);
                Err(err)
            }
        }
    }

    /// A snapshot of the counters (updated by the collector about every 100 ms).
    pub fn stats(&self) -> Stats {
        match &self.running {
            Some(running) => lock(&running.stats).clone(),
            None => Stats::default(),
        }
    }

    /// Stops sampling, writes the last window, uploads what is queued (within the stop
    /// timeout), disarms every timer and joins the profiler's threads.
    pub fn stop(mut self) -> Result<StopReport, StopError> {
        if self.inert {
            return Ok(StopReport::default());
        }
        self.finish()
    }

    /// False when `SPAN_PROFILER_ENABLED` switched profiling off: this profiler does
    /// nothing.
    pub fn is_active(&self) -> bool {
        !self.inert
    }

    fn finish(&mut self) -> Result<StopReport, StopError> {
        let Some(running) = self.running.take() else {
            return Err(StopError::NotRunning);
        };
        // The collector may already have exited on its own (it only does on a panic).
        let _ = running.stop_tx.send(());
        let outcome = running.collector.join();
        // Release: pairs with the Acquire in `start`.
        RUNNING.store(false, Ordering::Release);
        match outcome {
            Ok(outcome) => outcome.into_result(),
            Err(_) => Err(StopError::CollectorPanicked),
        }
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if self.running.is_some() {
            if let Err(err) = self.finish() {
                log::error!(target: "span_profiler", "stopping the profiler on drop: {err}");
            }
        }
    }
}

impl fmt::Debug for Profiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profiler")
            .field("running", &self.running.is_some())
            .field("inert", &self.inert)
            .finish()
    }
}
