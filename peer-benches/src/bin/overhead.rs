//! Sampler overhead, interleaved A/B: one CPU-bound multi-thread Tokio workload (long
//! polls, then short polls) with no profiler, with span-profiler, and with pyroscope-rs
//! (pprof-rs backend) tagging per request and per poll, at 100 Hz and 1 kHz.
//!
//! Each round runs every configuration once, in an order rotated per round, each for
//! `PEER_RUN_SECS` (default 3) on a fresh 2-worker runtime. Reported per configuration,
//! as ratios to the same round's no-profiler run, median and range over `PEER_ROUNDS`
//! rounds (default 4): work units per second of process CPU (what the profiler costs the
//! process, insensitive to other processes taking the cores) and work units per wall
//! second (throughput, sensitive to them); and the profiler's CPU measured directly as a
//! fraction of the process's CPU during the run:
//!
//! - `threads`: CPU of the threads the profiler started (every thread that appeared after
//!   the runtime was built), read from their thread CPU clocks before the profiler stops;
//! - `handler` (span-profiler only): CPU inside the SIGPROF handler, from the sampler's
//!   own measurement (`measure_handler_cpu`, two `clock_gettime` per sample), in a run of
//!   the bare sampler (`ours-sampler`, drained on the collector's 100 ms tick) beside the
//!   full profiler's run; its `maintain` and `drain` CPU are printed too.
//!
//! pprof-rs's handler CPU cannot be separated (it runs on the workers); its cost shows in
//! the throughput ratio only. Window encoding is outside the runs: both profilers use
//! 10 s windows and each run is shorter (see `benches/encode.rs` for ours).
//!
//! Run: `CARGO_TARGET_DIR=target/peer cargo run --release -p span-profiler-peer-benches
//! --bin overhead` (`PEER_ONLY_OURS=1`: without the pyroscope-rs configurations;
//! `PEER_CONFIGS=none,ours-100,sampler-100,pyro-request-100,pyro-poll-100` (and `-1000`):
//! only those; `PEER_SHAPES=long` or `short`: one workload).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use peer_benches::{
    cpu_by_tid, load, median_min_max, process_cpu_ns, run, runtime, start_pyroscope,
    stop_pyroscope, tag_fns, Shape, Wrap, LONG, SHORT,
};
use span_profiler::__private::{Sampler, SamplerConfig};
use span_profiler::Profiler;

const WORKERS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Config {
    None,
    Ours(u32),
    OursSampler(u32),
    PyroRequest(u32),
    PyroPoll(u32),
}

impl Config {
    /// The configuration's key in `PEER_CONFIGS`.
    fn key(self) -> String {
        match self {
            Config::None => "none".into(),
            Config::Ours(hz) => format!("ours-{hz}"),
            Config::OursSampler(hz) => format!("sampler-{hz}"),
            Config::PyroRequest(hz) => format!("pyro-request-{hz}"),
            Config::PyroPoll(hz) => format!("pyro-poll-{hz}"),
        }
    }

    fn name(self) -> String {
        match self {
            Config::None => "no profiler".into(),
            Config::Ours(hz) => format!("span-profiler {hz} Hz"),
            Config::OursSampler(hz) => format!("span-profiler sampler only {hz} Hz"),
            Config::PyroRequest(hz) => format!("pyroscope-rs tag/request {hz} Hz"),
            Config::PyroPoll(hz) => format!("pyroscope-rs tag/poll {hz} Hz"),
        }
    }
}

struct Outcome {
    units_per_sec: f64,
    /// Work units per second of process CPU (robust to other processes' load).
    units_per_cpu_sec: f64,
    /// Fraction of process CPU in the profiler's threads.
    threads: f64,
    /// Fraction of process CPU in the handler (ours-sampler only).
    handler: Option<f64>,
    polls: u64,
    migrated: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn measure(config: Config, shape: Shape, secs: Duration) -> Outcome {
    let rt = runtime(WORKERS);
    // Let the workers start before the thread snapshot.
    rt.block_on(async { tokio::task::yield_now().await });
    let before = cpu_by_tid();
    let cpu0 = process_cpu_ns();

    #[allow(clippy::large_enum_variant)]
    enum Running {
        None,
        Ours(Profiler),
        Sampler(Arc<AtomicBool>, std::thread::JoinHandle<Sampler>),
        Pyro(pyroscope::PyroscopeAgent<pyroscope::pyroscope::PyroscopeAgentRunning>),
    }
    let dir = std::env::temp_dir().join(format!("peer-overhead-{}", std::process::id()));
    let (running, wrap) = match config {
        Config::None => (Running::None, Wrap::None),
        Config::Ours(hz) => {
            let p = Profiler::builder()
                .application_name("peer-bench")
                .sample_rate(hz)
                .output_dir(&dir)
                .start()
                .expect("profiler starts");
            (Running::Ours(p), Wrap::Ours)
        }
        Config::OursSampler(hz) => {
            let sampler = Sampler::start(SamplerConfig {
                sample_rate_hz: hz,
                buffer_entries: 4096,
                measure_handler_cpu: true,
                ..SamplerConfig::default()
            })
            .expect("sampler starts");
            // A drain thread, on the collector's tick (100 ms).
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = stop.clone();
            let handle = std::thread::Builder::new()
                .name("span-profiler-s".into())
                .spawn(move || {
                    let mut sampler = sampler;
                    while !stop2.load(Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        sampler.maintain();
                        sampler.drain(&mut |s| {
                            std::hint::black_box(s.frames.len());
                        });
                    }
                    sampler
                })
                .unwrap();
            (Running::Sampler(stop, handle), Wrap::Ours)
        }
        Config::PyroRequest(hz) | Config::PyroPoll(hz) => {
            let agent = start_pyroscope(hz, Duration::from_secs(10));
            let (add, remove) = tag_fns(&agent);
            let wrap = if matches!(config, Config::PyroRequest(_)) {
                Wrap::PyroscopePerRequest(add, remove)
            } else {
                Wrap::PyroscopePerPoll(add, remove)
            };
            (Running::Pyro(agent), wrap)
        }
    };

    let (counters, elapsed) = run(&rt, WORKERS, shape, &wrap, false, secs);
    let after = cpu_by_tid();
    let cpu1 = process_cpu_ns();
    let process = (cpu1 - cpu0) as f64;
    let threads_ns: u64 = after
        .iter()
        .filter(|(tid, (name, _))| !before.contains_key(tid) && !name.starts_with("tokio-runtime"))
        .map(|(_, (_, cpu))| *cpu)
        .sum();
    let mut handler = None;
    match running {
        Running::None => {}
        Running::Ours(p) => {
            let _ = p.stop();
        }
        Running::Sampler(stop, handle) => {
            stop.store(true, Relaxed);
            let sampler = handle.join().unwrap();
            let stats = sampler.stop();
            let process = stats.process_cpu_ns.max(1) as f64;
            handler = Some(stats.handler_cpu_ns as f64 / process);
            eprintln!(
                "    sampler only: maintain {:.3}%, drain {:.3}%, handler {:.3}% of process CPU; {} scans, {} samples",
                stats.maintain_cpu_ns as f64 / process * 100.0,
                stats.drain_cpu_ns as f64 / process * 100.0,
                stats.handler_cpu_ns as f64 / process * 100.0,
                stats.scans,
                stats.samples
            );
        }
        Running::Pyro(agent) => {
            drop(wrap);
            let _ = stop_pyroscope(agent);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(rt);
    Outcome {
        units_per_sec: counters.units.load(Relaxed) as f64 / elapsed.as_secs_f64(),
        units_per_cpu_sec: counters.units.load(Relaxed) as f64 / (process / 1e9),
        threads: threads_ns as f64 / process,
        handler,
        polls: counters.polls.load(Relaxed),
        migrated: counters.migrated_polls.load(Relaxed),
    }
}

fn main() {
    let secs = Duration::from_secs(env_u64("PEER_RUN_SECS", 3));
    let rounds = env_u64("PEER_ROUNDS", 4) as usize;
    let rates = [100u32, 1000];
    let mut configs = vec![Config::None];
    for hz in rates {
        configs.extend([Config::Ours(hz), Config::OursSampler(hz)]);
        if std::env::var_os("PEER_ONLY_OURS").is_none() {
            configs.extend([Config::PyroRequest(hz), Config::PyroPoll(hz)]);
        }
    }
    // `PEER_CONFIGS=none,ours-100` keeps only the named configurations (for `perf`).
    if let Ok(keep) = std::env::var("PEER_CONFIGS") {
        let keep: Vec<&str> = keep.split(',').map(str::trim).collect();
        configs.retain(|c| keep.contains(&c.key().as_str()));
    }
    eprintln!(
        "overhead: {} configs x {rounds} rounds x 2 workloads x {secs:?}, load {}",
        configs.len(),
        load()
    );
    let shapes: Vec<_> = [LONG, SHORT]
        .into_iter()
        .filter(|s| {
            std::env::var("PEER_SHAPES").map_or(true, |want| s.name.starts_with(want.as_str()))
        })
        .collect();
    for shape in shapes {
        // Per config: ratios to the round's baseline, thread fractions, handler fractions.
        let mut ratios: BTreeMap<Config, Vec<f64>> = BTreeMap::new();
        let mut cpu_ratios: BTreeMap<Config, Vec<f64>> = BTreeMap::new();
        let mut threads: BTreeMap<Config, Vec<f64>> = BTreeMap::new();
        let mut handlers: BTreeMap<Config, Vec<f64>> = BTreeMap::new();
        let mut polls_per_sec = Vec::new();
        let loads_start = load();
        for round in 0..rounds {
            let mut order = configs.clone();
            order.rotate_left(round % configs.len());
            let mut results: HashMap<Config, Outcome> = HashMap::new();
            for &config in &order {
                let outcome = measure(config, shape, secs);
                eprintln!(
                    "  {} round {round}: {:<36} {:>14.0} units/s, {:>14.0} units/cpu-s, threads {:.4}%{}, polls {} (migrated {}), load {}",
                    shape.name,
                    config.name(),
                    outcome.units_per_sec,
                    outcome.units_per_cpu_sec,
                    outcome.threads * 100.0,
                    outcome
                        .handler
                        .map(|h| format!(", handler {:.4}%", h * 100.0))
                        .unwrap_or_default(),
                    outcome.polls,
                    outcome.migrated,
                    load()
                );
                results.insert(config, outcome);
            }
            // Without the baseline (`PEER_CONFIGS` left it out) the ratios are raw rates.
            let none = results.get(&Config::None);
            let base = none.map_or(1.0, |o| o.units_per_sec);
            let cpu_base = none.map_or(1.0, |o| o.units_per_cpu_sec);
            if let Some(none) = none {
                polls_per_sec.push(none.polls as f64 / secs.as_secs_f64());
            }
            for (config, o) in &results {
                ratios
                    .entry(*config)
                    .or_default()
                    .push(o.units_per_sec / base);
                cpu_ratios
                    .entry(*config)
                    .or_default()
                    .push(o.units_per_cpu_sec / cpu_base);
                threads.entry(*config).or_default().push(o.threads);
                if let Some(h) = o.handler {
                    handlers.entry(*config).or_default().push(h);
                }
            }
        }
        let (pps, _, _) = median_min_max(&mut polls_per_sec);
        println!(
            "\n## {} — {WORKERS} workers, {rounds} rounds x {secs:?}, ~{pps:.0} polls/s bare, load {} -> {}",
            shape.name,
            loads_start,
            load()
        );
        println!("| configuration | work per CPU-second vs none: median (min-max) | wall throughput vs none: median (min-max) | profiler threads CPU: median (max) | handler CPU: median (max) |");
        println!("|---|---|---|---|---|");
        for config in &configs {
            let (m, lo, hi) = median_min_max(ratios.get_mut(config).unwrap());
            let (cm, clo, chi) = median_min_max(cpu_ratios.get_mut(config).unwrap());
            let (tm, _, tmax) = median_min_max(threads.get_mut(config).unwrap());
            let h = handlers
                .get_mut(config)
                .map(|v| {
                    let (hm, _, hmax) = median_min_max(v);
                    format!("{:.3}% ({:.3}%)", hm * 100.0, hmax * 100.0)
                })
                .unwrap_or_else(|| "-".into());
            println!(
                "| {} | {cm:.3} ({clo:.3}-{chi:.3}) | {:.3} ({:.3}-{:.3}) | {:.3}% ({:.3}%) | {h} |",
                config.name(),
                m,
                lo,
                hi,
                tm * 100.0,
                tmax * 100.0
            );
        }
    }
}
