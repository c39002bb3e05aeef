//! Requests per second of a trivial axum handler with and without `ProfileLayer`, each
//! group with its baseline beside it (criterion's throughput is requests/s; the ratio of
//! the two lines in one run is the layer's cost):
//!
//! - `axum_loopback`: real HTTP/1.1 requests over 127.0.0.1 from a keep-alive hyper
//!   client, one at a time, server and client on one 2-worker runtime.
//! - `axum_in_process`: `Router::call` without a network, which isolates the layer's own
//!   cost (span start and end with the SDK tracer behind `ProfilingTracerProvider`,
//!   context attach per poll, label slot writes).
//!
//! The SDK provider has no exporter (spans are built, recorded and dropped); the profiler
//! is not running (the layer's cost does not depend on it).
//!
//! Run: `cargo bench --bench tower --features tower`.

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_profiler::{ProfileLayer, ProfilingTracerProvider};
use tower::ServiceExt as _;

async fn hello() -> &'static str {
    "hello"
}

fn app(layer: bool) -> Router {
    let router = Router::new().route("/hello/{name}", get(hello));
    if layer {
        router.layer(ProfileLayer::new())
    } else {
        router
    }
}

fn install_provider() {
    opentelemetry::global::set_tracer_provider(ProfilingTracerProvider::new(
        SdkTracerProvider::builder().build(),
    ));
}

fn loopback(c: &mut Criterion) {
    install_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("axum_loopback");
    group.throughput(Throughput::Elements(1));
    for (name, layer) in [("bare", false), ("profile_layer", true)] {
        let addr = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app(layer)).await });
            addr
        });
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = format!("http://{addr}/hello/world").parse().unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let req = http::Request::get(uri.clone()).body(Empty::new()).unwrap();
                        let res = client.request(req).await.unwrap();
                        let body = res.into_body().collect().await.unwrap();
                        std::hint::black_box(body);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

fn in_process(c: &mut Criterion) {
    install_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("axum_in_process");
    group.throughput(Throughput::Elements(1));
    for (name, layer) in [("bare", false), ("profile_layer", true)] {
        let router = app(layer);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let req = http::Request::get("/hello/world")
                            .body(axum::body::Body::empty())
                            .unwrap();
                        let res = router.clone().oneshot(req).await.unwrap();
                        std::hint::black_box(res);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = loopback, in_process
}
criterion_main!(benches);
