use std::path::Path;

use super::FlamegraphError;
use crate::pprof::proto;

/// A decoded pprof profile, e.g. one file the profiler wrote.
#[derive(Debug, Clone)]
pub struct Profile {
    pub(crate) inner: proto::Profile,
    pub(crate) origin: String,
}

impl Profile {
    /// Decodes a profile, gzipped (detected by its magic bytes) or raw protobuf. Input that
    /// inflates beyond 4 MiB (the server's limit, and more than any piece the profiler
    /// writes) is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FlamegraphError> {
        Self::decode(bytes, "bytes".into())
    }

    /// Reads and decodes one file (`.pb.gz` or raw `.pb`).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, FlamegraphError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| FlamegraphError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::decode(&bytes, path.display().to_string())
    }

    /// Reads every profile in `dir` whose name ends in `.pb.gz`, `.pb` or `.pprof`, in
    /// name order (the profiler's file names sort by window start). Hidden files (the
    /// profiler's temporary files start with `.`) are skipped; any other file that fails
    /// to decode is an error.
    pub fn read_dir(dir: impl AsRef<Path>) -> Result<Vec<Self>, FlamegraphError> {
        let dir = dir.as_ref();
        let read_err = |source| FlamegraphError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let is_profile = [".pb.gz", ".pb", ".pprof"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if is_profile && !name.starts_with('.') && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        paths.iter().map(Self::read).collect()
    }

    /// Number of samples (distinct stack and label combinations).
    pub fn sample_count(&self) -> usize {
        self.inner.sample.len()
    }

    /// Where the profile came from: its path, or `bytes`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn decode(bytes: &[u8], origin: String) -> Result<Self, FlamegraphError> {
        match crate::pprof::validate::decode(bytes) {
            Ok(inner) => Ok(Self { inner, origin }),
            Err(source) => Err(FlamegraphError::Decode { origin, source }),
        }
    }
}
