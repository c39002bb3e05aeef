//! pprof: the `profile.proto` messages, the encoder (a closed window to gzipped pieces)
//! and the decoder/validator used by tests and the loopback upload receiver.

/// `DecodeError`: why bytes are not a profile.
mod decode_error;
pub(crate) mod encode;
pub(crate) mod proto;
pub(crate) mod validate;

pub use decode_error::DecodeError;

use crate::counters::Counter;

/// Tallies of what the encoder did, for `stats()`.
#[derive(Debug)]
pub(crate) struct EncodeCounters {
    /// Complete pprof profiles produced by the encoder (one per piece).
    pub(crate) pieces_encoded: Counter,
    /// Pieces larger than `max_piece_bytes` because a single sample with its locations
    /// did not fit into the limit on its own (sent whole rather than dropped).
    pub(crate) pieces_oversized: Counter,
}

/// The process-wide encoder tallies.
pub(crate) static ENCODE: EncodeCounters = EncodeCounters {
    pieces_encoded: Counter::new(),
    pieces_oversized: Counter::new(),
};
