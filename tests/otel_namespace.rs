//! A namespaced service end to end: `OTEL_RESOURCE_ATTRIBUTES` names the service and its
//! namespace; `from_env()` and `ProfilingTracerProvider::new` both take them from there;
//! every upload carries the series labels `service_name` and `service_namespace`, and the
//! receiver's span query with Grafana's selector (`service_name`, `service_namespace`, the
//! span's `pyroscope.profile.id`) finds the span's samples. Its own test binary: it sets
//! a process-wide environment variable before anything reads it.
#![cfg(all(feature = "upload", feature = "otel"))]

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::time::{Duration, Instant};

use common::{profiler_lock, spin_cpu};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use receiver::Receiver;
use span_profiler::{ProfiledExt, ProfilerBuilder, ProfilingTracerProvider};

#[inline(never)]
fn namespaced_burn(slice: Duration) {
    spin_cpu(slice);
}

#[test]
fn a_namespaced_resource_labels_every_upload_and_grafanas_span_query_finds_the_span() {
    let _lock = profiler_lock();
    // Before any thread of this binary reads the environment.
    std::env::set_var(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=shop-api,service.namespace=shop,deployment.environment=test",
    );
    let receiver = Receiver::start();
    let profiler = ProfilerBuilder::from_env()
        .server_address(receiver.url())
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(500))
        .start()
        .expect("profiler starts");

    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
    assert_eq!(provider.service_name(), "shop-api");
    assert_eq!(provider.service_namespace(), Some("shop"));
    let tracer = provider.tracer("checkout");
    let cx = Context::current_with_span(tracer.start("POST /cart"));
    let span_id = cx.span().span_context().span_id().to_string();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_millis(1500);
        let work = async move {
            while Instant::now() < deadline {
                namespaced_burn(Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
        };
        tokio::spawn(work.profiled_with(&cx)).await.unwrap();
    });
    let report = profiler.stop().expect("stops");
    let upload = report.upload.expect("uploading");
    assert_eq!(upload.lost, 0, "{upload:?}");
    assert!(upload.delivered >= 2, "{upload:?}");

    let received = receiver.assert_all_valid();
    for r in &received {
        assert_eq!(r.label("service_name"), Some("shop-api"));
        assert_eq!(r.label("service_namespace"), Some("shop"));
    }
    let found = receiver.span_query(
        &[("service_name", "shop-api"), ("service_namespace", "shop")],
        &[span_id.as_str()],
    );
    assert!(
        found
            .iter()
            .any(|s| s.functions.iter().any(|f| f.contains("namespaced_burn"))),
        "Grafana's query finds the span's CPU: {} samples",
        found.len()
    );
    // Without the namespace in the selector's value, nothing: the label is really there.
    assert!(receiver
        .span_query(&[("service_namespace", "other")], &[span_id.as_str()])
        .is_empty());
}
