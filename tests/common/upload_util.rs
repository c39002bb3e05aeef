//! Helpers of the upload tests: real pieces from the real encoder, uploaders configured
//! through the real builder, a log capture.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use span_profiler::__private::label_id_of;
use span_profiler::__private::pprof::encode_window;
use span_profiler::__private::upload::{config, UploadWindow, Uploader};
use span_profiler::{Labels, ProfiledExt, Profiler, ProfilerBuilder};

/// A function whose address serves as a frame.
#[inline(never)]
pub fn upload_leaf_work() -> u64 {
    std::hint::black_box(7)
}

/// Label ids that stay registered while the returned futures live.
pub struct LabelIds {
    _holders: Vec<span_profiler::Profiled<std::future::Ready<()>>>,
    pub ids: Vec<u64>,
}

pub fn label_ids(n: u64) -> LabelIds {
    let holders: Vec<_> = (0..n)
        .map(|i| {
            std::future::ready(()).with_labels(Labels::span(
                0x00f0_0000_0000_0000 + i,
                format!("route{}", i % 7),
            ))
        })
        .collect();
    let ids = holders.iter().map(label_id_of).collect();
    LabelIds {
        _holders: holders,
        ids,
    }
}

/// A window of `stacks` distinct stacks times the given labels, encoded by the real
/// encoder with the real caps (1 MiB and 16,000 samples per piece), starting `age` ago.
pub fn window(stacks: usize, labels: &[u64], age: Duration) -> (UploadWindow, usize) {
    let base = upload_leaf_work as *const () as usize;
    let mut raw = Vec::with_capacity(stacks * labels.len().max(1));
    for i in 0..stacks {
        let frames = vec![base + i % 211, base + 300 + i / 211, base + 900];
        if labels.is_empty() {
            raw.push((frames, 0, 1 + (i % 3) as u64));
        } else {
            for &id in labels {
                raw.push((frames.clone(), id, 1 + (i % 3) as u64));
            }
        }
    }
    let start = SystemTime::now() - age;
    let end = start + Duration::from_secs(10);
    let encoded = encode_window(&raw, start, end, 100, Some(1024 * 1024), Some(16_000));
    let pieces = encoded.pieces.len();
    (
        UploadWindow::from_gzipped(encoded.pieces, start, end),
        pieces,
    )
}

/// A small one-piece window.
pub fn small_window() -> UploadWindow {
    let (w, pieces) = window(5, &[], Duration::from_secs(10));
    assert_eq!(pieces, 1);
    w
}

/// A builder with small backoff and timeouts for tests.
pub fn builder(url: &str) -> ProfilerBuilder {
    Profiler::builder()
        .application_name("upload-test")
        .server_address(url)
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .request_timeout(Duration::from_secs(2))
}

pub fn start(builder: ProfilerBuilder) -> Uploader {
    Uploader::start(config(builder).expect("valid options")).expect("uploader starts")
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Captures every `log` record of the process (installed once per test binary).
pub fn captured_logs() -> &'static Mutex<Vec<String>> {
    struct Capture;
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            let line = format!("{} {}: {}", record.level(), record.target(), record.args());
            LINES
                .get_or_init(Default::default)
                .lock()
                .unwrap()
                .push(line);
        }
        fn flush(&self) {}
    }
    let lines = LINES.get_or_init(Default::default);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        static CAPTURE: Capture = Capture;
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
    });
    lines
}
