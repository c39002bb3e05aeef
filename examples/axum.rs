//! An axum server whose requests get span profiles through one layer: `ProfileLayer`.
//!
//! Shows: a `ProfilingTracerProvider` as the global tracer provider, the W3C propagator,
//! `ProfileLayer` added with `Router::layer` (after routing, so span names use the route
//! template: `GET /orders/{id}`, never the raw path), and a client whose `traceparent`
//! becomes the server span's remote parent. The example serves on 127.0.0.1, drives
//! requests with a real HTTP client, stops the profiler, and prints the CPU time per
//! `span_name` read back from the pprof files in `./profiles`, and a few server spans
//! with the `pyroscope.profile.id` Grafana links on.
//!
//! Run: `cargo run --release --example axum --features tower`
//! (then e.g. `go tool pprof -tagfocus='span_name=GET /orders/{id}' -top profiles/axum-example-*`).

#[path = "support/summary.rs"]
mod summary;

use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use span_profiler::{ProfileLayer, Profiler, ProfilingTracerProvider, PROFILE_ID_ATTRIBUTE};

const APP: &str = "axum-example";

#[inline(never)]
fn render_order(id: u64) -> u64 {
    let end = Instant::now() + Duration::from_micros(800);
    let mut x = id;
    while Instant::now() < end {
        x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(0x9e37_79b9));
    }
    x
}

#[inline(never)]
fn search_index(term: &str) -> usize {
    let mut v: Vec<u64> = (0..20_000u64)
        .map(|i| i.wrapping_mul(0x2545_f491) % (term.len() as u64 + 10_007))
        .collect();
    v.sort_unstable();
    std::hint::black_box(v.len())
}

async fn order(Path(id): Path<u64>) -> String {
    let mut total = 0;
    for _ in 0..4 {
        total ^= render_order(id);
        tokio::task::yield_now().await; // may resume on another worker: labels follow
    }
    format!("order {id}: {total}")
}

async fn search(Path(term): Path<String>) -> String {
    let mut hits = 0;
    for _ in 0..4 {
        hits += search_index(&term);
        tokio::task::yield_now().await;
    }
    format!("{hits} hits for {term}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from("./profiles");
    let profiler = Profiler::builder()
        .application_name(APP)
        .upload_interval(Duration::from_secs(2))
        .output_dir(&out)
        .start()?;

    // Traces: any exporter works; an in-memory one lets the example print its spans.
    let exporter = InMemorySpanExporter::default();
    let sdk = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(
        ProfilingTracerProvider::new(sdk).with_service_name(APP),
    );

    let app: Router = Router::new()
        .route("/orders/{id}", get(order))
        .route("/search/{term}", get(search))
        .layer(ProfileLayer::new()); // after set_tracer_provider

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let requests = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        println!("serving on http://{addr}; driving requests for 3 s ...");

        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut workers = Vec::new();
        for w in 0..8u64 {
            let client = client.clone();
            workers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let uri = if n % 2 == 0 {
                        format!("http://{addr}/orders/{}", w * 1000 + n)
                    } else {
                        format!("http://{addr}/search/term{n}")
                    };
                    let mut req = http::Request::get(uri);
                    if n == 0 {
                        // As an instrumented client would send it: the server span
                        // joins this trace as a child of the remote span.
                        req = req.header(
                            "traceparent",
                            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                        );
                    }
                    let res = client
                        .request(req.body(Empty::new()).expect("request"))
                        .await;
                    assert_eq!(res.expect("response").status(), 200);
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for w in workers {
            total += w.await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(total)
    })?;
    let report = profiler.stop()?;
    println!(
        "{requests} requests; {} files written",
        report.files_written
    );

    summary::print_cpu_by_span_name(&out, APP)?;
    println!("\nsome server spans (Grafana's \"Profiles\" link uses pyroscope.profile.id):");
    for span in exporter.get_finished_spans()?.iter().take(4) {
        let profile_id = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == PROFILE_ID_ATTRIBUTE)
            .map(|kv| kv.value.to_string())
            .unwrap_or_default();
        println!(
            "  {:<20} trace {} span {} profile.id {profile_id} (remote parent: {})",
            span.name,
            span.span_context.trace_id(),
            span.span_context.span_id(),
            span.parent_span_is_remote
        );
    }
    Ok(())
}
