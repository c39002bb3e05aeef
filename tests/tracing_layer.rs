//! `TracingProfileLayer` with tracing-opentelemetry over a `ProfilingTracer`:
//! `#[tracing::instrument]`ed async functions (a root and a child each) on a 4-worker
//! runtime, many concurrent, burning CPU in a function per root; the profile files must
//! attribute each function's samples to the span ids of its own roots. No other code
//! change than the layer: no `.profiled()` anywhere.

mod common;
mod span_profiles;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use span_profiler::{Labels, ProfileLayer, Profiler, TracingProfileLayer, PROFILE_ID_ATTRIBUTE};
use span_profiles::*;
use tower::{Layer as _, Service as _};
use tracing_subscriber::layer::SubscriberExt as _;

const SERVICE: &str = "tracing-layer-test";
const SLICES: usize = 6;
const SLICE: Duration = Duration::from_millis(1);

#[inline(never)]
fn burn_in_orders_span(slice: Duration) {
    spin_cpu(slice);
}

#[inline(never)]
fn burn_in_checkout_span(slice: Duration) {
    spin_cpu(slice);
}

#[tracing::instrument(name = "GET /orders/{id}")]
async fn orders(id: u64) -> Labels {
    for _ in 0..SLICES {
        burn_in_orders_span(SLICE);
        tokio::task::yield_now().await;
    }
    load_order(id).await
}

/// A child span: its work carries its root's labels.
#[tracing::instrument]
async fn load_order(id: u64) -> Labels {
    for _ in 0..SLICES {
        burn_in_orders_span(SLICE);
        tokio::task::yield_now().await;
    }
    Labels::current()
}

#[tracing::instrument(name = "POST /checkout")]
async fn checkout(cart: u64) -> Labels {
    for _ in 0..2 * SLICES {
        burn_in_checkout_span(SLICE);
        tokio::task::yield_now().await;
    }
    Labels::current()
}

/// Installs (once per binary) the global subscriber: tracing-opentelemetry over a
/// `ProfilingTracer`, and `TracingProfileLayer`.
fn install_subscriber() -> InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let (exporter, provider) = provider(SERVICE);
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing-test")))
                .with(TracingProfileLayer::new());
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber");
            exporter
        })
        .clone()
}

#[test]
fn instrumented_async_fns_carry_their_root_spans_ids_on_every_poll() {
    let _lock = profiler_lock();
    let exporter = install_subscriber();

    let dir = temp_dir("tracing-layer");
    let profiler = Profiler::builder()
        .application_name(SERVICE)
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(1))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let seen: Vec<Labels> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..240u64 {
            tasks.push(if i % 2 == 0 {
                tokio::spawn(orders(i))
            } else {
                tokio::spawn(checkout(i))
            });
            if i % 24 == 23 {
                tokio::task::yield_now().await;
            }
        }
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen
    });
    profiler.stop().expect("profiler stops");
    drop(rt);

    let ids = |name: &str| -> HashSet<String> {
        let spans = spans_named(&exporter, name);
        for s in &spans {
            let id = s.span_context.span_id().to_string();
            assert_eq!(attr(s, PROFILE_ID_ATTRIBUTE), Some(id));
        }
        spans
            .iter()
            .map(|s| s.span_context.span_id().to_string())
            .collect()
    };
    let orders_ids = ids("GET /orders/{id}");
    let checkout_ids = ids("POST /checkout");
    assert_eq!(orders_ids.len(), 120);
    assert_eq!(checkout_ids.len(), 120);
    for s in spans_named(&exporter, "load_order") {
        assert_eq!(
            attr(&s, PROFILE_ID_ATTRIBUTE),
            None,
            "only roots get the id"
        );
        assert!(orders_ids.contains(&s.parent_span_id.to_string()));
    }
    // What the functions saw (the child's labels are its root's).
    for labels in &seen {
        let id = labels.span_id_hex().expect("labelled");
        match labels.span_name() {
            Some("GET /orders/{id}") => assert!(orders_ids.contains(&id)),
            Some("POST /checkout") => assert!(checkout_ids.contains(&id)),
            other => panic!("unexpected span name {other:?}"),
        }
    }

    assert_attributed(
        &all_samples(&dir),
        &[
            Expect {
                function: "burn_in_orders_span",
                span_name: "GET /orders/{id}",
                span_ids: &orders_ids,
            },
            Expect {
                function: "burn_in_checkout_span",
                span_name: "POST /checkout",
                span_ids: &checkout_ids,
            },
        ],
        50,
    );
}

/// As behind tower-http's `TraceLayer` with tracing-opentelemetry: the request's tracing
/// span is entered when `ProfileLayer`'s service is called, so the layer reuses its
/// OpenTelemetry span (activated on enter) instead of starting another, and the handler
/// runs under that span's root labels even when polled outside the tracing span.
#[test]
fn profile_layer_reuses_the_span_of_an_outer_tracing_layer() {
    let exporter = install_subscriber();
    let handler = tower::service_fn(|_req: http::Request<()>| async {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(http::Response::new(Labels::current()))
    });
    // Had the layer started a span of its own, this provider would export it.
    let (layer_exporter, layer_provider) = provider(SERVICE);
    let mut service = ProfileLayer::with_tracer(layer_provider.tracer("layer")).layer(handler);
    let span = tracing::info_span!("GET /outer/{id}");
    let (future, otel_id) = {
        let _entered = span.enter();
        let otel_id = opentelemetry::Context::current()
            .span()
            .span_context()
            .span_id();
        (service.call(http::Request::new(())), otel_id)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let labels = rt.block_on(future).unwrap().into_body();
    assert_eq!(labels.span_id_hex(), Some(otel_id.to_string()));
    assert_eq!(labels.span_name(), Some("GET /outer/{id}"));
    drop(span);
    assert!(
        layer_exporter.get_finished_spans().unwrap().is_empty(),
        "no second server span"
    );
    let exported = spans_named(&exporter, "GET /outer/{id}");
    assert_eq!(exported.len(), 1);
    assert_eq!(
        attr(&exported[0], PROFILE_ID_ATTRIBUTE),
        Some(otel_id.to_string())
    );
}
