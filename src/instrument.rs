//! The future wrapper: labels follow a task wherever and whenever it is polled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::labels::registry::LabelHandle;
use crate::labels::Labels;
use crate::sampler::slot::SlotGuard;

/// Attaches profiling labels to any future.
///
/// Implemented for every [`Future`]. The method names do not collide with
/// `tracing::Instrument::instrument` or `opentelemetry::trace::FutureExt::with_context`.
///
/// ```
/// use span_profiler::{Labels, ProfiledExt};
///
/// # async fn serve() {}
/// # async fn demo() {
/// tokio::spawn(serve().with_labels(Labels::span(42, "GET /orders/{id}")));
/// # }
/// ```
pub trait ProfiledExt: Future + Sized {
    /// Wraps `self` so that `labels` are in force while it is polled or dropped, on
    /// whichever thread that happens. Inside, they replace (not extend) any labels of an
    /// outer scope; empty labels ([`Labels::new`]) make the work unlabelled.
    ///
    /// ```
    /// use span_profiler::{Labels, ProfiledExt};
    ///
    /// # async fn demo() {
    /// let answer = async { 6 * 7 }.with_labels(Labels::span(1, "compute")).await;
    /// assert_eq!(answer, 42);
    /// # }
    /// ```
    fn with_labels(self, labels: Labels) -> Profiled<Self> {
        Profiled::new(self, labels.into_handle())
    }

    /// Wraps `self` with the labels in force where this is called ([`Labels::current`]),
    /// the way tracing's `.in_current_span()` carries a span: a task spawned inside a
    /// labelled future keeps its parent's labels while it is polled or dropped, on
    /// whichever thread. Equivalent to `self.with_labels(Labels::current())`; outside any
    /// labels the wrapper applies none. (A runtime built with
    /// [`tokio_hooks`](crate::tokio_hooks) does this for every spawn.)
    ///
    /// ```
    /// use span_profiler::{Labels, ProfiledExt};
    ///
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let request = async {
    ///     // Inside the request's labels: the spawned task takes them along.
    ///     tokio::spawn(async { Labels::current() }.in_current_labels()).await.unwrap()
    /// };
    /// let seen = request.with_labels(Labels::span(7, "GET /report")).await;
    /// assert_eq!(seen.span_name(), Some("GET /report"));
    /// # });
    /// ```
    fn in_current_labels(self) -> Profiled<Self> {
        self.with_labels(Labels::current())
    }

    /// Wraps `self` with the labels of the OpenTelemetry span that is current
    /// (`opentelemetry::Context::current()`) **when this is called**: its local root's
    /// `span_id` and `span_name`, as recorded by a
    /// [`ProfilingTracerProvider`](crate::ProfilingTracerProvider). Call it where the
    /// request's span is current, e.g. inside `cx.attach()` or an entered `tracing` span,
    /// not inside the future (there it would be too late: the wrapper is built first).
    ///
    /// Gives no labels (and counts the lookup) when the current span is unknown: ended,
    /// remote, or built by a tracer that is not a `ProfilingTracer`. The labels do not
    /// change afterwards, even when the span ends: the wrapper keeps them until dropped.
    ///
    /// ```
    /// use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
    /// use opentelemetry::Context;
    /// use span_profiler::{ProfiledExt, ProfilingTracerProvider};
    ///
    /// # async fn handle() {}
    /// # async fn demo(tracer: span_profiler::ProfilingTracer<opentelemetry::trace::noop::NoopTracer>) {
    /// let cx = Context::current_with_span(tracer.start("GET /orders/{id}"));
    /// let fut = {
    ///     let _attached = cx.clone().attach();
    ///     handle().profiled() // labels of "GET /orders/{id}"'s local root
    /// };
    /// tokio::spawn(opentelemetry::context::FutureExt::with_context(fut, cx));
    /// # }
    /// ```
    #[cfg(feature = "otel")]
    fn profiled(self) -> Profiled<Self> {
        let (handle, root) = crate::otel::lookup_current();
        Profiled::with_root(self, handle, root)
    }

    /// Wraps `self` with the labels of the span in `cx` (see [`profiled`](Self::profiled)),
    /// looked up now. The returned future does not borrow `cx`.
    ///
    /// ```
    /// use opentelemetry::context::FutureExt as _;
    /// use opentelemetry::trace::{TraceContextExt, Tracer};
    /// use opentelemetry::Context;
    /// use span_profiler::ProfiledExt;
    ///
    /// # async fn handle() {}
    /// # async fn demo(tracer: span_profiler::ProfilingTracer<opentelemetry::trace::noop::NoopTracer>) {
    /// let cx = Context::current_with_span(tracer.start("GET /orders/{id}"));
    /// tokio::spawn(handle().with_context(cx.clone()).profiled_with(&cx));
    /// # }
    /// ```
    #[cfg(feature = "otel")]
    fn profiled_with(self, cx: &opentelemetry::Context) -> Profiled<Self> {
        let (handle, root) = crate::otel::lookup(cx);
        Profiled::with_root(self, handle, root)
    }

    /// Both at once: attaches `cx` as the current OpenTelemetry context on every poll
    /// (`opentelemetry::context::FutureExt::with_context`) and applies its span's labels
    /// (as [`profiled_with`](Self::profiled_with)). Equivalent to
    /// `self.with_context(cx.clone()).profiled_with(&cx)`.
    ///
    /// ```
    /// use opentelemetry::trace::{TraceContextExt, Tracer};
    /// use opentelemetry::Context;
    /// use span_profiler::ProfiledExt;
    ///
    /// # async fn handle() {}
    /// # async fn demo(tracer: span_profiler::ProfilingTracer<opentelemetry::trace::noop::NoopTracer>) {
    /// let cx = Context::current_with_span(tracer.start("GET /orders/{id}"));
    /// tokio::spawn(handle().profiled_in_context(cx));
    /// # }
    /// ```
    #[cfg(feature = "otel")]
    fn profiled_in_context(
        self,
        cx: opentelemetry::Context,
    ) -> Profiled<opentelemetry::context::WithContext<Self>> {
        let (handle, root) = crate::otel::lookup(&cx);
        Profiled::with_root(
            opentelemetry::context::FutureExt::with_context(self, cx),
            handle,
            root,
        )
    }
}

impl<F: Future> ProfiledExt for F {}

#[cfg(feature = "otel")]
use crate::otel::RootLink;
/// Without OpenTelemetry a wrapper links to no root span.
#[cfg(not(feature = "otel"))]
type RootLink = ();

pin_project! {
    /// A future with profiling labels: returned by [`ProfiledExt`]'s methods.
    ///
    /// The labels are in force exactly while the wrapped future is polled or dropped:
    /// each poll saves the thread's label slot, writes this wrapper's label id, polls the
    /// inner future and restores the saved id, also when the poll panics. Samples taken
    /// outside those moments are not attributed to these labels, so a task that moves
    /// between worker threads, or shares a thread with other tasks, is labelled
    /// correctly on every poll.
    ///
    /// `Send` and `Sync` exactly when the inner future is. The label id stays registered
    /// while the wrapper exists.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Profiled<F> {
        // Invariant: `Some` from construction until `PinnedDrop` or `into_inner`.
        #[pin]
        inner: Option<F>,
        id: u64,
        handle: Option<LabelHandle>,
        // The span's local root, for `with_task_metrics` (feature `task-metrics`).
        root: RootLink,
    }

    impl<F> PinnedDrop for Profiled<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let id = *this.id;
            let mut inner = this.inner;
            if inner.is_some() {
                // Dropping a future runs its code (destructors of its locals): that work
                // belongs to these labels too.
                let _scope = SlotGuard::enter(id);
                inner.set(None);
            }
        }
    }
}

impl<F> Profiled<F> {
    // `RootLink` is `()` without the `task-metrics` feature.
    #[allow(clippy::unit_arg)]
    pub(crate) fn new(inner: F, handle: Option<LabelHandle>) -> Self {
        Self::with_root(inner, handle, RootLink::default())
    }

    /// A wrapper that also knows the local root span of its labels.
    pub(crate) fn with_root(inner: F, handle: Option<LabelHandle>, root: RootLink) -> Self {
        let id = handle.as_ref().map_or(0, LabelHandle::id);
        Self {
            inner: Some(inner),
            id,
            handle,
            root,
        }
    }

    /// Also measures the wrapped future's polls with tokio-metrics and adds them to its
    /// local root span, which gets the totals as attributes when it ends or is dropped
    /// (feature `task-metrics`):
    ///
    /// | attribute | value |
    /// | --- | --- |
    /// | [`span_profiler.task.poll_count`](crate::TASK_POLL_COUNT_ATTRIBUTE) | polls |
    /// | [`span_profiler.task.busy_ns`](crate::TASK_BUSY_NS_ATTRIBUTE) | ns inside polls |
    /// | [`span_profiler.task.scheduled_ns`](crate::TASK_SCHEDULED_NS_ATTRIBUTE) | ns from a wake-up to the next poll (run-queue wait) |
    /// | [`span_profiler.task.idle_ns`](crate::TASK_IDLE_NS_ATTRIBUTE) | ns from the end of a `Pending` poll to the next wake-up |
    /// | [`span_profiler.task.slow_poll_count`](crate::TASK_SLOW_POLL_COUNT_ATTRIBUTE) | polls of at least [`TASK_SLOW_POLL_THRESHOLD`](crate::TASK_SLOW_POLL_THRESHOLD) |
    ///
    /// Off unless asked for: each poll then costs about 100 ns more (two clock reads per
    /// poll plus one per wake-up, and a handful of atomic additions; see the `metrics`
    /// bench), and the first metered future under a root allocates its monitor.
    ///
    /// - Only wrappers built from a span ([`profiled`](ProfiledExt::profiled),
    ///   [`profiled_with`](ProfiledExt::profiled_with),
    ///   [`profiled_in_context`](ProfiledExt::profiled_in_context)) whose local root a
    ///   [`ProfilingTracerProvider`](crate::ProfilingTracerProvider) built are measured;
    ///   others (plain labels, an unknown or ended span) are polled unmeasured.
    /// - Every metered future under one root adds to the same totals (e.g. the handler
    ///   and tasks it spawns with `.profiled().with_task_metrics()`). Meter each piece of
    ///   work once: a metered future inside another one counts its polls twice.
    /// - Polls after the root span ended are not recorded: the attributes are written
    ///   once, when it ends. A span ended by dropping its last `Context` ends after the
    ///   futures holding that context are dropped, so all their polls count.
    /// - Busy time is wall-clock time inside polls: it includes time the worker thread
    ///   was descheduled by the OS, unlike CPU profiles.
    ///
    /// ```
    /// use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
    /// use opentelemetry::Context;
    /// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    /// use span_profiler::{ProfiledExt, ProfilingTracerProvider, TASK_POLL_COUNT_ATTRIBUTE};
    ///
    /// let exporter = InMemorySpanExporter::default();
    /// let sdk = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    /// let tracer = ProfilingTracerProvider::new(sdk).tracer("example");
    ///
    /// let cx = Context::current_with_span(tracer.start("GET /orders/{id}"));
    /// let work = async { tokio::task::yield_now().await }
    ///     .profiled_in_context(cx) // the future now holds the only `Context` of the span
    ///     .with_task_metrics();
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(work); // the span ends when the future (and its context) is dropped
    ///
    /// let span = &exporter.get_finished_spans().unwrap()[0];
    /// let polls = span.attributes.iter().find(|kv| kv.key.as_str() == TASK_POLL_COUNT_ATTRIBUTE);
    /// assert_eq!(polls.unwrap().value, opentelemetry::Value::I64(2));
    /// ```
    #[cfg(feature = "task-metrics")]
    pub fn with_task_metrics(mut self) -> Profiled<crate::otel::TaskMetered<F>> {
        // Not pinned (owned): the parts can be moved out; `PinnedDrop` then sees `None`.
        let handle = self.handle.take();
        let root = self.root.take();
        let metered = crate::otel::TaskMetered::new(self.into_inner(), root.as_deref());
        Profiled::with_root(metered, handle, root)
    }

    cfg_internal! {
        /// The label id this wrapper writes into the slot (0: none).
        pub(crate) fn label_id(&self) -> u64 {
            self.id
        }
    }

    /// The labels this wrapper applies.
    ///
    /// ```
    /// use span_profiler::{Labels, ProfiledExt};
    ///
    /// let fut = async {}.with_labels(Labels::span(5, "job"));
    /// assert_eq!(fut.labels().span_name(), Some("job"));
    /// ```
    pub fn labels(&self) -> Labels {
        Labels::from_handle(self.handle.clone())
    }

    /// The wrapped future.
    pub fn inner(&self) -> &F {
        self.inner
            .as_ref()
            .expect("Profiled invariant: inner is Some until dropped")
    }

    /// The wrapped future, mutably. Only reachable while the wrapper is not pinned.
    pub fn inner_mut(&mut self) -> &mut F {
        self.inner
            .as_mut()
            .expect("Profiled invariant: inner is Some until dropped")
    }

    /// The wrapped future, pinned.
    pub fn inner_pin_mut(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project()
            .inner
            .as_pin_mut()
            .expect("Profiled invariant: inner is Some until dropped")
    }

    /// Unwraps the future, dropping the labels.
    ///
    /// ```
    /// use span_profiler::{Labels, ProfiledExt};
    ///
    /// let fut = std::future::ready(3).with_labels(Labels::span(1, "x"));
    /// let bare: std::future::Ready<i32> = fut.into_inner();
    /// # let _ = bare;
    /// ```
    pub fn into_inner(mut self) -> F {
        // Moving out is sound: `self` is owned, hence not pinned. `PinnedDrop` then sees
        // `None` and does nothing.
        self.inner
            .take()
            .expect("Profiled invariant: inner is Some until dropped")
    }
}

impl<F: Future> Future for Profiled<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _scope = SlotGuard::enter(*this.id);
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx),
            // Unreachable by the invariant; a pending future that is never woken is the
            // harmless answer for a wrapper polled after `into_inner` moved it.
            None => Poll::Pending,
        }
    }
}

impl<F> std::fmt::Debug for Profiled<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiled")
            .field("label_id", &self.id)
            .finish_non_exhaustive()
    }
}
