//! OpenTelemetry span profiles: a tracer-provider wrapper that gives each local root span
//! the `pyroscope.profile.id` attribute and a label set, and the lookups that let futures
//! and guards pick those labels up from an OpenTelemetry `Context`.
//!
//! ARCHITECTURE.md ("OpenTelemetry") explains the span-id map and the local-root rule.

/// Provider options (`LabelScope`) and the labels they give a span.
mod config;
/// From a `Context` to labels; the sync guard.
mod context;
/// The span-id map (live span -> its local root's labels).
mod map;
cfg_task_metrics! {
    /// Per-span task metrics with tokio-metrics (feature `task-metrics`).
    mod metrics;
}
/// `ProfilingTracerProvider` and its options.
mod provider;
/// The application-name / service-name check.
mod service;
/// `ProfilingSpan`.
mod span;
/// `ProfilingTracer`.
mod tracer;

use opentelemetry::trace::SpanContext;

use crate::counters::Counter;

pub use config::LabelScope;
pub use context::ContextLabelsGuard;
pub(crate) use context::{lookup, lookup_current};
pub(crate) use map::RootLink;
cfg_task_metrics! {
    pub use metrics::{
        TaskMetered, TASK_BUSY_NS_ATTRIBUTE, TASK_IDLE_NS_ATTRIBUTE, TASK_POLL_COUNT_ATTRIBUTE,
        TASK_SCHEDULED_NS_ATTRIBUTE, TASK_SLOW_POLL_COUNT_ATTRIBUTE, TASK_SLOW_POLL_THRESHOLD,
    };
}
pub use provider::ProfilingTracerProvider;
pub(crate) use service::{note_application_name, note_profiler_namespace};
pub use span::ProfilingSpan;
pub use tracer::{ProfilingTracer, PROFILE_ID_ATTRIBUTE};

/// OpenTelemetry lookup tallies, shown by `stats()`.
#[derive(Debug)]
pub(crate) struct OtelCounters {
    /// `.profiled()` / `.profiled_with()` / guard lookups of a valid span that no live
    /// `ProfilingSpan` has (ended, remote, or built by another provider): no labels.
    pub(crate) unknown_spans: Counter,
    /// Spans whose local parent no live `ProfilingSpan` has: their local root is unknown,
    /// so they get no root labels.
    pub(crate) unknown_parents: Counter,
    /// Requests the tower layer served without labels: its span was not one of a
    /// `ProfilingTracerProvider` (a no-op or other provider).
    pub(crate) unlabelled_requests: Counter,
}

pub(crate) static OTEL: OtelCounters = OtelCounters {
    unknown_spans: Counter::new(),
    unknown_parents: Counter::new(),
    unlabelled_requests: Counter::new(),
};

/// A span id as the `u64` the labels use (big-endian, as `SpanId` prints it).
fn span_id_u64(sc: &SpanContext) -> u64 {
    u64::from_be_bytes(sc.span_id().to_bytes())
}

/// Number of live span-id map entries.
pub(crate) fn span_map_len() -> usize {
    map::len()
}

/// The profiler's `service_namespace` and the traces' `service.namespace`, when they differ.
#[allow(dead_code)] // read by tests through `__private`
pub(crate) fn service_namespace_mismatch() -> Option<(Option<String>, String)> {
    service::namespace_mismatch()
}
