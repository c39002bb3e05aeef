//! The tracer: builds the inner tracer's span, then records which labels work under it
//! carries. It never writes the thread's label slot (ARCHITECTURE.md "OpenTelemetry").

use std::sync::Arc;

use opentelemetry::trace::{Span as _, SpanBuilder, SpanContext, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use super::config::{Config, LabelScope};
use super::map::{self, Node, Root};
use super::span::ProfilingSpan;
use super::{span_id_u64, OTEL};
use crate::labels::set::span_id_hex;

/// Span attribute Grafana looks for to show a span's "Profiles" link; its value is the
/// `span_id` sample label of the work under the span.
pub const PROFILE_ID_ATTRIBUTE: &str = "pyroscope.profile.id";

/// The tracer of a [`ProfilingTracerProvider`](crate::ProfilingTracerProvider): spans
/// come from the wrapped tracer, and each local root also gets the
/// `pyroscope.profile.id` attribute and a label set that work under it carries once it is
/// wrapped with [`ProfiledExt::profiled`](crate::ProfiledExt::profiled).
#[derive(Debug, Clone)]
pub struct ProfilingTracer<T> {
    inner: T,
    config: Arc<Config>,
}

impl<T> ProfilingTracer<T> {
    pub(crate) fn new(inner: T, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The wrapped tracer.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

/// True when a span with this parent is a local root: no valid parent, or a parent from
/// another process. `Context::has_active_span` is not used: it is true for an invalid span.
pub(crate) fn is_local_root(parent: &SpanContext) -> bool {
    !parent.is_valid() || parent.is_remote()
}

impl<T: Tracer> Tracer for ProfilingTracer<T> {
    type Span = ProfilingSpan<T::Span>;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        let parent_span = parent_cx.span();
        let parent = parent_span.span_context();
        let local_root = is_local_root(parent);
        let parent_id = span_id_u64(parent);
        let config = &*self.config;
        // The name is only needed when a label takes it. A `&'static str` name (the
        // `Cow::Borrowed` every `tracer.start("GET /route")` makes) is shared, not copied.
        let name = (config.span_name == LabelScope::AllSpans
            || (local_root && config.span_name == LabelScope::LocalRoot))
            .then(|| builder.name.clone());

        // Wrapped at once and returned from this one place: the inner span (hundreds of
        // bytes with the SDK) is then built where the result goes instead of being
        // copied into it.
        let mut profiling_span =
            ProfilingSpan::new(self.inner.build_with_context(builder, parent_cx), None);
        let span = &mut profiling_span.inner;
        let sc = span.span_context();
        if !sc.is_valid() {
            return profiling_span;
        }
        let span_id = span_id_u64(sc);
        let sampled = sc.is_sampled();
        // OTLP export links samples to their trace: then the set carries the trace id
        // even without the `trace_id` label (pprof writes it only when asked).
        let trace_id = (config.trace_id || crate::labels::trace_ids_carried())
            .then(|| u128::from_be_bytes(sc.trace_id().to_bytes()));

        let node = if local_root {
            let root = Root::new(span_id, name.clone().unwrap_or_default(), sampled);
            Node {
                handle: config.handle(span_id, sampled, name, Some(&root), trace_id),
                // Kept only where something may read it (one allocation less per
                // request otherwise): children that build their own labels, task metrics.
                root: config.keep_roots().then(|| Arc::new(root)),
            }
        } else {
            match map::get(parent_id) {
                Some(parent_node) => {
                    if config.child_shares_parent_labels() {
                        parent_node
                    } else {
                        let handle = config.handle(
                            span_id,
                            sampled,
                            name,
                            parent_node.root.as_deref(),
                            trace_id,
                        );
                        Node {
                            handle,
                            root: parent_node.root,
                        }
                    }
                }
                None => {
                    // A local parent this tracer did not build (another provider) or that
                    // already ended: the local root is unknown.
                    OTEL.unknown_parents.incr();
                    Node {
                        handle: config.handle(span_id, sampled, name, None, trace_id),
                        root: None,
                    }
                }
            }
        };
        if config.span_id == LabelScope::AllSpans
            || (local_root && config.span_id == LabelScope::LocalRoot)
        {
            span.set_attribute(KeyValue::new(PROFILE_ID_ATTRIBUTE, span_id_hex(span_id)));
        }
        // Only a local root records task metrics, and only the span that owns its entry.
        #[cfg(feature = "task-metrics")]
        let recorder = (local_root)
            .then(|| node.root.clone())
            .flatten()
            .map(super::metrics::Recorder::new);
        let owned = map::insert(span_id, node).then_some(span_id);
        profiling_span.entry = owned;
        #[cfg(feature = "task-metrics")]
        if owned.is_some() {
            profiling_span.set_recorder(recorder);
        }
        profiling_span
    }
}
