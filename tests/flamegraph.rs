//! `span_profiler::flamegraph` on real profiler output: two labelled request kinds burn
//! CPU in their own functions on a 2-worker runtime; the files the profiler wrote are
//! rendered whole, per span name and per span id, and summarized.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use span_profiler::flamegraph::{summarize, FlameGraph, Profile, SampleFilter};
use span_profiler::{Labels, ProfiledExt, Profiler};

#[inline(never)]
fn flame_orders(slice: Duration) {
    spin_cpu(slice);
}

#[inline(never)]
fn flame_search(slice: Duration) {
    spin_cpu(slice);
}

#[test]
fn real_profiles_render_per_span_name_and_span_id_and_summarize() {
    let _lock = profiler_lock();
    let dir = temp_dir("flamegraph");
    let profiler = Profiler::builder()
        .application_name("flamegraph-test")
        .sample_rate(250)
        .upload_interval(Duration::from_secs(1))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // CPU each kind really burned, as its threads' CPU clocks measured it.
    let burned: Arc<[AtomicU64; 2]> = Arc::default();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for i in 0..4u64 {
            let (name, burn): (&str, fn(Duration)) = match i % 2 {
                0 => ("GET /orders/{id}", flame_orders),
                _ => ("GET /search", flame_search),
            };
            let labels = Labels::span(0x1000 + i, name);
            let burned = burned.clone();
            tasks.push(tokio::spawn(
                async move {
                    while Instant::now() < deadline {
                        let before = thread_cpu();
                        burn(Duration::from_millis(1));
                        let used = (thread_cpu() - before).as_nanos() as u64;
                        burned[(i % 2) as usize].fetch_add(used, Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
                .with_labels(labels),
            ));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    profiler.stop().expect("profiler stops");

    let profiles = Profile::read_dir(&dir).expect("profiles decode");
    assert!(profiles.len() >= 2, "one file per window");

    let svg = |filter: SampleFilter| {
        let mut out = Vec::new();
        let rendered = FlameGraph::new().filter(filter).render(&profiles, &mut out);
        (String::from_utf8(out).unwrap(), rendered.expect("renders"))
    };
    let (all, whole) = svg(SampleFilter::All);
    assert!(all.contains("flame_orders") && all.contains("flame_search"));
    let (orders, by_name) = svg(SampleFilter::span_name("GET /orders/{id}"));
    assert!(orders.contains("flame_orders") && !orders.contains("flame_search"));
    let (one, by_id) = svg(SampleFilter::span_id(0x1001));
    assert!(one.contains("flame_search") && !one.contains("flame_orders"));
    let (whole_cpu, name_cpu, id_cpu) =
        (whole.cpu.unwrap(), by_name.cpu.unwrap(), by_id.cpu.unwrap());
    assert!(whole_cpu > name_cpu && name_cpu > id_cpu && id_cpu > Duration::ZERO);

    let summary = summarize(&profiles).unwrap();
    let kinds = [
        ("GET /orders/{id}", "flame_orders"),
        ("GET /search", "flame_search"),
    ];
    for (kind, (name, function)) in kinds.into_iter().enumerate() {
        let span = summary
            .spans
            .iter()
            .find(|s| s.span_name == name)
            .expect(name);
        assert_eq!(span.requests, 2, "{span:?}");
        let hottest = span.hottest_function.as_deref().unwrap_or_default();
        // `spin_cpu` is the innermost non-std frame: the burners call it.
        assert!(
            hottest.ends_with("spin_cpu") || hottest.ends_with(function),
            "{span:?}"
        );
        // The samples add up to the CPU the kind burned, within sampling error.
        let measured = Duration::from_nanos(burned[kind].load(Relaxed));
        let ratio = span.cpu.as_secs_f64() / measured.as_secs_f64();
        assert!(
            (0.75..1.25).contains(&ratio),
            "{span:?} vs {measured:?} burned"
        );
    }
    assert_eq!(summary.requests.len(), 4);
    let mut ids: Vec<u64> = summary.requests.iter().map(|r| r.span_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [0x1000, 0x1001, 0x1002, 0x1003]);
    std::fs::remove_dir_all(&dir).unwrap();
}
