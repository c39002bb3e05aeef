//! Shared by the tower and tracing tests: the OpenTelemetry setup (SDK with an in-memory
//! exporter behind a `ProfilingTracerProvider`) and the attribution check over profile
//! files.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use opentelemetry::Value;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use span_profiler::__private::pprof::SampleView;
use span_profiler::ProfilingTracerProvider;

/// Installs (once per test binary) the W3C propagator and a global
/// `ProfilingTracerProvider` over an SDK provider exporting to memory.
pub fn install_global(service: &str) -> InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let (exporter, provider) = provider(service);
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            opentelemetry::global::set_tracer_provider(provider);
            exporter
        })
        .clone()
}

/// A `ProfilingTracerProvider` over an SDK provider exporting to memory.
pub fn provider(
    service: &str,
) -> (
    InMemorySpanExporter,
    ProfilingTracerProvider<SdkTracerProvider>,
) {
    let exporter = InMemorySpanExporter::default();
    let sdk = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let provider = ProfilingTracerProvider::new(sdk).with_service_name(service);
    (exporter, provider)
}

/// A string (or integer) attribute of a finished span.
pub fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            Value::I64(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// The finished spans named `name`.
pub fn spans_named(exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.name == name)
        .collect()
}

/// What one CPU-burning function must be attributed to.
pub struct Expect<'a> {
    /// A substring of the burner's symbol name.
    pub function: &'a str,
    /// The `span_name` its samples must carry.
    pub span_name: &'a str,
    /// The span ids (16 hex) of the requests that ran it.
    pub span_ids: &'a HashSet<String>,
}

/// Asserts that at least 99% of each burner's samples (by count) carry the span name and
/// one of the span ids expected for it, and that each burner has `min_samples`.
pub fn assert_attributed(samples: &[SampleView], expects: &[Expect<'_>], min_samples: i64) {
    let mut report = BTreeMap::new();
    for e in expects {
        let (mut holding, mut right) = (0i64, 0i64);
        let mut wrong_examples = Vec::new();
        for s in samples {
            if !s.functions.iter().any(|f| f.contains(e.function)) {
                continue;
            }
            holding += s.values[0];
            let id_ok = s
                .labels
                .get("span_id")
                .is_some_and(|id| e.span_ids.contains(id));
            let name_ok = s.labels.get("span_name").map(String::as_str) == Some(e.span_name);
            if id_ok && name_ok {
                right += s.values[0];
            } else if wrong_examples.len() < 5 {
                wrong_examples.push(s.labels.clone());
            }
        }
        report.insert(e.function, (holding, right));
        assert!(
            holding >= min_samples,
            "{}: only {holding} samples (want {min_samples})",
            e.function
        );
        let share = right as f64 / holding as f64;
        assert!(
            share >= 0.99,
            "{}: only {:.2}% of {holding} samples carry a span id of its route's requests \
             and span_name {:?}; e.g. {wrong_examples:?}",
            e.function,
            share * 100.0,
            e.span_name
        );
    }
    eprintln!("samples (holding, right) per burner: {report:?}");
}
