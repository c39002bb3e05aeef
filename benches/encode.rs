//! Encoding and compressing one window: 5,000 distinct stacks (30 frames, shaped like a
//! call tree) x 500 label sets, beside the same stacks without labels (the baseline), so
//! the ratio shows what labels cost. The symbolizer is warm (its per-address cache is
//! filled by the first iteration), as it is for every window after the first.
//!
//! Each row also prints the number of pieces and their uncompressed and gzipped bytes.
//! Run: `cargo bench --bench encode`.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use span_profiler::__private::label_id_of;
use span_profiler::__private::pprof::{EncodeWindowOptions, PreparedWindow, WindowSample};
use span_profiler::{Labels, Profiled, ProfiledExt};

const STACKS: usize = 5_000;
const LABEL_SETS: usize = 500;
const DEPTH: usize = 30;

#[inline(never)]
fn code_region_anchor() -> u64 {
    black_box(1)
}

/// Stack `i`: frames share callers like a call tree (frame `d` depends on `i >> (d / 3)`),
/// each one of 4,096 addresses inside this binary's code, 61 bytes apart. That many stay
/// in the symbolizer's cache; with more (there were 27,600 once) every iteration
/// re-parsed debug info as the cache went over its budget, and the bench measured that.
fn stack(i: usize) -> Vec<usize> {
    let base = code_region_anchor as *const () as usize;
    (0..DEPTH)
        .map(|d| {
            let node = i >> (d / 3).min(12);
            base + (node * 97 + d * 4_099) % 4_096 * 61
        })
        .collect()
}

fn window(labels: &[Profiled<std::future::Ready<()>>]) -> PreparedWindow {
    let samples: Vec<WindowSample> = (0..STACKS)
        .map(|i| {
            let id = if labels.is_empty() {
                0
            } else {
                label_id_of(&labels[i % labels.len()])
            };
            (stack(i), id, (i % 7 + 1) as u64)
        })
        .collect();
    let end = SystemTime::now();
    let opts = EncodeWindowOptions {
        sample_rate_hz: 100,
        max_piece_bytes: Some(1 << 20),
        max_piece_samples: Some(16_000),
    };
    PreparedWindow::new(&samples, end - Duration::from_secs(10), end, opts)
}

fn report(name: &str, w: &mut PreparedWindow) {
    let out = w.encode();
    let raw: usize = out.uncompressed_lens.iter().sum();
    let gz: usize = out.pieces.iter().map(Vec::len).sum();
    println!(
        "{name}: {} pieces, {raw} bytes uncompressed, {gz} bytes gzipped, {} samples",
        out.pieces.len(),
        out.samples.iter().sum::<usize>()
    );
}

fn encode_window(c: &mut Criterion) {
    let labels: Vec<_> = (0..LABEL_SETS)
        .map(|i| {
            let l = Labels::span(0x1000_0000 + i as u64, format!("GET /route/{}", i % 50))
                .with("region", if i % 2 == 0 { "eu" } else { "us" });
            std::future::ready(()).with_labels(l)
        })
        .collect();
    let mut unlabelled = window(&[]);
    let mut labelled = window(&labels);
    report("encode_window/5000_stacks_unlabelled", &mut unlabelled);
    report("encode_window/5000_stacks_x_500_label_sets", &mut labelled);

    let mut group = c.benchmark_group("encode_window");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("5000_stacks_unlabelled", |b| {
        b.iter(|| black_box(unlabelled.encode()))
    });
    group.bench_function("5000_stacks_x_500_label_sets", |b| {
        b.iter(|| black_box(labelled.encode()))
    });
    group.finish();
}

criterion_group!(benches, encode_window);
criterion_main!(benches);
