//! The demo (`examples/demo`) in its short mode, in this test process: a real axum
//! service on 127.0.0.1 under load, profiled into files, then its flame graphs and table
//! data. Checks what a newcomer would look at: files and SVGs exist, every route is there
//! by its span name, the CPU-heavy route's hottest function is the one it burns in, and
//! the allocation table shows the allocation-heavy route allocating the most per request.

mod common;

// The example's own modules; main.rs's command-line and upload paths are not used here.
#[allow(dead_code)]
#[path = "../examples/demo/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../examples/demo/report.rs"]
mod report;

use std::time::Duration;

#[test]
fn the_demo_profiles_every_route_and_draws_its_flame_graphs() {
    let _lock = common::profiler_lock();
    let dir = common::temp_dir("demo");
    let config = app::Config::short(&dir);
    let outcome = app::run(&config).expect("the demo runs");

    assert_eq!(outcome.errors, 0, "every request succeeds: {outcome:?}");
    for (route, responses) in app::ROUTES.iter().zip(outcome.responses) {
        assert!(responses > 0, "{route} was requested: {outcome:?}");
    }
    assert!(!outcome.files.is_empty(), "profile files written");
    for (_, profile) in common::load_profiles(&dir) {
        assert!(!profile.sample.is_empty());
    }

    let report = report::flame_graphs(&outcome, &dir.join("flamegraphs")).expect("flame graphs");
    let summary = &report.summary;
    let served: Vec<(&str, u64)> = app::ROUTES.iter().copied().zip(outcome.responses).collect();
    report::print_table(&report, &served);

    // Every route appears by its span name, with requests and CPU.
    for route in app::ROUTES {
        let span = summary
            .spans
            .iter()
            .find(|s| s.span_name == route)
            .unwrap_or_else(|| panic!("no samples of {route}: {summary:#?}"));
        assert!(span.requests > 0 && span.cpu > Duration::ZERO, "{span:?}");
    }

    // The CPU-heavy route burns in `render_report`, and so do its three large requests.
    let heavy = summary
        .spans
        .iter()
        .find(|s| s.span_name == "GET /report/{id}")
        .unwrap();
    let hottest = heavy.hottest_function.as_deref().unwrap_or_default();
    assert!(
        hottest.ends_with(&format!("::{}", app::HEAVY_FUNCTION)),
        "hottest function of GET /report/{{id}} is `{hottest}`"
    );
    assert_eq!(
        report.per_request.len(),
        3,
        "three per-request flame graphs"
    );
    for (request, _) in &report.per_request {
        assert_eq!(request.span_name.as_deref(), Some("GET /report/{id}"));
        // Each burned `large_report_cpu` (0.5 s); samples measure it within sampling error.
        assert!(
            request.cpu >= config.large_report_cpu.mul_f64(0.7),
            "{request:?}"
        );
        let hottest = request.hottest_function.as_deref().unwrap_or_default();
        assert!(hottest.ends_with("::render_report"), "{request:?}");
    }

    // The SVGs: whole run, one per span name, one per expensive request.
    let svgs = std::iter::once(&report.whole)
        .chain(&report.per_span)
        .chain(report.per_request.iter().map(|(_, path)| path));
    for path in svgs {
        let svg =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{}",
            path.display()
        );
    }
    assert_eq!(report.per_span.len(), summary.spans.len());
    let whole = std::fs::read_to_string(&report.whole).unwrap();
    assert!(whole.contains("render_report") && whole.contains("checksum_part"));
    let fanout = report
        .per_span
        .iter()
        .find(|p| p.to_string_lossy().ends_with("span-GET_fanout.svg"))
        .expect("GET /fanout has its own flame graph");
    let fanout = std::fs::read_to_string(fanout).unwrap();
    assert!(
        fanout.contains("checksum_part") && !fanout.contains("render_report"),
        "spawned tasks carry their request's labels, and only those"
    );

    // Allocations: the demo's global allocator is `ProfiledAllocator`, so each window
    // also wrote an allocation profile, summarized per route with a flame graph each.
    assert!(
        !outcome.alloc_files.is_empty(),
        "allocation profiles written"
    );
    let (allocs, graphs) = report
        .allocations
        .as_ref()
        .expect("allocation table and flame graphs");
    assert_eq!(graphs.len(), allocs.spans.len());
    let per_request = |route: &str| -> f64 {
        let bytes = allocs
            .spans
            .iter()
            .find(|s| s.span_name == route)
            .map_or(0, |s| s.bytes);
        let served = served.iter().find(|(r, _)| *r == route).unwrap().1;
        bytes as f64 / served as f64
    };
    // `GET /report/{id}` lays out 512 KiB of pages per request; `GET /search` allocates a
    // 4 KiB result list, `GET /health` only its response.
    let report_bytes = per_request("GET /report/{id}");
    assert!(
        (256.0 * 1024.0..2048.0 * 1024.0).contains(&report_bytes),
        "GET /report/{{id}} allocates ~512 KiB per request, estimated {report_bytes:.0} B: {allocs:#?}"
    );
    for route in ["GET /health", "GET /search", "GET /fanout"] {
        let other = per_request(route);
        assert!(
            report_bytes > 4.0 * other,
            "{route} allocates {other:.0} B per request, GET /report/{{id}} {report_bytes:.0} B"
        );
    }
    let report_allocs = allocs
        .spans
        .iter()
        .find(|s| s.span_name == "GET /report/{id}")
        .unwrap();
    let top = report_allocs.top_allocator.as_deref().unwrap_or_default();
    assert!(
        top.ends_with(&format!("::{}", app::ALLOCATING_FUNCTION)),
        "top allocating function of GET /report/{{id}} is `{top}`"
    );
    let report_graph = graphs
        .iter()
        .find(|p| p.to_string_lossy().ends_with("alloc-GET_report_id.svg"))
        .expect("GET /report/{id} has an allocation flame graph");
    let svg = std::fs::read_to_string(report_graph).unwrap();
    assert!(
        svg.contains(app::ALLOCATING_FUNCTION) && svg.contains("alloc_space (bytes)"),
        "{}",
        report_graph.display()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[path = "common/receiver.rs"]
mod receiver;

/// `SPAN_PROFILER_EXPORTER=otlp` with `OTEL_EXPORTER_OTLP_ENDPOINT`: the demo exports OTLP
/// profiles there, says where, and every request is valid by Pyroscope's OTLP rules.
#[test]
fn the_demo_exports_otlp_profiles_when_asked_and_says_where() {
    let _lock = common::profiler_lock();
    let receiver = receiver::Receiver::start();
    // The only test of this binary that reads the environment (the other runs with
    // `use_env: false`), and it holds the profiler lock.
    std::env::set_var("SPAN_PROFILER_EXPORTER", "otlp");
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url());
    std::env::set_var("PYROSCOPE_UPLOAD_INTERVAL", "1s");
    let mut config = app::Config::short(common::temp_dir("demo-otlp"));
    config.use_env = true;
    config.duration = Duration::from_secs(3);
    let outcome = app::run(&config);
    for var in [
        "SPAN_PROFILER_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "PYROSCOPE_UPLOAD_INTERVAL",
    ] {
        std::env::remove_var(var);
    }
    let outcome = outcome.expect("the demo runs");
    assert!(outcome.otlp);
    assert_eq!(
        outcome.server.as_deref(),
        Some(format!("{}/v1development/profiles", receiver.url()).as_str())
    );
    assert!(report::print_grafana(&outcome), "{outcome:?}");
    let received = receiver.assert_all_valid();
    assert!(!received.is_empty());
    let spans: std::collections::BTreeSet<String> = received
        .iter()
        .flat_map(|r| r.otlp.as_ref().expect("OTLP").samples())
        .filter_map(|s| s.label("span_name").map(str::to_owned))
        .collect();
    for route in app::ROUTES {
        assert!(spans.contains(route), "{route} missing from {spans:?}");
    }
}
