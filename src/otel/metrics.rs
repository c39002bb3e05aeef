//! Per-span task metrics (feature `task-metrics`): futures metered with tokio-metrics'
//! task instrumentation add their polls to their local root's monitor, and the root span
//! gets the totals as attributes when it ends.
//!
//! One `TaskMonitor` per local root, made when the first metered future under it is
//! built (roots with no metered future cost nothing); each metered future is wrapped in
//! tokio-metrics' `Instrumented`, which times every poll, and the waker it hands the
//! inner future timestamps the wake-ups. The root span reads the monitor's cumulative
//! totals when it ends or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::KeyValue;
use pin_project_lite::pin_project;
use tokio_metrics::{Instrumented, TaskMetrics, TaskMonitor};

use super::map::Root;

/// Span attribute: how many times the metered futures under the local root were polled
/// (integer).
///
/// ```
/// assert_eq!(span_profiler::TASK_POLL_COUNT_ATTRIBUTE, "span_profiler.task.poll_count");
/// ```
pub const TASK_POLL_COUNT_ATTRIBUTE: &str = "span_profiler.task.poll_count";

/// Span attribute: nanoseconds spent inside polls of the metered futures ("busy" time:
/// wall-clock time on a worker thread, including time the thread was descheduled by the
/// OS during a poll) (integer).
///
/// ```
/// assert_eq!(span_profiler::TASK_BUSY_NS_ATTRIBUTE, "span_profiler.task.busy_ns");
/// ```
pub const TASK_BUSY_NS_ATTRIBUTE: &str = "span_profiler.task.busy_ns";

/// Span attribute: nanoseconds the metered futures spent woken but not yet polled (run
/// queue wait: the worker was busy with other tasks) (integer).
///
/// ```
/// assert_eq!(span_profiler::TASK_SCHEDULED_NS_ATTRIBUTE, "span_profiler.task.scheduled_ns");
/// ```
pub const TASK_SCHEDULED_NS_ATTRIBUTE: &str = "span_profiler.task.scheduled_ns";

/// Span attribute: nanoseconds the metered futures spent waiting to be woken, from the
/// end of a poll that returned `Pending` to the wake-up (timers, I/O, locks, channels)
/// (integer).
///
/// ```
/// assert_eq!(span_profiler::TASK_IDLE_NS_ATTRIBUTE, "span_profiler.task.idle_ns");
/// ```
pub const TASK_IDLE_NS_ATTRIBUTE: &str = "span_profiler.task.idle_ns";

/// Span attribute: how many polls took at least [`TASK_SLOW_POLL_THRESHOLD`] (integer).
/// Slow polls hold a worker thread and delay every other task queued on it.
///
/// ```
/// assert_eq!(span_profiler::TASK_SLOW_POLL_COUNT_ATTRIBUTE, "span_profiler.task.slow_poll_count");
/// ```
pub const TASK_SLOW_POLL_COUNT_ATTRIBUTE: &str = "span_profiler.task.slow_poll_count";

/// A poll that takes at least this long (50 µs) counts as slow
/// ([`TASK_SLOW_POLL_COUNT_ATTRIBUTE`]): tokio-metrics' default.
///
/// ```
/// assert_eq!(span_profiler::TASK_SLOW_POLL_THRESHOLD, std::time::Duration::from_micros(50));
/// ```
pub const TASK_SLOW_POLL_THRESHOLD: Duration = Duration::from_micros(50);

impl Root {
    /// The root's task monitor, made on first use.
    pub(crate) fn task_monitor(&self) -> &TaskMonitor {
        self.task_monitor.get_or_init(|| {
            let mut builder = TaskMonitor::builder();
            builder.with_slow_poll_threshold(TASK_SLOW_POLL_THRESHOLD);
            builder.build()
        })
    }

    /// The attributes of the totals so far; `None` when no metered future ran under the
    /// root.
    fn task_metric_attributes(&self) -> Option<Vec<KeyValue>> {
        self.task_monitor
            .get()
            .map(|monitor| attributes(&monitor.cumulative()))
    }
}

/// Nanoseconds as an attribute value (saturating: 292 years).
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The documented attributes of `m`.
fn attributes(m: &TaskMetrics) -> Vec<KeyValue> {
    vec![
        KeyValue::new(TASK_POLL_COUNT_ATTRIBUTE, count(m.total_poll_count)),
        KeyValue::new(TASK_BUSY_NS_ATTRIBUTE, nanos(m.total_poll_duration)),
        KeyValue::new(
            TASK_SCHEDULED_NS_ATTRIBUTE,
            nanos(m.total_scheduled_duration),
        ),
        KeyValue::new(TASK_IDLE_NS_ATTRIBUTE, nanos(m.total_idle_duration)),
        KeyValue::new(
            TASK_SLOW_POLL_COUNT_ATTRIBUTE,
            count(m.total_slow_poll_count),
        ),
    ]
}

/// Held by a local root's `ProfilingSpan`: writes the root's totals on the span when it
/// ends or is dropped. A plain function pointer sets the attributes, so that the span's
/// `Drop` (which has no `Span` bound) can call it.
pub(crate) struct Recorder<S> {
    root: Arc<Root>,
    set_attributes: fn(&mut S, Vec<KeyValue>),
}

impl<S: opentelemetry::trace::Span> Recorder<S> {
    pub(crate) fn new(root: Arc<Root>) -> Self {
        Self {
            root,
            set_attributes: |span, attributes| span.set_attributes(attributes),
        }
    }
}

impl<S> Recorder<S> {
    /// Sets the root's totals on `span`, if any metered future ran under it.
    pub(crate) fn record(self, span: &mut S) {
        self.root
            .metrics_recorded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(attributes) = self.root.task_metric_attributes() {
            (self.set_attributes)(span, attributes);
        }
    }
}

impl<S> std::fmt::Debug for Recorder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("root_span_id", &self.root.span_id)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A future whose polls count towards its local root span's task metrics: returned
    /// inside [`Profiled::with_task_metrics`](crate::Profiled::with_task_metrics).
    ///
    /// With a known local root, every poll goes through tokio-metrics' instrumentation
    /// (timestamps before and after the poll, a timestamp on each wake-up, a handful of
    /// atomic additions: about 100 ns per poll, see the crate's `metrics` bench); without
    /// one it is polled directly and measures nothing.
    ///
    /// `Send` and `Sync` exactly when the inner future is.
    ///
    /// ```
    /// use span_profiler::{Labels, ProfiledExt, TaskMetered};
    ///
    /// // Plain labels have no span to record on: the future is polled unmeasured.
    /// let fut = async { 1 }.with_labels(Labels::span(1, "job")).with_task_metrics();
    /// let inner: &TaskMetered<_> = fut.inner();
    /// assert!(!inner.is_metered());
    /// ```
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct TaskMetered<F> {
        #[pin]
        inner: Metered<F>,
    }
}

pin_project! {
    #[project = MeteredProj]
    enum Metered<F> {
        Plain { #[pin] future: F },
        Instrumented { #[pin] future: Instrumented<F> },
    }
}

impl<F> TaskMetered<F> {
    /// Meters `future` into `root`'s monitor, or not at all without a root.
    pub(crate) fn new(future: F, root: Option<&Root>) -> Self {
        let recording = root.filter(|r| {
            !r.metrics_recorded
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        let inner = match recording {
            Some(root) => Metered::Instrumented {
                future: root.task_monitor().instrument(future),
            },
            None => Metered::Plain { future },
        };
        Self { inner }
    }

    /// Whether the polls are measured: the wrapper found a local root span to record
    /// them on.
    ///
    /// ```
    /// use span_profiler::{Labels, ProfiledExt};
    ///
    /// let fut = async {}.with_labels(Labels::new()).with_task_metrics();
    /// assert!(!fut.inner().is_metered());
    /// ```
    pub fn is_metered(&self) -> bool {
        matches!(self.inner, Metered::Instrumented { .. })
    }
}

impl<F: Future> Future for TaskMetered<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project().inner.project() {
            MeteredProj::Plain { future } => future.poll(cx),
            MeteredProj::Instrumented { future } => future.poll(cx),
        }
    }
}

impl<F> std::fmt::Debug for TaskMetered<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskMetered")
            .field("metered", &self.is_metered())
            .finish_non_exhaustive()
    }
}
