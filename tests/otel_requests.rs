//! The end-to-end scenario of span profiles, checked at the label level (no sampler
//! needed): 32 concurrent requests on a 4-worker runtime, each a root span with child
//! spans, burning CPU in a function chosen by its kind, with awaits that move the task
//! between workers and interleave requests on each worker. Every time a burner runs, the
//! label id in the thread's slot (what the signal handler would read) must resolve to its
//! own request's root span id and name.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_profiler::__private::{current_label_id, span_of, Registry};
use span_profiler::{ContextLabelsGuard, ProfiledExt, ProfilingTracerProvider};

const REQUESTS: usize = 32;
const STEPS: usize = 6;
const KINDS: [&str; 4] = [
    "GET /orders/{id}",
    "POST /checkout",
    "GET /search",
    "GET /health",
];

/// What one request expects and saw.
struct Request {
    root_id: u64,
    name: &'static str,
    checks: AtomicUsize,
    wrong: AtomicUsize,
    threads: Mutex<HashSet<ThreadId>>,
}

impl Request {
    /// Reads the slot as the signal handler would and checks it names this request.
    fn check(&self) {
        self.checks.fetch_add(1, Relaxed);
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        let id = current_label_id();
        let ok = Registry::global()
            .resolve(id)
            .is_some_and(|set| span_of(&set) == (Some(self.root_id), Some(self.name)));
        if !ok {
            self.wrong.fetch_add(1, Relaxed);
        }
    }
}

/// Spins for about `micros` of wall time, checking the labels as it goes.
fn spin(req: &Request, micros: u64) -> u64 {
    let end = Instant::now() + Duration::from_micros(micros);
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..200u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        req.check();
    }
    x
}

// One burner per kind, as a profile would show them.
#[inline(never)]
fn burn_orders(req: &Request) -> u64 {
    spin(req, 300)
}
#[inline(never)]
fn burn_checkout(req: &Request) -> u64 {
    spin(req, 400)
}
#[inline(never)]
fn burn_search(req: &Request) -> u64 {
    spin(req, 500)
}
#[inline(never)]
fn burn_health(req: &Request) -> u64 {
    spin(req, 100)
}

fn burn(kind: usize, req: &Request) -> u64 {
    match kind {
        0 => burn_orders(req),
        1 => burn_checkout(req),
        2 => burn_search(req),
        _ => burn_health(req),
    }
}

#[test]
fn thirty_two_concurrent_requests_each_carry_their_own_root_span_on_every_poll() {
    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
    let tracer = Arc::new(provider.tracer("requests"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();

    let requests: Vec<Arc<Request>> = rt.block_on(async {
        let mut handles = Vec::new();
        let mut requests = Vec::new();
        for i in 0..REQUESTS {
            let kind = i % KINDS.len();
            let root_cx = Context::current_with_span(tracer.start(KINDS[kind]));
            let root_id = u64::from_be_bytes(root_cx.span().span_context().span_id().to_bytes());
            let req = Arc::new(Request {
                root_id,
                name: KINDS[kind],
                checks: AtomicUsize::new(0),
                wrong: AtomicUsize::new(0),
                threads: Mutex::new(HashSet::new()),
            });
            requests.push(req.clone());
            let tracer = tracer.clone();
            let serve = async move {
                for step in 0..STEPS {
                    let cx = Context::current();
                    let child_cx = cx.with_span(tracer.start_with_context("step", &cx));
                    // Synchronous work under the child: attached context + guard.
                    {
                        let _otel = child_cx.clone().attach();
                        let _labels = ContextLabelsGuard::enter_current();
                        burn(kind, &req);
                    }
                    // Awaits that suspend the task, so it resumes wherever a worker is free.
                    if step % 2 == 0 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    burn(kind, &req);
                    // A subtask created where the child span is current, run on any worker.
                    let sub = {
                        let _otel = child_cx.clone().attach();
                        let req = req.clone();
                        let tracer = tracer.clone();
                        async move {
                            let grandchild = tracer.start("grandchild"); // current: the child
                            tokio::task::yield_now().await;
                            burn(kind, &req);
                            drop(grandchild);
                        }
                        .profiled()
                    };
                    tokio::spawn(opentelemetry::context::FutureExt::with_context(
                        sub, child_cx,
                    ))
                    .await
                    .unwrap();
                }
            };
            handles.push(tokio::spawn(serve.profiled_in_context(root_cx)));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        requests
    });

    let mut migrated = 0;
    for req in &requests {
        let checks = req.checks.load(Relaxed);
        assert!(
            checks >= 3 * STEPS,
            "request {} checked only {checks} times",
            req.name
        );
        assert_eq!(
            req.wrong.load(Relaxed),
            0,
            "request {} ({:016x}) saw other labels in {} of {checks} checks",
            req.name,
            req.root_id,
            req.wrong.load(Relaxed)
        );
        if req.threads.lock().unwrap().len() > 1 {
            migrated += 1;
        }
    }
    assert!(
        migrated >= REQUESTS / 2,
        "only {migrated} requests ran on more than one worker"
    );
    let ids: HashSet<u64> = requests.iter().map(|r| r.root_id).collect();
    assert_eq!(ids.len(), REQUESTS, "every request is its own local root");
}
