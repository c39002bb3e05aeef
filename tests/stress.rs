//! Reliability under stress (bounded in time, run by `.ci/run`): 1 kHz signals against a
//! workload that allocates, locks and makes syscalls; 10,000 short-lived labelled threads;
//! 100,000 distinct spans and 1,000 span names in one window, uploaded to the strict
//! receiver.
//!
//! Every test starts the process-wide profiler, so they take `profiler_lock()`.

mod common;
#[cfg(feature = "upload")]
#[path = "common/receiver.rs"]
mod receiver;

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::*;
use span_profiler::{Labels, ProfiledExt, Profiler};

/// Runs `f` on this (non-async) thread with `labels` in force, by polling a labelled
/// future once: the way a synchronous thread gets labels in these tests.
fn with_labels_on_thread<R>(labels: Labels, f: impl FnOnce() -> R) -> R {
    let fut = pin!(async move { f() }.with_labels(labels));
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => unreachable!("the block never awaits"),
    }
}

/// Lines of `/proc/self/timers` that are POSIX timers (one `ID:` line each).
fn posix_timers() -> usize {
    std::fs::read_to_string("/proc/self/timers")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("ID:"))
        .count()
}

fn live_threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Counts an I/O result: `Interrupted` is the failure this test hunts (a handler without
/// `SA_RESTART` would cause it); anything else is a bug in the workload itself.
fn check<T>(result: std::io::Result<T>, interrupted: &AtomicU64) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) if e.kind() == ErrorKind::Interrupted => {
            interrupted.fetch_add(1, Relaxed);
            None
        }
        Err(e) => panic!("workload I/O failed: {e}"),
    }
}

/// One stress thread: allocation churn, a contended mutex, file and socket syscalls and
/// short sleeps, until `stop`.
fn stress_thread(
    seed: u64,
    dir: &std::path::Path,
    shared: &Mutex<Vec<u64>>,
    stop: &AtomicBool,
    interrupted: &AtomicU64,
) -> u64 {
    let mut rng = Rng::new(seed);
    let path = dir.join(format!("scratch-{seed}"));
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut ops = 0u64;
    while !stop.load(Relaxed) {
        ops += 1;
        // Allocation churn of many sizes.
        for _ in 0..32 {
            let size = rng.range(1, 64 * 1024) as usize;
            held.push(vec![ops as u8; size]);
            if held.len() > 64 {
                let i = rng.range(0, held.len() as u64) as usize;
                held.swap_remove(i);
            }
        }
        let text = format!("{ops}-{}", held.len());
        // A mutex every thread contends on.
        {
            let mut v = shared.lock().unwrap();
            v.push(text.len() as u64);
            if v.len() > 1000 {
                v.clear();
            }
        }
        // Syscalls: file write and read back, a socket round trip, /proc, a short sleep.
        check(std::fs::write(&path, text.as_bytes()), interrupted);
        if let Some(back) = check(std::fs::read(&path), interrupted) {
            assert_eq!(back, text.as_bytes());
        }
        check(a.write_all(&[7u8; 512]), interrupted);
        let mut buf = [0u8; 512];
        check(b.read_exact(&mut buf), interrupted);
        check(std::fs::read_to_string("/proc/self/stat"), interrupted);
        std::thread::sleep(Duration::from_micros(rng.range(10, 200)));
    }
    ops
}

#[test]
fn one_khz_signals_against_alloc_lock_and_syscall_heavy_threads_for_30_s() {
    let _lock = profiler_lock();
    let dir = temp_dir("stress-signals");
    let scratch = temp_dir("stress-scratch");
    let profiler = Profiler::builder()
        .application_name("stress-signals")
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(5))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    let stop = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let (stop, interrupted, shared, scratch, done) = (
                stop.clone(),
                interrupted.clone(),
                shared.clone(),
                scratch.clone(),
                done_tx.clone(),
            );
            std::thread::spawn(move || {
                let labels = Labels::span(0x5000 + i, "stress-thread");
                let ops = with_labels_on_thread(labels, || {
                    stress_thread(i + 1, &scratch, &shared, &stop, &interrupted)
                });
                done.send(ops).unwrap();
            })
        })
        .collect();

    // A busy Tokio runtime beside them: timers, the blocking pool, channels, CPU slices.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tokio_ops = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let tasks: Vec<_> = (0..16u64)
            .map(|i| {
                let interrupted = interrupted.clone();
                let scratch = scratch.clone();
                let work = async move {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(4);
                    let mut ops = 0u64;
                    while tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_micros(500)).await;
                        let path = scratch.join(format!("tokio-{i}"));
                        // What tokio::fs does: the blocking pool.
                        let io = tokio::task::spawn_blocking(move || {
                            std::fs::write(&path, b"x").and_then(|()| std::fs::read(&path))
                        });
                        check(io.await.unwrap(), &interrupted);
                        tx.send(ops).await.unwrap();
                        assert_eq!(rx.recv().await, Some(ops));
                        spin_cpu(Duration::from_micros(300));
                        ops += 1;
                    }
                    ops
                };
                tokio::spawn(work.with_labels(Labels::span(0x6000 + i, "stress-task")))
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    stop.store(true, Relaxed);
    // A deadlock (a handler taking a lock the interrupted code holds) would hang here.
    let mut thread_ops = 0;
    for _ in 0..threads.len() {
        thread_ops += done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a stress thread hung: deadlock under signals?");
    }
    for t in threads {
        t.join().unwrap();
    }
    let stats = profiler.stats();
    let report = profiler.stop().expect("stops");

    assert_eq!(interrupted.load(Relaxed), 0, "an API returned Interrupted");
    assert!(
        thread_ops > 1000 && tokio_ops > 1000,
        "{thread_ops} {tokio_ops}"
    );
    let coverage = stats.coverage().expect("process CPU measured");
    assert!(coverage >= 0.9, "coverage {coverage:.3}: {stats:?}");
    assert!(report.files_written >= 6, "{report:?}");
    // Every file decodes and passes every server rule; the labelled threads are there.
    let samples = all_samples(&dir);
    let stressed = samples
        .iter()
        .filter(|s| s.labels.get("span_name").map(String::as_str) == Some("stress-thread"))
        .count();
    assert!(stressed > 0, "no samples of the labelled stress threads");
}

#[test]
fn ten_thousand_short_labelled_threads_leak_no_timers_or_memory() {
    let _lock = profiler_lock();
    let dir = temp_dir("stress-churn");
    let timers_before = posix_timers();
    let profiler = Profiler::builder()
        .application_name("stress-churn")
        .sample_rate(100)
        .upload_interval(Duration::from_secs(1))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    spin_cpu(Duration::from_millis(5));
                }
            })
        })
        .collect();
    // Warm up before the memory baseline: allocator arenas, the registry, and above all
    // the symbolizer, whose DWARF index of this debug test binary takes a good 100 MiB
    // at the first window close (freed at stop; small for `line-tables-only` builds).
    churn(0..200);
    std::thread::sleep(Duration::from_millis(2500));
    let rss_before = rss_bytes();
    let started = Instant::now();
    churn(200..10_200);
    let churn_took = started.elapsed();
    // The rest of the 10 s with only the busy threads; discovery scans clean up.
    if let Some(rest) = Duration::from_secs(10).checked_sub(churn_took) {
        std::thread::sleep(rest);
    }
    let rss_after = rss_bytes();
    let timers_running = posix_timers();
    let threads_running = live_threads();
    let stats = profiler.stats();
    stop.store(true, Relaxed);
    for t in busy {
        t.join().unwrap();
    }
    profiler.stop().expect("stops");

    // One timer per live thread at most (plus timers that existed before the profiler).
    assert!(
        timers_running <= timers_before + threads_running,
        "{timers_running} timers for {threads_running} threads: leaked timers"
    );
    assert_eq!(posix_timers(), timers_before, "timers left after stop");
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 32 * 1024 * 1024,
        "resident memory grew by {} KiB over 10,000 threads",
        growth / 1024
    );
    let coverage = stats.coverage().expect("process CPU measured");
    assert!(coverage >= 0.9, "coverage {coverage:.3}: {stats:?}");
}

/// Starts one thread per id, each writing a label (which arms its timer) and exiting at
/// once; 64 at a time.
fn churn(ids: std::ops::Range<u64>) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(64) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|&id| {
                std::thread::spawn(move || {
                    with_labels_on_thread(Labels::span(id, "churn"), || std::hint::black_box(id))
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

#[cfg(feature = "upload")]
#[test]
fn a_hundred_thousand_spans_and_a_thousand_names_in_one_window_stay_within_caps_and_limits() {
    let _lock = profiler_lock();
    let receiver = receiver::Receiver::start();
    let rss_before = rss_bytes();
    let profiler = Profiler::builder()
        .application_name("stress-cardinality")
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(60))
        .server_address(receiver.url())
        .max_request_bytes(64 * 1024)
        // Far below the distinct sets sampled even on a loaded machine (~1,800 samples).
        .max_label_sets(500)
        .start()
        .expect("profiler starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        // 100,000 spans, each its own label set, under 1,000 names; each burns a little.
        for batch in 0..100u64 {
            let tasks: Vec<_> = (0..1000u64)
                .map(|i| {
                    let id = batch * 1000 + i + 1;
                    let labels = Labels::span(id, format!("route-{}", id % 1000));
                    tokio::spawn(
                        async move {
                            spin_cpu(Duration::from_micros(60));
                            tokio::task::yield_now().await;
                            spin_cpu(Duration::from_micros(60));
                        }
                        .with_labels(labels),
                    )
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    });
    let rss_peak = rss_bytes();
    let report = profiler.stop().expect("stops");
    let stats = &report.stats;
    let upload = report.upload.expect("upload report");

    assert_eq!(stats.windows, 1, "everything in one window: {stats:?}");
    assert!(
        stats.label_sets_overflowed > 0,
        "the 500-set cap did not trigger: {stats:?}"
    );
    assert!(
        stats.span_names_overflowed > 0,
        "the 200-name cap did not trigger: {stats:?}"
    );
    assert_eq!(upload.lost, 0, "{upload:?}");
    assert!(
        upload.delivered >= 2,
        "a 64 KiB request cap splits the window: {upload:?}"
    );
    // Every request within the server's rules (size, samples, label names, values).
    let received = receiver.assert_all_valid();
    let mut names = std::collections::HashSet::new();
    let mut weight = 0i64;
    for s in received.iter().flat_map(|r| r.samples()) {
        weight += s.values[0];
        if let Some(n) = s.labels.get("span_name") {
            names.insert(n.clone());
        }
    }
    // Nothing lost by the caps or the split: every sampled expiry arrived.
    assert_eq!(weight as u64, stats.sample_weight, "{stats:?}");
    assert!(
        names.len() <= 201,
        "{} span names: cap 200 + other",
        names.len()
    );
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(
        growth < 128 * 1024 * 1024,
        "resident memory grew by {} MiB",
        growth >> 20
    );
}
