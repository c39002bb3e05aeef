use std::fmt;
use std::io;
use std::path::PathBuf;

use super::DecodeError;

/// Why a profile could not be read, summarized or rendered.
#[derive(Debug)]
#[non_exhaustive]
pub enum FlamegraphError {
    /// A file or directory could not be read.
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The bytes are not a pprof profile (gzipped or raw).
    Decode {
        /// Where the bytes came from (a path, or `bytes`).
        origin: String,
        /// What the decoder found.
        source: DecodeError,
    },
    /// A profile has no `cpu/nanoseconds` sample type (needed by [`summarize`](super::summarize)).
    NoCpuValue {
        /// Where the profile came from.
        origin: String,
    },
    /// A profile has no sample type of the name asked for (e.g. `alloc_space` of a CPU
    /// profile; see [`FlameGraph::sample_type`](super::FlameGraph::sample_type) and
    /// [`summarize_allocations`](super::summarize_allocations)).
    NoSampleType {
        /// Where the profile came from.
        origin: String,
        /// The sample type asked for.
        sample_type: String,
    },
    /// Profiles of different sample types (e.g. CPU and allocations) were mixed.
    MixedSampleTypes {
        /// The first profile whose sample type differs from the others'.
        origin: String,
    },
    /// No sample passed the filter, so there is nothing to draw.
    NoSamples {
        /// The filter, as text.
        filter: String,
    },
    /// A span id that is not 16 hex digits.
    InvalidSpanId(String),
    /// Writing the SVG failed.
    Write {
        /// The output path (`None`: a caller-supplied writer).
        path: Option<PathBuf>,
        /// The I/O error.
        source: io::Error,
    },
}

impl fmt::Display for FlamegraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read `{}`: {source}", path.display()),
            Self::Decode { origin, source } => write!(
                f,
                "`{origin}` is not a pprof profile (gzipped or raw protobuf): {source}"
            ),
            Self::NoCpuValue { origin } => write!(
                f,
                "`{origin}` has no `cpu/nanoseconds` sample type; CPU time can only be summed from CPU profiles"
            ),
            Self::NoSampleType {
                origin,
                sample_type,
            } => write!(
                f,
                "`{origin}` has no `{sample_type}` sample type; allocation values are in the \
                 `*.alloc.pb.gz` files, CPU time in the other `*.pb.gz` files"
            ),
            Self::MixedSampleTypes { origin } => write!(
                f,
                "`{origin}` measures something else than the profiles before it; render CPU profiles and other profiles separately"
            ),
            Self::NoSamples { filter } => write!(
                f,
                "no samples match {filter}; check the span id or name (e.g. with `go tool pprof -tags`), or profile longer"
            ),
            Self::InvalidSpanId(text) => write!(
                f,
                "span id `{text}` is not 16 hex digits (write it as OpenTelemetry prints it, e.g. `00f067aa0ba902b7`)"
            ),
            Self::Write {
                path: Some(path),
                source,
            } => write!(f, "cannot write flame graph `{}`: {source}", path.display()),
            Self::Write { path: None, source } => write!(f, "cannot write flame graph: {source}"),
        }
    }
}

impl std::error::Error for FlamegraphError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } | Self::Write { source, .. } => Some(source),
            Self::Decode { source, .. } => Some(source),
            _ => None,
        }
    }
}
