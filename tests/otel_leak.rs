//! With no profiler running, spans through the provider must leave nothing behind: every
//! label set they registered and every span-id map entry goes when the spans (and the
//! futures wrapped under them) are gone. Its own test binary: it checks process-global
//! sizes, which other tests would disturb.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use span_profiler::__private::{
    current_label_id, global_registry_len, otel_span_map_len, RegistryLen,
};
use span_profiler::{ProfiledExt, ProfilingTracerProvider};

const REQUESTS: usize = 1_000;
const CHILDREN: usize = 99; // 1,000 x (1 root + 99 children) = 100,000 spans

#[test]
fn one_hundred_thousand_spans_leave_the_registry_and_the_span_map_empty() {
    // Half the traces sampled, so both kinds of label set (with and without span_id) occur.
    let sdk = SdkTracerProvider::builder()
        .with_sampler(Sampler::TraceIdRatioBased(0.5))
        .build();
    let provider = ProfilingTracerProvider::new(sdk);
    let tracer = Arc::new(provider.tracer("leak"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let spans_built = Arc::new(AtomicUsize::new(0));
    let labelled_polls = Arc::new(AtomicUsize::new(0));
    let max_live = Arc::new(AtomicUsize::new(0));

    rt.block_on(async {
        let mut tasks = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS {
            let tracer = tracer.clone();
            let (spans_built, labelled_polls) = (spans_built.clone(), labelled_polls.clone());
            let max_live = max_live.clone();
            let root_cx = Context::current_with_span(tracer.start(format!("route-{}", i % 7)));
            spans_built.fetch_add(1, Relaxed);
            let request = async move {
                let root_cx = Context::current();
                for j in 0..CHILDREN {
                    let mut child = tracer.start_with_context("step", &root_cx);
                    spans_built.fetch_add(1, Relaxed);
                    max_live.fetch_max(otel_span_map_len(), Relaxed);
                    if j % 10 == 0 {
                        let child_cx = root_cx.with_span(child);
                        let polled = async {
                            tokio::task::yield_now().await;
                            current_label_id() != 0
                        }
                        .profiled_with(&child_cx)
                        .await;
                        labelled_polls.fetch_add(usize::from(polled), Relaxed);
                        // The child ends when its last context goes (SDK spans end on drop).
                    } else {
                        child.end();
                    }
                }
            };
            tasks.push(tokio::spawn(request.profiled_in_context(root_cx)));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    drop(rt);

    assert_eq!(spans_built.load(Relaxed), 100_000);
    assert!(
        max_live.load(Relaxed) >= 2,
        "spans were in the map while live"
    );
    assert!(labelled_polls.load(Relaxed) > 0, "some work ran labelled");
    assert_eq!(otel_span_map_len(), 0, "every span's map entry is gone");
    assert_eq!(
        global_registry_len(),
        RegistryLen {
            live: 0,
            retired: 0
        }
    );
}
