//! Errors of the fallible areas: building options, starting and stopping the profiler.

use std::fmt;
use std::io;

/// An invalid profiler option, found by [`ProfilerBuilder::start`](crate::ProfilerBuilder).
/// Each message names the input and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// An option's value is out of range or malformed.
    InvalidOption {
        /// The option (builder method or environment variable).
        option: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOption { option, reason } => write!(f, "invalid `{option}`: {reason}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl BuildError {
    /// An [`InvalidOption`](Self::InvalidOption) error: `option` names the builder method
    /// or environment variable, `reason` what is wrong and how to fix it.
    pub(crate) fn invalid(option: &'static str, reason: String) -> Self {
        Self::InvalidOption { option, reason }
    }
}

/// Why the profiler could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// An option is invalid.
    Build(BuildError),
    /// A profiler is already running in this process; stop it first.
    AlreadyRunning,
    /// The platform has no sampler (only Linux on x86_64 and aarch64 is supported).
    Unsupported {
        /// The target this crate was built for.
        platform: &'static str,
    },
    /// The crate is in a dynamically loaded library, where reading thread-locals from a
    /// signal handler may allocate; link it into the executable instead.
    UnsupportedTlsModel,
    /// Another SIGPROF handler is installed; the profiler refuses to replace it.
    ForeignSignalHandler,
    /// The output directory could not be created or written.
    OutputDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A system call failed.
    Os {
        /// What was being done.
        operation: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Build(err) => err.fmt(f),
            Self::AlreadyRunning => f.write_str(
                "a profiler is already running in this process; stop it before starting another",
            ),
            Self::Unsupported { platform } => write!(
                f,
                "profiling is not supported on {platform}; only Linux on x86_64 and aarch64 is"
            ),
            Self::UnsupportedTlsModel => f.write_str(
                "span-profiler is in a dynamically loaded library, where a signal handler \
                 cannot read thread-locals safely; link it into the executable",
            ),
            Self::ForeignSignalHandler => f.write_str(
                "another SIGPROF handler is installed (another profiler?); span-profiler \
                 will not replace it: remove the other profiler or start span-profiler first",
            ),
            Self::OutputDir { path, source } => write!(
                f,
                "the output directory {} is not writable: {source}; choose another with \
                 `output_dir(..)`",
                path.display()
            ),
            Self::Os { operation, source } => write!(f, "{operation} failed: {source}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Build(err) => Some(err),
            Self::Os { source, .. } | Self::OutputDir { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<BuildError> for StartError {
    fn from(err: BuildError) -> Self {
        Self::Build(err)
    }
}
