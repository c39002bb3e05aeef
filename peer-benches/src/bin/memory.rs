//! Resident memory of span-profiler at steady state: 1,000 spans per second (a fresh span
//! id each, 50 span names, `PEER_MEM_SPAN_US` µs of CPU each, default 300) beside
//! `PEER_MEM_BG_TASKS` unlabelled background tasks (default 4) that keep both cores busy;
//! all CPU is burnt at the end of one of 65,536 distinct call paths (16 levels of two
//! functions), sampled at 1 kHz (weight-4 samples on a 250 Hz tick). A window of
//! `PEER_MEM_WINDOW_SECS` (default 60) then holds about 10,000 distinct stacks: a
//! CPU-time timer fires at most once per tick per running thread, so two cores give at
//! most 500 samples a second.
//!
//! Phases: the workload alone for `PEER_MEM_BASE_SECS` (default 8) — the baseline RSS;
//! then under the profiler for `PEER_MEM_SECS` (default 130), RSS read every 5 s; then
//! the profiler stopped and the workload run 5 s more. The written files give the
//! distinct stacks per window.
//!
//! `PEER_MEM_PROFILER=pyroscope` runs the same workload under pyroscope-rs (pprof-rs
//! backend, same rate and window, each span's task tagged `span_name` around every poll,
//! the only way its thread tags follow a task; uploads go to a closed loopback port and no
//! report is kept) instead of span-profiler, for the table beside it.
//!
//! Run: `CARGO_TARGET_DIR=target/peer cargo run --release -p span-profiler-peer-benches
//! --bin memory`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use peer_benches::{
    load, rss_kib, runtime, spin_units, start_pyroscope_with, status_kib, stop_pyroscope, tag_fns,
    units_per_us, TagFn, TagPerPoll,
};
use span_profiler::__private::pprof::decode;
use span_profiler::{Labels, ProfiledExt, Profiler};

#[inline(never)]
fn left(depth: u32, path: u64, units: u64) -> u64 {
    std::hint::black_box(descend(depth, path, units)) ^ 1
}

#[inline(never)]
fn right(depth: u32, path: u64, units: u64) -> u64 {
    std::hint::black_box(descend(depth, path, units)) ^ 2
}

/// Walks 16 levels, taking `left` or `right` by the bits of `path`, then spins.
#[inline(never)]
fn descend(depth: u32, path: u64, units: u64) -> u64 {
    if depth == 16 {
        return spin_units(units, path);
    }
    if path >> depth & 1 == 0 {
        left(depth + 1, path, units)
    } else {
        right(depth + 1, path, units)
    }
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

const NAMES: [&str; 50] = [
    "n00", "n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09", "n10", "n11", "n12",
    "n13", "n14", "n15", "n16", "n17", "n18", "n19", "n20", "n21", "n22", "n23", "n24", "n25",
    "n26", "n27", "n28", "n29", "n30", "n31", "n32", "n33", "n34", "n35", "n36", "n37", "n38",
    "n39", "n40", "n41", "n42", "n43", "n44", "n45", "n46", "n47", "n48", "n49",
];

/// pyroscope-rs's tag functions, once its agent runs (`PEER_MEM_PROFILER=pyroscope`).
static PYRO_TAGS: OnceLock<(TagFn, TagFn)> = OnceLock::new();

/// Spawns 1,000 spans per second until `stop`; counts them.
fn start_load(rt: &tokio::runtime::Runtime, stop: Arc<AtomicBool>, spans: Arc<AtomicU64>) {
    let span_us = std::env::var("PEER_MEM_SPAN_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300.0);
    let units = (span_us * units_per_us()) as u64;
    let bg_tasks: u64 = std::env::var("PEER_MEM_BG_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    for t in 0..bg_tasks {
        let stop = stop.clone();
        rt.spawn(async move {
            let mut i = t << 40;
            while !stop.load(Relaxed) {
                i += 1;
                let path = i.wrapping_mul(0xd6e8_feb8_6659_fd93) >> 48;
                std::hint::black_box(descend(0, path, units));
                tokio::task::yield_now().await;
            }
        });
    }
    rt.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        // Late ticks catch up: 1,000 spans a second on average even when the
        // background tasks delay the spawner.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut id = 0u64;
        while !stop.load(Relaxed) {
            tick.tick().await;
            id += 1;
            let path = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 48;
            let spans = spans.clone();
            let name = NAMES[(id % 50) as usize];
            let work = async move {
                std::hint::black_box(descend(0, path, units));
                spans.fetch_add(1, Relaxed);
            };
            match PYRO_TAGS.get() {
                Some(tags) => {
                    tokio::spawn(TagPerPoll::new(work, "span_name", name, tags));
                }
                None => {
                    tokio::spawn(work.with_labels(Labels::span(id, name)));
                }
            }
        }
    });
}

fn main() {
    let base_secs = env_secs("PEER_MEM_BASE_SECS", 8);
    let run_secs = env_secs("PEER_MEM_SECS", 130);
    let window = env_secs("PEER_MEM_WINDOW_SECS", 60);
    let dir = std::env::temp_dir().join(format!("peer-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let load_start = load();
    let rt = runtime(2);
    let stop = Arc::new(AtomicBool::new(false));
    let spans = Arc::new(AtomicU64::new(0));
    start_load(&rt, stop.clone(), spans.clone());

    std::thread::sleep(base_secs);
    let base = rss_kib();
    let base_anon = status_kib("RssAnon");
    eprintln!("baseline (no profiler): RSS {base} KiB, load {}", load());

    let pyroscope = std::env::var("PEER_MEM_PROFILER").is_ok_and(|p| p == "pyroscope");
    let spans0 = spans.load(Relaxed);
    let t0 = Instant::now();
    let (profiler, agent) = if pyroscope {
        let agent = start_pyroscope_with(1000, window, false);
        let _ = PYRO_TAGS.set(tag_fns(&agent));
        (None, Some(agent))
    } else {
        let profiler = Profiler::builder()
            .application_name("peer-bench")
            .sample_rate(1000)
            .upload_interval(window)
            .output_dir(&dir)
            .max_files(100)
            .start()
            .expect("profiler starts");
        (Some(profiler), None)
    };
    let mut during = Vec::new();
    while t0.elapsed() < run_secs {
        std::thread::sleep(Duration::from_secs(5));
        let rss = rss_kib();
        during.push((t0.elapsed(), rss));
        eprintln!(
            "  t={:>3.0}s RSS {rss} KiB (+{} KiB), load {}",
            t0.elapsed().as_secs_f64(),
            rss as i64 - base as i64,
            load()
        );
    }
    let spans_per_sec = (spans.load(Relaxed) - spans0) as f64 / t0.elapsed().as_secs_f64();
    let hwm = status_kib("VmHWM");
    let anon = status_kib("RssAnon");
    let ours = profiler.map(|profiler| {
        let stats = profiler.stats();
        (stats, profiler.stop().expect("profiler stops"))
    });
    if let Some(agent) = agent {
        let _ = stop_pyroscope(agent);
    }
    std::thread::sleep(Duration::from_secs(5));
    let after = rss_kib();
    stop.store(true, Relaxed);

    let mut windows = Vec::new();
    // pyroscope-rs writes no files (its uploads fail): no windows to list then.
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files {
        let profile = decode(&std::fs::read(&path).unwrap()).expect("decodes");
        let stacks: HashSet<&Vec<u64>> = profile.sample.iter().map(|s| &s.location_id).collect();
        windows.push((stacks.len(), profile.sample.len()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let before_first: Vec<u64> = during
        .iter()
        .filter(|(t, _)| *t < window)
        .map(|(_, r)| *r)
        .collect();
    let first = before_first.iter().copied().max().unwrap_or(0);
    let peak = during.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let steady: Vec<u64> = during
        .iter()
        .filter(|(t, _)| *t > window + Duration::from_secs(2))
        .map(|(_, r)| *r)
        .collect();
    let steady_avg = steady.iter().sum::<u64>() / steady.len().max(1) as u64;
    println!(
        "\n## Memory of {} — 2 workers, 1 kHz, {window:?} windows, {spans_per_sec:.0} spans/s, load {load_start} -> {}",
        if pyroscope { "pyroscope-rs" } else { "span-profiler" },
        load()
    );
    println!("| phase | RSS | over baseline |");
    println!("|---|---|---|");
    println!("| workload alone | {} MiB | - |", base / 1024);
    println!(
        "| profiler on, before the first window closes (max) | {} MiB | +{} MiB |",
        first / 1024,
        (first as i64 - base as i64) / 1024
    );
    println!(
        "| profiler on, after the first window closed (mean) | {} MiB | +{} MiB |",
        steady_avg / 1024,
        (steady_avg as i64 - base as i64) / 1024
    );
    println!(
        "| profiler on, peak of the 5 s readings | {} MiB | +{} MiB |",
        peak / 1024,
        (peak as i64 - base as i64) / 1024
    );
    println!(
        "| peak (VmHWM) before stop | {} MiB | +{} MiB |",
        hwm / 1024,
        (hwm as i64 - base as i64) / 1024
    );
    println!(
        "| anonymous (RssAnon) before stop | {} MiB | +{} MiB |",
        anon / 1024,
        (anon as i64 - base_anon as i64) / 1024
    );
    println!(
        "| 5 s after stop | {} MiB | +{} MiB |",
        after / 1024,
        (after as i64 - base as i64) / 1024
    );
    println!("\nwindows (distinct stacks, pprof samples incl. label sets): {windows:?}");
    println!(
        "RSS every 5 s (s, KiB): {:?}",
        during
            .iter()
            .map(|(t, r)| (t.as_secs(), *r))
            .collect::<Vec<_>>()
    );
    if let Some((stats, report)) = ours {
        println!(
            "profiler: {} windows, {} samples, weight {}, coverage {:?}, dropped {:?}",
            report.windows,
            stats.samples,
            stats.sample_weight,
            stats.coverage(),
            report.stats.dropped
        );
    }
}
