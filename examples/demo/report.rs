//! After a run: flame graphs (whole run, per span name, per most expensive request, and
//! per span name of the bytes allocated) and the tables, or, when profiles were uploaded,
//! the Grafana settings to look at them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use span_profiler::flamegraph::{
    self, AllocSummary, FlameGraph, Folding, Profile, SampleFilter, Summary,
};

use crate::app::Outcome;

/// Flame graphs written for one run.
#[derive(Debug)]
pub struct Report {
    /// CPU per span name and per request.
    pub summary: Summary,
    /// The whole run.
    pub whole: PathBuf,
    /// One per span name (same order as `summary.spans`).
    pub per_span: Vec<PathBuf>,
    /// The most expensive requests: span id, name, CPU, flame graph.
    pub per_request: Vec<(flamegraph::RequestSummary, PathBuf)>,
    /// Bytes allocated per span name, with one `alloc_space` flame graph each (same
    /// order as `allocations.spans`); `None` when the run wrote no allocation profiles.
    pub allocations: Option<(AllocSummary, Vec<PathBuf>)>,
}

/// Reads the run's files and writes its flame graphs to `svg_dir` (earlier SVGs of the
/// demo there are replaced). Runtime plumbing (Tokio, hyper, tower, axum, std, ...) below
/// the first frame of the demo's own code is drawn as one frame per crate.
pub fn flame_graphs(
    outcome: &Outcome,
    svg_dir: &Path,
) -> Result<Report, flamegraph::FlamegraphError> {
    let io = |source| flamegraph::FlamegraphError::Write {
        path: Some(svg_dir.to_owned()),
        source,
    };
    std::fs::create_dir_all(svg_dir).map_err(io)?;
    for entry in std::fs::read_dir(svg_dir).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == "all.svg"
            || name.starts_with("span-")
            || name.starts_with("request-")
            || name.starts_with("alloc-");
        if ours && name.ends_with(".svg") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let profiles = outcome
        .files
        .iter()
        .map(Profile::read)
        .collect::<Result<Vec<_>, _>>()?;
    let summary = flamegraph::summarize(&profiles)?;

    let whole = svg_dir.join("all.svg");
    FlameGraph::new()
        .fold(Folding::runtime())
        .title(format!("{}: whole run", outcome.app_name))
        .render_to_file(&profiles, &whole)?;
    let mut per_span = Vec::new();
    for span in &summary.spans {
        let path = svg_dir.join(format!("span-{}.svg", file_name(&span.span_name)));
        FlameGraph::new()
            .fold(Folding::runtime())
            .title(&span.span_name)
            .filter(SampleFilter::span_name(&span.span_name))
            .render_to_file(&profiles, &path)?;
        per_span.push(path);
    }
    let mut per_request = Vec::new();
    for request in summary.requests.iter().take(3) {
        let path = svg_dir.join(format!("request-{:016x}.svg", request.span_id));
        FlameGraph::new()
            .fold(Folding::runtime())
            .title(format!(
                "{} (span_id {:016x})",
                request.span_name.as_deref().unwrap_or("?"),
                request.span_id
            ))
            .filter(SampleFilter::span_id(request.span_id))
            .render_to_file(&profiles, &path)?;
        per_request.push((request.clone(), path));
    }
    let allocations = match outcome.alloc_files.is_empty() {
        true => None,
        false => Some(allocation_graphs(&outcome.alloc_files, svg_dir)?),
    };
    Ok(Report {
        summary,
        whole,
        per_span,
        per_request,
        allocations,
    })
}

/// Bytes allocated per span name, and an `alloc_space` flame graph per span name
/// (`alloc-<span name>.svg`).
fn allocation_graphs(
    files: &[PathBuf],
    svg_dir: &Path,
) -> Result<(AllocSummary, Vec<PathBuf>), flamegraph::FlamegraphError> {
    let profiles = files
        .iter()
        .map(Profile::read)
        .collect::<Result<Vec<_>, _>>()?;
    let summary = flamegraph::summarize_allocations(&profiles)?;
    let mut graphs = Vec::new();
    for span in &summary.spans {
        let path = svg_dir.join(format!("alloc-{}.svg", file_name(&span.span_name)));
        FlameGraph::new()
            .sample_type("alloc_space")
            .fold(Folding::runtime())
            .title(format!("{}: bytes allocated", span.span_name))
            .filter(SampleFilter::span_name(&span.span_name))
            .render_to_file(&profiles, &path)?;
        graphs.push(path);
    }
    Ok((summary, graphs))
}

/// The table: span name, requests, CPU time, CPU per request, hottest function, SVG.
///
/// `served` is the number of responses per span name as the load generator counted
/// them; the profiles alone only know the requests that a sample hit (a cheap request
/// often gets none), so "sampled" is shown beside it and CPU per request divides by the
/// real count when it is known.
pub fn print_table(report: &Report, served: &[(&str, u64)]) {
    let real_count = |span_name: &str| {
        served
            .iter()
            .find(|(name, _)| *name == span_name)
            .map(|(_, n)| *n)
            .filter(|&n| n > 0)
    };
    // Bytes allocated per request of a span name, by the real request count.
    let alloc_per_request = |span_name: &str| -> String {
        let Some((summary, _)) = &report.allocations else {
            return "-".into();
        };
        let bytes = summary
            .spans
            .iter()
            .find(|s| s.span_name == span_name)
            .map_or(0, |s| s.bytes);
        match real_count(span_name) {
            Some(n) => self::bytes(bytes / n),
            None => "-".into(),
        }
    };
    let mut rows: Vec<[String; 7]> = vec![[
        "span name".into(),
        "requests (sampled)".into(),
        "CPU time".into(),
        "CPU/request".into(),
        "allocated/request".into(),
        "hottest function".into(),
        "flame graph".into(),
    ]];
    for (span, svg) in report.summary.spans.iter().zip(&report.per_span) {
        let real = real_count(&span.span_name);
        let (requests, per_request) = match real {
            Some(n) => (
                format!("{n} ({})", span.requests),
                duration(span.cpu / u32::try_from(n).unwrap_or(u32::MAX)),
            ),
            None => (
                format!("? ({})", span.requests),
                span.cpu_per_request().map_or("-".into(), duration),
            ),
        };
        rows.push([
            span.span_name.clone(),
            requests,
            duration(span.cpu),
            per_request,
            alloc_per_request(&span.span_name),
            span.hottest_function.clone().unwrap_or_default(),
            svg.display().to_string(),
        ]);
    }
    rows.push([
        "(no span: runtime, client, profiler)".into(),
        "-".into(),
        duration(report.summary.unlabelled_cpu),
        "-".into(),
        "-".into(),
        "".into(),
        report.whole.display().to_string(),
    ]);
    print_rows(&rows, &[false, true, true, true, true, false, false]);

    if let Some((summary, graphs)) = &report.allocations {
        println!("\nAllocations per route (estimates: one allocation sampled per {} allocated, on average):", bytes(crate::app::ALLOC_SAMPLE_BYTES));
        let mut rows: Vec<[String; 6]> = vec![[
            "span name".into(),
            "allocated".into(),
            "allocated/request".into(),
            "allocations/request".into(),
            "top allocating function".into(),
            "flame graph (bytes allocated)".into(),
        ]];
        for (span, svg) in summary.spans.iter().zip(graphs) {
            let objects = match real_count(&span.span_name) {
                Some(n) => format!("{:.1}", span.objects as f64 / n as f64),
                None => "-".into(),
            };
            rows.push([
                span.span_name.clone(),
                bytes(span.bytes),
                alloc_per_request(&span.span_name),
                objects,
                span.top_allocator.clone().unwrap_or_default(),
                svg.display().to_string(),
            ]);
        }
        rows.push([
            "(no span: runtime, client, profiler)".into(),
            bytes(summary.unlabelled_bytes),
            "-".into(),
            "-".into(),
            "".into(),
            "".into(),
        ]);
        print_rows(&rows, &[false, true, true, true, false, false]);
    }

    println!("\nMost expensive requests (one flame graph each):");
    let mut rows: Vec<[String; 5]> = vec![[
        "span_id".into(),
        "span name".into(),
        "CPU time".into(),
        "hottest function".into(),
        "flame graph".into(),
    ]];
    for (request, svg) in &report.per_request {
        rows.push([
            format!("{:016x}", request.span_id),
            request.span_name.clone().unwrap_or_default(),
            duration(request.cpu),
            request.hottest_function.clone().unwrap_or_default(),
            svg.display().to_string(),
        ]);
    }
    print_rows(&rows, &[false, false, true, false, false]);
}

/// What to set up in Grafana to see uploaded profiles, and to jump there from traces.
/// Returns false when no profile was delivered.
pub fn print_grafana(outcome: &Outcome) -> bool {
    let server = outcome.server.as_deref().unwrap_or("?");
    let app = &outcome.app_name;
    let (delivered, lost) = outcome.uploads.unwrap_or_default();
    if delivered == 0 {
        eprintln!(
            "no profile reached {server} ({lost} lost): is Pyroscope listening there? \
             Check the address, credentials (PYROSCOPE_BASIC_AUTH_*, PYROSCOPE_AUTH_TOKEN) \
             and tenant (PYROSCOPE_TENANT_ID); see the README's troubleshooting."
        );
        return false;
    }
    let format = if outcome.otlp {
        "OTLP profiles request(s) (samples linked to their trace and root span)"
    } else {
        "profile(s)"
    };
    println!(
        r#"
{delivered} {format} went to {server} as service_name="{app}" ({lost} lost).

Grafana, Explore, Pyroscope data source:
  profile type  process_cpu:cpu:nanoseconds:cpu:nanoseconds
                memory:alloc_space:bytes:space:bytes (bytes allocated; also alloc_objects,
                inuse_space, inuse_objects; Push and /ingest only, not OTLP)
  label query   {{service_name="{app}"}}
  one route     {{service_name="{app}", span_name="GET /report/{{id}}"}}

Tempo data source, "Trace to profiles" (tracesToProfiles), for traces whose resource
has service.name="{app}":
  jsonData:
    tracesToProfiles:
      datasourceUid: <your Pyroscope data source uid>
      profileTypeId: process_cpu:cpu:nanoseconds:cpu:nanoseconds
      tags:
        - key: service.name
          value: service_name
        - key: service.namespace
          value: service_namespace
      customQuery: false
Spans with the attribute pyroscope.profile.id then show a "Profiles" link. This demo does
not export its spans; in your service, send them to Tempo (e.g. opentelemetry-otlp) with
the same service.name (and, if the resource has service.namespace, give the profiler the
same value: ProfilerBuilder::service_namespace, or OTEL_RESOURCE_ATTRIBUTES with from_env)."#
    );
    true
}

/// A file-name-safe form of a span name: `GET /report/{id}` -> `GET_report_id`.
fn file_name(span_name: &str) -> String {
    let mut out = String::new();
    for c in span_name.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_');
    if out.is_empty() {
        "unnamed".into()
    } else {
        out.into()
    }
}

/// Bytes in binary units: `512 B`, `4.0 KiB`, `1.50 MiB`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1 << 20) as f64 {
        format!("{:.2} MiB", n / (1 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

fn print_rows<const N: usize>(rows: &[[String; N]], right: &[bool; N]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for i in 0..N {
            let pad = widths[i] - row[i].chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            if right[i] {
                line.push_str(&" ".repeat(pad));
                line.push_str(&row[i]);
            } else {
                line.push_str(&row[i]);
                if i + 1 < N {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        println!("{}", line.trim_end());
    }
}
