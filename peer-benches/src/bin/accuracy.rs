//! CPU accuracy: sampled CPU (sample weights x period) against the process's measured CPU
//! time, at 100, 250 and 1000 Hz, span-profiler vs pyroscope-rs's pprof-rs backend.
//!
//! Each run: two threads, started before the profiler, spin for `PEER_ACCURACY_SECS`
//! (default 2) under one profiler;
//! the process CPU clock is read at the profiler's start and stop. span-profiler:
//! `StopReport.stats.coverage()` (sampled CPU / process CPU over the session). pprof-rs:
//! sample counts of every report pyroscope-rs produced (captured before upload) times
//! the period, over the process CPU between the agent's start and stop. Runs alternate;
//! `PEER_ROUNDS` (default 3) rounds, median and range reported.
//!
//! Run: `CARGO_TARGET_DIR=target/peer cargo run --release -p span-profiler-peer-benches
//! --bin accuracy`.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use peer_benches::{
    load, median_min_max, process_cpu_ns, pyroscope_counts, spin_units, start_pyroscope,
    stop_pyroscope, units_per_us,
};
use span_profiler::Profiler;

/// Two threads, started before the profiler (as a server's workers are), spin for `secs`
/// once `go` is released.
struct Busy {
    go: Arc<Barrier>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Busy {
    fn spawn(secs: Duration) -> Self {
        let units = (secs.as_secs_f64() * 1e6 * units_per_us()) as u64;
        let go = Arc::new(Barrier::new(3));
        let threads = (0..2)
            .map(|i| {
                let go = go.clone();
                std::thread::spawn(move || {
                    go.wait();
                    spin_units(units, i + 11)
                })
            })
            .collect();
        Self { go, threads }
    }

    fn run(self) {
        self.go.wait();
        for t in self.threads {
            std::hint::black_box(t.join().unwrap());
        }
    }
}

fn ours(hz: u32, secs: Duration) -> f64 {
    let dir = std::env::temp_dir().join(format!("peer-accuracy-{}", std::process::id()));
    let busy = Busy::spawn(secs);
    let profiler = Profiler::builder()
        .application_name("peer-bench")
        .sample_rate(hz)
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    busy.run();
    let report = profiler.stop().expect("profiler stops");
    let _ = std::fs::remove_dir_all(&dir);
    report.stats.coverage().unwrap_or(0.0)
}

fn pprof_rs(hz: u32, secs: Duration) -> f64 {
    let busy = Busy::spawn(secs);
    let cpu0 = process_cpu_ns();
    let agent = start_pyroscope(hz, Duration::from_secs(10));
    busy.run();
    let reports = stop_pyroscope(agent);
    let cpu = process_cpu_ns() - cpu0;
    let (count, _) = pyroscope_counts(&reports, "", None);
    (count as f64 * 1e9 / f64::from(hz)) / cpu as f64
}

fn main() {
    let secs = Duration::from_secs(
        std::env::var("PEER_ACCURACY_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
    );
    let rounds: usize = std::env::var("PEER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let load_start = load();
    units_per_us();
    let mut rows = Vec::new();
    for hz in [100u32, 250, 1000] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            a.push(ours(hz, secs));
            b.push(pprof_rs(hz, secs));
            eprintln!(
                "  {hz} Hz round {round}: span-profiler {:.3}, pprof-rs {:.3}, load {}",
                a[round],
                b[round],
                load()
            );
        }
        rows.push((hz, median_min_max(&mut a), median_min_max(&mut b)));
    }
    println!(
        "\n## CPU accuracy — 2 spinning threads x {secs:?}, {rounds} rounds, load {load_start} -> {}",
        load()
    );
    println!("| rate | span-profiler sampled/measured: median (min-max) | pprof-rs (pyroscope-rs) sampled/measured: median (min-max) |");
    println!("|---|---|---|");
    for (hz, (am, alo, ahi), (bm, blo, bhi)) in rows {
        println!("| {hz} Hz | {am:.3} ({alo:.3}-{ahi:.3}) | {bm:.3} ({blo:.3}-{bhi:.3}) |");
    }
}
