//! # span-profiler
//!
//! A CPU profiler for async Rust that labels every sample with the OpenTelemetry span it
//! belongs to, so Grafana can jump from a slow request's span (Tempo) to the CPU profile
//! of exactly that request (Pyroscope).
//!
//! Labels follow the *task*, not the thread: Tokio tasks move between worker threads and
//! interleave on one thread, so every poll of a labelled future writes its label id into
//! the polling thread's slot and restores the previous id afterwards.
//!
//! ```
//! use span_profiler::{Labels, ProfiledExt};
//!
//! # async fn handle() {}
//! # async fn demo() {
//! let labels = Labels::span(0x00f0_67aa_0ba9_02b7, "GET /orders/{id}");
//! tokio::spawn(handle().with_labels(labels));
//! # }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]

/// Carrying labels into blocking closures (`spawn_blocking`).
mod blocking;
/// `ProfilerBuilder`: options, defaults, validation.
mod builder;
/// Aggregation of samples per (stack, labels), symbolization, loaded modules.
mod collect;
/// Event counters behind `stats()` and the log-once helper.
mod counters;
/// Errors of the fallible areas.
mod error;
/// Flame graphs (SVG) and per-span summaries from pprof profiles.
#[cfg(feature = "flamegraph")]
pub mod flamegraph;
/// The future wrapper.
mod instrument;
/// Labels, the label registry and the per-thread slot.
mod labels;
/// OpenTelemetry: ProfilingTracerProvider, span-id map, context lookups.
#[cfg(feature = "otel")]
mod otel;
/// pprof messages, encoder, decoder and validator.
mod pprof;
/// The `Profiler` handle, its collector thread and its statistics.
mod profiler;
/// The signal-based sampler.
mod sampler;
/// Where closed windows go: local files and Pyroscope uploads.
mod sink;
/// std / loom switch for the structures loom models.
mod sync;
/// Tokio task hooks: spawned tasks inherit labels (needs `--cfg tokio_unstable`).
pub mod tokio_hooks;
/// Tower layer for axum and tonic: a server span and its labels per request.
#[cfg(feature = "tower")]
mod tower;
/// `tracing_subscriber::Layer`: labels of a span's OpenTelemetry local root while entered.
#[cfg(feature = "tracing")]
mod tracing_layer;

pub use blocking::{spawn_blocking, with_current_labels};
pub use builder::{
    ProfilerBuilder, DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, DEFAULT_OUTPUT_DIR, DEFAULT_SAMPLE_RATE,
    DEFAULT_UPLOAD_INTERVAL, MAX_SAMPLE_RATE, MAX_UPLOAD_INTERVAL, MIN_UPLOAD_INTERVAL,
};
pub use builder::{
    DEFAULT_MAX_PROFILE_AGE, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BACKOFF_MAX, DEFAULT_RETRY_BACKOFF_MIN,
    DEFAULT_STOP_TIMEOUT, MAX_PROFILE_AGE_LIMIT, MAX_REQUEST_BYTES_LIMIT, MAX_REQUEST_SAMPLES,
    MAX_TAGS, MIN_REQUEST_BYTES,
};
pub use error::{BuildError, StartError};
pub use instrument::{Profiled, ProfiledExt};
pub use labels::{LabelError, Labels, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES};
#[cfg(feature = "otel")]
pub use otel::{
    ContextLabelsGuard, LabelScope, ProfilingSpan, ProfilingTracer, ProfilingTracerProvider,
    PROFILE_ID_ATTRIBUTE,
};
pub use profiler::{Dropped, Profiler, Stats, StopError, StopReport};
pub use sink::upload::{Protocol, UploadCounts, UploadDropped, UploadReport};
#[cfg(feature = "tower")]
pub use tower::{ProfileFuture, ProfileLayer, ProfileService};
#[cfg(feature = "tracing")]
pub use tracing_layer::TracingProfileLayer;

/// Internals exposed for the `loom-tests/` crate and the crate's own integration tests.
/// Not part of the public API: no stability promises.
#[doc(hidden)]
pub mod __private;
