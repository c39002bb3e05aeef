//! No allocation in the handler, proof 1 of 2: this binary interposes `malloc`, `calloc`,
//! `realloc`, `free`, `posix_memalign`, `aligned_alloc` and `memalign` (forwarding to
//! glibc's `__libc_*` entry points) and counts every call made while the calling thread
//! is inside the SIGPROF handler. Allocation-heavy labelled work is sampled at 1 kHz.
//! (Proof 2, `sampler_no_alloc_disasm.rs`, checks the machine code.)

#[macro_use]
mod interpose;
mod sampler_common;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sampler_common::{process_cpu, Collector};
use span_profiler::__private::{in_sampler_handler, set_in_sampler_handler, SamplerConfig};
use span_profiler::{Labels, ProfiledExt};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Every call to an interposed function.
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Calls made while the calling thread was inside the SIGPROF handler.
static IN_HANDLER_CALLS: AtomicUsize = AtomicUsize::new(0);

#[inline(always)]
fn note() {
    CALLS.fetch_add(1, Relaxed);
    if in_sampler_handler() {
        IN_HANDLER_CALLS.fetch_add(1, Relaxed);
    }
}

interpose_c_allocator!(note);

#[inline(never)]
fn churn(seed: u64) -> usize {
    let mut total = 0;
    for i in 0..200 {
        let mut v: Vec<u64> = Vec::with_capacity((seed as usize + i) % 97 + 1);
        v.extend((0..(i % 31) as u64).map(|x| x ^ seed));
        let s = format!("{seed}-{i}-{}", v.len());
        let aligned = std::alloc::Layout::from_size_align(64, 64).unwrap();
        // SAFETY: non-zero size; freed right away with the same layout.
        unsafe {
            let p = std::alloc::alloc(aligned);
            assert!(!p.is_null());
            std::alloc::dealloc(p, aligned);
        }
        total += s.len() + v.iter().sum::<u64>() as usize;
    }
    std::hint::black_box(total)
}

#[test]
fn no_allocator_function_is_called_while_the_handler_runs() {
    // The interposition is live: allocations in this binary come through us.
    let before = CALLS.load(Relaxed);
    drop(std::hint::black_box(vec![1u8; 1000]));
    assert!(CALLS.load(Relaxed) > before, "malloc is not interposed");

    // Positive control: an allocation inside a (pretend) handler is caught.
    set_in_sampler_handler(true);
    drop(std::hint::black_box(Box::new([0u64; 64])));
    set_in_sampler_handler(false);
    assert!(
        IN_HANDLER_CALLS.load(Relaxed) >= 1,
        "the in-handler detection does not work"
    );
    IN_HANDLER_CALLS.store(0, Relaxed);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .build()
        .unwrap();
    let collector = Collector::start(SamplerConfig {
        sample_rate_hz: 1000,
        measure_handler_cpu: true,
        ..Default::default()
    });
    // At least 2 s, and until the process used 1.5 s of CPU (the machine may be shared).
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_start = process_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = (0..6u64)
        .map(|t| {
            let stop = stop.clone();
            runtime.spawn(
                async move {
                    let mut n = 0;
                    while !stop.load(Relaxed) {
                        n += churn(t);
                        tokio::task::yield_now().await;
                    }
                    n
                }
                .with_labels(Labels::span(t + 1, "churn")),
            )
        })
        .collect();
    // An unlabelled plain thread allocating too.
    let plain_stop = stop.clone();
    let plain = std::thread::spawn(move || {
        let mut n = 0;
        while !plain_stop.load(Relaxed) {
            n += churn(99);
        }
        n
    });
    while started.elapsed() < Duration::from_secs(2)
        || (process_cpu() - cpu_start < Duration::from_millis(1500)
            && started.elapsed() < Duration::from_secs(30))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Relaxed);
    for task in tasks {
        runtime.block_on(task).unwrap();
    }
    plain.join().unwrap();
    let (samples, stats) = collector.finish();
    drop(runtime);
    eprintln!(
        "{} samples, {} allocator calls; {stats:?}",
        samples.len(),
        CALLS.load(Relaxed)
    );
    assert!(
        samples.len() >= 100,
        "only {} samples: the handler barely ran",
        samples.len()
    );
    assert!(stats.handler_cpu_ns > 0);
    assert_eq!(
        IN_HANDLER_CALLS.load(Relaxed),
        0,
        "allocator called inside the SIGPROF handler"
    );
}
