//! Handler CPU time per sample, frame pointers vs DWARF CFI, with two threads burning 10,
//! 30 and 60 frames deep (build with `-C force-frame-pointers=yes` so that both walks
//! see complete stacks), plus the unwind tables' build time and memory.
//!
//! Run: `RUSTFLAGS="-C force-frame-pointers=yes" cargo run --release --features internal --bin handler_cost`
//! in `tests/apps/unwind-app`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

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
        std::hint::black_box(deep(depth - 1, stop)) + 1
    }
}

fn main() {
    for depth in [10u32, 30, 60] {
        for (name, unwinder) in [
            ("frame_pointers", Unwinder::FramePointers),
            ("dwarf", Unwinder::Auto),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let burners: Vec<_> = (0..2)
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || deep(depth, &stop))
                })
                .collect();
            let mut sampler = Sampler::start(SamplerConfig {
                sample_rate_hz: 1000,
                buffer_entries: 8192,
                measure_handler_cpu: true,
                unwinder,
            })
            .expect("the sampler starts");
            let (mut frames, mut walked) = (0usize, 0usize);
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(100));
                sampler.maintain();
                sampler.drain(&mut |s| {
                    if s.frames.len() > 1 {
                        frames += s.frames.len();
                        walked += 1;
                    }
                });
            }
            let stats = sampler.stop();
            stop.store(true, Relaxed);
            for b in burners {
                let _ = b.join();
            }
            println!(
                "handler/{name}/{depth}: {} ns/sample over {} samples, {:.1} frames per walked sample",
                stats.handler_cpu_ns / stats.samples.max(1),
                stats.samples,
                frames as f64 / walked.max(1) as f64
            );
            if name == "dwarf" && depth == 10 {
                println!(
                    "unwind_tables: {} objects ({} failed), {} KiB, built in {} ms",
                    stats.unwind_objects,
                    stats.unwind_objects_failed,
                    stats.unwind_table_bytes / 1024,
                    stats.unwind_table_build_ns / 1_000_000
                );
            }
        }
    }
}
