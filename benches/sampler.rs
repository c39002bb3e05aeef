//! The sampler's own cost, measured directly rather than inferred from throughput:
//!
//! - `handler/{frame_pointers,dwarf}/{10,30,60}` (criterion, `iter_custom`): thread CPU
//!   time spent inside the signal handler per sample while two threads burn CPU 10, 30 or
//!   60 frames deep, walked by frame pointers or by DWARF CFI (`Unwinder::Auto`). The handler reads its
//!   thread's CPU clock on entry and exit (`measure_handler_cpu`), so one "iteration" is
//!   one sample and the time is that sample's handler time.
//! - `sampler_cpu_fraction` (printed, 100 Hz and 1 kHz): handler time plus the drain thread's
//!   `maintain()` and `drain()` time, as a fraction of the process CPU time over the same
//!   run. Targets: at most 0.5% at 100 Hz and 3% at 1 kHz.
//!
//! Run: `cargo bench --bench sampler`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use span_profiler::__private::{Sampler, SamplerConfig};
use span_profiler::Unwinder;

/// Burns CPU `depth` frames below the caller until `stop`.
#[inline(never)]
fn deep(depth: u32, stop: &AtomicBool) -> u64 {
    if depth == 0 {
        let mut x = 0u64;
        while !stop.load(Relaxed) {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.rotate_left(3) ^ i);
            }
        }
        x
    } else {
        // Not a tail call: the frame stays on the stack.
        std::hint::black_box(deep(depth - 1, stop)) + 1
    }
}

/// Two threads burning 30 frames deep, stopped on drop.
struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Burners {
    fn start(depth: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || deep(depth, &stop))
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn start_sampler(rate_hz: u32, unwinder: Unwinder) -> Sampler {
    Sampler::start(SamplerConfig {
        sample_rate_hz: rate_hz,
        buffer_entries: 8192,
        measure_handler_cpu: true,
        unwinder,
    })
    .expect("the sampler starts (Linux, no other SIGPROF handler)")
}

/// Drains every 100 ms (as the collector does) until `samples` were taken or `limit`
/// passed; returns the sampler's final statistics.
fn run_until(
    sampler: &mut Sampler,
    samples: u64,
    limit: Duration,
) -> span_profiler::__private::SamplerStats {
    let deadline = Instant::now() + limit;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        sampler.maintain();
        sampler.drain(&mut |s| {
            std::hint::black_box(s.frames.len());
        });
        let stats = sampler.stats();
        if stats.samples >= samples || Instant::now() >= deadline {
            return stats;
        }
    }
}

fn handler_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("handler");
    group.sample_size(10);
    for depth in [10u32, 30, 60] {
        for (name, unwinder) in [
            ("frame_pointers", Unwinder::FramePointers),
            ("dwarf", Unwinder::Auto),
        ] {
            group.bench_function(format!("{name}/{depth}"), |b| {
                b.iter_custom(|iters| {
                    let _burners = Burners::start(depth);
                    let mut sampler = start_sampler(1000, unwinder);
                    // At most one signal per 4 ms kernel tick per thread: ~500 samples/s.
                    let stats = run_until(&mut sampler, iters, Duration::from_secs(60));
                    let stats_final = sampler.stop();
                    let samples = stats_final.samples.max(stats.samples).max(1);
                    let per_sample = stats_final.handler_cpu_ns / samples;
                    Duration::from_nanos(per_sample * iters)
                })
            });
        }
    }
    group.finish();

    // The fraction of process CPU, printed beside criterion's numbers.
    for rate in [100, 1000] {
        let burners = Burners::start(30);
        let mut sampler = start_sampler(rate, Unwinder::Auto);
        run_until(&mut sampler, u64::MAX, Duration::from_secs(3));
        drop(burners);
        let stats = sampler.stop();
        let fraction = stats.sampler_cpu_ns() as f64 / stats.process_cpu_ns.max(1) as f64;
        println!(
            "sampler_cpu_fraction/{rate}Hz: {:.3}% of process CPU \
             (handler {} us over {} samples = {} ns/sample, maintain {} us, drain {} us, \
             process {} ms)",
            fraction * 100.0,
            stats.handler_cpu_ns / 1000,
            stats.samples,
            stats.handler_cpu_ns / stats.samples.max(1),
            stats.maintain_cpu_ns / 1000,
            stats.drain_cpu_ns / 1000,
            stats.process_cpu_ns / 1_000_000,
        );
    }
}

/// Unwind table build time and memory for this benchmark binary and its libraries
/// (printed; the first start of a process builds, later starts reuse).
fn table_build() {
    let sampler = start_sampler(100, Unwinder::Auto);
    let stats = sampler.stop();
    println!(
        "unwind_tables: {} objects ({} failed), {} KiB, built in {} ms",
        stats.unwind_objects,
        stats.unwind_objects_failed,
        stats.unwind_table_bytes / 1024,
        stats.unwind_table_build_ns / 1_000_000
    );
}

fn all(c: &mut Criterion) {
    table_build();
    handler_cost(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
