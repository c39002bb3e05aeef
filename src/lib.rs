//! # span-profiler
//!
//! A CPU profiler for async Rust that labels every sample with the OpenTelemetry span it
//! belongs to, so Grafana can jump from a slow request's span in Tempo to the CPU profile of
//! exactly that request in Pyroscope ("span profiles"): the async-Rust counterpart of
//! Grafana's `otel-profiling-go` + `pyroscope-go`.
//!
//! Labels follow the **task**, not the thread: Tokio tasks move between worker threads and
//! interleave on one thread, so each poll of a labelled future writes its label id into the
//! polling thread's slot and restores the previous id afterwards. A per-thread CPU timer
//! sends `SIGPROF`; the handler reads the slot, walks the frame pointers and stores the
//! sample. A collector thread aggregates samples per (stack, labels) every 100 ms; a writer
//! thread symbolizes and encodes one pprof profile per window and writes it to local files
//! or uploads it to Pyroscope.
//!
//! ## Quick start
//!
//! See it work first, with no server: `cargo run --release --example demo` runs an axum
//! service under load for 20 s and writes profiles, flame graphs and a per-route table.
//!
//! Plain labels, no OpenTelemetry:
//!
//! ```no_run
//! use span_profiler::{Labels, ProfiledExt, Profiler};
//!
//! # async fn handle() {}
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let profiler = Profiler::builder().application_name("checkout").start()?; // ./profiles
//! let labels = Labels::span(0x00f0_67aa_0ba9_02b7, "GET /orders/{id}");
//! tokio::spawn(handle().with_labels(labels)).await?;
//! profiler.stop()?; // writes the last window
//! # Ok(()) }
//! ```
//!
//! With OpenTelemetry and axum (features `otel`, `tower`):
//!
//! ```no_run
//! # #[cfg(all(feature = "otel", feature = "tower"))]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use span_profiler::{ProfileLayer, ProfilerBuilder, ProfilingTracerProvider};
//!
//! // 1. The profiler: PYROSCOPE_SERVER_ADDRESS set -> uploads; unset -> ./profiles/*.pb.gz.
//! let profiler = ProfilerBuilder::from_env()
//!     .application_name("checkout") // = your traces' resource `service.name`
//!     .start()?;
//!
//! // 2. Spans: wrap the SDK tracer provider; local root spans get `pyroscope.profile.id`.
//! let sdk = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! opentelemetry::global::set_tracer_provider(ProfilingTracerProvider::new(sdk));
//!
//! // 3. Requests: one layer gives each request a span and its labels.
//! let app = axum::Router::new()
//!     .route("/orders/{id}", axum::routing::get(|| async { "order" }))
//!     .layer(ProfileLayer::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! profiler.stop()?;
//! # Ok(()) }
//! ```
//!
//! Without tower: `fut.profiled()` where the request's root span is current (or
//! `profiled_with(&cx)`, `profiled_in_context(cx)`), the `tracing` layer for
//! `#[instrument]` code with tracing-opentelemetry, or `ContextLabelsGuard` for synchronous
//! code. Tasks spawned inside a request keep its labels only if wrapped
//! (`tokio::spawn(work.in_current_labels())`) or on a runtime built with [`tokio_hooks`];
//! [`spawn_blocking`] carries them into blocking closures.
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `upload` | yes | uploads to Pyroscope (Push API or `/ingest`) over hyper on a dedicated thread |
//! | `tls` | yes | `https://` servers: rustls with the `ring` provider passed explicitly, webpki roots |
//! | `otel` | yes | `ProfilingTracerProvider`, `.profiled()`, `.profiled_with(&cx)`, `.profiled_in_context(cx)`, `ContextLabelsGuard` (opentelemetry 0.33) |
//! | `tower` | no | `ProfileLayer` for axum 0.8, tonic and any `Service<http::Request<B>>` |
//! | `tracing` | no | `TracingProfileLayer`: labels while a `tracing` span is entered (tracing-opentelemetry 0.34) |
//! | `task-metrics` | no | `.profiled().with_task_metrics()` and `ProfileLayer::with_task_metrics`: poll count, busy, scheduled and idle time and slow polls recorded on root spans (tokio-metrics, about 100 ns per poll) |
//! | `flamegraph` | no | `flamegraph`: SVG flame graphs (inferno, CDDL-1.0) of pprof files, per span name or span id, and a per-span CPU summary |
//!
//! With no features the crate still profiles into local files, and `Labels` /
//! `.with_labels()` work. (`__internal` is not a feature for users: it opens test-only
//! internals to this crate's own tests and benches, with no stability promise.)
//!
//! ## Platforms
//!
//! Linux on x86_64 and aarch64. Elsewhere the crate compiles and `start()` returns
//! [`StartError::Unsupported`]. The crate must be linked into the executable (static TLS):
//! loaded with `dlopen`, `start()` returns [`StartError::UnsupportedTlsModel`]. `SIGPROF`
//! must be free: with another handler installed, `start()` refuses rather than steal it.
//! Threads that live shorter than one sampling period are under-sampled.
//!
//! ## Environment variables
//!
//! Read by [`ProfilerBuilder::from_env`]; builder calls made after it win; empty means
//! unset. A malformed value makes `start()` fail with a [`BuildError`] naming the variable.
//!
//! | variable | builder call | format |
//! | --- | --- | --- |
//! | `PYROSCOPE_SERVER_ADDRESS` | [`server_address`](ProfilerBuilder::server_address) | `http://host:4040`, `https://...` |
//! | `PYROSCOPE_APPLICATION_NAME` (else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `OTEL_SERVICE_NAME`) | [`application_name`](ProfilerBuilder::application_name) | any UTF-8 (Push, files); letters, digits, `_ . - /` (`/ingest`) |
//! | `OTEL_RESOURCE_ATTRIBUTES` (`service.namespace=..`) | [`service_namespace`](ProfilerBuilder::service_namespace) | `k=v,k=v` as the OpenTelemetry SDK reads it |
//! | `PYROSCOPE_BASIC_AUTH_USER` and `PYROSCOPE_BASIC_AUTH_PASSWORD` | [`basic_auth`](ProfilerBuilder::basic_auth) | both or neither |
//! | `PYROSCOPE_AUTH_TOKEN` | [`bearer_token`](ProfilerBuilder::bearer_token) | the token |
//! | `PYROSCOPE_TENANT_ID` | [`tenant_id`](ProfilerBuilder::tenant_id) | the tenant |
//! | `PYROSCOPE_LABELS` | [`tag`](ProfilerBuilder::tag), once per pair | `k=v,k=v` |
//! | `PYROSCOPE_UPLOAD_INTERVAL` | [`upload_interval`](ProfilerBuilder::upload_interval) | `10s`, `1m30s`, `500ms` |
//! | `PYROSCOPE_SAMPLE_RATE` | [`sample_rate`](ProfilerBuilder::sample_rate) | Hz, e.g. `100` |
//! | `SPAN_PROFILER_ENABLED` | (read by every `start()`) | `false`/`0`/`no`/`off`: `start()` returns a profiler that does nothing |
//! | `SPAN_PROFILER_EXPORTER` | [`protocol(Protocol::Otlp)`](ProfilerBuilder::protocol) | `otlp`: export OTLP profiles (the variables below are read only then); `pyroscope` or unset: Pyroscope |
//! | `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT` | [`otlp_endpoint`](ProfilerBuilder::otlp_endpoint) | the whole URL, e.g. `http://collector:4318/v1development/profiles` |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | [`server_address`](ProfilerBuilder::server_address) + [`OTLP_PROFILES_PATH`] | base URL (default `http://localhost:4318`, else `PYROSCOPE_SERVER_ADDRESS` when set) |
//! | `OTEL_EXPORTER_OTLP_PROFILES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS` | [`http_header`](ProfilerBuilder::http_header), once per pair | `name=value,name=value`, values percent-encoded |
//! | `OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT` | [`request_timeout`](ProfilerBuilder::request_timeout) | milliseconds |
//! | `OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION`, else `OTEL_EXPORTER_OTLP_COMPRESSION` | [`otlp_gzip`](ProfilerBuilder::otlp_gzip) | `gzip` or `none` |
//! | `OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL` | (checked) | only `http/protobuf` is supported |
//!
//! `OTEL_EXPORTER_OTLP_ENDPOINT` alone never switches profile export on: it is set for
//! traces in most OpenTelemetry deployments. OTLP export writes opentelemetry-proto
//! [`OTLP_PROTO_VERSION`] (`profiles/v1development`, the release Grafana Pyroscope's OTLP
//! ingester decodes); see [`Protocol::Otlp`].
//!
//! ## What runs in the signal handler, and why it is safe
//!
//! Each thread has its own CPU-time timer (`timer_create` on the thread's CPU clock,
//! `SIGEV_THREAD_ID`), so every thread is sampled in proportion to the CPU it uses. The
//! `SIGPROF` handler:
//!
//! 1. ignores signals that are not from one of this session's timers (`si_code`, the
//!    session cookie in `si_value`): `kill`, foreign timers, a late signal after stop;
//! 2. saves `errno`;
//! 3. reads the thread's label slot: a `const`-initialised thread-local atomic without a
//!    destructor (no lazy initialisation, no allocation);
//! 4. unwinds the interrupted context within stack bounds published in advance, by
//!    binary searches over immutable unwind tables compiled from `.eh_frame` outside the
//!    handler (frame pointers for frames without them), writing the frames into a slot of
//!    a preallocated, never-freed lock-free buffer; a full buffer is a counted drop, never
//!    a wait;
//! 5. restores `errno`.
//!
//! It never allocates, locks, formats or panics; a malloc-interposition test and a
//! disassembly check of the release handler prove it. Symbolization, aggregation, encoding
//! and uploads happen on the profiler's own threads. `stop()` leaves the handler installed
//! and inert; after `fork()` the child's profiler is inert.
//!
//! ## Stack unwinding and debug info
//!
//! Stacks are unwound with the DWARF call-frame information (`.eh_frame`) of each loaded
//! object, compiled into compact tables outside the handler; the handler only
//! binary-searches them. An ordinary release build (no frame pointers) gives complete
//! stacks. Frames without call-frame information are walked by frame pointer. Frame
//! pointers are an optional speed-up ([`Unwinder::FramePointers`], with code built with
//! them throughout):
//!
//! ```toml
//! # .cargo/config.toml
//! [build]
//! rustflags = ["-C", "force-frame-pointers=yes"]
//! ```
//!
//! `RUSTFLAGS` replaces these flags: repeat `-C force-frame-pointers=yes` in it. For file
//! and line numbers and inlined frames in release builds keep line tables
//! (`[profile.release] debug = "line-tables-only"`). Functions are named after their
//! symbol-table entry (`tokio::runtime::task::raw::poll`); inlined ones, which such a build
//! records by their short name only, get a module path derived from their source file.
//! Names carry no generic arguments (the profile's `system_name` has the full symbol).
//! The symbolizer maps object files, parses debug info one compilation unit at a time for
//! the addresses seen, and keeps its heap within a budget ([`Symbolization`], 8 MiB by
//! default).
//!
//! ## Compared with thread-tag profilers
//!
//! pyroscope-rs (on pprof-rs) and similar tools tag the **thread** for the duration of a
//! closure. In async code that misattributes samples: a task that awaits leaves its worker
//! to other tasks while the thread's tag stays, and resumes on another worker without it.
//! This crate ties labels to the future (every poll sets and restores them) and samples
//! every thread on its own CPU clock instead of one process-wide `ITIMER_PROF`.
//!
//! Honest limits:
//! - Labels exist only where a label source runs: futures spawned without a wrapper (and
//!   without task hooks) are unlabelled.
//! - A CPU-time timer fires at most once per kernel tick (4 ms at `HZ=250`) whatever the
//!   rate: requests shorter than that are sampled statistically, so per-request profiles
//!   are meaningful for expensive requests, per-route profiles for cheap ones.
//! - Labels carry the local root span (`span_id`, `span_name`), not every child span, as
//!   Grafana's span profiles expect.
//! - Each labelled poll costs a thread-local read and two writes (under a nanosecond
//!   measured with `benches/poll.rs`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks, missing_docs)]
// Checked in the build with every feature (CI's clippy, docs.rs): a feature that is off
// drops the re-exports of its items (and `__internal` those of the test-support paths),
// which would then be reported as unreachable although they are `pub` on purpose.
#![cfg_attr(
    all(
        feature = "upload",
        feature = "tls",
        feature = "otel",
        feature = "tower",
        feature = "tracing",
        feature = "flamegraph",
        feature = "task-metrics",
        feature = "__internal"
    ),
    warn(unreachable_pub)
)]

// The modules follow the data flow: label sources write the slot, the sampler reads it
// per sample, windows aggregate samples, the symbolizer names their frames, the encoder
// writes pprof and the sinks send it. See ARCHITECTURE.md.

/// cfg helpers (`cfg_sampler!`).
#[macro_use]
mod macros;

/// Allocation profiles per span: the profiled global allocator.
pub mod alloc;
/// Carrying labels into blocking closures (`spawn_blocking`).
mod blocking;
/// Event counters behind `stats()` and the log-once helper.
mod counters;
/// Errors of the fallible areas.
mod error;
/// Flame graphs (SVG) and per-span summaries from pprof profiles.
#[cfg(feature = "flamegraph")]
pub mod flamegraph;
/// The hasher of the id-keyed maps.
mod id_hash;
/// The future wrapper.
mod instrument;
/// Labels and the label registry.
mod labels;
/// The Pyroscope server's limits, one home for each.
mod limits;
/// A growable array in an anonymous mapping, out of malloc (large, short-lived lists).
mod map_vec;
/// The process's loaded objects (`dl_iterate_phdr`): the one walker of the loader's list.
mod modules;
/// OpenTelemetry: ProfilingTracerProvider, span-id map, context lookups.
#[cfg(feature = "otel")]
mod otel;
/// OTLP profiles export: the pinned `profiles/v1development` messages and the encoder.
#[cfg_attr(not(feature = "upload"), allow(dead_code))]
mod otlp;
/// pprof messages, encoder, decoder and validator.
mod pprof;
/// The `Profiler` handle and its builder, collector thread, writer thread and statistics.
mod profiler;
/// The OpenTelemetry resource attributes of the environment (`OTEL_RESOURCE_ATTRIBUTES`).
mod resource;
/// The per-thread label slot and the signal-based sampler that reads it.
mod sampler;
/// Where closed windows go: local files and Pyroscope uploads.
mod sink;
/// Symbolization of a closed window's addresses.
mod symbolize;
/// std / loom switch for the structures loom models.
mod sync;
/// Arming a thread's timer as it starts (Tokio's `on_thread_start`).
mod threads;
/// Tokio task hooks: spawned tasks inherit labels (needs `--cfg tokio_unstable`).
pub mod tokio_hooks;
/// Tower layer for axum and tonic: a server span and its labels per request.
#[cfg(feature = "tower")]
mod tower;
/// `tracing_subscriber::Layer`: labels of a span's OpenTelemetry local root while entered.
#[cfg(feature = "tracing")]
mod tracing_layer;
/// Window aggregation per (stack, label set) with the per-window caps.
mod window;

pub use blocking::{spawn_blocking, with_current_labels};
pub use error::{BuildError, StartError};
pub use instrument::{Profiled, ProfiledExt};
pub use labels::{LabelError, Labels, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES};
#[cfg(feature = "otel")]
pub use otel::{
    ContextLabelsGuard, LabelScope, ProfilingSpan, ProfilingTracer, ProfilingTracerProvider,
    PROFILE_ID_ATTRIBUTE,
};
cfg_task_metrics! {
    pub use otel::{
        TaskMetered, TASK_BUSY_NS_ATTRIBUTE, TASK_IDLE_NS_ATTRIBUTE, TASK_POLL_COUNT_ATTRIBUTE,
        TASK_SCHEDULED_NS_ATTRIBUTE, TASK_SLOW_POLL_COUNT_ATTRIBUTE, TASK_SLOW_POLL_THRESHOLD,
    };
}
pub use otlp::{OTLP_PROFILES_PATH, OTLP_PROTO_VERSION};
pub use profiler::builder::{
    ProfilerBuilder, DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, DEFAULT_OUTPUT_DIR, DEFAULT_SAMPLE_RATE,
    DEFAULT_UPLOAD_INTERVAL, MAX_SAMPLE_RATE, MAX_UPLOAD_INTERVAL, MIN_UPLOAD_INTERVAL,
};
pub use profiler::builder::{
    DEFAULT_MAX_PROFILE_AGE, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_UPLOAD_ATTEMPTS,
    DEFAULT_QUEUE_CAPACITY, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BACKOFF_MAX,
    DEFAULT_RETRY_BACKOFF_MIN, DEFAULT_STOP_TIMEOUT, MAX_PROFILE_AGE_LIMIT,
    MAX_REQUEST_BYTES_LIMIT, MAX_REQUEST_SAMPLES, MAX_TAGS, MIN_REQUEST_BYTES,
};
pub use profiler::{
    Dropped, OtelCounts, Profiler, SamplerCounts, Stats, StopError, StopReport, SymbolizerStats,
    TaskHookCounts,
};
pub use sampler::Unwinder;
pub use sink::upload::{Protocol, UploadCounts, UploadDropped, UploadReport, INGEST_422_RETRIES};
pub use symbolize::symbolization::{
    SymbolDetail, Symbolization, DEFAULT_SYMBOLIZER_BUDGET, MIN_SYMBOLIZER_BUDGET,
};
pub use threads::arm_current_thread;
#[cfg(feature = "tower")]
pub use tower::{ProfileFuture, ProfileLayer, ProfileService};
#[cfg(feature = "tracing")]
pub use tracing_layer::TracingProfileLayer;

/// Internals for the crate's own integration tests and benches, `loom-tests/` and
/// `peer-benches/`, behind the hidden `__internal` feature (which only they enable).
/// Not part of the public API: no stability promises.
#[cfg(feature = "__internal")]
#[doc(hidden)]
pub mod __private;
