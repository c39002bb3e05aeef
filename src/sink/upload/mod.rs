//! Upload to a Pyroscope server (PROTOCOL.md "Push API" and "Legacy ingest").
//!
//! A dedicated thread owns a current-thread Tokio runtime and a hyper client, so uploads
//! work whether or not the application runs Tokio, and a saturated application runtime
//! cannot stall them. Closed windows wait in a bounded queue (the oldest is dropped and
//! counted when it is full); each piece of a window is one request; transport errors,
//! timeouts, 5xx and 429 are retried with exponential backoff and jitter until the
//! profile is older than `max_profile_age`; other 4xx are never retried. `stop` flushes
//! within a deadline and reports what was delivered and lost.
//!
//! The uploader thread emits no `tracing` events (a thread-local no-op dispatcher silences
//! hyper's), suppresses OpenTelemetry telemetry, and hands its log messages to the thread
//! that calls [`Uploader::enqueue`] or [`Uploader::stop`], so nothing it does can feed
//! back into the application's telemetry pipeline.

/// Options: protocol, secrets, the validated upload configuration and its rules.
mod config;
/// Counters and the stop report.
mod counts;

/// Exponential backoff with jitter that only lengthens.
#[cfg(feature = "upload")]
mod backoff;
/// The hyper client (plain and TLS).
#[cfg(feature = "upload")]
mod client;
/// Requests for both protocols, and the Push API's messages.
#[cfg(feature = "upload")]
pub(crate) mod request;
/// The uploader thread, its queue and its retry loop.
#[cfg(feature = "upload")]
mod uploader;

pub(crate) use config::{
    check_header_value, parse_tls_roots, validate_header, validate_server_address, validate_tags,
    Auth, Secret,
};
pub use config::{Protocol, UploadConfig};
pub use counts::{UploadCounts, UploadDropped, UploadReport};
#[cfg(feature = "upload")]
pub use uploader::{UploadWindow, Uploader};

/// Series label names every upload carries besides the user's tags (PROTOCOL.md "Push
/// API"), in the order they are sent.
pub(crate) const FIXED_SERIES_LABELS: [&str; 6] = [
    "__name__",
    "service_name",
    "otel.scope.name",
    "otel.scope.version",
    "process.runtime.name",
    "process.runtime.version",
];

/// Sample-label keys the profiler writes itself; `span_name` becomes a series label on
/// the server, the others never do.
pub(crate) const SAMPLE_LABEL_KEYS: [&str; 4] = ["span_id", "span_name", "trace_id", "profile_id"];

/// Label names the server accepts per series.
pub(crate) const SERVER_MAX_LABEL_NAMES: usize = 30;

/// Most user tags: the fixed series labels and `span_name` take the rest of the server's
/// 30 label names.
pub(crate) const MAX_TAGS: usize = SERVER_MAX_LABEL_NAMES - FIXED_SERIES_LABELS.len() - 1;
