//! Per-poll cost of the task-hook path beside the wrapper path and a bare task, in one
//! group, on a current-thread runtime.
//!
//! Each measurement spawns one task that yields `iters` times (so it is polled `iters`
//! times) and times the whole run; rows differ only in how the task gets its labels:
//! - `bare`: no labels, runtime without hooks;
//! - `wrapper`: the task is wrapped (`with_labels`), runtime without hooks;
//! - `hooks`: the task is spawned under labels and inherits them through the hooks;
//! - `hooks_unlabelled`: a hooked runtime, task spawned outside any labels.
//!
//! The hook rows need `--cfg tokio_unstable`:
//! `RUSTFLAGS="--cfg tokio_unstable -C force-frame-pointers=yes" cargo bench --bench hooks`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use span_profiler::{Labels, ProfiledExt};
use tokio::runtime::{Builder, Runtime};

/// Polled `polls` times: yields `polls - 1` times, then completes.
async fn yielder(polls: u64) {
    for i in 1..polls {
        black_box(i);
        tokio::task::yield_now().await;
    }
}

fn plain_runtime() -> Runtime {
    Builder::new_current_thread().build().unwrap()
}

/// Times one task polled `iters` times; `spawn` spawns it (on the runtime's thread).
fn time_polls(
    rt: &Runtime,
    iters: u64,
    spawn: impl Fn(u64) -> tokio::task::JoinHandle<()>,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        spawn(iters.max(1)).await.unwrap();
        start.elapsed()
    })
}

fn per_poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("task_per_poll");

    let rt = plain_runtime();
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| time_polls(&rt, iters, |n| tokio::spawn(yielder(n))))
    });
    group.bench_function("wrapper", |b| {
        let labels = Labels::span(0xabc, "bench");
        b.iter_custom(|iters| {
            time_polls(&rt, iters, |n| {
                tokio::spawn(yielder(n).with_labels(labels.clone()))
            })
        })
    });

    #[cfg(tokio_unstable)]
    {
        let hooked = span_profiler::tokio_hooks::install(&mut Builder::new_current_thread())
            .build()
            .unwrap();
        group.bench_function("hooks", |b| {
            let labels = Labels::span(0xabc, "bench");
            b.iter_custom(|iters| {
                time_polls(&hooked, iters, |n| {
                    // Spawned inside a labelled poll, so the task inherits the labels;
                    // the wrapper's single poll is spread over `n` task polls.
                    #[allow(clippy::async_yields_async)]
                    let spawn = async move { tokio::spawn(yielder(n)) };
                    let Some(handle) = poll_now(spawn.with_labels(labels.clone())) else {
                        unreachable!("an async block without awaits completes at once")
                    };
                    handle
                })
            })
        });
        group.bench_function("hooks_unlabelled", |b| {
            b.iter_custom(|iters| time_polls(&hooked, iters, |n| tokio::spawn(yielder(n))))
        });
    }
    group.finish();
}

/// Polls `fut` once with a no-op waker.
#[cfg(tokio_unstable)]
fn poll_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(fut).poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

criterion_group!(benches, per_poll);
criterion_main!(benches);
