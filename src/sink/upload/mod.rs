//! Upload to a Pyroscope server (ARCHITECTURE.md "Upload").
//!
//! A dedicated thread owns a current-thread Tokio runtime and a hyper client, so uploads
//! work whether or not the application runs Tokio, and a saturated application runtime
//! cannot stall them. Closed windows wait in a bounded queue (the oldest is dropped and
//! counted when it is full); each piece of a window is one request; transport errors,
//! timeouts, 5xx and 429 are retried with exponential backoff and jitter until the
//! profile is older than `max_profile_age` or has used `max_upload_attempts`; `/ingest`'s
//! 422 is retried a few times (it is that endpoint's answer for transient failures too);
//! other 4xx are never retried. `stop` flushes
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
pub use config::{Protocol, UploadConfig, DEFAULT_MAX_UPLOAD_ATTEMPTS, INGEST_422_RETRIES};
pub use counts::{UploadCounts, UploadDropped, UploadReport};
#[cfg(feature = "upload")]
pub use request::SeriesKind;
#[cfg(feature = "upload")]
pub use uploader::{UploadWindow, Uploader};
