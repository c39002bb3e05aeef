//! OTLP profile export end to end: the real sampler, `ProfilingTracerProvider`, the OTLP
//! encoder and the uploader against the loopback receiver, which decodes every request
//! with opentelemetry-rust's generated types (not the encoder's) and applies Pyroscope's
//! OTLP conversion rules (`tests/common/otlp_check.rs`).
#![cfg(all(feature = "upload", feature = "otel"))]

mod common;
#[path = "common/receiver.rs"]
mod receiver;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{profiler_lock, spin_cpu};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use receiver::otlp_check::OtlpSample;
use receiver::Receiver;
use span_profiler::{ContextLabelsGuard, ProfiledExt, Profiler, ProfilingTracerProvider, Protocol};

const REQUESTS: usize = 32;
const STEPS: usize = 6;
const KINDS: [&str; 4] = [
    "GET /orders/{id}",
    "POST /checkout",
    "GET /search",
    "GET /health",
];
/// The burner function of each kind, as it appears in a symbolized stack.
const BURNERS: [&str; 4] = [
    "otlp_burn_orders",
    "otlp_burn_checkout",
    "otlp_burn_search",
    "otlp_burn_health",
];

#[inline(never)]
fn otlp_burn_orders() {
    spin_cpu(Duration::from_millis(3));
}
#[inline(never)]
fn otlp_burn_checkout() {
    spin_cpu(Duration::from_millis(3));
}
#[inline(never)]
fn otlp_burn_search() {
    spin_cpu(Duration::from_millis(3));
}
#[inline(never)]
fn otlp_burn_health() {
    spin_cpu(Duration::from_millis(3));
}

fn burn(kind: usize) {
    match kind {
        0 => otlp_burn_orders(),
        1 => otlp_burn_checkout(),
        2 => otlp_burn_search(),
        _ => otlp_burn_health(),
    }
}

fn kind_of(sample: &OtlpSample) -> Option<usize> {
    BURNERS
        .iter()
        .position(|b| sample.stack.iter().any(|f| f.contains(b)))
}

/// One root span per request: (span id hex, trace id hex, kind).
type Roots = Vec<(String, String, usize)>;

/// 32 concurrent requests on 4 workers, each a root span with child spans, burning CPU in
/// its kind's function across awaits that move it between workers.
fn serve_requests() -> Roots {
    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
    let tracer = Arc::new(provider.tracer("otlp-requests"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut handles = Vec::new();
        let mut roots = Vec::new();
        for i in 0..REQUESTS {
            let kind = i % KINDS.len();
            let root_cx = Context::current_with_span(tracer.start(KINDS[kind]));
            let sc = root_cx.span().span_context().clone();
            roots.push((sc.span_id().to_string(), sc.trace_id().to_string(), kind));
            let tracer = tracer.clone();
            let serve = async move {
                for step in 0..STEPS {
                    let cx = Context::current();
                    let child_cx = cx.with_span(tracer.start_with_context("step", &cx));
                    {
                        let _otel = child_cx.clone().attach();
                        let _labels = ContextLabelsGuard::enter_current();
                        burn(kind);
                    }
                    if step % 2 == 0 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    burn(kind);
                }
            };
            handles.push(tokio::spawn(serve.profiled_in_context(root_cx)));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        roots
    })
}

#[test]
fn concurrent_requests_arrive_as_otlp_samples_linked_to_their_own_local_root_span() {
    let _lock = profiler_lock();
    let receiver = Receiver::start();
    let profiler = Profiler::builder()
        .application_name("otlp-e2e")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(500))
        .server_address(receiver.url())
        .protocol(Protocol::Otlp)
        .otlp_gzip(true)
        .tag("region", "test")
        .start()
        .expect("profiler starts");
    let roots = serve_requests();
    let report = profiler.stop().expect("stops");
    let upload = report.upload.expect("an upload report");
    assert!(upload.flushed && upload.lost == 0, "{upload:?}");

    let received = receiver.assert_all_valid();
    assert!(!received.is_empty());
    assert_eq!(received.len() as u64, upload.delivered);
    let mut samples = Vec::new();
    for r in &received {
        assert_eq!(r.path, "/v1development/profiles");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        let otlp = r.otlp.as_ref().expect("decoded as OTLP");
        for p in &otlp.profiles {
            assert_eq!(p.series_labels["service_name"], "otlp-e2e");
            assert_eq!(p.series_labels["__name__"], "process_cpu");
            assert_eq!(p.series_labels["region"], "test");
            assert_eq!(p.series_labels["telemetry.sdk.language"], "rust");
            assert_eq!(p.period, 1_000_000);
        }
        samples.extend(otlp.samples().cloned());
    }

    let by_span: HashMap<&str, (&str, usize)> = roots
        .iter()
        .map(|(span, trace, kind)| (span.as_str(), (trace.as_str(), *kind)))
        .collect();
    let mut per_kind = [(0u64, 0u64); 4]; // (burner weight, weight linked to a root of the kind)
    for s in &samples {
        let Some(kind) = kind_of(s) else { continue };
        per_kind[kind].0 += s.cpu_ns as u64;
        let Some(span) = s.label("span_id") else {
            continue;
        };
        let (trace, root_kind) = by_span
            .get(span)
            .unwrap_or_else(|| panic!("a burner sample links to unknown span {span}: {s:?}"));
        assert_eq!(
            root_kind, &kind,
            "a {} sample links to a {} request",
            KINDS[kind], KINDS[*root_kind]
        );
        assert_eq!(
            s.label("trace_id"),
            Some(*trace),
            "the link carries the root's trace"
        );
        assert_eq!(s.label("span_name"), Some(KINDS[kind]));
        per_kind[kind].1 += s.cpu_ns as u64;
    }
    eprintln!(
        "per kind (burner ns, linked ns): {per_kind:?}; {} requests",
        received.len()
    );
    for (kind, (total, linked)) in per_kind.iter().enumerate() {
        assert!(*total > 0, "no samples in {}", BURNERS[kind]);
        assert!(
            *linked as f64 >= 0.99 * *total as f64,
            "{}: only {linked} of {total} ns linked to its own root span",
            KINDS[kind]
        );
    }
    // The span query: every request's own span id finds its samples, all of its kind.
    let mut found = HashSet::new();
    for r in &received {
        let otlp = r.otlp.as_ref().unwrap();
        for (span, _, kind) in &roots {
            for s in otlp.span_samples(span) {
                found.insert(span.clone());
                assert_ne!(kind_of(s).map(|k| k != *kind), Some(true), "{s:?}");
            }
        }
    }
    assert_eq!(
        found.len(),
        REQUESTS,
        "the span query finds every request's samples"
    );
}

fn labels_under(cx: &Context) -> span_profiler::Labels {
    let _attached = cx.clone().attach();
    async {}.profiled().labels()
}

#[test]
fn label_sets_carry_the_trace_id_only_while_otlp_runs_and_pprof_files_never_get_it() {
    let _lock = profiler_lock();
    let receiver = Receiver::start();
    let dir = common::temp_dir("otlp-files");
    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
    let tracer = provider.tracer("t");
    let before = Context::current_with_span(tracer.start("before"));
    assert_eq!(labels_under(&before).trace_id(), None, "off by default");

    let profiler = Profiler::builder()
        .application_name("otlp-files")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(300))
        .server_address(receiver.url())
        .protocol(Protocol::Otlp)
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    let cx = Context::current_with_span(tracer.start("GET /files"));
    let trace = cx.span().span_context().trace_id().to_string();
    let labels = labels_under(&cx);
    assert_eq!(
        labels.trace_id().map(|t| format!("{t:032x}")),
        Some(trace.clone()),
        "carried for the OTLP link"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(
        async {
            let end = Instant::now() + Duration::from_millis(400);
            while Instant::now() < end {
                otlp_burn_orders();
                tokio::task::yield_now().await;
            }
        }
        .profiled_in_context(cx.clone()),
    );
    let report = profiler.stop().expect("stops");
    assert!(report.files_written > 0);
    let files = common::all_samples(&dir);
    assert!(files.iter().any(|s| s.labels.contains_key("span_id")));
    assert!(
        files.iter().all(|s| !s.labels.contains_key("trace_id")),
        "the trace id never becomes a pprof label"
    );
    let otlp: Vec<_> = receiver
        .assert_all_valid()
        .into_iter()
        .filter_map(|r| r.otlp)
        .collect();
    assert!(otlp
        .iter()
        .flat_map(|r| r.samples())
        .any(|s| s.label("trace_id") == Some(trace.as_str())));
    let after = Context::current_with_span(tracer.start("after"));
    assert_eq!(
        labels_under(&after).trace_id(),
        None,
        "off again after stop"
    );
}
