//! pprof: the `profile.proto` messages, the encoder (a closed window to gzipped pieces)
//! and the decoder/validator used by tests and the loopback upload receiver.

pub(crate) mod encode;
pub(crate) mod proto;
pub(crate) mod validate;
