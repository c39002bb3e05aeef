//! The uploader thread: a bounded queue of closed windows, a current-thread Tokio runtime,
//! one request per piece, retries with backoff, and a stop with a deadline.
//!
//! Threads: the collector calls [`Uploader::enqueue`], [`Uploader::counts`] and
//! [`Uploader::stop`]; the uploader thread pops windows and sends them. They share
//! [`Shared`] (one mutex, held only for queue and counter updates, never across an await)
//! and a [`Notify`] that wakes the uploader when a window arrives or stop is asked.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use super::backoff::Backoff;
use super::client::{Answer, HttpClient, TransportError};
use super::config::{UploadConfig, INGEST_422_RETRIES};
use super::counts::{UploadCounts, UploadReport};
use super::request::{Requests, SeriesKind};
use crate::error::StartError;
use crate::sync::lock;

/// Log messages kept for the collector to print; later ones are only counted.
const MAX_PENDING_LOGS: usize = 32;

/// Time the caller of `stop` waits beyond the deadline for the thread's report (the
/// thread gives up at the deadline itself; this only covers a thread that is somehow
/// stuck, which is then left behind).
const STOP_GRACE: Duration = Duration::from_millis(500);

/// One closed window: its pieces (gzipped pprof, each a complete profile) and its span.
#[derive(Debug, Clone)]
pub struct UploadWindow {
    pieces: Vec<Bytes>,
    start: SystemTime,
    end: SystemTime,
    /// CPU or allocation profiles (the Push API's `__name__`).
    kind: SeriesKind,
}

impl UploadWindow {
    /// A window from the encoder's pieces.
    pub(crate) fn new(
        pieces: Vec<crate::pprof::encode::EncodedPiece>,
        start: SystemTime,
        end: SystemTime,
    ) -> Self {
        Self::from_gzipped(pieces.into_iter().map(|p| p.gzipped).collect(), start, end)
    }

    /// A window from gzipped pprof profiles (each one piece, one request).
    pub fn from_gzipped(pieces: Vec<Vec<u8>>, start: SystemTime, end: SystemTime) -> Self {
        Self {
            pieces: pieces.into_iter().map(Bytes::from).collect(),
            start,
            end,
            kind: SeriesKind::Cpu,
        }
    }

    /// The same window, its pieces being profiles of `kind` (CPU unless set).
    pub fn with_kind(mut self, kind: SeriesKind) -> Self {
        self.kind = kind;
        self
    }

    /// A window of request bodies sent as they are (OTLP requests).
    pub(crate) fn from_bodies(bodies: Vec<Vec<u8>>, start: SystemTime, end: SystemTime) -> Self {
        Self::from_gzipped(bodies, start, end)
    }

    /// Number of pieces (requests).
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    cfg_internal! {
        /// When the window began (the profiles' `time_nanos`).
        pub fn start(&self) -> SystemTime {
            self.start
        }
    }

    /// True for a window without pieces.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

/// State shared by the collector and the uploader thread.
struct Shared {
    state: Mutex<State>,
    /// Wakes the uploader: a window was queued or stop was asked. `notify_one` keeps a
    /// permit when the uploader is busy, so no wake-up is lost.
    wake: Notify,
}

struct State {
    /// Windows not yet started, oldest first; at most `capacity`.
    queue: VecDeque<UploadWindow>,
    capacity: usize,
    /// Pieces of the window being sent that are not yet resolved.
    in_flight: u64,
    counts: UploadCounts,
    /// Messages for the log, printed by the caller of `enqueue`/`counts`/`stop` so that
    /// the uploader thread never writes to the application's logging pipeline.
    logs: Vec<String>,
    logs_dropped: u64,
    stopping: bool,
}

impl State {
    fn log(&mut self, message: String) {
        if self.logs.len() < MAX_PENDING_LOGS {
            self.logs.push(message);
        } else {
            self.logs_dropped += 1;
        }
    }
}

/// Uploads closed windows from a dedicated thread.
pub struct Uploader {
    shared: Arc<Shared>,
    deadline_tx: watch::Sender<Option<Instant>>,
    report_rx: mpsc::Receiver<UploadReport>,
    thread: JoinHandle<()>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("counts", &self.counts_quiet())
            .finish_non_exhaustive()
    }
}

impl Uploader {
    /// Builds the client and the runtime on the calling thread (their errors are the
    /// caller's), then starts the uploader thread.
    pub fn start(config: UploadConfig) -> Result<Uploader, StartError> {
        let requests = Requests::new(&config)?;
        let client = HttpClient::new(&config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| StartError::Os {
                operation: "building the uploader's runtime",
                source,
            })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(config.queue_capacity),
                capacity: config.queue_capacity.max(1),
                in_flight: 0,
                counts: UploadCounts::default(),
                logs: Vec::new(),
                logs_dropped: 0,
                stopping: false,
            }),
            wake: Notify::new(),
        });
        let (deadline_tx, deadline_rx) = watch::channel(None);
        let (report_tx, report_rx) = mpsc::channel();
        let worker = Worker {
            shared: shared.clone(),
            requests,
            client,
            backoff: (config.backoff_min, config.backoff_max),
            max_profile_age: config.max_profile_age,
            max_attempts: config.max_attempts.max(1),
            ingest: config.protocol == super::config::Protocol::Ingest,
            server: config.server.to_string(),
            logged_statuses: HashSet::new(),
            logged_transport: false,
            logged_too_old: false,
            logged_exhausted: false,
        };
        let thread = thread::Builder::new()
            .name("span-profiler-upload".into())
            .spawn(move || {
                // No tracing event leaves this thread (hyper-util's included), and no
                // OpenTelemetry telemetry is produced on it: no feedback loops.
                let _no_tracing =
                    tracing_core::dispatcher::set_default(&tracing_core::Dispatch::none());
                #[cfg(feature = "otel")]
                let _no_otel = opentelemetry::Context::enter_telemetry_suppressed_scope();
                let report = runtime.block_on(worker.run(deadline_rx));
                // The receiver is gone only if `stop` gave up waiting: nothing to do.
                let _ = report_tx.send(report);
            })
            .map_err(|source| StartError::Os {
                operation: "spawning the uploader thread",
                source,
            })?;
        Ok(Uploader {
            shared,
            deadline_tx,
            report_rx,
            thread,
        })
    }

    /// Queues a window without blocking. When the queue is full the oldest queued window
    /// is dropped and its pieces counted (`dropped.queue_full`).
    pub fn enqueue(&self, window: UploadWindow) {
        if window.is_empty() {
            return;
        }
        {
            let mut state = lock(&self.shared.state);
            state.counts.windows_enqueued += 1;
            state.counts.pieces_enqueued += window.len() as u64;
            if state.queue.len() >= state.capacity {
                if let Some(oldest) = state.queue.pop_front() {
                    state.counts.dropped.queue_full += oldest.len() as u64;
                    if state.counts.dropped.queue_full == oldest.len() as u64 {
                        let capacity = state.capacity;
                        state.log(format!(
                            "the upload queue is full ({capacity} windows): the server is slow or \
                             down; the oldest window was dropped, further drops are only counted \
                             (stats: upload dropped.queue_full)"
                        ));
                    }
                }
            }
            state.queue.push_back(window);
        }
        self.shared.wake.notify_one();
        self.flush_logs();
    }

    /// The counters so far (and prints the uploader's pending log messages).
    pub fn counts(&self) -> UploadCounts {
        self.flush_logs();
        self.counts_quiet()
    }

    fn counts_quiet(&self) -> UploadCounts {
        lock(&self.shared.state).counts
    }

    /// Uploads what is queued within `deadline`, then gives up on the rest; returns what
    /// was delivered and lost. Returns within `deadline` plus a fraction of a second.
    pub fn stop(self, deadline: Duration) -> UploadReport {
        let Uploader {
            shared,
            deadline_tx,
            report_rx,
            thread,
        } = self;
        let started = Instant::now();
        let until = started + deadline;
        lock(&shared.state).stopping = true;
        // The uploader holds the receiver until it returns; if it is gone, so is the thread.
        let _ = deadline_tx.send(Some(until));
        shared.wake.notify_one();
        let report = match report_rx.recv_timeout(deadline + STOP_GRACE) {
            Ok(report) => {
                // The thread has sent its last message; joining is immediate.
                let _ = thread.join();
                report
            }
            Err(_) => {
                // The thread is stuck (a bug): leave it behind, count everything it held.
                let mut state = lock(&shared.state);
                let left: u64 =
                    state.in_flight + state.queue.iter().map(|w| w.len() as u64).sum::<u64>();
                state.counts.dropped.stopped += left;
                state.log("the uploader thread did not stop in time and was left behind".into());
                report_of(&state.counts, left, false)
            }
        };
        flush_logs(&shared);
        report
    }

    fn flush_logs(&self) {
        flush_logs(&self.shared);
    }
}

/// Prints the uploader's messages on the calling thread.
fn flush_logs(shared: &Shared) {
    let (logs, dropped) = {
        let mut state = lock(&shared.state);
        if state.logs.is_empty() {
            return;
        }
        (
            std::mem::take(&mut state.logs),
            std::mem::take(&mut state.logs_dropped),
        )
    };
    for message in logs {
        log::warn!(target: "span_profiler", "{message}");
    }
    if dropped > 0 {
        log::warn!(target: "span_profiler", "{dropped} further upload messages were left out");
    }
}

fn report_of(counts: &UploadCounts, lost_at_stop: u64, flushed: bool) -> UploadReport {
    UploadReport {
        delivered: counts.uploads_ok,
        lost: counts.dropped.total(),
        lost_at_stop,
        flushed,
        counts: *counts,
    }
}

/// What became of one piece.
enum Outcome {
    Delivered,
    Dropped,
}

/// The uploader thread's side.
struct Worker {
    shared: Arc<Shared>,
    requests: Requests,
    client: HttpClient,
    backoff: (Duration, Duration),
    max_profile_age: Duration,
    /// Most attempts per piece.
    max_attempts: u32,
    /// Uploading with `/ingest` (whose 422 is retried a few times).
    ingest: bool,
    /// The server address, for messages (never holds credentials).
    server: String,
    /// Statuses already logged (each refusal status is logged once).
    logged_statuses: HashSet<u16>,
    logged_transport: bool,
    logged_too_old: bool,
    logged_exhausted: bool,
}

impl Worker {
    async fn run(mut self, deadline_rx: watch::Receiver<Option<Instant>>) -> UploadReport {
        let drained = race(self.drain(), deadline_passed(deadline_rx)).await;
        let mut state = lock(&self.shared.state);
        let flushed = drained.is_some();
        let lost_at_stop = if flushed {
            0
        } else {
            let queued: u64 = state.queue.iter().map(|w| w.len() as u64).sum();
            let left = state.in_flight + queued;
            state.queue.clear();
            state.in_flight = 0;
            state.counts.dropped.stopped += left;
            state.log(format!(
                "stop's deadline passed with {left} profile piece(s) not uploaded to {}; they are \
                 lost (stats: upload dropped.stopped); raise `stop_timeout` if the server is slow",
                self.server
            ));
            left
        };
        report_of(&state.counts, lost_at_stop, flushed)
    }

    /// Sends windows until stop is asked and the queue is empty.
    async fn drain(&mut self) {
        loop {
            let next = {
                let mut state = lock(&self.shared.state);
                match state.queue.pop_front() {
                    Some(window) => {
                        state.in_flight = window.len() as u64;
                        Some(window)
                    }
                    None if state.stopping => return,
                    None => None,
                }
            };
            match next {
                Some(window) => self.send_window(&window).await,
                None => self.shared.wake.notified().await,
            }
        }
    }

    async fn send_window(&mut self, window: &UploadWindow) {
        for piece in &window.pieces {
            let outcome = self
                .send_piece(piece, window.start, window.end, window.kind)
                .await;
            let mut state = lock(&self.shared.state);
            state.in_flight = state.in_flight.saturating_sub(1);
            if let Outcome::Delivered = outcome {
                state.counts.uploads_ok += 1;
            }
        }
    }

    /// Sends one piece until it is delivered, refused, or too old.
    async fn send_piece(
        &mut self,
        piece: &Bytes,
        start: SystemTime,
        end: SystemTime,
        kind: SeriesKind,
    ) -> Outcome {
        let prepared = self.requests.prepare(piece, start, end, kind);
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut attempt = 0u32;
        let mut retries_422 = 0u32;
        // Attempts the server answered with an error it may repeat for ever (5xx, and
        // `/ingest`'s 422): capped, so a window it cannot take does not hold the queue.
        // Unreachable servers, timeouts and 429 are not the window's fault and are retried
        // until `max_profile_age`.
        let mut server_errors = 0u32;
        loop {
            if server_errors >= self.max_attempts {
                let mut state = lock(&self.shared.state);
                state.counts.dropped.attempts_exhausted += 1;
                if !std::mem::replace(&mut self.logged_exhausted, true) {
                    state.log(format!(
                        "the profile server answered a profile piece with an error {server_errors} \
                         times (max_upload_attempts); it was dropped, further drops are only \
                         counted (stats: upload dropped.attempts_exhausted)"
                    ));
                }
                return Outcome::Dropped;
            }
            let age = SystemTime::now().duration_since(start).unwrap_or_default();
            if age > self.max_profile_age {
                let mut state = lock(&self.shared.state);
                state.counts.dropped.too_old += 1;
                if !std::mem::replace(&mut self.logged_too_old, true) {
                    state.log(format!(
                        "a profile piece is {age:?} old after {attempt} attempt(s) and was dropped \
                         (max_profile_age {:?}; the server refuses profiles older than an hour); \
                         further drops are only counted (stats: upload dropped.too_old)",
                        self.max_profile_age
                    ));
                }
                return Outcome::Dropped;
            }
            if attempt > 0 {
                lock(&self.shared.state).counts.retries += 1;
            }
            attempt += 1;
            let retry_after = match self.client.send(&prepared).await {
                Ok(answer) if answer.status.is_success() => {
                    lock(&self.shared.state).counts.bytes_sent += prepared.body.len() as u64;
                    return Outcome::Delivered;
                }
                Ok(answer)
                    if self.ingest
                        && answer.status == http::StatusCode::UNPROCESSABLE_ENTITY
                        && retries_422 < INGEST_422_RETRIES =>
                {
                    retries_422 += 1;
                    server_errors += 1;
                    lock(&self.shared.state).counts.ingest_422_retries += 1;
                    self.note_retryable(&format!(
                        "answered {} (on /ingest also a transient failure; retried up to \
                         {INGEST_422_RETRIES} times): {}",
                        answer.status,
                        answer.body.trim()
                    ));
                    answer.retry_after
                }
                Ok(answer) if is_retried(answer.status) => {
                    if answer.status.is_server_error() {
                        server_errors += 1;
                    }
                    self.note_retryable(&format!(
                        "answered {}: {}",
                        answer.status,
                        answer.body.trim()
                    ));
                    answer.retry_after
                }
                Ok(answer) => {
                    self.note_refused(&answer);
                    return Outcome::Dropped;
                }
                Err(err) => {
                    self.note_retryable(&match err {
                        TransportError::Timeout => {
                            "did not answer within the request timeout".into()
                        }
                        err => format!("could not be reached: {err}"),
                    });
                    None
                }
            };
            tokio::time::sleep(backoff.next_delay(retry_after)).await;
        }
    }

    fn note_retryable(&mut self, what: &str) {
        let mut state = lock(&self.shared.state);
        state.counts.uploads_failed += 1;
        if !std::mem::replace(&mut self.logged_transport, true) {
            state.log(format!(
                "the profile server {} {what}; retrying with backoff, further failures are only \
                 counted (stats: upload uploads_failed, retries)",
                self.server
            ));
        }
    }

    fn note_refused(&mut self, answer: &Answer) {
        let mut state = lock(&self.shared.state);
        state.counts.uploads_failed += 1;
        state.counts.dropped.rejected += 1;
        if self.logged_statuses.insert(answer.status.as_u16()) {
            let redirect = answer.status.is_redirection();
            let detail = match &answer.location {
                Some(location) if redirect => {
                    format!("a redirect to {location}, which is never followed (credentials stay with the configured host); set `server_address` to the final URL")
                }
                _ => format!(
                    "`{}`; the profile was dropped and this status is not retried",
                    answer.body.trim()
                ),
            };
            state.log(format!(
                "the profile server {} refused an upload with {}: {detail}; further refusals \
                 with this status are only counted (stats: upload dropped.rejected)",
                self.server, answer.status
            ));
        }
    }
}

/// Transport-level trouble and overload are retried; other refusals are final.
fn is_retried(status: http::StatusCode) -> bool {
    status.is_server_error()
        || status == http::StatusCode::TOO_MANY_REQUESTS
        || status == http::StatusCode::REQUEST_TIMEOUT
}

/// Completes when `stop` has set a deadline and it has passed; never if the sender is
/// dropped without one.
async fn deadline_passed(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline.into()).await;
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs `work` until it completes (`Some`) or `cancel` does (`None`, `work` dropped).
async fn race<T>(work: impl Future<Output = T>, cancel: impl Future<Output = ()>) -> Option<T> {
    let mut work = pin!(work);
    let mut cancel = pin!(cancel);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if cancel.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
