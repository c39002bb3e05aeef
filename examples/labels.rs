//! Labels follow tasks, not threads: a 4-worker Tokio runtime runs 16 labelled tasks
//! that yield and sleep so they migrate between workers, and every poll checks that the
//! labels in force on the thread (`Labels::current()`, read from the slot the sampler's
//! signal handler reads) are the task's own. Worker threads are checked to hold no labels
//! between polls.
//!
//! Run: `cargo run --example labels`

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use span_profiler::{Labels, ProfiledExt};

#[derive(Default)]
struct Checks {
    polls: AtomicU64,
    wrong: AtomicU64,
    idle_reads: AtomicU64,
    idle_wrong: AtomicU64,
}

/// Compares the slot with the task's own id on every poll and notes the thread.
struct Checked<F> {
    inner: Pin<Box<F>>,
    expected: Arc<OnceLock<Labels>>,
    checks: Arc<Checks>,
    threads: Arc<Mutex<HashSet<String>>>,
}

impl<F: Future> Future for Checked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.checks.polls.fetch_add(1, Relaxed);
        if self.expected.get() != Some(&Labels::current()) {
            self.checks.wrong.fetch_add(1, Relaxed);
        }
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.threads.lock().unwrap().insert(name);
        self.inner.as_mut().poll(cx)
    }
}

fn main() {
    let checks = Arc::new(Checks::default());
    let idle = checks.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name_fn(|| {
            static N: AtomicU64 = AtomicU64::new(0);
            format!("worker-{}", N.fetch_add(1, Relaxed))
        })
        .on_thread_park(move || {
            idle.idle_reads.fetch_add(1, Relaxed);
            if !Labels::current().is_empty() {
                idle.idle_wrong.fetch_add(1, Relaxed);
            }
        })
        .build()
        .expect("a Tokio runtime");

    let results: BTreeMap<String, usize> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let route = [
                "GET /orders/{id}",
                "POST /checkout",
                "GET /search",
                "GET /health",
            ][i as usize % 4];
            let expected = Arc::new(OnceLock::new());
            let threads = Arc::new(Mutex::new(HashSet::new()));
            let work = Checked {
                inner: Box::pin(async move {
                    for round in 0..300u64 {
                        std::hint::black_box(
                            (0..2_000u64).fold(round, |a, b| a ^ b.wrapping_mul(31)),
                        );
                        if round % 30 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                    }
                }),
                expected: expected.clone(),
                checks: checks.clone(),
                threads: threads.clone(),
            };
            let profiled = work.with_labels(Labels::span(0x1000 + i, route));
            expected
                .set(profiled.labels().clone())
                .expect("set once, before the task runs");
            let span = profiled.labels().span_id_hex().unwrap_or_default();
            tasks.push((
                format!("task {i:2} {route:18} span {span}"),
                tokio::spawn(profiled),
                threads,
            ));
        }
        let mut results = BTreeMap::new();
        for (name, handle, threads) in tasks {
            handle.await.expect("task");
            let n = threads.lock().unwrap().len();
            results.insert(name, n);
        }
        results
    });

    for (name, workers) in &results {
        println!("{name}: polled on {workers} worker thread(s)");
    }
    let polls = checks.polls.load(Relaxed);
    let wrong = checks.wrong.load(Relaxed);
    let idle_reads = checks.idle_reads.load(Relaxed);
    let idle_wrong = checks.idle_wrong.load(Relaxed);
    println!();
    println!("slot checks inside polls: {polls}, wrong: {wrong}");
    println!("slot checks while workers idle: {idle_reads}, non-zero: {idle_wrong}");
    if wrong > 0 || idle_wrong > 0 {
        eprintln!("FAILED: a label leaked between tasks");
        std::process::exit(1);
    }
    println!("OK: every poll saw its own task's labels, idle workers saw none");
}
