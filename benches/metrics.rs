//! Cost of per-span task metrics (feature `task-metrics`), with its baselines in the same
//! group: one poll of a pending future bare, under `.profiled_with(&cx)` and under
//! `.profiled_with(&cx).with_task_metrics()` (tokio-metrics' instrumentation: clock reads
//! and atomic additions per poll).
//!
//! Run: `cargo bench --features task-metrics --bench metrics`.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context as TaskContext, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_profiler::{ProfiledExt, ProfilingTracerProvider};

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
    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
    let tracer = provider.tracer("bench");
    let cx = Context::current_with_span(tracer.start("GET /bench"));
    let mut task_cx = TaskContext::from_waker(Waker::noop());

    let mut group = c.benchmark_group("task_metrics_per_poll");
    let mut bare = pin!(Spin(0));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(bare.as_mut().poll(&mut task_cx)))
    });
    let mut profiled = pin!(Spin(0).profiled_with(&cx));
    group.bench_function("profiled_with", |b| {
        b.iter(|| black_box(profiled.as_mut().poll(&mut task_cx)))
    });
    let mut metered = pin!(Spin(0).profiled_with(&cx).with_task_metrics());
    assert!(metered.inner().is_metered());
    group.bench_function("profiled_with_task_metrics", |b| {
        b.iter(|| black_box(metered.as_mut().poll(&mut task_cx)))
    });
    group.finish();
}

criterion_group!(benches, per_poll);
criterion_main!(benches);
