//! Span profiles end to end, at the sample level: 32 concurrent OpenTelemetry requests on a
//! 4-worker runtime, each a root span with child spans, burning CPU in a function chosen
//! by its kind, with awaits that move tasks between workers. The profiler writes files;
//! samples of each kind's function must carry the span id of a request of that kind, and
//! `go tool pprof -tagfocus=span_id=<id>` must show only that request's kind of function.
//! The provider asks for the `trace_id` label: every labelled sample carries its root's.
#![cfg(feature = "otel")]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_profiler::{ProfiledExt, Profiler, ProfilingTracerProvider};

const REQUESTS: usize = 32;
const KINDS: [&str; 4] = [
    "GET /orders/{id}",
    "POST /checkout",
    "GET /search",
    "GET /health",
];
const BURNERS: [&str; 4] = [
    "otel_burn_orders",
    "otel_burn_checkout",
    "otel_burn_search",
    "otel_burn_health",
];

#[inline(never)]
fn otel_burn_orders(d: Duration) {
    spin_cpu(d);
}
#[inline(never)]
fn otel_burn_checkout(d: Duration) {
    spin_cpu(d);
}
#[inline(never)]
fn otel_burn_search(d: Duration) {
    spin_cpu(d);
}
#[inline(never)]
fn otel_burn_health(d: Duration) {
    spin_cpu(d);
}

fn burn(kind: usize, d: Duration) {
    match kind {
        0 => otel_burn_orders(d),
        1 => otel_burn_checkout(d),
        2 => otel_burn_search(d),
        _ => otel_burn_health(d),
    }
}

#[test]
fn samples_of_each_kind_carry_their_own_requests_span_ids_and_tagfocus_selects_one() {
    let _lock = profiler_lock();
    let dir = temp_dir("otel-profiles");
    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build())
        .with_trace_id_label(true);
    let tracer = provider.tracer("otel-profiles");
    let profiler = Profiler::builder()
        .application_name("otel-profiles")
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(10))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    // span id (hex) -> kind of its request.
    let mut kind_of: HashMap<String, usize> = HashMap::new();
    // span id (hex) -> trace id (hex) of its request.
    let mut trace_of: HashMap<String, String> = HashMap::new();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut handles = Vec::new();
        for i in 0..REQUESTS {
            let kind = i % KINDS.len();
            let root = Context::current_with_span(tracer.start(KINDS[kind]));
            {
                let root_span = root.span();
                let ids = root_span.span_context();
                kind_of.insert(ids.span_id().to_string(), kind);
                trace_of.insert(ids.span_id().to_string(), ids.trace_id().to_string());
            }
            let child_tracer = provider.tracer("otel-profiles-child");
            let work = async move {
                let mut rng = Rng::new(i as u64 + 1);
                while Instant::now() < deadline {
                    // A child span per step: its work still carries the root's labels.
                    let child = child_tracer.start("step");
                    burn(kind, Duration::from_micros(rng.range(500, 2000)));
                    drop(child);
                    if rng.range(0, 4) == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    } else {
                        tokio::task::yield_now().await;
                    }
                }
            };
            handles.push(tokio::spawn(work.profiled_with(&root)));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    profiler.stop().expect("stops");

    let samples = all_samples(&dir);
    let mut holding = [0i64; 4];
    let mut right = [0i64; 4];
    for s in &samples {
        let Some(kind) = s
            .functions
            .iter()
            .find_map(|f| BURNERS.iter().position(|b| f.contains(b)))
        else {
            continue;
        };
        holding[kind] += s.values[0];
        match s.labels.get("span_id").and_then(|id| kind_of.get(id)) {
            Some(&k) if k == kind => {
                right[kind] += s.values[0];
                assert_eq!(
                    s.labels.get("trace_id"),
                    trace_of.get(&s.labels["span_id"]),
                    "the trace_id label is the request's trace id"
                );
                assert_eq!(
                    s.labels.get("span_name").map(String::as_str),
                    Some(KINDS[kind])
                );
            }
            Some(&k) => panic!("a {} sample carries a {} span id", KINDS[kind], KINDS[k]),
            None => {}
        }
    }
    for kind in 0..4 {
        assert!(holding[kind] >= 50, "{}: {holding:?}", KINDS[kind]);
        let share = right[kind] as f64 / holding[kind] as f64;
        assert!(
            share >= 0.99,
            "{}: only {:.1}% of its samples carry its requests' span ids",
            KINDS[kind],
            share * 100.0
        );
    }

    // A real decoder selects one request by its span id.
    let Some(go) = tool("go") else { return };
    let file = profile_files(&dir).into_iter().next().expect("a profile");
    let file = file.to_str().unwrap();
    let (target, kind) = kind_of
        .iter()
        .find(|(_, &k)| k == 2)
        .map(|(id, &k)| (id.clone(), k))
        .unwrap();
    let focused = go_pprof(
        &go,
        &["-traces", &format!("-tagfocus=span_id=^{target}$"), file],
    );
    assert!(
        focused.contains(BURNERS[kind]),
        "tagfocus lost {}:\n{focused}",
        BURNERS[kind]
    );
    for (other, name) in BURNERS.iter().enumerate() {
        if other != kind {
            assert!(!focused.contains(name), "tagfocus on {target} shows {name}");
        }
    }
}
