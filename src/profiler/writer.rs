//! The writer thread: symbolizes and encodes closed windows, writes them as files and
//! hands them to the uploader.
//!
//! It runs apart from the collector so that a slow window (cold symbol cache, a large
//! label set, a slow disk) never delays the drain: the sample buffer keeps being emptied
//! every 100 ms whatever encoding costs.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::stats::{Stats, SymbolizerStats};
use crate::counters::LogOnce;
use crate::error::StartError;
use crate::pprof::encode::{encode_prepared, EncodeOptions, EncodedPiece};
use crate::profiler::builder::{Config, MAX_REQUEST_SAMPLES};
use crate::sink::files::FileSink;
use crate::sink::upload::UploadReport;
#[cfg(feature = "upload")]
use crate::sink::upload::{SeriesKind, UploadWindow, Uploader};
use crate::symbolize::{lookup_addresses, Symbolizer};
use crate::sync::lock_std as lock;
use crate::window::{ClosedWindow, ProfileKind};

/// How far the writer may fall behind, in time: a first window can wait several seconds
/// for the symbolizer's DWARF index on a busy machine. Beyond it the collector discards
/// new windows and counts them (their memory is bounded by the per-window caps).
const QUEUE_SPAN: Duration = Duration::from_secs(60);

/// Fewest and most queued windows, whatever the interval.
const QUEUE_MIN: usize = 4;
const QUEUE_MAX: usize = 64;

/// Closed windows that may wait for the writer at `interval`.
fn queue_len(interval: Duration) -> usize {
    let windows = QUEUE_SPAN.as_millis() / interval.as_millis().max(1);
    usize::try_from(windows)
        .unwrap_or(QUEUE_MAX)
        .clamp(QUEUE_MIN, QUEUE_MAX)
}

/// What the writer thread returns when it stops.
pub(super) struct WriterOutcome {
    /// The last window's write error (earlier ones were logged and counted).
    pub(super) final_write_error: Option<(PathBuf, std::io::Error)>,
    pub(super) upload: Option<UploadReport>,
}

/// The collector's end: hands windows over without blocking.
pub(super) struct WriterHandle {
    tx: Option<SyncSender<ClosedWindow>>,
    thread: Option<JoinHandle<WriterOutcome>>,
    stats: Arc<Mutex<Stats>>,
    /// Capacity of `tx`, for the log message.
    queue: usize,
}

impl WriterHandle {
    /// Queues a closed window; when the writer is a full queue behind, the window is
    /// discarded and counted (`Stats::windows_discarded`).
    pub(super) fn send(&self, window: ClosedWindow) {
        static FULL_LOGGED: LogOnce = LogOnce::new();
        let Some(tx) = &self.tx else { return };
        match tx.try_send(window) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                lock(&self.stats).windows_discarded += 1;
                if FULL_LOGGED.first() {
                    log::warn!(
                        target: "span_profiler",
                        "the profile writer is {} windows behind (slow disk or encoding?); \
                         a window was discarded (stats: windows_discarded)",
                        self.queue
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                // The writer panicked; `stop()` reports it.
                lock(&self.stats).windows_discarded += 1;
            }
        }
    }

    /// Lets the writer finish what is queued (uploads within the stop timeout) and joins
    /// it. `None` if it panicked.
    pub(super) fn finish(mut self) -> Option<WriterOutcome> {
        drop(self.tx.take());
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// Starts the writer thread (and the uploader, whose errors are the caller's).
pub(super) fn spawn(config: &Config, stats: Arc<Mutex<Stats>>) -> Result<WriterHandle, StartError> {
    let files = if config.write_files {
        let sink = FileSink::new(
            config.output_dir.clone(),
            &config.application_name,
            config.max_files,
            config.max_bytes,
        )
        .map_err(|source| StartError::OutputDir {
            path: config.output_dir.clone(),
            source,
        })?;
        Some(sink)
    } else {
        None
    };
    #[cfg(feature = "upload")]
    let uploader = match &config.upload {
        Some(upload) => Some(Uploader::start(upload.clone())?),
        None => None,
    };
    let period_ns = 1_000_000_000 / u64::from(config.sample_rate);
    let options = if config.upload.is_some() {
        // Pieces the server accepts; files then hold the same pieces.
        EncodeOptions {
            period_ns,
            max_piece_bytes: Some(config.max_request_bytes),
            max_piece_samples: Some(MAX_REQUEST_SAMPLES),
        }
    } else {
        EncodeOptions {
            period_ns,
            max_piece_bytes: None,
            max_piece_samples: None,
        }
    };
    #[cfg(feature = "upload")]
    let otlp = config
        .upload
        .as_ref()
        .filter(|u| u.protocol == crate::sink::upload::Protocol::Otlp)
        .map(|u| OtlpExport {
            resource: Arc::new(crate::otlp::resource(&u.application_name, &u.otlp, &u.tags)),
            options: crate::otlp::encode::EncodeOptions {
                period_ns,
                max_bytes: config.max_request_bytes,
                max_samples: MAX_REQUEST_SAMPLES,
            },
        });
    #[cfg(feature = "upload")]
    crate::labels::carry_trace_ids(otlp.is_some());
    let writer = Writer {
        files,
        #[cfg(feature = "upload")]
        uploader,
        #[cfg(feature = "upload")]
        otlp,
        symbolizer: Some(Symbolizer::with_options(config.symbolize)),
        symbolization: config.symbolize,
        encoder: None,
        options,
        stop_timeout: config.stop_timeout,
        stats: stats.clone(),
    };
    let queue = queue_len(config.upload_interval);
    let (tx, rx) = mpsc::sync_channel(queue);
    let thread = thread::Builder::new()
        .name("span-profiler-writer".into())
        .spawn(move || {
            let outcome = writer.run(rx);
            // The writer (symbolizer, encoder state) is dropped by now: give its arena's
            // pages back too, or a stopped profiler's memory stays resident.
            release_free_memory();
            outcome
        })
        .map_err(|source| StartError::Os {
            operation: "spawning the writer thread",
            source,
        })?;
    Ok(WriterHandle {
        tx: Some(tx),
        thread: Some(thread),
        stats,
        queue,
    })
}

/// OTLP export: what every request carries and how windows are cut into requests.
#[cfg(feature = "upload")]
struct OtlpExport {
    resource: Arc<Vec<crate::otlp::proto::KeyValue>>,
    options: crate::otlp::encode::EncodeOptions,
}

struct Writer {
    files: Option<FileSink>,
    #[cfg(feature = "upload")]
    uploader: Option<Uploader>,
    /// Set with `Protocol::Otlp`: uploads are OTLP requests, pprof only goes to files.
    #[cfg(feature = "upload")]
    otlp: Option<OtlpExport>,
    /// `None` only while a window is being encoded (the encode thread has it).
    symbolizer: Option<Symbolizer>,
    /// The symbolizer's options (for a new one, should it be lost to a panic).
    symbolization: crate::Symbolization,
    /// Started with the first window.
    encoder: Option<Encoder>,
    options: EncodeOptions,
    stop_timeout: Duration,
    stats: Arc<Mutex<Stats>>,
}

impl Writer {
    fn run(mut self, rx: Receiver<ClosedWindow>) -> WriterOutcome {
        let mut last_error = None;
        // Ends when the collector drops its sender, after the last window.
        while let Ok(window) = rx.recv() {
            last_error = self.write(window);
            if let Some((path, err)) = &last_error {
                log::warn!(
                    target: "span_profiler",
                    "writing profile {} failed: {err}; the window's file is lost (stats: file_errors)",
                    path.display()
                );
            }
            self.publish();
            release_free_memory();
        }
        // The encode thread ends, its arena's pages given back below.
        self.encoder = None;
        #[cfg(feature = "upload")]
        if self.otlp.is_some() {
            crate::labels::carry_trace_ids(false);
        }
        #[cfg(feature = "upload")]
        let upload = self.uploader.take().map(|u| u.stop(self.stop_timeout));
        #[cfg(not(feature = "upload"))]
        let upload: Option<UploadReport> = {
            let _ = self.stop_timeout;
            None
        };
        self.publish();
        if let Some(report) = &upload {
            lock(&self.stats).upload = Some(report.counts);
        }
        WriterOutcome {
            final_write_error: last_error,
            upload,
        }
    }

    /// Symbolizes `window`'s addresses on this thread, then runs `encode` on the encode
    /// thread (see [`Encoder`]) and waits for it.
    fn encode<T: Send + 'static>(
        &mut self,
        window: ClosedWindow,
        encode: impl FnOnce(&mut Symbolizer, &ClosedWindow) -> T + Send + 'static,
    ) -> (ClosedWindow, T) {
        let symbolization = self.symbolization;
        let symbolizer = self
            .symbolizer
            .take()
            .unwrap_or_else(|| Symbolizer::with_options(symbolization));
        let (symbolizer, window, encoded) =
            encode_window(&mut self.encoder, symbolizer, window, encode);
        self.symbolizer = Some(symbolizer);
        (window, encoded)
    }

    /// Ends the window for the symbolizer (see [`Symbolizer::end_window`]).
    fn end_window(&mut self) {
        if let Some(symbolizer) = self.symbolizer.as_mut() {
            symbolizer.end_window();
        }
    }

    /// Encodes one window, writes its pieces as files and queues them for upload.
    fn write(&mut self, window: ClosedWindow) -> Option<(PathBuf, std::io::Error)> {
        let alloc = matches!(window.kind, ProfileKind::Alloc { .. });
        #[cfg(feature = "upload")]
        let window = match (&self.otlp, self.uploader.is_some()) {
            (Some(otlp), true) => {
                let window = if alloc {
                    // OTLP export carries CPU profiles only: allocation windows go to
                    // files (when written) and are counted
                    // (`AllocStats::windows_not_exported`).
                    crate::alloc::COUNTERS.not_exported.incr();
                    window
                } else {
                    let (options, resource) = (otlp.options, otlp.resource.clone());
                    let (window, bodies) = self.encode(window, move |symbolizer, window| {
                        crate::otlp::encode::encode_prepared(
                            window, symbolizer, &options, &resource,
                        )
                    });
                    if let Some(uploader) = &self.uploader {
                        uploader.enqueue(UploadWindow::from_bodies(
                            bodies,
                            window.start,
                            window.end,
                        ));
                    }
                    window
                };
                // No files: the pprof encoding is not needed.
                if self.files.is_none() {
                    self.end_window();
                    return None;
                }
                window
            }
            _ => window,
        };
        let options = self.options;
        let (window, pieces) = self.encode(window, move |symbolizer, window| {
            encode_prepared(window, symbolizer, &options)
        });
        self.end_window();
        let window = &window;
        let mut error = None;
        if let Some(files) = self.files.as_mut() {
            for (i, piece) in pieces.iter().enumerate() {
                // Pieces of one window get distinct names 1 ms apart.
                let start = window.start + Duration::from_millis(i as u64);
                let written = if alloc {
                    files.write_alloc(start, &piece.gzipped)
                } else {
                    files.write(start, &piece.gzipped)
                };
                if let Err(err) = written {
                    let name = if alloc {
                        files.alloc_file_name(start)
                    } else {
                        files.file_name(start)
                    };
                    error = Some((files.dir().join(name), err));
                }
            }
        }
        self.upload(pieces, window);
        error
    }

    /// Queues a window's pieces (CPU or allocation profiles) for the Push API or `/ingest`.
    #[cfg(feature = "upload")]
    fn upload(&mut self, pieces: Vec<EncodedPiece>, window: &ClosedWindow) {
        if self.otlp.is_some() {
            return;
        }
        if let Some(uploader) = &self.uploader {
            let kind = match window.kind {
                ProfileKind::Cpu => SeriesKind::Cpu,
                ProfileKind::Alloc { .. } => SeriesKind::Memory,
            };
            uploader.enqueue(UploadWindow::new(pieces, window.start, window.end).with_kind(kind));
        }
    }

    #[cfg(not(feature = "upload"))]
    fn upload(&mut self, _pieces: Vec<EncodedPiece>, _window: &ClosedWindow) {}

    fn publish(&self) {
        let footprint = self.symbolizer.as_ref().map(Symbolizer::footprint);
        let mut stats = lock(&self.stats);
        if let Some(footprint) = footprint {
            stats.symbolizer = SymbolizerStats::from(footprint);
        }
        if let Some(files) = &self.files {
            let c = files.counts;
            stats.files_written = c.written;
            stats.file_bytes_written = c.bytes_written;
            stats.files_deleted = c.deleted;
            stats.file_errors = c.write_errors;
            stats.output_dir_recreated = c.dir_recreated;
            stats.files_evicted_for_space = c.evicted_for_space;
        }
        #[cfg(feature = "upload")]
        if let Some(uploader) = &self.uploader {
            stats.upload = Some(uploader.counts());
        }
    }
}

/// Symbolizes `window`'s addresses on this thread (the symbolizer's long-lived entries stay
/// in this thread's arena), then runs `encode` on the encode thread, started if need be,
/// and waits for it.
fn encode_window<T: Send + 'static>(
    encoder: &mut Option<Encoder>,
    mut symbolizer: Symbolizer,
    window: ClosedWindow,
    encode: impl FnOnce(&mut Symbolizer, &ClosedWindow) -> T + Send + 'static,
) -> (Symbolizer, ClosedWindow, T) {
    symbolizer.prepare(lookup_addresses(&window.stacks));
    let encoder = encoder.get_or_insert_with(Encoder::start);
    let ((symbolizer, window), encoded) = encoder.run((symbolizer, window), |(s, w)| encode(s, w));
    (symbolizer, window, encoded)
}

/// A job for the encode thread: runs there and reports back through a channel of its own.
type Job = Box<dyn FnOnce() + Send>;

/// The writer's encode thread, `span-profiler-encode`: each window is encoded there, and
/// the thread lives as long as the writer.
///
/// The reason is glibc's per-thread arenas. The symbolizer's entries live for minutes and
/// come and go a few at a time; a window's encoding allocates tables and buffers of up
/// to tens of MiB that all go when it ends. In one arena, the long-lived entries end up
/// scattered over pages the encodings used, and the arena's resident size creeps up
/// window after window although the bytes in use stay flat (the soak example: 1.32 MiB in
/// ten minutes, all in the writer's arena). [`release_free_memory`] cannot undo that: it
/// gives back free pages between live chunks, never a thread arena's top. On a thread of
/// its own, the encoding allocates from another arena, and everything in it is free again
/// when the window is written.
///
/// The thread is kept rather than started per window: glibc gives an exited thread's
/// arena to the next thread that starts, and when that was one of the application's (a
/// blocking-pool thread), the next window's thread made a new arena: the soak's resident
/// set stepped up by about 3 MiB, one arena's pages, each time that happened.
///
/// If the thread cannot be started, or is gone, jobs run on the caller's thread.
struct Encoder {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Encoder {
    fn start() -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let spawned = thread::Builder::new()
            .name("span-profiler-encode".into())
            .spawn(move || {
                // Ends when the writer drops the sender.
                while let Ok(job) = queue.recv() {
                    job();
                }
                // What the last window left free in this thread's arena.
                release_free_memory();
            });
        match spawned {
            Ok(thread) => Self {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            Err(err) => {
                static LOGGED: LogOnce = LogOnce::new();
                if LOGGED.first() {
                    log::warn!(target: "span_profiler", "could not start the encode thread ({err}); windows are encoded on the writer thread");
                }
                Self {
                    jobs: None,
                    thread: None,
                }
            }
        }
    }

    /// Runs `work` on `input` on the encode thread and waits for it; `input` comes back
    /// with the result. A panic in `work` is resumed here, as if it had run on this thread.
    fn run<I, T>(&self, input: I, work: impl FnOnce(&mut I) -> T + Send + 'static) -> (I, T)
    where
        I: Send + 'static,
        T: Send + 'static,
    {
        let (done, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let mut input = input;
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut input)));
            // The receiver waits below; it is only gone if the caller is.
            let _ = done.send(outcome.map(|t| (input, t)));
        });
        // With no thread, or if it is gone (the job comes back), the job runs here.
        let here = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|mpsc::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = here {
            job();
        }
        match result.recv() {
            Ok(Ok(done)) => done,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // Every job sends before it is dropped (it runs under `catch_unwind`), and the
            // thread only stops taking jobs once `self.jobs` is dropped: unreachable.
            Err(mpsc::RecvError) => unreachable!("an encode job was dropped without running"),
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            // Jobs catch their panics: the thread itself does not panic.
            let _ = thread.join();
        }
    }
}

/// Hands the heap memory that encoding a window freed back to the system. A window's
/// symbolization and encoding allocate tens of MiB for a moment on a busy service, in this
/// thread's malloc arena; glibc keeps freed arena pages resident unless asked, so without
/// this the resident set stays at the window's peak for good. Once per window, off every
/// hot path.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free pages of the allocator's arenas; it takes
    // the arenas' own locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU window with these stacks and no samples.
    fn window_of(stacks: Vec<Arc<[usize]>>) -> ClosedWindow {
        ClosedWindow {
            kind: ProfileKind::Cpu,
            start: std::time::SystemTime::now(),
            end: std::time::SystemTime::now(),
            stacks,
            label_sets: Vec::new(),
            samples: Vec::new(),
        }
    }

    #[test]
    fn windows_are_symbolized_here_and_encoded_on_one_thread_that_stays() {
        let addrs = Symbolizer::new().main_program_addresses(3);
        assert_eq!(addrs.len(), 3);
        let mut encoder = None;
        // A fresh symbolizer: nothing is cached until the window is prepared.
        let symbolizer = Symbolizer::new();
        let window = window_of(vec![Arc::from(addrs)]);
        let (symbolizer, window, (first, cached_before_encoding)) =
            encode_window(&mut encoder, symbolizer, window, |s, _| {
                (thread::current().id(), s.cached_addresses())
            });
        assert_eq!(cached_before_encoding, 3, "prepared on the writer's thread");
        assert_ne!(first, thread::current().id());
        assert_eq!(window.stacks.len(), 1, "the window comes back");
        // The next window goes to the same thread.
        let (symbolizer, _, second) = encode_window(&mut encoder, symbolizer, window, |_, _| {
            thread::current().id()
        });
        assert_eq!(first, second);
        assert_eq!(
            symbolizer.cached_addresses(),
            3,
            "the symbolizer comes back"
        );
    }

    #[test]
    fn a_panic_while_encoding_is_resumed_on_the_writers_thread_and_the_thread_stays() {
        let encoder = Encoder::start();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            encoder.run((), |_| -> Vec<u8> { panic!("encoding failed") })
        }));
        let panic = caught.expect_err("the panic reaches the caller");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"encoding failed"));
        let ((), on) = encoder.run((), |_| thread::current().id());
        assert_ne!(on, thread::current().id());
    }

    #[test]
    fn without_an_encode_thread_jobs_run_here() {
        let encoder = Encoder {
            jobs: None,
            thread: None,
        };
        let (input, on) = encoder.run(7, |n| {
            *n += 1;
            thread::current().id()
        });
        assert_eq!((input, on), (8, thread::current().id()));
    }

    #[test]
    fn the_queue_covers_a_minute_within_its_bounds() {
        assert_eq!(queue_len(Duration::from_secs(10)), 6);
        assert_eq!(queue_len(Duration::from_secs(1)), 60);
        assert_eq!(queue_len(Duration::from_millis(100)), QUEUE_MAX);
        assert_eq!(queue_len(Duration::from_secs(300)), QUEUE_MIN);
    }
}
