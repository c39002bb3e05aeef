//! The release test service: an axum server on 127.0.0.1 with span-profiler's tower layer
//! and an OpenTelemetry SDK tracer provider wrapped in `ProfilingTracerProvider` (each
//! request a local root span with its own labels), under load from an in-process hyper
//! client, with or without the profiler.
//!
//! Usage: `service profiled <output dir> <windows>` or `service bare - <windows>`. It
//! serves `<windows>` one-second windows of load (plus half a window), stops the profiler
//! (which writes the last window), and prints one line:
//! `RESULT requests=.. hwm_kib=.. rss_anon_kib=.. rss_file_kib=.. files=.. symbolizer=..`
//! where `hwm_kib` is the process's peak resident set (`VmHWM`, mapped files included).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use span_profiler::{ProfileLayer, Profiler, ProfilingTracerProvider};

const WINDOW: Duration = Duration::from_secs(1);
const CLIENTS: usize = 16;

/// A route with real work in generic, inlined code: sorting, hashing and formatting.
async fn report(UrlPath(id): UrlPath<u64>) -> String {
    let mut rows: Vec<(u64, String)> = (0..2_000u64)
        .map(|i| (i.wrapping_mul(id | 1) % 1_009, format!("row-{i}")))
        .collect();
    rows.sort();
    tokio::task::yield_now().await;
    let mut sums = std::collections::BTreeMap::new();
    for (k, v) in &rows {
        *sums.entry(k % 17).or_insert(0usize) += v.len();
    }
    format!("{id}: {sums:?}")
}

async fn health() -> &'static str {
    "ok"
}

/// Requests answered by `CLIENTS` concurrent clients until `until`.
async fn load(addr: SocketAddr, until: Instant) -> u64 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                let uri = match n % 4 {
                    0 => format!("http://{addr}/health"),
                    _ => format!("http://{addr}/report/{}", c as u64 * 1_000 + n),
                };
                let Ok(req) = http::Request::get(uri).body(Empty::new()) else {
                    continue;
                };
                if let Ok(res) = client.request(req).await {
                    let _ = res.into_body().collect().await;
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total
}

/// A `kB` field of `/proc/self/status`, in KiB.
fn status_kib(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: service profiled|bare <output dir> <windows>";
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(usage)?;
    let out = args.next().ok_or(usage)?;
    let windows: u32 = args.next().ok_or(usage)?.parse()?;
    let profiler = match mode.as_str() {
        "profiled" => Some(
            Profiler::builder()
                .application_name("release-test-service")
                .upload_interval(WINDOW)
                .output_dir(&out)
                .start()?,
        ),
        "bare" => None,
        other => return Err(format!("unknown mode `{other}`; {usage}").into()),
    };
    let sdk = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    opentelemetry::global::set_tracer_provider(ProfilingTracerProvider::new(sdk));
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .on_thread_start(span_profiler::arm_current_thread)
        .enable_all()
        .build()?;
    let app: Router = Router::new()
        .route("/report/{id}", get(report))
        .route("/health", get(health))
        .layer(ProfileLayer::new());
    let addr = server.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok::<_, std::io::Error>(addr)
    })?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let until = Instant::now() + WINDOW * windows + WINDOW / 2;
    let requests = clients.block_on(load(addr, until));
    let (files, symbolizer) = match profiler {
        Some(p) => {
            let report = p.stop()?;
            let unlabelled = report.stats.otel.unlabelled_requests;
            if unlabelled > 0 {
                return Err(format!("{unlabelled} requests were served without labels").into());
            }
            (
                report.files_written,
                format!("{:?}", report.stats.symbolizer),
            )
        }
        None => (0, "none".into()),
    };
    let status = std::fs::read_to_string("/proc/self/status")?;
    println!(
        "RESULT requests={requests} hwm_kib={} rss_anon_kib={} rss_file_kib={} files={files} symbolizer={symbolizer}",
        status_kib(&status, "VmHWM:"),
        status_kib(&status, "RssAnon:"),
        status_kib(&status, "RssFile:"),
    );
    Ok(())
}
