//! Allocation profiles uploaded to the strict loopback receiver: a service allocating
//! under labelled spans with `ProfiledAllocator` at `alloc_sample_bytes(64 KiB)`, uploaded
//! by the Push API and by `/ingest`. The receiver must get `__name__=memory` series (with
//! `__delta__=false` on Push, so the server does not subtract the windows again) whose
//! profiles carry Go's four heap sample types and the span labels, `go tool pprof` must
//! read them by span name, and the upload counters must count them. With OTLP export
//! the allocation windows are counted as not exported (one test: the allocation counters
//! are process-wide).
#![cfg(feature = "upload")]

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::hint::black_box;
use std::time::{Duration, Instant};

use receiver::{Endpoint, Receiver, ServerVersion};
use span_profiler::__private::pprof::samples;
use span_profiler::alloc::ProfiledAllocator;
use span_profiler::{Labels, ProfiledExt, Profiler, Protocol};

#[global_allocator]
static ALLOC: ProfiledAllocator = ProfiledAllocator::system();

const SAMPLE_BYTES: u64 = 64 * 1024;

/// 64 KiB x 32 = 2 MiB per request.
#[inline(never)]
fn upload_heavy_request() -> u64 {
    let mut n = 0;
    for _ in 0..32 {
        let v: Vec<u8> = black_box(Vec::with_capacity(64 * 1024));
        n += v.capacity() as u64;
    }
    n
}

/// 4 KiB x 16 = 64 KiB per request.
#[inline(never)]
fn upload_light_request() -> u64 {
    let mut n = 0;
    for _ in 0..16 {
        let v: Vec<u8> = black_box(Vec::with_capacity(4096));
        n += v.capacity() as u64;
    }
    n
}

/// Serves labelled requests of both classes for `run`; returns the bytes each allocated.
fn serve(run: Duration) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (mut heavy, mut light) = (0, 0);
    let deadline = Instant::now() + run;
    let mut span = 0x00a1_0000_0000_0000u64;
    while Instant::now() < deadline {
        span += 1;
        heavy += rt.block_on(
            async { upload_heavy_request() }.with_labels(Labels::span(span, "GET /heavy")),
        );
        span += 1;
        light += rt.block_on(
            async { upload_light_request() }.with_labels(Labels::span(span, "GET /light")),
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    (heavy, light)
}

fn sample_types(p: &span_profiler::__private::pprof::Profile) -> Vec<(String, String)> {
    p.sample_type
        .iter()
        .map(|t| {
            (
                p.string_table[t.r#type as usize].clone(),
                p.string_table[t.unit as usize].clone(),
            )
        })
        .collect()
}

/// Runs the service under a profiler uploading with `protocol`; returns the receiver and
/// the profiler's final counters (the allocation counters are process-wide).
fn run_with(protocol: Protocol, version: ServerVersion) -> (Receiver, span_profiler::Stats) {
    let receiver = Receiver::start();
    receiver.set_version(version);
    let profiler = Profiler::builder()
        .application_name("alloc-upload")
        .server_address(receiver.url())
        .protocol(protocol)
        .upload_interval(Duration::from_millis(500))
        .alloc_sample_bytes(SAMPLE_BYTES)
        .start()
        .expect("start");
    let (heavy, light) = serve(Duration::from_secs(2));
    assert!(heavy > 0 && light > 0);
    let report = profiler.stop().expect("stop");
    (receiver, report.stats)
}

#[test]
fn allocation_profiles_upload_as_memory_series_by_push_and_ingest_and_go_reads_them() {
    let _lock = common::profiler_lock();
    // OTLP export carries CPU profiles only: the allocation windows are counted.
    let (receiver, stats) = run_with(Protocol::Otlp, ServerVersion::V2_1);
    let received = receiver.assert_all_valid();
    assert!(
        received.iter().all(|r| r.otlp.is_some()),
        "only OTLP requests"
    );
    assert!(stats.alloc.sampled > 0);
    let mut not_exported = stats.alloc.windows_not_exported;
    assert!(
        not_exported > 0,
        "allocation windows were sampled: {:?}",
        stats.alloc
    );

    for (protocol, version) in [
        (Protocol::Push, ServerVersion::V2_1),
        (Protocol::Push, ServerVersion::V1),
        (Protocol::Ingest, ServerVersion::V2_1),
    ] {
        let (receiver, stats) = run_with(protocol, version);
        let received = receiver.assert_all_valid();
        let memory: Vec<_> = received
            .iter()
            .filter(|r| r.label("__name__") == Some("memory"))
            .collect();
        let cpu = received
            .iter()
            .filter(|r| r.label("__name__") == Some("process_cpu"))
            .count();
        assert!(
            !memory.is_empty(),
            "{protocol:?}: no memory series among {} requests",
            received.len()
        );
        let upload = stats.upload.expect("upload counters");
        // Allocation windows are counted like CPU windows: every request the receiver
        // answered is a piece the profiler counts as delivered.
        assert_eq!(
            upload.uploads_ok as usize,
            memory.len() + cpu,
            "{protocol:?}: {upload:?}"
        );
        assert_eq!(upload.dropped.total(), 0, "{upload:?}");
        // The Push API and `/ingest` upload every allocation window.
        assert_eq!(stats.alloc.windows_not_exported, not_exported);
        not_exported = stats.alloc.windows_not_exported;
        let mut heavy = 0.0;
        let mut light = 0.0;
        for r in &memory {
            // Push sends `__delta__=false`; `/ingest`'s server adds it (the receiver
            // records it as the server stores it).
            assert_eq!(r.label("__delta__"), Some("false"), "{protocol:?}");
            assert_eq!(r.label("service_name"), Some("alloc-upload"));
            match (&r.endpoint, protocol) {
                (Endpoint::Push, Protocol::Push) => {}
                (Endpoint::Ingest { name, .. }, Protocol::Ingest) => {
                    assert_eq!(name, "alloc-upload{}")
                }
                (other, _) => panic!("{protocol:?} went to {other:?}"),
            }
            for p in &r.profiles {
                assert_eq!(
                    sample_types(p),
                    [
                        ("alloc_objects".into(), "count".into()),
                        ("alloc_space".into(), "bytes".into()),
                        ("inuse_objects".into(), "count".into()),
                        ("inuse_space".into(), "bytes".into()),
                    ]
                );
                let period = p.period_type.as_ref().expect("period type");
                assert_eq!(
                    (
                        p.string_table[period.r#type as usize].as_str(),
                        p.string_table[period.unit as usize].as_str()
                    ),
                    ("space", "bytes"),
                    "memory:alloc_space:bytes:space:bytes needs period type space/bytes"
                );
                for s in samples(p) {
                    let name = s.labels.get("span_name").map(String::as_str);
                    let has_id = s.labels.get("span_id").is_some_and(|id| id.len() == 16);
                    if name == Some("GET /heavy") {
                        assert!(has_id, "{s:?}");
                        heavy += s.values[1] as f64;
                    } else if name == Some("GET /light") {
                        assert!(has_id, "{s:?}");
                        light += s.values[1] as f64;
                    }
                }
            }
        }
        // 2 MiB against 64 KiB per request: far apart whatever the sampling noise.
        assert!(
            heavy > 5.0 * light && heavy > 0.0,
            "{protocol:?}: alloc_space heavy {heavy}, light {light}"
        );

        if let Some(go) = common::tool("go") {
            let dir = common::temp_dir("alloc-upload");
            let mut paths = Vec::new();
            for (i, r) in memory.iter().enumerate() {
                for (j, raw) in r.raw_profiles.iter().enumerate() {
                    let path = dir.join(format!("memory-{i}-{j}.pb.gz"));
                    std::fs::write(&path, raw).unwrap();
                    paths.push(path.to_str().unwrap().to_owned());
                }
            }
            let mut args = vec![
                "-sample_index=alloc_space",
                "-tagfocus=span_name=GET /heavy",
                "-top",
            ];
            args.extend(paths.iter().map(String::as_str));
            let out = common::go_pprof(&go, &args);
            assert!(out.contains("upload_heavy_request"), "{out}");
            assert!(!out.contains("upload_light_request"), "{out}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
