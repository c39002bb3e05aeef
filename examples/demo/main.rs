//! span-profiler in one command: an axum service whose every request is an OpenTelemetry
//! span, CPU-profiled with each sample labelled by its request's span, under ~20 s of
//! load from an in-process client over 127.0.0.1.
//!
//! Routes: `GET /health` (cheap), `GET /report/{id}` (CPU-heavy; three large reports
//! burn 0.6 s of CPU each), `GET /fanout` (spawns tasks that carry the request's labels),
//! `GET /search` (slow only sometimes: every tenth request misses its cache).
//!
//! ```text
//! cargo run --release --example demo            # profiles, flame graphs and a table
//! DEMO_SECONDS=5 cargo run --release --example demo
//! PYROSCOPE_SERVER_ADDRESS=http://localhost:4040 cargo run --release --example demo
//! SPAN_PROFILER_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4040 \
//!     cargo run --release --example demo   # OTLP profiles (Pyroscope or a collector)
//! ```
//!
//! Without `PYROSCOPE_SERVER_ADDRESS`, profiles go to `./profiles` (`DEMO_OUT_DIR`), flame
//! graphs to `./profiles/flamegraphs` (the whole run, one per span name, one per each of
//! the three most expensive requests, and one of the bytes allocated per span name), and
//! tables show requests, CPU time, bytes allocated per request and hottest function per
//! span name. The demo's global allocator is `span_profiler::alloc::ProfiledAllocator`,
//! so each window also writes an allocation profile (`*.alloc.pb.gz`). With
//! `PYROSCOPE_SERVER_ADDRESS`, profiles (CPU and allocations) are uploaded (all
//! `PYROSCOPE_*` variables of `ProfilerBuilder::from_env()` apply) and the Grafana and
//! Tempo settings are printed.

mod app;
mod report;

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match app::Config::from_env_and_args() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("demo: {err}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "serving 4 routes on 127.0.0.1 under load for {:.0} s ...",
        config.duration.as_secs_f64()
    );
    let outcome = match app::run(&config) {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("demo: {err}");
            return ExitCode::FAILURE;
        }
    };
    let total: u64 = outcome.responses.iter().sum();
    println!(
        "{total} requests ({} failed); profiler coverage {}",
        outcome.errors,
        outcome.coverage.map_or("unknown".into(), |c| format!(
            "{:.0}% of the process CPU time",
            c * 100.0
        ))
    );
    if outcome.server.is_some() {
        return match report::print_grafana(&outcome) {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        };
    }
    println!(
        "{} CPU and {} allocation profile files in {}\n",
        outcome.files.len(),
        outcome.alloc_files.len(),
        config.out_dir.display()
    );
    match report::flame_graphs(&outcome, &config.out_dir.join("flamegraphs")) {
        Ok(report) => {
            let served: Vec<(&str, u64)> =
                app::ROUTES.iter().copied().zip(outcome.responses).collect();
            report::print_table(&report, &served);
            println!(
                "\nOpen the SVGs in a browser (click to zoom, Ctrl-F to search). Or: go tool pprof -http=: -tagfocus=span_name='GET /report/{{id}}' {dir}/*[0-9].pb.gz\n\
                 Allocations: go tool pprof -http=: -sample_index=alloc_space -tagfocus=span_name='GET /report/{{id}}' {dir}/*.alloc.pb.gz",
                dir = config.out_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("demo: {err}");
            ExitCode::FAILURE
        }
    }
}
