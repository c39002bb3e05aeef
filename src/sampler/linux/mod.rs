//! The sampler on Linux x86_64 / aarch64.

pub(super) mod bounds;
pub(super) mod handler;
pub(super) mod procfs;
pub(super) mod session;
pub(super) mod timers;
pub(super) mod unwind;
