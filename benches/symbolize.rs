//! Symbolizing a cold window: 10,000 distinct addresses spread over this binary's code
//! (function starts and points inside functions), in a shuffled order as a window's
//! samples bring them, with a new symbolizer each time (files mapped and indexed,
//! debug-info units parsed on demand), as the first window after start sees them. The
//! baseline in the same group names them from the symbol table only
//! (`Symbolization::functions_only`).
//!
//! Each row also prints the frames found and the symbolizer's heap bytes afterwards.
//! Run: `cargo bench --bench symbolize` (the bench profile has `line-tables-only`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use span_profiler::__private::symbolize::{code_addresses, symbolize_cold};
use span_profiler::Symbolization;

const ADDRESSES: usize = 10_000;

fn cold_window(c: &mut Criterion) {
    let mut addrs = code_addresses(ADDRESSES);
    shuffle(&mut addrs);
    let mut group = c.benchmark_group("symbolize_cold_window");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, options) in [
        ("functions_only", Symbolization::functions_only()),
        ("full", Symbolization::full()),
        // What the default 8 MiB budget costs here: units evicted and parsed again.
        (
            "full_64_mib_budget",
            Symbolization::full().memory_budget(64 << 20),
        ),
    ] {
        let (frames, bytes) = symbolize_cold(&addrs, options);
        println!(
            "{name}: {} addresses, {frames} frames, {:.1} MiB of symbolizer heap",
            addrs.len(),
            bytes as f64 / (1024.0 * 1024.0)
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(symbolize_cold(black_box(&addrs), options)))
        });
    }
    group.finish();
}

/// A fixed permutation (Fisher-Yates over a xorshift sequence): the same order every run.
fn shuffle(addrs: &mut [usize]) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..addrs.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        addrs.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

criterion_group!(benches, cold_window);
criterion_main!(benches);
