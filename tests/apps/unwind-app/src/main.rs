//! Serves "requests" on a 2-worker Tokio runtime: `handle_request` -> `render` ->
//! `leaf_burner`, profiled by span-profiler into pprof files.
//!
//! Usage: `unwind-app <output dir> <requests> [auto|dwarf|frame-pointers]`: serves that
//! many requests (a fixed amount of CPU work, however busy the machine), then prints the
//! profiler's unwinding counters as `key=value` lines.

use std::time::Duration;

use span_profiler::{Labels, ProfiledExt, Profiler, Unwinder};

/// The leaf: pure arithmetic, no calls.
#[inline(never)]
fn leaf_burner(n: u64) -> u64 {
    let mut x = n;
    for i in 0..200_000u64 {
        x = std::hint::black_box(x.rotate_left(7) ^ i.wrapping_mul(0x9e37_79b9));
    }
    x
}

/// A helper between the handler and the leaf.
#[inline(never)]
fn render(n: u64) -> u64 {
    let a = leaf_burner(n);
    std::hint::black_box(a).wrapping_add(leaf_burner(a))
}

/// One request: some CPU, then a yield, a few times.
#[inline(never)]
async fn handle_request(id: u64) -> u64 {
    let mut total = 0u64;
    for _ in 0..4 {
        total = total.wrapping_add(render(id ^ total));
        tokio::task::yield_now().await;
    }
    total
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: unwind-app <output dir> <requests> [unwinder]")?;
    let wanted: u64 = args.next().unwrap_or_else(|| "800".into()).parse()?;
    let unwinder = match args.next().as_deref() {
        None | Some("auto") => Unwinder::Auto,
        Some("dwarf") => Unwinder::Dwarf,
        Some("frame-pointers") => Unwinder::FramePointers,
        Some(other) => return Err(format!("unknown unwinder `{other}`").into()),
    };
    let profiler = Profiler::builder()
        .application_name("unwind-app")
        .unwinder(unwinder)
        .sample_rate(250)
        .upload_interval(Duration::from_secs(1))
        .output_dir(&out)
        .start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()?;
    let requests = rt.block_on(async {
        let mut id = 0u64;
        while id < wanted {
            let batch: Vec<_> = (0..4)
                .map(|_| {
                    id += 1;
                    tokio::spawn(handle_request(id).with_labels(Labels::span(id, "GET /render")))
                })
                .collect();
            for handle in batch {
                handle.await.expect("request");
            }
        }
        id
    });
    let report = profiler.stop()?;
    let s = &report.stats;
    println!("requests={requests}");
    println!("samples={}", s.samples);
    println!("shallow_samples={}", s.shallow_samples);
    println!("frame_pointers_missing={}", s.frame_pointers_missing);
    println!("unwound_dwarf={}", s.unwound_dwarf);
    println!("unwound_frame_pointers={}", s.unwound_frame_pointers);
    println!("unwind_fallbacks={}", s.unwind_fallbacks);
    println!("unwind_incomplete={}", s.unwind_incomplete);
    println!("truncated_stacks={}", s.truncated_stacks);
    println!("unwind_objects={}", s.unwind_objects);
    println!("unwind_objects_failed={}", s.unwind_objects_failed);
    println!("unwind_table_bytes={}", s.unwind_table_bytes);
    println!("files_written={}", report.files_written);
    Ok(())
}
