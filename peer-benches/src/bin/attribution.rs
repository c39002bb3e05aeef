//! Attribution on a migrating workload: requests of two routes (`alpha`, `beta`), each
//! burning CPU in its own function (`work_alpha`, `work_beta`), interleaved on a
//! 2-worker runtime; every fourth poll ends in a 50 µs timer sleep, so requests move
//! between worker threads. The truth of a sample is the route function on its stack; the
//! profiler's answer is its label.
//!
//! - span-profiler: each request is `.with_labels(Labels::span(id, route))` (as its README
//!   shows); the answer is the `span_name` label in the written pprof files.
//! - pyroscope-rs, as documented: `tag_wrapper()`'s `add_tag("route", route)` at the
//!   request's start and `remove_tag` at its end (thread tags: they stay on the thread
//!   where they were added, whatever runs there next).
//! - pyroscope-rs with a tag around every poll (`TagPerPoll`): correct by construction,
//!   at the cost measured in `overhead`.
//!
//! Reported: of the CPU samples inside `work_alpha`/`work_beta`, the share labelled with
//! the right route, the wrong route, and none. 100 Hz, `PEER_ATTR_SECS` (default 5) per
//! profiler.
//!
//! Run: `CARGO_TARGET_DIR=target/peer cargo run --release -p span-profiler-peer-benches
//! --bin attribution`.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use peer_benches::{
    load, pyroscope_counts, run, runtime, start_pyroscope, stop_pyroscope, tag_fns, Shape, Wrap,
};
use span_profiler::__private::pprof::{decode, samples};
use span_profiler::Profiler;

const WORKERS: usize = 2;
const HZ: u32 = 100;

const MIGRATING: Shape = Shape {
    name: "migrating (0.2-0.5 ms polls, sleep every 4th)",
    poll_us: (200, 500),
    polls: 8,
    tasks_per_worker: 8,
};

/// `(right, wrong, none)` sample weights.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    right: f64,
    wrong: f64,
    none: f64,
}

impl Tally {
    fn add(&mut self, truth: &str, label: &str, weight: f64) {
        if label.is_empty() {
            self.none += weight;
        } else if label == truth {
            self.right += weight;
        } else {
            self.wrong += weight;
        }
    }

    fn row(&self, name: &str, migrated: f64) {
        let total = self.right + self.wrong + self.none;
        println!(
            "| {name} | {:.1}% | {:.1}% | {:.1}% | {:.0} | {:.0}% |",
            self.right / total * 100.0,
            self.wrong / total * 100.0,
            self.none / total * 100.0,
            total,
            migrated * 100.0
        );
    }
}

fn truth(functions: &[String]) -> Option<&'static str> {
    if functions.iter().any(|f| f.contains("work_alpha")) {
        Some("alpha")
    } else if functions.iter().any(|f| f.contains("work_beta")) {
        Some("beta")
    } else {
        None
    }
}

fn ours(secs: Duration) -> (Tally, f64) {
    let dir = std::env::temp_dir().join(format!("peer-attribution-{}", std::process::id()));
    let rt = runtime(WORKERS);
    let profiler = Profiler::builder()
        .application_name("peer-bench")
        .sample_rate(HZ)
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    let (c, _) = run(&rt, WORKERS, MIGRATING, &Wrap::Ours, true, secs);
    profiler.stop().expect("profiler stops");
    let mut tally = Tally::default();
    for entry in std::fs::read_dir(&dir).expect("profile dir") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let profile = decode(&bytes).expect("our pprof decodes");
        for s in samples(&profile) {
            if let Some(t) = truth(&s.functions) {
                let label = s.labels.get("span_name").cloned().unwrap_or_default();
                // CPU ns over the period: weighted samples.
                let weight = s.values.get(1).copied().unwrap_or(0) as f64 / 1e7;
                tally.add(t, &label, weight);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (tally, migrated(&c))
}

fn migrated(c: &peer_benches::Counters) -> f64 {
    let polls = c.polls.load(Relaxed) as f64;
    let requests = c.requests.load(Relaxed) as f64;
    c.migrated_polls.load(Relaxed) as f64 / (polls - requests).max(1.0)
}

fn pyroscope(secs: Duration, per_poll: bool) -> (Tally, f64) {
    let rt = runtime(WORKERS);
    let agent = start_pyroscope(HZ, Duration::from_secs(10));
    let (add, remove) = tag_fns(&agent);
    let wrap = if per_poll {
        Wrap::PyroscopePerPoll(add, remove)
    } else {
        Wrap::PyroscopePerRequest(add, remove)
    };
    let (c, _) = run(&rt, WORKERS, MIGRATING, &wrap, true, secs);
    drop(wrap);
    let reports = stop_pyroscope(agent);
    let mut tally = Tally::default();
    for route in ["alpha", "beta"] {
        let marker = if route == "alpha" {
            "work_alpha"
        } else {
            "work_beta"
        };
        let (_, by_tag): (u64, HashMap<String, u64>) =
            pyroscope_counts(&reports, "route", Some(marker));
        for (label, count) in by_tag {
            tally.add(route, &label, count as f64);
        }
    }
    (tally, migrated(&c))
}

fn main() {
    let secs = Duration::from_secs(
        std::env::var("PEER_ATTR_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    );
    let load_start = load();
    let a = ours(secs);
    let b = pyroscope(secs, false);
    let c = pyroscope(secs, true);
    println!(
        "\n## Attribution — {}, {WORKERS} workers, {HZ} Hz, {secs:?} each, load {load_start} -> {}",
        MIGRATING.name,
        load()
    );
    println!("| profiler | right route | wrong route | no label | samples in route fns | polls that migrated |");
    println!("|---|---|---|---|---|---|");
    a.0.row("span-profiler (`Profiled` per request)", a.1);
    b.0.row("pyroscope-rs, tag per request (documented)", b.1);
    c.0.row("pyroscope-rs, tag per poll", c.1);
}
