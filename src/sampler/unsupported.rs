//! The sampler where it cannot run: `start()` says why.

use super::{DrainedSample, SamplerConfig, SamplerStats};
use crate::error::StartError;

/// The sampler; on this platform it cannot start.
#[derive(Debug)]
pub struct Sampler {
    _private: (),
}

impl Sampler {
    /// Always [`StartError::Unsupported`] on this platform.
    pub fn start(_config: SamplerConfig) -> Result<Sampler, StartError> {
        let platform = if cfg!(target_os = "linux") {
            std::env::consts::ARCH
        } else {
            std::env::consts::OS
        };
        Err(StartError::Unsupported { platform })
    }
    /// Nothing to do.
    pub fn maintain(&mut self) {}
    /// Nothing to drain.
    pub fn drain(&mut self, _f: &mut dyn FnMut(&DrainedSample<'_>)) {}
    /// Empty stats.
    pub fn stats(&self) -> SamplerStats {
        SamplerStats::default()
    }
    /// Empty stats.
    pub fn stop(self) -> SamplerStats {
        SamplerStats::default()
    }
}

cfg_internal! {
    /// Never inside a handler here.
    pub fn in_handler() -> bool {
        false
    }

    /// No handler here.
    pub fn set_in_handler(_value: bool) {}
}

/// No timers here: nothing to arm.
pub(crate) fn arm_current_thread(_session: u64) {}

/// No unwinder here: allocation samples carry no stack.
pub(crate) fn stack_here(_out: &mut [usize]) -> usize {
    0
}
