//! A `tracing_subscriber::Layer` that applies the labels of a tracing span's OpenTelemetry
//! local root while the span is entered, and restores the previous labels on exit.
//!
//! tracing's `Instrumented` (what `#[tracing::instrument]` puts around an async fn)
//! enters its span around every poll, so entering is exactly the scoped label source the
//! design needs (ARCHITECTURE.md "Threads").
//!
//! tracing-opentelemetry builds OpenTelemetry spans lazily (at first enter, or at close),
//! so the span id is looked up on enter with `tracing_opentelemetry::get_otel_context`
//! (which builds the span if needed) through the dispatch this layer was registered with,
//! and the label handle is cached in the span's extensions. The extensions lock is never
//! held across that call: it locks them itself.

use std::cell::RefCell;
use std::sync::OnceLock;

use tracing_core::dispatcher::{self, WeakDispatch};
use tracing_core::span::Id;
use tracing_core::{Dispatch, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};
use tracing_subscriber::Layer;

use crate::labels::registry::LabelHandle;
use crate::sampler::slot;

/// A [`tracing_subscriber::Layer`] that gives the work inside tracing spans the profiling
/// labels of their OpenTelemetry local root span, so that applications instrumented with
/// `tracing` (and tracing-opentelemetry) get span profiles without other code changes.
///
/// While a span is entered (on every poll of an `#[instrument]`ed async fn or
/// `.instrument(span)` future, and inside `span.in_scope(..)` or `span.enter()`), the
/// thread's labels are those of the span's local root, as recorded by a
/// [`ProfilingTracerProvider`](crate::ProfilingTracerProvider)'s tracer given to
/// `tracing_opentelemetry::layer().with_tracer(..)`; on exit the previous labels come
/// back. Spans without an OpenTelemetry span (no tracing-opentelemetry layer, or a tracer
/// that is not a `ProfilingTracer`) leave the labels in force unchanged.
///
/// Add it to the same subscriber as the tracing-opentelemetry layer (the order does not
/// matter):
///
/// ```
/// use opentelemetry::trace::TracerProvider as _;
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use span_profiler::{ProfilingTracerProvider, TracingProfileLayer};
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
/// let subscriber = tracing_subscriber::registry()
///     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")))
///     .with(TracingProfileLayer::new());
/// tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
///
/// #[tracing::instrument]
/// async fn handle(order: u64) { /* samples here carry `handle`'s root span labels */ }
/// ```
///
/// Like the other label sources, entering a span never *adds* to the labels: the root's
/// set replaces those in force while the span is entered.
#[derive(Debug, Default)]
pub struct TracingProfileLayer {
    /// The dispatch this layer belongs to (set when it is registered), through which
    /// tracing-opentelemetry's span data is reached.
    dispatch: OnceLock<WeakDispatch>,
}

impl TracingProfileLayer {
    /// A new layer.
    ///
    /// ```
    /// let layer = span_profiler::TracingProfileLayer::new();
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The label id of work under `span`: cached in its extensions after the first look.
    /// `None` when the span has no known OpenTelemetry span.
    fn label_id<S>(&self, span: &SpanRef<'_, S>) -> Option<u64>
    where
        S: for<'a> LookupSpan<'a>,
    {
        if let Some(cached) = span.extensions().get::<SpanLabels>() {
            return cached.0.as_ref().map(LabelHandle::id);
        }
        // No extensions lock may be held here: `get_otel_context` takes it.
        let handle = self.lookup(&span.id());
        let id = handle.as_ref().map(LabelHandle::id);
        span.extensions_mut().replace(SpanLabels(handle));
        id
    }

    /// The label handle of the OpenTelemetry span behind tracing span `id`.
    fn lookup(&self, id: &Id) -> Option<LabelHandle> {
        let with_dispatch = |dispatch: &Dispatch| {
            tracing_opentelemetry::get_otel_context(id, dispatch)
                .and_then(|cx| crate::otel::lookup(&cx).0)
        };
        match self.dispatch.get().and_then(WeakDispatch::upgrade) {
            Some(dispatch) => with_dispatch(&dispatch),
            // Not registered through `on_register_dispatch`: the dispatcher calling us is
            // the current default one.
            None => dispatcher::get_default(with_dispatch),
        }
    }
}

/// The cached labels of one tracing span, in its extensions; released when the span
/// closes.
struct SpanLabels(Option<LabelHandle>);

thread_local! {
    /// Spans entered on this thread, innermost last: (tracing span id, label id in force
    /// before the enter). Only ever touched outside signal handlers.
    static ENTERED: RefCell<Vec<(u64, u64)>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for TracingProfileLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        // The first registration wins; a layer belongs to one subscriber.
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let label = self.label_id(&span);
        // `try_with`: a span entered while this thread's thread-locals are being
        // destroyed gets no labels (it could not restore them on exit).
        let _ = ENTERED.try_with(|entered| {
            let prev = match label {
                Some(label) => slot::replace(label),
                // No labels of its own: leave those in force.
                None => slot::current(),
            };
            entered.borrow_mut().push((id.into_u64(), prev));
        });
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        let id = id.into_u64();
        let _ = ENTERED.try_with(|entered| {
            let mut entered = entered.borrow_mut();
            let Some(pos) = entered.iter().rposition(|&(span, _)| span == id) else {
                return;
            };
            let (_, prev) = entered.remove(pos);
            if pos == entered.len() {
                // The innermost span: restore what was in force before it.
                slot::replace(prev);
            } else {
                // Exited out of order: the span entered after it now restores what this
                // one would have; the slot keeps the inner span's labels.
                entered[pos].1 = prev;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::slot::SlotGuard;

    #[test]
    fn the_layer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TracingProfileLayer>();
    }

    #[test]
    fn spans_exited_out_of_order_restore_the_labels_in_force_before_both() {
        let layer = TracingProfileLayer::new();
        let subscriber =
            tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), layer);
        tracing_core::dispatcher::with_default(&Dispatch::new(subscriber), || {
            let _outer = SlotGuard::enter(77);
            // Spans without OpenTelemetry data keep the labels in force.
            let a = tracing::info_span!("a");
            let b = tracing::info_span!("b");
            let ga = a.enter();
            let gb = b.enter();
            assert_eq!(slot::current(), 77);
            drop(ga);
            assert_eq!(slot::current(), 77);
            drop(gb);
            assert_eq!(slot::current(), 77);
            ENTERED.with(|e| assert!(e.borrow().is_empty()));
        });
    }
}
