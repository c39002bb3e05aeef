//! Per-poll cost, one group: what each way of carrying request context adds to one poll
//! of a pending future. Each iteration polls a future that counts and stays pending:
//!
//! - `bare`: the future alone;
//! - `profiled`: `Profiled<F>` (span-profiler: slot save, write, restore);
//! - `otel_with_context`: opentelemetry's `FutureExt::with_context` (attach and detach a
//!   `Context` per poll);
//! - `tracing_instrumented_registry`: `tracing::Instrumented` (enter and exit a span) with
//!   a `tracing_subscriber::Registry` as the thread's subscriber;
//! - `tracing_instrumented_otel_layer`: the same with a `tracing-opentelemetry` layer on
//!   the registry (an SDK tracer without exporters);
//! - `tokio_metrics_instrument`: `tokio_metrics::TaskMonitor::instrument`.
//!
//! The cost each adds is its row minus `bare`. Run:
//! `CARGO_TARGET_DIR=target/peer cargo bench -p span-profiler-peer-benches --bench per_poll`.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context as TaskContext, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_profiler::{Labels, ProfiledExt};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Counts its polls and never completes.
struct Spin(u64);

impl Future for Spin {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<()> {
        self.0 = black_box(self.0 + 1);
        Poll::Pending
    }
}

fn per_poll(c: &mut Criterion) {
    let mut task_cx = TaskContext::from_waker(Waker::noop());
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("bench");
    let otel_cx = Context::current_with_span(tracer.start("GET /bench"));

    let mut group = c.benchmark_group("per_poll");

    let mut bare = pin!(Spin(0));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(bare.as_mut().poll(&mut task_cx)))
    });

    let mut profiled = pin!(Spin(0).with_labels(Labels::span(0xabc, "GET /bench")));
    group.bench_function("profiled", |b| {
        b.iter(|| black_box(profiled.as_mut().poll(&mut task_cx)))
    });

    let mut with_context = pin!(Spin(0).with_context(otel_cx.clone()));
    group.bench_function("otel_with_context", |b| {
        b.iter(|| black_box(with_context.as_mut().poll(&mut task_cx)))
    });

    let registry = tracing_subscriber::registry();
    tracing::subscriber::with_default(registry, || {
        let mut instrumented = pin!(Spin(0).instrument(tracing::info_span!("GET /bench")));
        group.bench_function("tracing_instrumented_registry", |b| {
            b.iter(|| black_box(instrumented.as_mut().poll(&mut task_cx)))
        });
    });

    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench-layer"));
    let layered = tracing_subscriber::registry().with(otel_layer);
    tracing::subscriber::with_default(layered, || {
        let mut instrumented = pin!(Spin(0).instrument(tracing::info_span!("GET /bench")));
        group.bench_function("tracing_instrumented_otel_layer", |b| {
            b.iter(|| black_box(instrumented.as_mut().poll(&mut task_cx)))
        });
    });

    let monitor = tokio_metrics::TaskMonitor::new();
    let mut monitored = pin!(tokio_metrics::TaskMonitor::instrument(&monitor, Spin(0)));
    group.bench_function("tokio_metrics_instrument", |b| {
        b.iter(|| black_box(monitored.as_mut().poll(&mut task_cx)))
    });

    group.finish();
}

criterion_group!(benches, per_poll);
criterion_main!(benches);
