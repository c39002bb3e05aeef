//! Where closed windows go: local files (the embedded default) and, with the `upload`
//! feature, a Pyroscope server.

pub(crate) mod files;
/// Upload to a Pyroscope server (options always; the uploader with the `upload` feature).
pub(crate) mod upload;
