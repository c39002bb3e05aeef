//! Symbolizing a cold window: 10,000 distinct addresses spread over this binary's code,
//! with a new symbolizer each time (files mapped and indexed, debug-info units parsed on
//! demand), as the first window after start sees them. The baseline in the same group
//! names them from the symbol table only (`Symbolization::functions_only`).
//!
//! - `full`: the addresses in address order.
//! - `full_unordered`: the same addresses in a fixed pseudo-random order, as the stacks
//!   of a window bring them.
//!
//! Each row also prints the frames found and the symbolizer's heap bytes afterwards.
//! Run: `cargo bench --bench symbolize` (the bench profile has `line-tables-only`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use span_profiler::__private::symbolize::{code_addresses, symbolize_cold};
use span_profiler::Symbolization;

const ADDRESSES: usize = 10_000;

/// `n` distinct addresses: function entries (plus one) of the main program, and when it
/// has fewer functions than `n`, points spread evenly between each entry and the next.
fn window_addresses(n: usize) -> Vec<usize> {
    let entries = code_addresses(n);
    if entries.len() >= n || entries.len() < 2 {
        return entries;
    }
    let per = n.div_ceil(entries.len() - 1);
    let mut out = Vec::with_capacity(n);
    for pair in entries.windows(2) {
        let gap = pair[1] - pair[0];
        for k in 0..per.min(gap) {
            out.push(pair[0] + k * gap / per.min(gap));
        }
    }
    out.dedup();
    // Every `len / n`-th, so that the whole code stays covered.
    let step = out.len() as f64 / n as f64;
    (0..n.min(out.len()))
        .map(|i| out[(i as f64 * step) as usize])
        .collect()
}

/// `addrs` in a fixed pseudo-random order (a linear congruential shuffle).
fn shuffled(addrs: &[usize]) -> Vec<usize> {
    let mut out = addrs.to_vec();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..out.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.swap(i, (state >> 33) as usize % (i + 1));
    }
    out
}

fn cold_window(c: &mut Criterion) {
    let addrs = window_addresses(ADDRESSES);
    let unordered = shuffled(&addrs);
    let mut group = c.benchmark_group("symbolize_cold_window");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, options, addrs) in [
        ("functions_only", Symbolization::functions_only(), &addrs),
        ("full", Symbolization::full(), &addrs),
        ("full_unordered", Symbolization::full(), &unordered),
    ] {
        let (frames, bytes) = symbolize_cold(addrs, options);
        println!(
            "{name}: {} addresses, {frames} frames, {:.1} MiB of symbolizer heap",
            addrs.len(),
            bytes as f64 / (1024.0 * 1024.0)
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(symbolize_cold(black_box(addrs), options)))
        });
    }
    group.finish();
}

criterion_group!(benches, cold_window);
criterion_main!(benches);
