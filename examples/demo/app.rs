//! The demo's service, load generator and run: an axum service with four routes of
//! different CPU and allocation character, each request an OpenTelemetry server span
//! whose labels the profiler puts on every CPU sample and every sampled allocation
//! (`ProfiledAllocator` is this program's global allocator), driven over loopback by an
//! in-process load generator. `main.rs` and `tests/demo.rs` both call [`run`].

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use span_profiler::alloc::ProfiledAllocator;
use span_profiler::{Labels, ProfileLayer, ProfiledExt, Profiler, ProfilingTracerProvider};

/// Every allocation of the demo goes through the profiled allocator: a per-thread byte
/// countdown picks samples, each recorded with the request's labels and its stack.
#[global_allocator]
static ALLOC: ProfiledAllocator = ProfiledAllocator::system();

/// Mean bytes between sampled allocations (the default is 512 KiB; the demo's runs are
/// short, so it samples finer for tighter per-route numbers).
pub const ALLOC_SAMPLE_BYTES: u64 = 64 * 1024;

/// The application name (Pyroscope `service_name`, OpenTelemetry `service.name`) unless
/// `PYROSCOPE_APPLICATION_NAME` or `OTEL_SERVICE_NAME` says otherwise.
pub const APP_NAME: &str = "span-profiler-demo";

/// The routes, as their spans are named (`{METHOD} {route template}`).
pub const ROUTES: [&str; 4] = [
    "GET /health",
    "GET /report/{id}",
    "GET /fanout",
    "GET /search",
];

/// What the CPU-heavy route (`GET /report/{id}`) burns its CPU in.
#[allow(dead_code)] // read by tests/demo.rs
pub const HEAVY_FUNCTION: &str = "render_report";

/// What the allocation-heavy route (`GET /report/{id}`, 512 KiB of pages per request)
/// allocates in.
#[allow(dead_code)] // read by tests/demo.rs
pub const ALLOCATING_FUNCTION: &str = "paginate_report";

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the load generator sends requests.
    pub duration: Duration,
    /// Where profiles (and `flamegraphs/`) are written when nothing is uploaded.
    pub out_dir: PathBuf,
    /// Concurrent client connections.
    pub clients: usize,
    /// Large reports, spread over the run, each burning `large_report_cpu`.
    pub large_reports: usize,
    /// CPU time of one large report (at least 0.5 s: worth a flame graph of its own).
    pub large_report_cpu: Duration,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Profile window length (one file per window).
    pub window: Duration,
    /// Read the `PYROSCOPE_*` variables (`ProfilerBuilder::from_env()`): uploads when
    /// `PYROSCOPE_SERVER_ADDRESS` is set.
    pub use_env: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Config {
    /// The demo's settings: `DEMO_SECONDS` (or the first argument) seconds of load,
    /// default 20; `DEMO_OUT_DIR`, default `./profiles`.
    pub fn from_env_and_args() -> Result<Self, String> {
        let seconds = match std::env::args().nth(1).or_else(|| std::env::var("DEMO_SECONDS").ok()) {
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && (1.0..=3600.0).contains(s))
                .ok_or_else(|| format!("`{text}` is not a number of seconds between 1 and 3600 (DEMO_SECONDS or the first argument)"))?,
            None => 20.0,
        };
        Ok(Self {
            duration: Duration::from_secs_f64(seconds),
            out_dir: std::env::var_os("DEMO_OUT_DIR")
                .map_or_else(|| "./profiles".into(), PathBuf::from),
            clients: 8,
            large_reports: 3,
            large_report_cpu: Duration::from_millis(600),
            sample_rate: 250,
            window: Duration::from_secs(5),
            use_env: true,
            progress: true,
        })
    }

    /// A short run into `out_dir` for tests: no environment, no progress bar.
    #[allow(dead_code)] // used by tests/demo.rs
    pub fn short(out_dir: impl Into<PathBuf>) -> Self {
        Self {
            duration: Duration::from_secs(5),
            out_dir: out_dir.into(),
            clients: 4,
            large_reports: 3,
            large_report_cpu: Duration::from_millis(500),
            sample_rate: 250,
            window: Duration::from_secs(2),
            use_env: false,
            progress: false,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    /// The application name profiles were written or uploaded under.
    pub app_name: String,
    /// Where profiles were uploaded (`None`: written to `Config::out_dir`).
    pub server: Option<String>,
    /// Uploaded as OTLP profiles (`SPAN_PROFILER_EXPORTER=otlp`) rather than to Pyroscope's
    /// Push API.
    pub otlp: bool,
    /// Responses per route (index as in [`ROUTES`]).
    pub responses: [u64; 4],
    /// Failed requests (transport errors or non-200 statuses).
    pub errors: u64,
    /// CPU profile files written by this run (files mode).
    pub files: Vec<PathBuf>,
    /// Allocation profile files (`*.alloc.pb.gz`) written by this run (files mode).
    pub alloc_files: Vec<PathBuf>,
    /// CPU the profiler's samples covered, of the process CPU time (when known).
    pub coverage: Option<f64>,
    /// Upload mode: profiles delivered and lost.
    pub uploads: Option<(u64, u64)>,
}

/// Runs the service and the load, stops the profiler (flushing its last window) and
/// returns what happened. Flame graphs and the table are `report`'s job.
pub fn run(config: &Config) -> Result<Outcome, Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    // `SPAN_PROFILER_EXPORTER=otlp`: OTLP profiles to the endpoint the OpenTelemetry
    // variables name (what `from_env()` reads, worked out here only to print it).
    let otlp = config.use_env
        && env("SPAN_PROFILER_EXPORTER").is_some_and(|e| e.trim().eq_ignore_ascii_case("otlp"));
    let server = match (config.use_env, otlp) {
        (false, _) => None,
        (true, true) => Some(
            env("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT").unwrap_or_else(|| {
                let base = env("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .or_else(|| env("PYROSCOPE_SERVER_ADDRESS"))
                    .unwrap_or_else(|| "http://localhost:4318".into());
                format!(
                    "{}{}",
                    base.trim().trim_end_matches('/'),
                    span_profiler::OTLP_PROFILES_PATH
                )
            }),
        ),
        (true, false) => env("PYROSCOPE_SERVER_ADDRESS"),
    };
    let app_name = match config.use_env {
        true => env("PYROSCOPE_APPLICATION_NAME")
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| APP_NAME.into()),
        false => APP_NAME.into(),
    };
    let mut builder = match config.use_env {
        true => span_profiler::ProfilerBuilder::from_env(),
        false => Profiler::builder(),
    };
    builder = builder
        .application_name(&app_name)
        .alloc_sample_bytes(ALLOC_SAMPLE_BYTES);
    if env("PYROSCOPE_SAMPLE_RATE").is_none() || !config.use_env {
        builder = builder.sample_rate(config.sample_rate);
    }
    if server.is_none() {
        std::fs::create_dir_all(&config.out_dir)?;
        builder = builder
            .output_dir(&config.out_dir)
            .upload_interval(config.window);
    }
    let profiler = builder.start()?;

    // Spans: an SDK provider (no exporter here: export to Tempo with opentelemetry-otlp
    // in a real service) wrapped so that each request's root span gets profile labels.
    let sdk = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(app_name.clone())
                .build(),
        )
        .build();
    let provider = ProfilingTracerProvider::new(sdk);
    let layer = ProfileLayer::with_tracer(provider.tracer("span-profiler-demo"));

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("demo-server")
        .enable_all()
        .build()?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = Router::new()
        .route("/health", get(health))
        .route("/report/{id}", get(report))
        .route("/fanout", get(fanout))
        .route("/search", get(search))
        .layer(layer);
    let serving = server_rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let load = Arc::new(Load::default());
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    client_rt.block_on(generate_load(addr, config, load.clone()));

    let _ = stop_tx.send(());
    server_rt.block_on(serving)??;
    drop(server_rt);
    let coverage = profiler.stats().coverage();
    let stopped = profiler.stop()?;
    if let Err(err) = provider.into_inner().shutdown() {
        eprintln!("tracer provider shutdown: {err}");
    }
    let uploads = stopped.upload.as_ref().map(|u| (u.delivered, u.lost));

    let (files, alloc_files) = match server {
        Some(_) => (Vec::new(), Vec::new()),
        None => own_files(config, &app_name)?,
    };
    Ok(Outcome {
        app_name,
        server,
        otlp,
        responses: std::array::from_fn(|i| load.responses[i].load(Relaxed)),
        errors: load.errors.load(Relaxed),
        files,
        alloc_files,
        coverage,
        uploads,
    })
}

/// The profile files this process wrote: CPU (`<app>-<pid>-<ms>.pb.gz`) and allocations
/// (`<app>-<pid>-<ms>.alloc.pb.gz`). Earlier runs' files in the same directory are left
/// alone and not counted.
fn own_files(config: &Config, app_name: &str) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let prefix = format!("{}-{}-", app_name.replace('/', "_"), std::process::id());
    let (mut cpu, mut alloc) = (Vec::new(), Vec::new());
    for path in std::fs::read_dir(&config.out_dir)?.filter_map(|e| e.ok().map(|e| e.path())) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with(&prefix) {
            continue;
        }
        if name.ends_with(".alloc.pb.gz") {
            alloc.push(path);
        } else if name.ends_with(".pb.gz") {
            cpu.push(path);
        }
    }
    cpu.sort();
    alloc.sort();
    Ok((cpu, alloc))
}

// ---------------------------------------------------------------------------------------
// The routes. Each burns CPU in its own `#[inline(never)]` function, so the flame graphs
// and the table can tell them apart.

/// Cheap: a quick dependency check (about 200 µs of CPU, no allocation but the response).
async fn health() -> String {
    format!("ok {}\n", check_dependencies() % 10)
}

/// CPU-heavy and allocation-heavy: renders a report for about 8 ms of CPU and lays it
/// out in 512 KiB of pages. With `?size=large&cpu_ms=N` (the load generator's large
/// reports) it takes `N` ms of CPU, on the blocking pool (`span_profiler::spawn_blocking`
/// carries the request's labels there).
async fn report(Path(id): Path<u64>, RawQuery(query): RawQuery) -> String {
    let query = query.unwrap_or_default();
    let large_ms = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("cpu_ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| query.contains("size=large"));
    let digest = match large_ms {
        Some(ms) => {
            span_profiler::spawn_blocking(move || render_report(id, Duration::from_millis(ms)))
                .await
                .unwrap_or_default()
        }
        None => render_report(id, Duration::from_millis(8)),
    };
    let pages = paginate_report(digest);
    format!("report {id}: {digest:016x}, {pages} pages\n")
}

/// Spawns tasks: four checksum parts in parallel, each task labelled with the request's
/// labels (`Labels::current()`), since a plain `tokio::spawn` does not inherit them
/// without `--cfg tokio_unstable` task hooks.
async fn fanout() -> String {
    let labels = Labels::current();
    let mut parts = tokio::task::JoinSet::new();
    for part in 0..4u64 {
        parts.spawn(
            async move { checksum_part(part, Duration::from_millis(2)) }
                .with_labels(labels.clone()),
        );
    }
    let mut sum = 0u64;
    while let Some(part) = parts.join_next().await {
        sum ^= part.unwrap_or_default();
    }
    format!("checksum {sum:016x}\n")
}

/// Slow only sometimes: a cheap index lookup, except every tenth request misses the
/// cache, waits 100 ms for a "backend" and rebuilds the index (about 20 ms of CPU).
/// Lookups take about 300 µs of CPU.
async fn search() -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Relaxed);
    let hits = if call % 10 == 9 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rebuild_index(Duration::from_millis(20))
    } else {
        lookup_index(call)
    };
    format!("{hits} hits\n")
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Burns about `cpu` of this thread's CPU time in the calling function: each burner
/// below expands it inline with its own constant (identical bodies would be folded into
/// one function by the optimiser), so every route's CPU shows up in a function of its own.
macro_rules! burn {
    ($seed:expr, $cpu:expr, $k:literal) => {{
        // Reading the thread's CPU clock is a system call: read it about every 50 µs of
        // work, not every few iterations, or the profile shows mostly `clock_gettime`.
        let start = thread_cpu();
        let (mut last, mut batch) = (start, 256u64);
        let mut x: u64 = $seed | 1;
        loop {
            for i in 0..batch {
                x = std::hint::black_box(x.rotate_left($k) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
            let now = thread_cpu();
            if now.saturating_sub(start) >= $cpu {
                break;
            }
            if now.saturating_sub(last) < Duration::from_micros(50) {
                batch *= 2;
            }
            last = now;
        }
        x
    }};
}

/// "Checks the dependencies" of the service: about 200 µs of CPU.
#[inline(never)]
fn check_dependencies() -> u64 {
    burn!(3, Duration::from_micros(200), 3)
}

/// "Lays out" a report: `cpu` of CPU time.
#[inline(never)]
pub fn render_report(id: u64, cpu: Duration) -> u64 {
    burn!(id, cpu, 5)
}

/// Checksums one part of a fan-out request.
#[inline(never)]
fn checksum_part(part: u64, cpu: Duration) -> u64 {
    burn!(part, cpu, 7)
}

/// Rebuilds the search index after a cache miss.
#[inline(never)]
fn rebuild_index(cpu: Duration) -> u64 {
    burn!(7, cpu, 11) % 100
}

/// Looks a query up in the index: about 300 µs of CPU, and a 4 KiB result list.
#[inline(never)]
fn lookup_index(call: u64) -> u64 {
    let mut results: Vec<u64> = std::hint::black_box(Vec::with_capacity(512));
    results.push(burn!(call, Duration::from_micros(300), 13) % 100);
    results[0]
}

/// Lays a report out in pages: 8 pages of 64 KiB, freed when the response is built.
#[inline(never)]
fn paginate_report(digest: u64) -> usize {
    let mut pages: Vec<Vec<u8>> = Vec::with_capacity(8);
    for i in 0..8u8 {
        let mut page = std::hint::black_box(vec![0u8; 64 * 1024]);
        page[0] = i ^ digest as u8;
        pages.push(page);
    }
    std::hint::black_box(&pages).len()
}

// ---------------------------------------------------------------------------------------
// The load generator: `clients` keep-alive HTTP/1.1 connections in a closed loop, plus
// the large reports at evenly spread times.

#[derive(Default)]
struct Load {
    responses: [AtomicU64; 4],
    errors: AtomicU64,
}

async fn generate_load(addr: std::net::SocketAddr, config: &Config, load: Arc<Load>) {
    let start = Instant::now();
    let deadline = start + config.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..config.clients {
        let load = load.clone();
        tasks.spawn(async move {
            let mut rng = client as u64 * 0x9e37_79b9 + 1;
            let mut conn = None;
            while Instant::now() < deadline {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // 35% health, 25% report, 15% fanout, 25% search.
                let (route, path) = match rng % 100 {
                    0..35 => (0, "/health".to_owned()),
                    35..60 => (1, format!("/report/{}", rng % 1000)),
                    60..75 => (2, "/fanout".to_owned()),
                    _ => (3, "/search".to_owned()),
                };
                request(addr, &mut conn, &path, route, &load).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    for k in 0..config.large_reports {
        let load = load.clone();
        let at = start
            + config
                .duration
                .mul_f64((k as f64 + 0.5) / config.large_reports as f64);
        let path = format!(
            "/report/{}?size=large&cpu_ms={}",
            9000 + k,
            config.large_report_cpu.as_millis()
        );
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            request(addr, &mut None, &path, 1, &load).await;
        });
    }
    if config.progress {
        let bar = progress(start, config.duration, load.clone());
        while tasks.join_next().await.is_some() {}
        bar.abort();
        eprintln!();
    } else {
        while tasks.join_next().await.is_some() {}
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One request on the client's connection (opened, or reopened after an error).
async fn request(
    addr: std::net::SocketAddr,
    conn: &mut Option<Sender>,
    path: &str,
    route: usize,
    load: &Load,
) {
    let result = async {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            *conn = Some(sender);
        }
        let sender = conn.as_mut().ok_or("no connection")?;
        sender.ready().await?;
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(req).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if status != http::StatusCode::OK {
            return Err(format!("{path}: {status}").into());
        }
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    match result {
        Ok(()) => {
            load.responses[route].fetch_add(1, Relaxed);
        }
        Err(_) => {
            load.errors.fetch_add(1, Relaxed);
            *conn = None;
        }
    }
}

/// A progress bar on stderr, redrawn every 200 ms (on a terminal; else a line every 5 s).
fn progress(start: Instant, total: Duration, load: Arc<Load>) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mut tick = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tick += 1;
            let elapsed = start.elapsed().min(total);
            let done: u64 = load.responses.iter().map(|r| r.load(Relaxed)).sum();
            let frac = elapsed.as_secs_f64() / total.as_secs_f64().max(1e-9);
            let filled = (frac * 30.0).round() as usize;
            let line = format!(
                "[{}{}] {:>4.1}/{:.0} s  {done} requests  {:.0} req/s",
                "#".repeat(filled),
                "-".repeat(30 - filled.min(30)),
                elapsed.as_secs_f64(),
                total.as_secs_f64(),
                done as f64 / start.elapsed().as_secs_f64().max(1e-9),
            );
            if tty {
                eprint!("\r{line}  ");
                let _ = std::io::stderr().flush();
            } else if tick % 25 == 0 {
                eprintln!("{line}");
            }
        }
    })
}
