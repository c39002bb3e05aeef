//! Shared parts of the peer comparisons (see `benches/README.md` in the repository root):
//! a CPU-bound Tokio workload whose work is counted in fixed units, per-thread and
//! process CPU clocks, `/proc` readings, and a capture of pyroscope-rs reports.
//!
//! This crate is outside the workspace's `default-members`: pprof-rs (inside pyroscope-rs)
//! installs its own SIGPROF handler, so it never links into the main crate's tests.

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pyroscope::backend::{pprof_backend, BackendConfig, PprofConfig, Report};
use pyroscope::pyroscope::{PyroscopeAgentBuilder, PyroscopeAgentRunning};
use pyroscope::PyroscopeAgent;

/// One unit of CPU work (a dependent multiply-xor chain the optimiser cannot fold).
#[inline(never)]
pub fn spin_units(units: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    for i in 0..units {
        x = black_box(x.rotate_left(7) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    x
}

/// Work units per microsecond on this machine (measured once, on an idle-ish thread).
pub fn units_per_us() -> f64 {
    static UNITS: OnceLock<f64> = OnceLock::new();
    *UNITS.get_or_init(|| {
        spin_units(1_000_000, 1);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = thread_cpu_ns();
            spin_units(2_000_000, 3);
            best = best.min((thread_cpu_ns() - start) as f64);
        }
        2_000_000.0 / (best / 1_000.0)
    })
}

/// A small xorshift generator (deterministic per seed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Yields once (the task goes back to a run queue, where another worker may steal it).
pub async fn yield_now() {
    tokio::task::yield_now().await
}

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(0)
}

/// CPU time of the whole process, ns.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or(0)
}

/// CPU time of thread `tid` of this process, ns (`None` once it exited). Uses the
/// kernel's thread CPU clock id, as `pthread_getcpuclockid` builds it:
/// `(~tid << 3) | CPUCLOCK_PERTHREAD_MASK | CPUCLOCK_SCHED`.
pub fn tid_cpu_ns(tid: i32) -> Option<u64> {
    clock_ns(((!tid) << 3) | 6)
}

fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Threads of this process: `(tid, name)` (names as the kernel keeps them, at most 15
/// bytes).
pub fn tasks() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: i32 = e.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
        Some((tid, name.trim_end().to_owned()))
    })
    .collect()
}

/// CPU time of every live thread, by tid.
pub fn cpu_by_tid() -> HashMap<i32, (String, u64)> {
    tasks()
        .into_iter()
        .filter_map(|(tid, name)| Some((tid, (name, tid_cpu_ns(tid)?))))
        .collect()
}

/// Resident set size, KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS")
}

/// One `/proc/self/status` field in KiB (`VmRSS`, `RssAnon`, `VmHWM`, ...), 0 if absent.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The 1-minute load average and the kernel's tick, for the report lines.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Median, minimum and maximum of `values` (sorted in place).
pub fn median_min_max(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

// ---------------------------------------------------------------------------------
// pyroscope-rs

/// Reports pyroscope-rs handed to its `func` hook (before encoding an upload).
static CAPTURED: Mutex<Vec<Report>> = Mutex::new(Vec::new());

fn capture(report: Report) -> Report {
    CAPTURED.lock().unwrap().push(report.clone());
    report
}

fn pass(report: Report) -> Report {
    report
}

/// Takes the reports captured so far.
pub fn take_captured() -> Vec<Report> {
    std::mem::take(&mut *CAPTURED.lock().unwrap())
}

/// Starts pyroscope-rs with its pprof-rs backend at `rate_hz`, as its README shows, with
/// `upload_interval` windows. Uploads go to a closed loopback port (they fail fast and
/// are logged); every report is captured first through the `func` hook.
pub fn start_pyroscope(
    rate_hz: u32,
    upload_interval: Duration,
) -> PyroscopeAgent<PyroscopeAgentRunning> {
    start_pyroscope_with(rate_hz, upload_interval, true)
}

/// [`start_pyroscope`], with `capture = false` keeping no reports (for memory readings:
/// captured reports would count against pyroscope-rs).
pub fn start_pyroscope_with(
    rate_hz: u32,
    upload_interval: Duration,
    capture_reports: bool,
) -> PyroscopeAgent<PyroscopeAgentRunning> {
    let backend = pprof_backend(
        PprofConfig {
            sample_rate: rate_hz,
        },
        BackendConfig::default(),
    );
    PyroscopeAgentBuilder::new(
        "http://127.0.0.1:9",
        "peer-bench",
        rate_hz,
        "pyroscope-rs",
        "2.1.5",
        backend,
    )
    .upload_interval(upload_interval)
    .func(if capture_reports { capture } else { pass })
    .build()
    .expect("pyroscope agent builds")
    .start()
    .expect("pyroscope agent starts")
}

/// Stops and shuts the agent down; returns the reports of the whole session.
pub fn stop_pyroscope(agent: PyroscopeAgent<PyroscopeAgentRunning>) -> Vec<Report> {
    let ready = agent.stop().expect("pyroscope agent stops");
    ready.shutdown();
    take_captured()
}

/// Sum of sample counts of `reports`, and the counts per value of tag `key` (`""` for
/// samples without it) for the samples whose stack holds a function containing `marker`
/// (`None`: every sample).
pub fn pyroscope_counts(
    reports: &[Report],
    key: &str,
    marker: Option<&str>,
) -> (u64, HashMap<String, u64>) {
    let mut total = 0;
    let mut by_tag = HashMap::new();
    for report in reports {
        let report_tag: Vec<&str> = report
            .metadata
            .tags
            .iter()
            .filter(|t| t.key == key)
            .map(|t| t.value.as_str())
            .collect();
        let report_tag = (!report_tag.is_empty()).then(|| report_tag.join("+"));
        for (stack, count) in report.iter() {
            let count = *count as u64;
            total += count;
            if let Some(marker) = marker {
                let hit = stack
                    .frames
                    .iter()
                    .any(|f| f.name.as_deref().is_some_and(|n| n.contains(marker)));
                if !hit {
                    continue;
                }
            }
            // A thread can hold several values of one key at once (tags added by
            // requests that are still running elsewhere): they are joined with `+`.
            let values: Vec<&str> = stack
                .metadata
                .tags
                .iter()
                .filter(|t| t.key == key)
                .map(|t| t.value.as_str())
                .collect();
            let tag = if values.is_empty() {
                report_tag.clone().unwrap_or_default()
            } else {
                values.join("+")
            };
            *by_tag.entry(tag).or_insert(0) += count;
        }
    }
    (total, by_tag)
}

/// pyroscope-rs's thread-tag functions (from `tag_wrapper`), shareable between tasks.
pub type TagFn = Arc<dyn Fn(String, String) -> pyroscope::Result<()> + Send + Sync>;

/// `(add, remove)` from the agent's `tag_wrapper`.
pub fn tag_fns(agent: &PyroscopeAgent<PyroscopeAgentRunning>) -> (TagFn, TagFn) {
    let (add, remove) = agent.tag_wrapper();
    (Arc::new(add), Arc::new(remove))
}

pin_project_lite::pin_project! {
    /// Sets a pyroscope-rs thread tag around every poll of the inner future (the only
    /// way thread tags can follow a task that moves between threads).
    pub struct TagPerPoll<F> {
        #[pin]
        inner: F,
        key: &'static str,
        value: &'static str,
        add: TagFn,
        remove: TagFn,
    }
}

impl<F> TagPerPoll<F> {
    /// Wraps `inner`.
    pub fn new(inner: F, key: &'static str, value: &'static str, tags: &(TagFn, TagFn)) -> Self {
        Self {
            inner,
            key,
            value,
            add: tags.0.clone(),
            remove: tags.1.clone(),
        }
    }
}

impl<F: Future> Future for TagPerPoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _ = (this.add)(this.key.to_string(), this.value.to_string());
        let out = this.inner.poll(cx);
        let _ = (this.remove)(this.key.to_string(), this.value.to_string());
        out
    }
}

// ---------------------------------------------------------------------------------
// The workload

/// Poll lengths and request shape of one workload.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Name in reports.
    pub name: &'static str,
    /// Shortest and longest poll, µs of CPU work.
    pub poll_us: (u64, u64),
    /// Polls per request (a yield between polls).
    pub polls: u32,
    /// Tasks per worker thread, each running requests back to back.
    pub tasks_per_worker: usize,
}

/// Long polls: 0.5-2 ms.
pub const LONG: Shape = Shape {
    name: "long polls (0.5-2 ms)",
    poll_us: (500, 2000),
    polls: 4,
    tasks_per_worker: 8,
};

/// Short polls: 20-80 µs.
pub const SHORT: Shape = Shape {
    name: "short polls (20-80 us)",
    poll_us: (20, 80),
    polls: 10,
    tasks_per_worker: 8,
};

/// Counters of one run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Work units done.
    pub units: AtomicU64,
    /// Polls done.
    pub polls: AtomicU64,
    /// Requests done.
    pub requests: AtomicU64,
    /// Polls that ran on another thread than the request's previous poll.
    pub migrated_polls: AtomicU64,
}

thread_local! {
    static THREAD_KEY: u8 = const { 0 };
}

fn thread_key() -> usize {
    THREAD_KEY.with(|k| k as *const u8 as usize)
}

/// The CPU of route `alpha` (a distinct symbol for attribution).
#[inline(never)]
pub fn work_alpha(units: u64, seed: u64) -> u64 {
    black_box(spin_units(black_box(units), seed))
}

/// The CPU of route `beta` (a distinct symbol for attribution).
#[inline(never)]
pub fn work_beta(units: u64, seed: u64) -> u64 {
    black_box(spin_units(black_box(units), seed ^ 0x5555))
}

/// Route of request `i`: `alpha` or `beta`.
pub fn route_of(i: u64) -> &'static str {
    if i.is_multiple_of(2) {
        "alpha"
    } else {
        "beta"
    }
}

/// One request: `shape.polls` polls of CPU work (route `route`'s function), a yield
/// after each, and a 50 µs timer sleep every fourth poll when `migrate` (timer wakeups
/// land on whichever worker drives the timer, so requests move between threads).
pub async fn request(shape: Shape, route: &'static str, seed: u64, migrate: bool, c: &Counters) {
    let mut rng = Rng::new(seed);
    let per_us = units_per_us();
    let mut last_thread = thread_key();
    for p in 0..shape.polls {
        let now = thread_key();
        if p > 0 && now != last_thread {
            c.migrated_polls.fetch_add(1, Relaxed);
        }
        last_thread = now;
        let units = (rng.range(shape.poll_us.0, shape.poll_us.1) as f64 * per_us) as u64;
        if route == "alpha" {
            work_alpha(units, seed);
        } else {
            work_beta(units, seed);
        }
        c.units.fetch_add(units, Relaxed);
        c.polls.fetch_add(1, Relaxed);
        if migrate && p % 4 == 3 {
            tokio::time::sleep(Duration::from_micros(50)).await;
        } else {
            yield_now().await;
        }
    }
    c.requests.fetch_add(1, Relaxed);
}

/// How each request is wrapped.
#[derive(Clone)]
pub enum Wrap {
    /// Bare.
    None,
    /// `Profiled<F>` with a fresh span id per request and the route as span name.
    Ours,
    /// pyroscope-rs tag added at the start of the request, removed at its end (on
    /// whichever threads those happen), as in pyroscope-rs's examples.
    PyroscopePerRequest(TagFn, TagFn),
    /// pyroscope-rs tag around every poll ([`TagPerPoll`]).
    PyroscopePerPoll(TagFn, TagFn),
}

/// Runs `shape` on `rt` for `duration`, wrapping requests per `wrap`; returns the
/// counters (work units as read at the stop, the rest after the tasks finished) and the
/// wall time until the stop.
pub fn run(
    rt: &tokio::runtime::Runtime,
    workers: usize,
    shape: Shape,
    wrap: &Wrap,
    migrate: bool,
    duration: Duration,
) -> (Arc<Counters>, Duration) {
    use span_profiler::{Labels, ProfiledExt};
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let start = Instant::now();
    let handles: Vec<_> = (0..workers * shape.tasks_per_worker)
        .map(|t| {
            let (c, stop, next_id, wrap) = (
                counters.clone(),
                stop.clone(),
                next_id.clone(),
                wrap.clone(),
            );
            rt.spawn(async move {
                while !stop.load(Relaxed) {
                    let id = next_id.fetch_add(1, Relaxed);
                    let route = route_of(id);
                    let seed = id ^ (t as u64) << 32;
                    let req = request(shape, route, seed, migrate, &c);
                    match &wrap {
                        Wrap::None => req.await,
                        Wrap::Ours => req.with_labels(Labels::span(id, route)).await,
                        Wrap::PyroscopePerRequest(add, remove) => {
                            let _ = add("route".into(), route.into());
                            req.await;
                            let _ = remove("route".into(), route.into());
                        }
                        Wrap::PyroscopePerPoll(add, remove) => {
                            TagPerPoll::new(req, "route", route, &(add.clone(), remove.clone()))
                                .await
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Relaxed);
    let elapsed = start.elapsed();
    let units_at_stop = counters.units.load(Relaxed);
    rt.block_on(async {
        for h in handles {
            let _ = h.await;
        }
    });
    counters.units.store(units_at_stop, Relaxed);
    (counters, elapsed)
}

/// A multi-thread runtime with `workers` workers.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .expect("runtime builds")
}
