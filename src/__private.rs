//! Internals reachable from integration tests and loom models. Not a public API.

pub use crate::labels::registry::{LabelHandle, Registry, RegistryLen};
pub use crate::labels::set::LabelSet;
pub use crate::sampler::buffer::{Record as SampleRecord, SampleBuffer, MAX_FRAMES};
pub use crate::sampler::{
    in_handler as in_sampler_handler, set_in_handler as set_in_sampler_handler, RawSample,
    Sampler, SamplerConfig, SamplerStats, DEFAULT_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ,
};

/// The label id in force on this thread (what the signal handler would read).
pub fn current_label_id() -> u64 {
    crate::labels::slot::current()
}

/// The label id a wrapper applies (0 for none).
pub fn label_id_of<F>(profiled: &crate::Profiled<F>) -> u64 {
    profiled.label_id()
}

/// Sizes of the global registry (live and retired entries).
pub fn global_registry_len() -> RegistryLen {
    Registry::global().len()
}

/// Number of live entries in the OpenTelemetry span-id map.
#[cfg(feature = "otel")]
pub fn otel_span_map_len() -> usize {
    crate::otel::span_map_len()
}

/// Lookups of a valid span that no live `ProfilingSpan` has (gave no labels).
#[cfg(feature = "otel")]
pub fn otel_unknown_spans() -> u64 {
    crate::otel::OTEL.unknown_spans.get()
}

/// Spans built under a local parent that no live `ProfilingSpan` has.
#[cfg(feature = "otel")]
pub fn otel_unknown_parents() -> u64 {
    crate::otel::OTEL.unknown_parents.get()
}

/// What the profiler calls at start with its application name (the service-name check).
#[cfg(feature = "otel")]
pub fn otel_note_application_name(name: &str) {
    crate::otel::note_application_name(name)
}

/// `(application name, service name)` when they differ.
#[cfg(feature = "otel")]
pub fn otel_service_name_mismatch() -> Option<(String, String)> {
    crate::otel::service_name_mismatch()
}

/// The span id and span name of a resolved label set (its fields are crate-private).
pub fn span_of(set: &LabelSet) -> (Option<u64>, Option<&str>) {
    (set.span_id, set.span_name.as_deref())
}
