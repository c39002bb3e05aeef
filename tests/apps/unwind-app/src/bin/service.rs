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

#[path = "../serve.rs"]
mod serve;

use std::time::Duration;

use span_profiler::{Profiler, ProfilingTracerProvider};

const WINDOW: Duration = Duration::from_secs(1);

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
    let requests = serve::serve_under_load(WINDOW * windows + WINDOW / 2, true)?;
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
    println!(
        "RESULT requests={requests} hwm_kib={} rss_anon_kib={} rss_file_kib={} files={files} symbolizer={symbolizer}",
        serve::status_kib("VmHWM:"),
        serve::status_kib("RssAnon:"),
        serve::status_kib("RssFile:"),
    );
    Ok(())
}
