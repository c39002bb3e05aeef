//! The response future: the request's labels and context on every poll; the span ends
//! when it completes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::TraceContextExt;
use pin_project_lite::pin_project;

use super::request::{self, Started};
use crate::instrument::Profiled;
use crate::labels::registry::LabelHandle;
use crate::labels::Labels;

pin_project! {
    /// The response future of a [`ProfileService`](crate::ProfileService).
    ///
    /// Every poll of the inner future (the handler) runs with the request's OpenTelemetry
    /// context attached and its local root's labels applied, also the drop of an
    /// unfinished inner future. When the inner future completes, the server span this
    /// layer started gets the response's attributes (`http.response.status_code`, or
    /// `rpc.grpc.status_code` when the status is in the headers) and ends; a span an
    /// outer layer made is left to that layer. Dropped before completion (the client went
    /// away), the span ends without a status code.
    ///
    /// **Streaming bodies.** The future completes when the response *head* is ready. A
    /// body that is produced later, while the server writes it (server-streaming gRPC,
    /// `axum::body::Body::from_stream`, server-sent events), is polled by the connection,
    /// outside this future: its CPU time carries no labels, and the span's duration does
    /// not include it. To profile such work, give the stream itself the labels (e.g.
    /// produce it in a task spawned from the handler with
    /// [`ProfiledExt::profiled`](crate::ProfiledExt::profiled), which picks up the
    /// current span). Unary gRPC and ordinary axum handlers do their work inside the
    /// future and are fully covered.
    ///
    /// `Send` exactly when the inner future is.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use span_profiler::{ProfileFuture, ProfileLayer};
    /// use tower_layer::Layer as _;
    /// use tower_service::Service as _;
    ///
    /// # #[derive(Clone)] struct Hello;
    /// # impl tower_service::Service<Request<()>> for Hello {
    /// #     type Response = Response<&'static str>;
    /// #     type Error = Infallible;
    /// #     type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    /// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
    /// #         std::task::Poll::Ready(Ok(()))
    /// #     }
    /// #     fn call(&mut self, _: Request<()>) -> Self::Future { std::future::ready(Ok(Response::new("hi"))) }
    /// # }
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let mut service = ProfileLayer::new().layer(Hello);
    /// let future: ProfileFuture<_> = service.call(Request::new(()));
    /// let response = future.await.unwrap();
    /// assert_eq!(*response.body(), "hi");
    /// # });
    /// ```
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ProfileFuture<F> {
        #[pin]
        inner: Profiled<Handler<F>>,
        // The context holding a span this layer started and has not ended yet.
        owned: Option<opentelemetry::Context>,
        grpc: bool,
    }

    impl<F> PinnedDrop for ProfileFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(cx) = this.project().owned.take() {
                cx.span().end();
            }
        }
    }
}

cfg_task_metrics! {
    /// The handler's future as polled: under the request's context, and metered when the
    /// layer asks for task metrics (feature `task-metrics`).
    type Handler<F> = crate::otel::TaskMetered<WithContext<F>>;
}
/// The handler's future as polled: under the request's context.
#[cfg(not(feature = "task-metrics"))]
type Handler<F> = WithContext<F>;

impl<F> ProfileFuture<F> {
    pub(crate) fn new(inner: F, started: Started, handle: Option<LabelHandle>) -> Self {
        let owned = started.owned.then(|| started.cx.clone());
        let handler = inner.with_context(started.cx);
        #[cfg(feature = "task-metrics")]
        let handler = crate::otel::TaskMetered::new(handler, started.task_root.as_deref());
        Self {
            inner: Profiled::new(handler, handle),
            owned,
            grpc: started.grpc,
        }
    }

    /// The labels the handler runs under (empty when the request's span is unknown to
    /// the profiler, e.g. not built by a
    /// [`ProfilingTracerProvider`](crate::ProfilingTracerProvider)'s tracer).
    ///
    /// ```
    /// use span_profiler::ProfileLayer;
    /// use tower_layer::Layer as _;
    /// use tower_service::Service as _;
    ///
    /// let hello = tower::service_fn(|_req: http::Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
    /// });
    /// let mut service = ProfileLayer::new().layer(hello);
    /// // The global provider is a no-op one here: its spans give no labels.
    /// assert!(service.call(http::Request::new(())).labels().is_empty());
    /// ```
    pub fn labels(&self) -> Labels {
        self.inner.labels()
    }
}

impl<F, R, E> Future for ProfileFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = match this.inner.poll(cx) {
            Poll::Ready(output) => output,
            Poll::Pending => return Poll::Pending,
        };
        if let Some(span_cx) = this.owned.take() {
            match &output {
                Ok(response) => request::record_response(&span_cx, *this.grpc, response),
                Err(_) => request::record_error(&span_cx),
            }
            span_cx.span().end();
        }
        Poll::Ready(output)
    }
}

impl<F> std::fmt::Debug for ProfileFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileFuture")
            .field("labels", &self.inner.labels())
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
    }
}
