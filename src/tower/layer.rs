//! The layer: which tracer starts the server spans.

use std::sync::Arc;

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::Tracer;
use opentelemetry::InstrumentationScope;
use tower_layer::Layer;

use super::service::ProfileService;

/// Instrumentation scope name of the spans [`ProfileLayer::new`] starts.
const SCOPE_NAME: &str = "span-profiler";

/// A tower [`Layer`] that gives every HTTP or gRPC request a server span and runs its
/// handler under that span's profiling labels, for axum, tonic, or any
/// `Service<http::Request<B>, Response = http::Response<R>>`.
///
/// Per request, [`ProfileService`] takes the span that is current when it is called if
/// an outer layer (e.g. tower-http's `TraceLayer` with tracing-opentelemetry) already made
/// one; otherwise it extracts the parent from the headers with the global text-map
/// propagator (W3C `traceparent` with `TraceContextPropagator`) and starts a server span:
///
/// - HTTP: named `{METHOD} {route}` with axum's `MatchedPath` (e.g. `GET /orders/{id}`),
///   else `{METHOD}` alone: never the raw path, whose ids would make one `span_name`
///   series per URL. Add the layer with `Router::layer` (or `route_layer`), which runs
///   after routing, so that the route is known; a layer around the whole `Router` sees no
///   `MatchedPath`. Needs axum 0.8 (the version this crate reads `MatchedPath` of).
/// - gRPC (content type `application/grpc*`): named by the method path without its
///   leading slash (`helloworld.Greeter/SayHello`), as OpenTelemetry's gRPC conventions do.
///
/// The span is started with the layer's tracer, which must come from a
/// [`ProfilingTracerProvider`](crate::ProfilingTracerProvider) for the span to get
/// `pyroscope.profile.id` and labels. The handler's future (and the inner service's
/// `call`) then runs with that context attached and its local root's labels applied on
/// every poll, whichever worker thread polls it; the span ends when the response future
/// completes (see [`ProfileFuture`](crate::ProfileFuture) about streaming bodies).
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use span_profiler::{ProfileLayer, ProfilingTracerProvider};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
/// let sdk = SdkTracerProvider::builder().build();
/// opentelemetry::global::set_tracer_provider(ProfilingTracerProvider::new(sdk));
///
/// let app: Router = Router::new()
///     .route("/orders/{id}", get(|| async { "order" }))
///     .layer(ProfileLayer::new()); // after the global provider is set
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// axum::serve(listener, app).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProfileLayer {
    tracer: Arc<BoxedTracer>,
    /// Whether handlers are metered (feature `task-metrics`).
    #[cfg(feature = "task-metrics")]
    task_metrics: bool,
}

impl ProfileLayer {
    /// A layer starting spans with a tracer of the **global** tracer provider, taken now:
    /// set the provider (`opentelemetry::global::set_tracer_provider`) before building
    /// the layer, or the spans come from whatever provider was global then (by default a
    /// no-op one, whose spans give no labels).
    ///
    /// ```
    /// let layer = span_profiler::ProfileLayer::new();
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        let scope = InstrumentationScope::builder(SCOPE_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Self {
            tracer: Arc::new(global::tracer_with_scope(scope)),
            #[cfg(feature = "task-metrics")]
            task_metrics: false,
        }
    }

    /// A layer starting spans with `tracer`, e.g. one taken from a
    /// [`ProfilingTracerProvider`](crate::ProfilingTracerProvider) that is not global.
    ///
    /// ```
    /// use opentelemetry::trace::TracerProvider as _;
    /// use opentelemetry::trace::noop::NoopTracerProvider;
    /// use span_profiler::{ProfileLayer, ProfilingTracerProvider};
    ///
    /// let provider = ProfilingTracerProvider::new(NoopTracerProvider::new());
    /// let layer = ProfileLayer::with_tracer(provider.tracer("http-server"));
    /// # let _ = layer;
    /// ```
    pub fn with_tracer<T>(tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        Self {
            tracer: Arc::new(BoxedTracer::new(Box::new(tracer))),
            #[cfg(feature = "task-metrics")]
            task_metrics: false,
        }
    }

    /// Also measures each handler's polls with tokio-metrics and records them on the
    /// request's local root span when it ends (feature `task-metrics`): poll count, busy,
    /// scheduled and idle time and slow polls, under the attribute names listed at
    /// [`Profiled::with_task_metrics`](crate::Profiled::with_task_metrics). Off by
    /// default: about 100 ns more per poll of the handler, and one monitor allocated per
    /// request.
    ///
    /// The handler's future is measured from the first poll of the response future to its
    /// completion (the response head); a streaming body polled later by the connection is
    /// not included. When an outer layer made the span, the totals go to that span's
    /// local root, when it ends.
    ///
    /// ```
    /// let layer = span_profiler::ProfileLayer::new().with_task_metrics();
    /// # let _ = layer;
    /// ```
    #[cfg(feature = "task-metrics")]
    pub fn with_task_metrics(mut self) -> Self {
        self.task_metrics = true;
        self
    }
}

impl Default for ProfileLayer {
    /// [`ProfileLayer::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ProfileLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ProfileLayer {
    type Service = ProfileService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        #[allow(unused_mut)]
        let mut service = ProfileService::new(inner, self.tracer.clone());
        #[cfg(feature = "task-metrics")]
        service.set_task_metrics(self.task_metrics);
        service
    }
}
