//! What the uploader did: counters for `stats()` and the report of `stop()`.
//!
//! The unit is the *piece*: one complete pprof profile, sent as one request. A window
//! is one piece unless it had to be split to stay within the request-size caps.

/// Upload counters, part of the profiler's `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadCounts {
    /// Windows handed to the uploader.
    pub windows_enqueued: u64,
    /// Pieces handed to the uploader.
    pub pieces_enqueued: u64,
    /// Pieces the server accepted (one request each).
    pub uploads_ok: u64,
    /// Attempts that failed: transport errors, timeouts and non-2xx answers, whether or
    /// not they were retried afterwards.
    pub uploads_failed: u64,
    /// Attempts that repeated an earlier failed one.
    pub retries: u64,
    /// Of those, retries after `/ingest` answered 422 (its status for every failure
    /// that is not a rate limit, transient backend failures included; at most
    /// [`INGEST_422_RETRIES`](crate::INGEST_422_RETRIES) per piece).
    pub ingest_422_retries: u64,
    /// Pieces given up, by reason.
    pub dropped: UploadDropped,
    /// Request body bytes of the accepted uploads.
    pub bytes_sent: u64,
}

/// Pieces that never reached the server, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadDropped {
    /// The queue was full: the oldest window's pieces made room for a new window.
    pub queue_full: u64,
    /// The server refused them with a status that is not retried (4xx other than 408 and
    /// 429, or a redirect, which is never followed); the first refusal of each status is
    /// logged with the server's message.
    pub rejected: u64,
    /// Retries went on until the profile was older than `max_profile_age`.
    pub too_old: u64,
    /// Still queued or in flight when `stop()`'s deadline passed.
    pub stopped: u64,
    /// Answered with a server error (5xx, or `/ingest`'s 422) as often as
    /// `max_upload_attempts` allows (e.g. a body the server cannot decode, which the Push
    /// API answers with 500 every time).
    pub attempts_exhausted: u64,
}

impl UploadDropped {
    /// All pieces lost, whatever the reason.
    pub fn total(&self) -> u64 {
        self.queue_full + self.rejected + self.too_old + self.stopped + self.attempts_exhausted
    }
}

/// What the uploader achieved by the time it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UploadReport {
    /// Pieces delivered over the uploader's whole life.
    pub delivered: u64,
    /// Pieces lost over the uploader's whole life (all reasons).
    pub lost: u64,
    /// Of those, pieces still queued or in flight when the stop deadline passed.
    pub lost_at_stop: u64,
    /// True when the queue was empty before the deadline (everything handed over was
    /// delivered or finally refused).
    pub flushed: bool,
    /// The final counters.
    pub counts: UploadCounts,
}
