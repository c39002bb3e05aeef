//! Flame graphs (SVG) from pprof profiles, optionally of one span or one span name, and a
//! per-`span_name` summary of a set of profiles (feature `flamegraph`).
//!
//! The profiler's local files (`*.pb.gz`, one or more per window) are ordinary pprof
//! profiles; this module reads them back:
//!
//! ```no_run
//! use span_profiler::flamegraph::{FlameGraph, Profile, SampleFilter};
//!
//! let profiles = Profile::read_dir("./profiles")?;
//! // The whole run, then only the requests named `GET /search`, then one request.
//! FlameGraph::new().render_to_file(&profiles, "all.svg")?;
//! FlameGraph::new()
//!     .filter(SampleFilter::span_name("GET /search"))
//!     .render_to_file(&profiles, "search.svg")?;
//! FlameGraph::new()
//!     .filter(SampleFilter::span_id_hex("00f067aa0ba902b7")?)
//!     .render_to_file(&profiles, "one-request.svg")?;
//!
//! for span in span_profiler::flamegraph::summarize(&profiles)?.spans {
//!     println!("{} {} requests {:?} hottest {:?}", span.span_name, span.requests, span.cpu, span.hottest_function);
//! }
//! # Ok::<(), span_profiler::flamegraph::FlamegraphError>(())
//! ```
//!
//! Frames are drawn root at the bottom, with inlined functions as their own frames;
//! locations without symbols show as `[file+0xoffset]` of their mapping. Widths are CPU
//! time (the `cpu/nanoseconds` value) when the profile has it, else the last sample type,
//! or the sample type chosen with
//! [`FlameGraph::sample_type`](crate::flamegraph::FlameGraph::sample_type) (e.g.
//! `alloc_space` of the allocation profiles, `*.alloc.pb.gz`);
//! [`summarize_allocations`](crate::flamegraph::summarize_allocations) sums their bytes
//! per span name.

/// `summarize_allocations`: bytes allocated per span name.
mod alloc_summary;
/// `FlamegraphError`.
mod error;
/// `Folding`: runtime frames drawn as one frame per crate.
mod fold;
/// `Profile`: reading and decoding pprof files.
mod profile;
/// `FlameGraph`: folding stacks and rendering them with inferno.
mod render;
/// Stacks of a profile in a form the renderer and the summary share.
mod stacks;
/// `summarize`: CPU per span name and per request.
mod summary;

pub use crate::pprof::DecodeError;
pub use alloc_summary::{summarize_allocations, AllocSummary, SpanAllocations};
pub use error::FlamegraphError;
pub use fold::{Folding, DEFAULT_RUNTIME_CRATES};
pub use profile::Profile;
pub use render::{FlameGraph, Rendered};
pub use summary::{is_std_frame, summarize, RequestSummary, SpanSummary, Summary};

/// Which samples a flame graph (or a summary) takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SampleFilter {
    /// Every sample, labelled or not.
    #[default]
    All,
    /// Samples whose `span_id` label is this span id (one request's local root span).
    SpanId(u64),
    /// Samples whose `span_name` label is exactly this name.
    SpanName(String),
}

impl SampleFilter {
    /// Samples of the span named `name` (e.g. `GET /orders/{id}`).
    pub fn span_name(name: impl Into<String>) -> Self {
        Self::SpanName(name.into())
    }

    /// Samples of one span id.
    pub fn span_id(id: u64) -> Self {
        Self::SpanId(id)
    }

    /// Samples of one span id written as in the profiles and in OpenTelemetry: 16 hex
    /// digits (upper or lower case).
    pub fn span_id_hex(hex: &str) -> Result<Self, FlamegraphError> {
        parse_span_id(hex)
            .map(Self::SpanId)
            .ok_or_else(|| FlamegraphError::InvalidSpanId(hex.to_owned()))
    }

    /// Whether a sample with these `span_id` / `span_name` labels passes.
    pub(crate) fn matches(&self, span_id: Option<&str>, span_name: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::SpanId(id) => span_id.and_then(parse_span_id) == Some(*id),
            Self::SpanName(name) => span_name == Some(name.as_str()),
        }
    }
}

impl std::fmt::Display for SampleFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("all samples"),
            Self::SpanId(id) => write!(f, "span_id {id:016x}"),
            Self::SpanName(name) => write!(f, "span_name `{name}`"),
        }
    }
}

/// 16 hex digits to a span id (`None` for anything else).
fn parse_span_id(hex: &str) -> Option<u64> {
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests;
