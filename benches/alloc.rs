//! An alloc + dealloc pair of 64 bytes through `System` beside the same pair through
//! `ProfiledAllocator<System>`: idle (no profiler), and while a profiler records
//! allocations at the default 512 KiB interval (one pair in about 8,000 takes the
//! sampled path, so the row is the unsampled path's cost plus that share).
//!
//! The machine these run on is shared and its speed drifts by a third within seconds, so
//! rows measured one after the other are hard to compare. The group
//! `alloc_dealloc_64b_interleaved` times the same pairs in blocks of [`BLOCK`] that
//! alternate with as many untimed pairs through the other allocator: both rows see the
//! same machine over the same seconds, and their difference is the wrapper's cost.
//! Run: `cargo bench --bench alloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use span_profiler::alloc::ProfiledAllocator;
use span_profiler::Profiler;

#[global_allocator]
static GLOBAL: ProfiledAllocator = ProfiledAllocator::system();

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: `layout` has a non-zero size; the pointer is freed once with it.
    unsafe {
        let p = a.alloc(layout);
        black_box(p);
        a.dealloc(p, layout);
    }
}

fn alloc_dealloc_64b(c: &mut Criterion) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut group = c.benchmark_group("alloc_dealloc_64b");
    group.bench_function("system", |b| b.iter(|| pair(&System, black_box(layout))));
    group.bench_function("profiled_idle", |b| {
        b.iter(|| pair(&GLOBAL, black_box(layout)))
    });
    let dir =
        std::env::temp_dir().join(format!("span-profiler-bench-alloc-{}", std::process::id()));
    let profiler = Profiler::builder()
        .application_name("bench-alloc")
        .output_dir(&dir)
        .start()
        .expect("start");
    group.bench_function("profiled_recording", |b| {
        b.iter(|| pair(&GLOBAL, black_box(layout)))
    });
    let _ = profiler.stop();
    // The baseline again: a machine whose speed drifted during the run shows here.
    group.bench_function("system_again", |b| {
        b.iter(|| pair(&System, black_box(layout)))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pairs per timed block of the interleaved group.
const BLOCK: u64 = 256;

/// Times `iters` pairs through `measured`, in blocks of [`BLOCK`] each preceded by as
/// many untimed pairs through `other`.
fn interleaved<M: GlobalAlloc, O: GlobalAlloc>(
    measured: &M,
    other: &O,
    layout: Layout,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BLOCK);
        for _ in 0..n {
            pair(other, black_box(layout));
        }
        let start = Instant::now();
        for _ in 0..n {
            pair(measured, black_box(layout));
        }
        total += start.elapsed();
        left -= n;
    }
    total
}

/// Medians over `blocks` adjacent block pairs (one of [`BLOCK`] pairs through `System`,
/// one through the profiled allocator, in alternating order), in ns per alloc + dealloc
/// pair: (system, profiled, profiled - system). Medians, unlike criterion's mean slope,
/// ignore the blocks in which the shared machine preempted this thread.
fn block_medians(layout: Layout, blocks: usize) -> (f64, f64, f64) {
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..BLOCK {
            f();
        }
        start.elapsed().as_nanos() as f64 / BLOCK as f64
    };
    let system = || pair(&System, black_box(layout));
    let profiled = || pair(&GLOBAL, black_box(layout));
    let (mut a, mut b, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..blocks {
        let (s, p) = if i % 2 == 0 {
            let s = time(&system);
            (s, time(&profiled))
        } else {
            let p = time(&profiled);
            (time(&system), p)
        };
        a.push(s);
        b.push(p);
        d.push(p - s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut a), median(&mut b), median(&mut d))
}

/// Prints [`block_medians`] with the load average (criterion has no row for a median of
/// differences).
fn print_block_medians(what: &str, layout: Layout) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (s, p, d) = block_medians(layout, 40_000);
    println!(
        "alloc_dealloc_64b block medians ({what}, {BLOCK} pairs per block, load {}): \
         system {s:.1} ns, profiled {p:.1} ns, profiled - system {d:+.1} ns",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn alloc_dealloc_64b_interleaved(c: &mut Criterion) {
    let layout = Layout::from_size_align(64, 8).unwrap();
    print_block_medians("idle", layout);
    let mut group = c.benchmark_group("alloc_dealloc_64b_interleaved");
    group.bench_function("system", |b| {
        b.iter_custom(|iters| interleaved(&System, &GLOBAL, layout, iters))
    });
    group.bench_function("profiled_idle", |b| {
        b.iter_custom(|iters| interleaved(&GLOBAL, &System, layout, iters))
    });
    let dir = std::env::temp_dir().join(format!(
        "span-profiler-bench-alloc-i-{}",
        std::process::id()
    ));
    let profiler = Profiler::builder()
        .application_name("bench-alloc")
        .output_dir(&dir)
        .start()
        .expect("start");
    print_block_medians("recording at 512 KiB", layout);
    group.bench_function("system_while_recording", |b| {
        b.iter_custom(|iters| interleaved(&System, &GLOBAL, layout, iters))
    });
    group.bench_function("profiled_recording", |b| {
        b.iter_custom(|iters| interleaved(&GLOBAL, &System, layout, iters))
    });
    let _ = profiler.stop();
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, alloc_dealloc_64b, alloc_dealloc_64b_interleaved);
criterion_main!(benches);
