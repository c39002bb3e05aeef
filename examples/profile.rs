//! Profiles a small labelled Tokio workload and writes pprof files to `./profiles`.
//!
//! Three kinds of "request" run concurrently on a 4-worker runtime, each labelled with its
//! own span id and a route-like span name, each burning CPU in its own function. After a
//! few seconds the profiler stops, and the example reads its own files back and prints
//! which functions each span name burned in.
//!
//! Run: `cargo run --release --example profile` (then e.g.
//! `go tool pprof -tagfocus=span_name=GET_/search -top profiles/*.pb.gz`).
//! Options: `PROFILE_SECONDS` (default 6).

use std::time::{Duration, Instant};

use span_profiler::flamegraph::{summarize, Profile};
use span_profiler::{Labels, ProfiledExt, Profiler};

#[inline(never)]
fn render_order_page(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| {
        std::hint::black_box(acc.rotate_left(5) ^ i.wrapping_mul(0x9e37))
    })
}

#[inline(never)]
fn search_index(n: u64) -> u64 {
    let mut v: Vec<u64> = (0..n / 8)
        .map(|i| i.wrapping_mul(0x2545_f491) % 10_007)
        .collect();
    v.sort_unstable();
    std::hint::black_box(v.iter().sum())
}

#[inline(never)]
fn checkout_total(n: u64) -> u64 {
    (1..n).fold(1u64, |acc, i| {
        std::hint::black_box(acc.wrapping_mul(i | 1) % 1_000_003)
    })
}

async fn request(route: &'static str, work: u64) -> u64 {
    let mut total = 0;
    for _ in 0..20 {
        total += match route {
            "GET /orders/{id}" => render_order_page(work),
            "GET /search" => search_index(work),
            _ => checkout_total(work),
        };
        tokio::task::yield_now().await;
    }
    total
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::var("PROFILE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let out = std::path::PathBuf::from("./profiles");
    let profiler = Profiler::builder()
        .application_name("profile-example")
        .upload_interval(Duration::from_secs(2))
        .output_dir(&out)
        .start()?;
    println!("profiling a labelled workload for {seconds} s ...");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let requests = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut next_span = 1u64;
        let mut done = 0u64;
        while Instant::now() < deadline {
            let mut batch = Vec::new();
            for (route, work) in [
                ("GET /orders/{id}", 20_000),
                ("GET /search", 40_000),
                ("POST /checkout", 30_000),
            ] {
                let labels = Labels::span(next_span, route);
                next_span += 1;
                batch.push(tokio::spawn(request(route, work).with_labels(labels)));
            }
            for handle in batch {
                handle.await.expect("request");
                done += 1;
            }
        }
        done
    });
    let stats = profiler.stats();
    let report = profiler.stop()?;
    println!(
        "{requests} requests; {} samples; coverage {:.1}%; {} files in {}",
        stats.samples,
        stats.coverage().unwrap_or(0.0) * 100.0,
        report.files_written,
        out.display()
    );

    // Read this run's files back: CPU per span name, requests, hottest function.
    let prefix = format!("profile-example-{}-", std::process::id());
    let mut profiles = Vec::new();
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".pb.gz") {
            profiles.push(Profile::read(&path)?);
        }
    }
    let summary = summarize(&profiles)?;
    println!(
        "\n{:<20} {:>8} {:>8} {:>12}  hottest function",
        "span_name", "requests", "CPU ms", "CPU/request"
    );
    for span in &summary.spans {
        let per_request = span.cpu_per_request().map_or("-".to_owned(), |d| {
            format!("{:.2} ms", d.as_secs_f64() * 1e3)
        });
        println!(
            "{:<20} {:>8} {:>8} {per_request:>12}  {}",
            span.span_name,
            span.requests,
            span.cpu.as_millis(),
            span.hottest_function.as_deref().unwrap_or("")
        );
    }
    println!(
        "{:<20} {:>8} {:>8}",
        "(unlabelled)",
        "",
        summary.unlabelled_cpu.as_millis()
    );
    Ok(())
}
