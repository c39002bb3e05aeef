//! The tracer provider wrapper and its options.

use std::sync::Arc;

use opentelemetry::trace::TracerProvider;
use opentelemetry::InstrumentationScope;

use super::config::{Config, LabelScope};
use super::service;
use super::tracer::ProfilingTracer;

/// Wraps any OpenTelemetry [`TracerProvider`] so that the work of each request can be
/// found in its CPU profile from its trace.
///
/// Each *local root* span (one without a parent, or whose parent came from another
/// process) gets the attribute `pyroscope.profile.id` (its span id as 16 lowercase hex
/// digits) and a label set: `span_id` (sampled spans only) and `span_name`. Every span
/// under that root maps to the same set. Work picks the labels up when it is wrapped with
/// [`ProfiledExt::profiled`](crate::ProfiledExt::profiled) (or run under a
/// [`ContextLabelsGuard`](crate::ContextLabelsGuard)); the tracer itself never touches
/// the thread's labels, because span start and end run wherever the task happens to be.
///
/// Accepted wherever a `TracerProvider` is: by `opentelemetry::global::set_tracer_provider`,
/// and its tracers by `tracing_opentelemetry::layer().with_tracer(..)`.
///
/// ```
/// use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
/// use opentelemetry::Context;
/// use span_profiler::{ProfiledExt, ProfilingTracerProvider};
///
/// # async fn handle() {}
/// # async fn demo(sdk_provider: opentelemetry::trace::noop::NoopTracerProvider) {
/// let provider = ProfilingTracerProvider::new(sdk_provider).with_service_name("checkout");
/// opentelemetry::global::set_tracer_provider(provider.clone());
///
/// let tracer = provider.tracer("server");
/// let cx = Context::current_with_span(tracer.start("GET /orders/{id}"));
/// // Attach the context on every poll (OpenTelemetry) and apply its labels (profiling):
/// tokio::spawn(handle().profiled_in_context(cx));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ProfilingTracerProvider<P> {
    inner: P,
    config: Arc<Config>,
    service_name: Arc<str>,
    service_namespace: Option<Arc<str>>,
}

impl<P> ProfilingTracerProvider<P> {
    /// Wraps `inner`, with `span_id` and `span_name` taken from local roots and no
    /// `trace_id` label.
    ///
    /// The service name the traces carry is taken as `Resource::builder().build()` would
    /// find it (`service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `OTEL_SERVICE_NAME`,
    /// else `unknown_service:<executable>`); when it differs from the profiler's
    /// application name, a warning is logged once, since Grafana's link would then find
    /// no profile. If your `Resource` sets the name in code, pass it with
    /// [`with_service_name`](Self::with_service_name).
    pub fn new(inner: P) -> Self {
        let service_name: Arc<str> = service::service_name_from_env().into();
        let service_namespace = service::service_namespace_from_env().map(Arc::from);
        let config = Config {
            span_id: LabelScope::LocalRoot,
            span_name: LabelScope::LocalRoot,
            trace_id: false,
        };
        Self {
            inner,
            config: Arc::new(config),
            service_name,
            service_namespace,
        }
    }

    /// The `service.name` of the traces (the resource's), which the profiler's
    /// application name must equal for Grafana's "Profiles" link to find anything. The
    /// comparison happens when the first tracer is taken from this provider, or when the
    /// profiler starts, whichever comes later.
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into().into();
        self
    }

    /// The `service.namespace` of the traces (the resource's; default: `service.namespace`
    /// in `OTEL_RESOURCE_ATTRIBUTES`, as the SDK's resource finds it). Grafana's link then
    /// selects `service_namespace` too, so the profiler must send the same value
    /// ([`ProfilerBuilder::service_namespace`](crate::ProfilerBuilder::service_namespace));
    /// when it does not, a warning is logged once.
    ///
    /// ```
    /// use span_profiler::ProfilingTracerProvider;
    /// # let sdk_provider = opentelemetry::trace::noop::NoopTracerProvider::new();
    /// let provider = ProfilingTracerProvider::new(sdk_provider)
    ///     .with_service_name("checkout")
    ///     .with_service_namespace("shop");
    /// assert_eq!(provider.service_namespace(), Some("shop"));
    /// ```
    pub fn with_service_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.service_namespace = Some(namespace.into().into());
        self
    }

    /// The `service.namespace` the traces are taken to carry, if any (see
    /// [`with_service_namespace`](Self::with_service_namespace)).
    pub fn service_namespace(&self) -> Option<&str> {
        self.service_namespace.as_deref()
    }

    /// Which spans give the `span_id` label (and the `pyroscope.profile.id` attribute).
    /// Default [`LabelScope::LocalRoot`].
    pub fn with_span_id_scope(mut self, scope: LabelScope) -> Self {
        Arc::make_mut(&mut self.config).span_id = scope;
        self.config.note();
        self
    }

    /// Which spans give the `span_name` label. Default [`LabelScope::LocalRoot`].
    pub fn with_span_name_scope(mut self, scope: LabelScope) -> Self {
        Arc::make_mut(&mut self.config).span_name = scope;
        self.config.note();
        self
    }

    /// Adds the `trace_id` label (32 lowercase hex digits) to sets that have a `span_id`.
    /// Default off: Pyroscope keeps `trace_id` out of series labels only from v2.1.0
    /// (`pkg/model/pprofsplit`); older servers make one series per trace, which soon hits
    /// the tenant's series limit. Turn it on only with Pyroscope v2.1.0 or later.
    pub fn with_trace_id_label(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.config).trace_id = on;
        self
    }

    /// The service name the traces are taken to carry (see [`new`](Self::new)).
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The wrapped provider (e.g. to call the SDK provider's `shutdown`).
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// Unwraps the provider.
    pub fn into_inner(self) -> P {
        self.inner
    }
}

impl<P: TracerProvider> TracerProvider for ProfilingTracerProvider<P> {
    type Tracer = ProfilingTracer<P::Tracer>;

    fn tracer_with_scope(&self, scope: InstrumentationScope) -> Self::Tracer {
        // Checked when the provider is used, after all its options are set.
        service::note_service_name(&self.service_name);
        service::note_trace_namespace(self.service_namespace.as_deref());
        ProfilingTracer::new(self.inner.tracer_with_scope(scope), self.config.clone())
    }
}
