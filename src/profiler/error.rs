//! `StopError`.

use std::fmt;
use std::io;

/// Why [`Profiler::stop`](crate::Profiler::stop) could not finish cleanly.
#[derive(Debug)]
#[non_exhaustive]
pub enum StopError {
    /// The profiler was already stopped.
    NotRunning,
    /// The collector thread panicked; the last window is lost (a bug: please report it).
    CollectorPanicked,
    /// The last window could not be written; everything else was stopped.
    WriteFailed {
        /// The file that could not be written.
        path: std::path::PathBuf,
        /// The I/O error.
        source: io::Error,
        /// What was achieved.
        report: Box<super::StopReport>,
    },
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotRunning => f.write_str("the profiler is not running"),
            Self::CollectorPanicked => f.write_str(
                "the profiler's collector thread panicked; the last window is lost (please report this bug)",
            ),
            Self::WriteFailed { path, source, .. } => write!(
                f,
                "writing the last profile to {} failed: {source}; check that the output directory is writable and has space",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StopError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::WriteFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}
