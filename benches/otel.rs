//! Costs of the OpenTelemetry integration, each group with its baseline beside it:
//!
//! - `create`: building a wrapper where a request's span is current: `.profiled()`
//!   (context lookup + span-id map lookup + handle clone, and the drop) beside
//!   opentelemetry's `.with_context(cx)` alone and a bare future.
//! - `per_poll`: one poll of a pending future bare, under `.with_context(cx)` (attach and
//!   detach per poll), under `.profiled_with(&cx)` (slot save, write, restore) and under
//!   both (`.profiled_in_context(cx)`).
//! - `span`: starting and ending a root span and a child span with the SDK tracer bare
//!   and wrapped by `ProfilingTracerProvider`.
//! - `span_4_threads`: the same root and child spans started and ended on 4 threads at
//!   once (time per span per thread), so that contention on shared state (the span-id
//!   map, the label registry, the SDK's own) shows.
//!
//! Run: `cargo bench --bench otel`.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::sync::Barrier;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
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

fn provider() -> ProfilingTracerProvider<SdkTracerProvider> {
    ProfilingTracerProvider::new(SdkTracerProvider::builder().build())
}

fn create(c: &mut Criterion) {
    let provider = provider();
    let tracer = provider.tracer("bench");
    let root_cx = Context::current_with_span(tracer.start("GET /bench"));
    let cx = root_cx.with_span(tracer.start_with_context("child", &root_cx));
    let _attached = cx.clone().attach();

    let mut group = c.benchmark_group("create");
    group.bench_function("bare", |b| b.iter(|| black_box(Spin(0))));
    group.bench_function("with_context", |b| {
        b.iter(|| black_box(Spin(0).with_context(cx.clone())))
    });
    group.bench_function("profiled", |b| b.iter(|| black_box(Spin(0).profiled())));
    group.bench_function("profiled_with", |b| {
        b.iter(|| black_box(Spin(0).profiled_with(&cx)))
    });
    group.bench_function("profiled_in_context", |b| {
        b.iter(|| black_box(Spin(0).profiled_in_context(cx.clone())))
    });
    group.finish();
}

fn per_poll(c: &mut Criterion) {
    let provider = provider();
    let tracer = provider.tracer("bench");
    let cx = Context::current_with_span(tracer.start("GET /bench"));
    let mut task_cx = TaskContext::from_waker(Waker::noop());

    let mut group = c.benchmark_group("per_poll");
    let mut bare = pin!(Spin(0));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(bare.as_mut().poll(&mut task_cx)))
    });
    let mut with_context = pin!(Spin(0).with_context(cx.clone()));
    group.bench_function("with_context", |b| {
        b.iter(|| black_box(with_context.as_mut().poll(&mut task_cx)))
    });
    let mut profiled = pin!(Spin(0).profiled_with(&cx));
    group.bench_function("profiled_with", |b| {
        b.iter(|| black_box(profiled.as_mut().poll(&mut task_cx)))
    });
    let mut both = pin!(Spin(0).profiled_in_context(cx.clone()));
    group.bench_function("profiled_in_context", |b| {
        b.iter(|| black_box(both.as_mut().poll(&mut task_cx)))
    });
    group.finish();
}

fn span(c: &mut Criterion) {
    let sdk = SdkTracerProvider::builder().build();
    let bare_tracer = sdk.tracer("bench");
    let profiling = ProfilingTracerProvider::new(sdk.clone());
    let profiling_tracer = profiling.tracer("bench");

    let mut group = c.benchmark_group("span");
    group.bench_function("sdk_root", |b| {
        b.iter(|| bare_tracer.start("GET /bench").end())
    });
    group.bench_function("profiling_root", |b| {
        b.iter(|| profiling_tracer.start("GET /bench").end())
    });
    let bare_root = Context::current_with_span(bare_tracer.start("root"));
    group.bench_function("sdk_child", |b| {
        b.iter(|| bare_tracer.start_with_context("child", &bare_root).end())
    });
    let profiling_root = Context::current_with_span(profiling_tracer.start("root"));
    group.bench_function("profiling_child", |b| {
        b.iter(|| {
            profiling_tracer
                .start_with_context("child", &profiling_root)
                .end()
        })
    });
    group.finish();
}

/// Threads of the `span_4_threads` group.
const THREADS: usize = 4;

/// Runs `work` `iters` times on each of [`THREADS`] threads started together, and returns
/// the wall time of the slowest thread (so the result is the time per span per thread).
fn on_threads(iters: u64, work: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        work();
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn span_4_threads(c: &mut Criterion) {
    let sdk = SdkTracerProvider::builder().build();
    let bare_tracer = sdk.tracer("bench");
    let profiling = ProfilingTracerProvider::new(sdk.clone());
    let profiling_tracer = profiling.tracer("bench");
    let bare_root = Context::current_with_span(bare_tracer.start("root"));
    let profiling_root = Context::current_with_span(profiling_tracer.start("root"));

    let mut group = c.benchmark_group("span_4_threads");
    group.bench_function("sdk_root", |b| {
        b.iter_custom(|iters| on_threads(iters, || bare_tracer.start("GET /bench").end()))
    });
    group.bench_function("profiling_root", |b| {
        b.iter_custom(|iters| on_threads(iters, || profiling_tracer.start("GET /bench").end()))
    });
    group.bench_function("sdk_child", |b| {
        b.iter_custom(|iters| {
            on_threads(iters, || {
                bare_tracer.start_with_context("child", &bare_root).end()
            })
        })
    });
    group.bench_function("profiling_child", |b| {
        b.iter_custom(|iters| {
            on_threads(iters, || {
                profiling_tracer
                    .start_with_context("child", &profiling_root)
                    .end()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, create, per_poll, span, span_4_threads);
criterion_main!(benches);
