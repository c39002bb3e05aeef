//! An alloc + dealloc pair of 64 bytes through `System` beside the same pair through
//! `ProfiledAllocator<System>`: idle (no profiler), and while a profiler records
//! allocations at the default 512 KiB interval (one pair in about 8,000 takes the
//! sampled path, so the row is the unsampled path's cost plus that share).
//! Run: `cargo bench --bench alloc`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

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

criterion_group!(benches, alloc_dealloc_64b);
criterion_main!(benches);
