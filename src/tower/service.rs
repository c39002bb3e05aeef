//! The service: starts (or reuses) the request's span and wraps the inner future.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::TraceContextExt;
use tower_service::Service;

use super::future::ProfileFuture;
use super::request;
use crate::counters::LogOnce;
use crate::labels::registry::LabelHandle;
use crate::sampler::slot::SlotGuard;

/// The service of a [`ProfileLayer`](crate::ProfileLayer): wraps an inner
/// `Service<http::Request<B>>` so that each request runs under its server span's context
/// and profiling labels.
///
/// The inner service's `call` already runs with the request's context attached and its
/// labels applied (for services that do work there); its future is wrapped in a
/// [`ProfileFuture`]. `Clone`, `Send` and `Sync` exactly when the inner service is.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use span_profiler::{ProfileLayer, ProfileService};
/// use tower::{Layer as _, ServiceBuilder};
///
/// let inner = tower::service_fn(|_req: Request<()>| async {
///     Ok::<_, Infallible>(Response::new("hello"))
/// });
/// let service: ProfileService<_> = ProfileLayer::new().layer(inner);
/// // or: ServiceBuilder::new().layer(ProfileLayer::new()).service(..)
/// # let _ = (service, ServiceBuilder::new());
/// ```
#[derive(Clone)]
pub struct ProfileService<S> {
    inner: S,
    tracer: Arc<BoxedTracer>,
    /// Whether handlers are metered (feature `task-metrics`).
    #[cfg(feature = "task-metrics")]
    task_metrics: bool,
}

impl<S> ProfileService<S> {
    pub(crate) fn new(inner: S, tracer: Arc<BoxedTracer>) -> Self {
        Self {
            inner,
            tracer,
            #[cfg(feature = "task-metrics")]
            task_metrics: false,
        }
    }

    #[cfg(feature = "task-metrics")]
    pub(crate) fn set_task_metrics(&mut self, on: bool) {
        self.task_metrics = on;
    }

    /// The wrapped service.
    ///
    /// ```
    /// use span_profiler::ProfileLayer;
    /// use tower_layer::Layer as _;
    ///
    /// let service = ProfileLayer::new().layer(5u8);
    /// assert_eq!(*service.inner(), 5);
    /// ```
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    ///
    /// ```
    /// use span_profiler::ProfileLayer;
    /// use tower_layer::Layer as _;
    ///
    /// let mut service = ProfileLayer::new().layer(5u8);
    /// *service.inner_mut() += 1;
    /// assert_eq!(service.into_inner(), 6);
    /// ```
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    ///
    /// ```
    /// use span_profiler::ProfileLayer;
    /// use tower_layer::Layer as _;
    ///
    /// assert_eq!(ProfileLayer::new().layer("inner").into_inner(), "inner");
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for ProfileService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, R> Service<Request<B>> for ProfileService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ProfileFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = request::start(&self.tracer, &req);
        let (handle, _root) = crate::otel::lookup(&started.cx);
        if handle.is_none() {
            note_unlabelled_request(&started.cx);
        }
        let future = {
            let _attached = started.cx.clone().attach();
            let _scope = SlotGuard::enter(handle.as_ref().map_or(0, LabelHandle::id));
            self.inner.call(req)
        };
        #[cfg(feature = "task-metrics")]
        let started = request::Started {
            task_root: _root.filter(|_| self.task_metrics),
            ..started
        };
        ProfileFuture::new(future, started, handle)
    }
}

static WARNED_UNLABELLED: LogOnce = LogOnce::new();

/// Counts a request served without labels and says once why and how to fix it.
#[cold]
fn note_unlabelled_request(cx: &opentelemetry::Context) {
    crate::otel::OTEL.unlabelled_requests.incr();
    if WARNED_UNLABELLED.first() {
        let why = if cx.span().span_context().is_valid() {
            "its spans come from a tracer provider other than a ProfilingTracerProvider"
        } else {
            "its tracer makes no spans (the global tracer provider was the no-op default)"
        };
        log::warn!(
            "span-profiler: ProfileLayer serves requests without profiling labels: {why}; \
             call opentelemetry::global::set_tracer_provider(ProfilingTracerProvider::new(..)) \
             before ProfileLayer::new(), or build the layer with ProfileLayer::with_tracer"
        );
    }
}
