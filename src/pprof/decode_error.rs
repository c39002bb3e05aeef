use std::fmt;
use std::io;

/// Why bytes are not a pprof profile: not gzip, too large once inflated, or not the
/// `profile.proto` message. The decoder's own error is the [`source`](std::error::Error::source).
///
/// ```
/// use std::error::Error as _;
/// use span_profiler::flamegraph::{FlamegraphError, Profile};
///
/// let err = Profile::from_bytes(&[0x1f, 0x8b, 1, 2, 3]).unwrap_err();
/// let FlamegraphError::Decode { source, .. } = &err else { panic!("{err}") };
/// assert!(source.to_string().starts_with("gzip"));
/// assert!(source.source().is_some(), "the inflater's error");
/// ```
#[derive(Debug)]
pub struct DecodeError {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// The gzip stream is broken.
    Gzip(io::Error),
    /// Inflated, the profile is larger than the server accepts.
    TooLarge { limit: usize },
    /// The bytes are not a `Profile` message.
    Protobuf(prost::DecodeError),
}

impl DecodeError {
    pub(crate) fn gzip(source: io::Error) -> Self {
        Self {
            kind: Kind::Gzip(source),
        }
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Self {
            kind: Kind::TooLarge { limit },
        }
    }

    pub(crate) fn protobuf(source: prost::DecodeError) -> Self {
        Self {
            kind: Kind::Protobuf(source),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Gzip(err) => write!(f, "gzip: {err}"),
            Kind::TooLarge { limit } => {
                write!(f, "uncompressed profile is larger than {limit} bytes")
            }
            Kind::Protobuf(err) => write!(f, "protobuf: {err}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Gzip(err) => Some(err),
            Kind::TooLarge { .. } => None,
            Kind::Protobuf(err) => Some(err),
        }
    }
}
