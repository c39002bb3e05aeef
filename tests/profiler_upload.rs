//! The whole profiler uploading to the strict loopback receiver: labelled Tokio work in,
//! valid Push requests with `span_id`/`span_name` out, upload counters in `stats()` and
//! the stop report, files only when `output_dir` was set explicitly.
#![cfg(feature = "upload")]

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::time::Duration;

use common::*;
use receiver::{Endpoint, Receiver};
use span_profiler::{Labels, ProfiledExt, Profiler};

#[inline(never)]
fn upload_burn(slice: Duration) {
    spin_cpu(slice);
}

/// Two labelled tasks burning CPU on a 2-worker runtime for `run`.
fn labelled_work(run: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + run;
        let tasks: Vec<_> = (0..2u64)
            .map(|i| {
                let work = async move {
                    while std::time::Instant::now() < deadline {
                        upload_burn(Duration::from_millis(1));
                        tokio::task::yield_now().await;
                    }
                };
                tokio::spawn(work.with_labels(Labels::span(0xabc0 + i, "upload-route")))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn windows_reach_the_server_as_valid_labelled_push_requests_and_no_files() {
    let _lock = profiler_lock();
    let receiver = Receiver::start();
    let cwd_files_before = default_dir_files();
    let profiler = Profiler::builder()
        .application_name("upload-e2e")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(500))
        .server_address(receiver.url())
        .tag("region", "test")
        .start()
        .expect("profiler starts");
    labelled_work(Duration::from_millis(2200));
    // The upload counters reach stats() while the profiler runs.
    let running = wait_until_uploaded(&profiler, 2);
    let report = profiler.stop().expect("stops");

    let upload = report
        .upload
        .expect("an upload report when a server is set");
    assert!(upload.flushed, "{upload:?}");
    assert_eq!(upload.lost, 0, "{upload:?}");
    assert!(
        upload.delivered >= 4,
        "one request per 0.5 s window: {upload:?}"
    );
    assert!(running >= 2);
    assert_eq!(report.files_written, 0, "no output_dir set: no files");
    assert_eq!(default_dir_files(), cwd_files_before);

    let received = receiver.assert_all_valid();
    assert_eq!(received.len() as u64, upload.delivered);
    let mut labelled_burns = 0;
    for r in &received {
        assert_eq!(r.endpoint, Endpoint::Push);
        assert_eq!(r.label("service_name"), Some("upload-e2e"));
        assert_eq!(r.label("region"), Some("test"));
        {
            for s in r.samples() {
                if s.functions.iter().any(|f| f.contains("upload_burn")) {
                    let id = s.labels.get("span_id").map(String::as_str);
                    assert!(
                        matches!(id, Some("000000000000abc0" | "000000000000abc1")),
                        "a burn sample without its task's span_id: {:?}",
                        s.labels
                    );
                    assert_eq!(
                        s.labels.get("span_name").map(String::as_str),
                        Some("upload-route")
                    );
                    labelled_burns += 1;
                }
            }
        }
    }
    assert!(
        labelled_burns > 0,
        "no samples of the labelled work arrived"
    );

    // A real decoder reads a profile exactly as the server received it.
    if let Some(go) = tool("go") {
        let dir = temp_dir("upload-go");
        let path = dir.join("received.pb.gz");
        let labelled = received
            .iter()
            .flat_map(|r| r.profiles.iter().zip(&r.raw_profiles))
            .find(|(p, _)| {
                span_profiler::__private::pprof::samples(p)
                    .iter()
                    .any(|s| s.labels.contains_key("span_id"))
            })
            .map(|(_, raw)| raw)
            .expect("a received profile with labelled samples");
        std::fs::write(&path, labelled).unwrap();
        let raw = go_pprof(&go, &["-raw", path.to_str().unwrap()]);
        assert!(
            raw.contains("span_id:["),
            "no span_id in -raw output:\n{raw}"
        );
        assert!(raw.contains("span_name:[upload-route]"), "{raw}");
    }
}

/// Profile files in the default `./profiles` (0 when it does not exist).
fn default_dir_files() -> usize {
    let dir = std::path::Path::new(span_profiler::DEFAULT_OUTPUT_DIR);
    if dir.exists() {
        profile_files(dir).len()
    } else {
        0
    }
}

/// Polls `stats()` until `n` uploads succeeded; returns how many it saw.
fn wait_until_uploaded(profiler: &Profiler, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ok = profiler.stats().upload.map_or(0, |u| u.uploads_ok);
        if ok >= n || std::time::Instant::now() > deadline {
            return ok;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn with_an_explicit_output_dir_windows_are_uploaded_and_written() {
    let _lock = profiler_lock();
    let receiver = Receiver::start();
    let dir = temp_dir("upload-and-files");
    let profiler = Profiler::builder()
        .application_name("upload-files")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(500))
        .server_address(receiver.url())
        .output_dir(&dir)
        .start()
        .unwrap();
    labelled_work(Duration::from_millis(1200));
    let report = profiler.stop().unwrap();
    let upload = report.upload.expect("upload report");
    assert!(upload.delivered >= 2, "{upload:?}");
    assert_eq!(report.files_written, upload.delivered, "{report:?}");
    assert_eq!(profile_files(&dir).len() as u64, report.files_written);
    receiver.assert_all_valid();
}

#[test]
fn a_server_that_is_down_is_counted_and_stop_returns_within_its_timeout() {
    let _lock = profiler_lock();
    let addr = receiver::unused_addr();
    let profiler = Profiler::builder()
        .application_name("upload-down")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(300))
        .server_address(format!("http://{addr}"))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .stop_timeout(Duration::from_millis(500))
        .start()
        .unwrap();
    labelled_work(Duration::from_millis(800));
    let started = std::time::Instant::now();
    let report = profiler.stop().unwrap();
    let took = started.elapsed();
    let upload = report.upload.expect("upload report");
    assert_eq!(upload.delivered, 0);
    assert!(
        upload.lost >= 2,
        "every window is counted as lost: {upload:?}"
    );
    assert!(
        upload.counts.retries > 0,
        "connect errors are retried: {upload:?}"
    );
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
}
