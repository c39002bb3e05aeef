//! Soak test (not run by CI): steady labelled load under the profiler for a long time,
//! printing resident memory, so a leak shows as a rising curve.
//!
//! Every request gets a fresh span id (new label sets all the time, as in production),
//! some spawn child tasks, some run on the blocking pool, every request allocates; the
//! profiler samples CPU at 100 Hz and allocations through [`ProfiledAllocator`], and writes
//! 10 s windows to a temporary directory with a 20-file retention cap.
//!
//! Run: `cargo run --release --example soak` (`SOAK_SECONDS`, default 1800; `SOAK_BUDGET_MIB`,
//! the symbolizer budget, default 8; `SOAK_SYMBOLIZE=functions`, symbol-table names only;
//! `SOAK_PROFILER=off`, the same run without the profiler; a line every
//! `SOAK_REPORT_SECONDS`, default 60). The columns `rss_anon_kib` (anonymous memory: heap
//! and tables, not the mapped binary) and `hwm_kib` (peak RSS) are the ones to watch: after
//! the second minute `rss_anon_kib` should stay flat. `RssAnon` is also read every second:
//! `anon_min_kib` and `anon_max_kib` are its lowest and highest reading since the last
//! line. A window's encoding touches up to a MiB of free heap that the writer gives back
//! afterwards, so a single reading depends on when it falls; the minimum is the memory
//! held at rest, the maximum what the encoding adds on top.

use std::time::{Duration, Instant};

use span_profiler::alloc::ProfiledAllocator;
use span_profiler::{Labels, ProfiledExt, Profiler, Symbolization, DEFAULT_SYMBOLIZER_BUDGET};

#[global_allocator]
static ALLOC: ProfiledAllocator = ProfiledAllocator::system();

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// One `/proc/self/status` field in KiB (`VmRSS`, `RssAnon`, `VmHWM`), 0 if absent.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// glibc's view of its heap in KiB: (bytes in use, bytes free inside its arenas). Free
/// bytes that grow while in-use bytes stay flat are fragmentation, not a leak.
fn malloc_kib() -> (usize, usize) {
    // SAFETY: mallinfo2 only reads the allocator's statistics (it takes the arenas' locks,
    // never held across this call) and returns them by value.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024, m.fordblks / 1024)
}

#[inline(never)]
fn soak_work(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| {
        std::hint::black_box(acc.rotate_left(7) ^ i.wrapping_mul(0x9e37_79b9))
    })
}

async fn request(i: u64) -> u64 {
    // Some garbage per request (a few KiB to a few hundred), freed at the end.
    let scratch: Vec<u8> = vec![(i & 0xff) as u8; 4096 << (i % 7)];
    let mut total = soak_work(20_000) + u64::from(scratch[scratch.len() / 2]);
    if i % 5 == 0 {
        let child = tokio::spawn(async { soak_work(10_000) }.with_labels(Labels::current()));
        total += child.await.unwrap_or(0);
    }
    if i % 7 == 0 {
        total += span_profiler::spawn_blocking(|| soak_work(10_000))
            .await
            .unwrap_or(0);
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    total
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run = env_secs("SOAK_SECONDS", 1800);
    let every = env_secs("SOAK_REPORT_SECONDS", 60);
    let dir = std::env::temp_dir().join(format!("span-profiler-soak-{}", std::process::id()));
    // `SOAK_BUDGET_MIB`: the symbolizer's memory budget (default: the profiler's, 8 MiB).
    let budget = std::env::var("SOAK_BUDGET_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(DEFAULT_SYMBOLIZER_BUDGET, |mib| mib << 20);
    // `SOAK_SYMBOLIZE=functions`: symbol-table names only (no DWARF), to tell the
    // symbolizer's share of the memory curve from the rest of the profiler's.
    let symbolization = match std::env::var("SOAK_SYMBOLIZE").as_deref() {
        Ok("functions") => Symbolization::functions_only(),
        _ => Symbolization::full(),
    };
    // `SOAK_PROFILER=off`: the same workload and binary without a profiler, to tell the
    // profiler's growth from the workload's own (allocator arenas, the blocking pool).
    let profiler = match std::env::var("SOAK_PROFILER").as_deref() {
        Ok("off") => None,
        _ => Some(
            Profiler::builder()
                .application_name("soak")
                .output_dir(&dir)
                .max_files(20)
                .symbolize(symbolization.memory_budget(budget))
                .start()?,
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "elapsed_s  rss_kib  rss_anon_kib  hwm_kib  requests  samples  alloc_sampled  files_written  files_deleted  dropped  symbolizer_kib  sym_index_kib  sym_cache  sym_units  units_parsed  label_sets  heap_used_kib  heap_free_kib  anon_min_kib  anon_max_kib"
    );
    let started = Instant::now();
    rt.block_on(async {
        let mut next_report = started;
        let mut next_probe = started;
        // Lowest and highest `RssAnon` read since the last line.
        let (mut anon_min, mut anon_max) = (u64::MAX, 0);
        let mut i = 0u64;
        while started.elapsed() < run {
            // 8 concurrent requests per round, each with a fresh span.
            let round: Vec<_> = (0..8)
                .map(|k| {
                    i += 1;
                    let labels = Labels::span(i, format!("route-{}", k % 4));
                    tokio::spawn(request(i).with_labels(labels))
                })
                .collect();
            for r in round {
                let _ = r.await;
            }
            if Instant::now() >= next_probe {
                let anon = status_kib("RssAnon");
                (anon_min, anon_max) = (anon_min.min(anon), anon_max.max(anon));
                next_probe += Duration::from_secs(1);
            }
            if Instant::now() >= next_report {
                let s = profiler.as_ref().map(Profiler::stats).unwrap_or_default();
                let (heap_used, heap_free) = malloc_kib();
                println!(
                    "{:>9}  {:>7}  {:>12}  {:>7}  {:>8}  {:>7}  {:>13}  {:>13}  {:>13}  {:>7}  {:>14}  {:>13}  {:>9}  {:>9}  {:>12}  {:>10}  {:>13}  {:>13}  {:>12}  {:>12}",
                    started.elapsed().as_secs(),
                    status_kib("VmRSS"),
                    status_kib("RssAnon"),
                    status_kib("VmHWM"),
                    i,
                    s.samples,
                    s.alloc.sampled,
                    s.files_written,
                    s.files_deleted,
                    s.dropped.buffer_full + s.dropped.other,
                    s.symbolizer.bytes / 1024,
                    s.symbolizer.index_bytes / 1024,
                    s.symbolizer.cache_entries,
                    s.symbolizer.units_kept,
                    s.symbolizer.units_parsed,
                    s.label_sets_live,
                    heap_used,
                    heap_free,
                    anon_min,
                    anon_max
                );
                (anon_min, anon_max) = (u64::MAX, 0);
                next_report += every;
            }
        }
    });
    let (windows, files) = match profiler {
        Some(profiler) => {
            let report = profiler.stop()?;
            (report.windows, report.files_written)
        }
        None => (0, 0),
    };
    println!(
        "done: {windows} windows, {files} files written, final RSS {} KiB, RssAnon {} KiB, peak {} KiB",
        status_kib("VmRSS"),
        status_kib("RssAnon"),
        status_kib("VmHWM")
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
