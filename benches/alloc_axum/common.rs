//! The allocation-heavy axum service of `alloc_axum_system` and `alloc_axum_profiled`
//! (two binaries: the global allocator is chosen at build time). Each run serves
//! `GET /items` (64 strings of 32-200 bytes built, joined into a response and freed: about
//! 130 allocations and 12 KiB per request) to 8 keep-alive loopback clients on a 2-worker
//! runtime for `ALLOC_AXUM_SECONDS` (default 3) after 2 s of warm-up, and prints requests
//! per second. Both binaries run a profiler (CPU at 100 Hz, files), so the difference is
//! the allocation profiling alone; with `System` the profiler records no allocations.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

async fn items() -> String {
    let list: Vec<String> = (0..64u64)
        .map(|i| format!("{i:04}:{}", "x".repeat(32 + (i as usize * 37) % 168)))
        .collect();
    list.join("\n")
}

/// Starts a profiler (default rates, files in a temporary directory), serves and loads
/// for the configured time, stops the profiler; returns requests per second and the
/// allocations sampled.
pub fn run() -> (f64, u64) {
    let dir = std::env::temp_dir().join(format!(
        "span-profiler-bench-alloc-axum-{}",
        std::process::id()
    ));
    let profiler = span_profiler::Profiler::builder()
        .application_name("bench-alloc-axum")
        .output_dir(&dir)
        .start()
        .expect("start");
    let rate = serve();
    let report = profiler.stop().expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
    (rate, report.stats.alloc.sampled)
}

fn serve() -> f64 {
    let seconds: f64 = std::env::var("ALLOC_AXUM_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/items", get(items));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let url: hyper::Uri = format!("http://{addr}/items").parse().unwrap();
        let done = Arc::new(AtomicU64::new(0));
        // Warm-up: connections, arenas, the profiler's unwind tables and first scans.
        let warm_until = Instant::now() + Duration::from_secs(2);
        let until = warm_until + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (client, url, done) = (client.clone(), url.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    let response = client.get(url.clone()).await.expect("request");
                    let body = response.into_body().collect().await.expect("body");
                    assert!(body.to_bytes().len() > 6000);
                    if now >= warm_until {
                        done.fetch_add(1, Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        done.load(Relaxed) as f64 / seconds
    })
}
