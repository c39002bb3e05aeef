//! The HTTP service and its load, shared by the release test service (`src/bin/service.rs`)
//! and the crate's own `tests/symbolize_service.rs` (which runs it in its debug test
//! binary): an axum app on 127.0.0.1 with span-profiler's tower layer, and an in-process
//! hyper client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use span_profiler::ProfileLayer;

/// Concurrent clients of [`load`].
pub const CLIENTS: usize = 16;

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

/// Serves the app on `server` (build the layer after setting the global tracer
/// provider); returns its address.
pub fn serve(server: &tokio::runtime::Runtime) -> std::io::Result<SocketAddr> {
    let app: Router = Router::new()
        .route("/report/{id}", get(report))
        .route("/health", get(health))
        .layer(ProfileLayer::new());
    server.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    })
}

/// Requests answered by [`CLIENTS`] concurrent clients until `until`: three reports to
/// one health check.
pub async fn load(addr: SocketAddr, until: Instant) -> u64 {
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

/// Serves the app on a 4-worker runtime (its threads armed as they start when
/// `arm_threads`) and loads it from a 2-worker runtime for `duration`; returns the
/// requests answered.
pub fn serve_under_load(duration: Duration, arm_threads: bool) -> std::io::Result<u64> {
    let mut server = tokio::runtime::Builder::new_multi_thread();
    server.worker_threads(4).enable_all();
    if arm_threads {
        server.on_thread_start(span_profiler::arm_current_thread);
    }
    let server = server.build()?;
    let addr = serve(&server)?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok(clients.block_on(load(addr, Instant::now() + duration)))
}

/// A `kB` field of `/proc/self/status` (`VmHWM:`, `RssAnon:`, ...), in KiB.
pub fn status_kib(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
