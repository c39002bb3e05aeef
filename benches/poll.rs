//! Per-poll cost of a bare future beside the same future inside `Profiled<F>`.
//!
//! Each iteration is one `poll` of a future that counts and stays pending, so the
//! difference between the two rows is what the wrapper adds per poll (slot save, write,
//! restore). Run: `cargo bench --bench poll`.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use criterion::{criterion_group, criterion_main, Criterion};
use span_profiler::{Labels, ProfiledExt};

/// Counts its polls and never completes.
struct Spin(u64);

impl Future for Spin {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        self.0 = black_box(self.0 + 1);
        Poll::Pending
    }
}

fn per_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("per_poll");
    let mut cx = Context::from_waker(Waker::noop());

    let mut bare = pin!(Spin(0));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(bare.as_mut().poll(&mut cx)))
    });

    let mut profiled = pin!(Spin(0).with_labels(Labels::span(0xabc, "bench")));
    group.bench_function("profiled", |b| {
        b.iter(|| black_box(profiled.as_mut().poll(&mut cx)))
    });

    let mut nested = pin!(Spin(0)
        .with_labels(Labels::span(1, "inner"))
        .with_labels(Labels::span(2, "outer")));
    group.bench_function("profiled_nested_2", |b| {
        b.iter(|| black_box(nested.as_mut().poll(&mut cx)))
    });
    group.finish();
}

criterion_group!(benches, per_poll);
criterion_main!(benches);
