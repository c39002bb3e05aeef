//! Span profiles for an application instrumented with `tracing`: add
//! `TracingProfileLayer` next to tracing-opentelemetry's layer, and every
//! `#[tracing::instrument]`ed async fn's CPU carries its root span's `span_id` and
//! `span_name`, with no other code change (no `.profiled()` calls).
//!
//! Shows: tracing-opentelemetry over a `ProfilingTracer`, root spans named like routes,
//! child spans whose work counts for their root, many concurrent tasks on a 4-worker
//! runtime. The example stops the profiler and prints the CPU time per `span_name` from
//! the pprof files in `./profiles`.
//!
//! Run: `cargo run --release --example tracing --features tracing`

#[path = "support/summary.rs"]
mod summary;

use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use span_profiler::{Profiler, ProfilingTracerProvider, TracingProfileLayer};
use tracing_subscriber::layer::SubscriberExt as _;

const APP: &str = "tracing-example";

#[inline(never)]
fn parse_invoice(id: u64) -> u64 {
    let end = Instant::now() + Duration::from_micros(600);
    let mut x = id;
    while Instant::now() < end {
        x = std::hint::black_box(x.rotate_left(3) ^ x.wrapping_mul(0x9e37));
    }
    x
}

#[inline(never)]
fn price_cart(items: u64) -> u64 {
    let mut v: Vec<u64> = (0..12_000u64).map(|i| (i * items) % 9_973).collect();
    v.sort_unstable();
    std::hint::black_box(v.iter().step_by(97).sum())
}

#[tracing::instrument(name = "POST /invoices")]
async fn upload_invoice(id: u64) -> u64 {
    let mut total = 0;
    for _ in 0..3 {
        total ^= parse_invoice(id);
        tokio::task::yield_now().await;
    }
    total ^ store_invoice(id).await
}

/// A child span: its CPU counts for `POST /invoices`.
#[tracing::instrument]
async fn store_invoice(id: u64) -> u64 {
    tokio::task::yield_now().await;
    parse_invoice(id + 1)
}

#[tracing::instrument(name = "GET /cart/{id}")]
async fn show_cart(id: u64) -> u64 {
    let mut total = 0;
    for _ in 0..3 {
        total += price_cart(id % 50 + 1);
        tokio::task::yield_now().await;
    }
    total
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from("./profiles");
    let profiler = Profiler::builder()
        .application_name(APP)
        .upload_interval(Duration::from_secs(2))
        .output_dir(&out)
        .start()?;

    let exporter = InMemorySpanExporter::default();
    let sdk = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let provider = ProfilingTracerProvider::new(sdk).with_service_name(APP);
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing-example")))
        .with(TracingProfileLayer::new()); // the one line span profiles need
    tracing::subscriber::set_global_default(subscriber)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    println!("running instrumented tasks for 3 s ...");
    let tasks = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut n = 0u64;
        while Instant::now() < deadline {
            let batch: Vec<_> = (0..16)
                .map(|i| {
                    n += 1;
                    if i % 2 == 0 {
                        tokio::spawn(upload_invoice(n))
                    } else {
                        tokio::spawn(show_cart(n))
                    }
                })
                .collect();
            for task in batch {
                task.await?;
            }
        }
        Ok::<_, tokio::task::JoinError>(n)
    })?;
    let report = profiler.stop()?;
    println!("{tasks} tasks; {} files written", report.files_written);
    summary::print_cpu_by_span_name(&out, APP)?;
    println!("{} spans exported", exporter.get_finished_spans()?.len());
    Ok(())
}
