//! Counters that live outside the sampler (OpenTelemetry lookups, the label registry,
//! the encoder) reach `Profiler::stats()`, through the public API alone. Its own process:
//! one profiler at a time, and the counters are process-wide.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt as _;
use hyper::Request;
use opentelemetry::trace::noop::NoopTracerProvider;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_profiler::{Labels, ProfileLayer, ProfiledExt, Profiler, ProfilingTracerProvider, Stats};
use tower::ServiceExt as _;

/// Polls `stats()` (published about every 100 ms) until `done` holds, for up to 20 s (the first window waits for the symbolizer's index).
fn wait_for(profiler: &Profiler, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = profiler.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what}: {stats:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn otel_lookups_live_labels_and_encoded_profiles_show_in_stats() {
    let dir = std::env::temp_dir().join(format!("span-profiler-stats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let profiler = Profiler::builder()
        .application_name("stats")
        .output_dir(&dir)
        .upload_interval(Duration::from_secs(1))
        .start()
        .expect("the profiler starts");

    // A span of a plain SDK tracer: no `ProfilingSpan` knows it, so the lookup is counted.
    let plain = SdkTracerProvider::builder().build().tracer("plain");
    let cx = Context::current_with_span(plain.start("not profiled"));
    let wrapped = async {}.profiled_with(&cx);
    assert!(wrapped.labels().is_empty());
    wait_for(&profiler, "the unknown span is counted", |s| {
        s.otel.unknown_spans >= 1
    });

    // A live span of a profiling provider is a gauge while it lives.
    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build())
        .with_service_name("stats");
    let mut span = provider.tracer("t").start("GET /stats");
    wait_for(&profiler, "the live span is a gauge", |s| {
        s.otel.live_spans >= 1
    });
    span.end();
    drop(span);

    // ProfileLayer with a tracer of no ProfilingTracerProvider (here the no-op one, the
    // global default): each request runs unlabelled and is counted; with the profiling
    // provider's tracer nothing is counted.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let serve = |layer: ProfileLayer| {
        let app: Router = Router::new()
            .route(
                "/labelled",
                get(|| async { (!Labels::current().is_empty()).to_string() }),
            )
            .layer(layer);
        let request = Request::get("/labelled").body(Body::empty()).unwrap();
        rt.block_on(async {
            let response = app.oneshot(request).await.expect("response");
            let body = response.into_body().collect().await.expect("body");
            String::from_utf8(body.to_bytes().to_vec()).unwrap()
        })
    };
    let before = profiler.stats().otel.unlabelled_requests;
    let noop = ProfileLayer::with_tracer(NoopTracerProvider::new().tracer("noop"));
    assert_eq!(serve(noop.clone()), "false");
    assert_eq!(serve(noop), "false");
    wait_for(&profiler, "unlabelled requests are counted", |s| {
        s.otel.unlabelled_requests == before + 2
    });
    assert_eq!(
        serve(ProfileLayer::with_tracer(provider.tracer("http"))),
        "true"
    );
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(profiler.stats().otel.unlabelled_requests, before + 2);

    // Labels held by a wrapper are registered label sets.
    let held = async {}.with_labels(Labels::span(42, "held"));
    wait_for(&profiler, "the held labels are live", |s| {
        s.label_sets_live >= 1
    });
    drop(held);

    // Work for a window: the encoder's profiles and the symbolizer's addresses count.
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(300) {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    let stats = wait_for(&profiler, "a window was encoded", |s| {
        s.profiles_encoded >= 1 && s.addresses_symbolized >= 1
    });
    assert!(stats.sampler.thread_scans >= 1, "{stats:#?}");
    assert!(stats.sampler.maintain_cpu > Duration::ZERO, "{stats:#?}");
    let report = profiler.stop().expect("stop");
    // The report counts what the writer encoded after the last periodic snapshot too.
    assert!(report.files_written >= 1, "{report:#?}");
    assert!(
        report.stats.profiles_encoded >= report.files_written,
        "{report:#?}"
    );
}
