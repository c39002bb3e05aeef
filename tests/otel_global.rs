//! `ProfilingTracerProvider` installed with `opentelemetry::global::set_tracer_provider`
//! (spans then go through the global provider's boxed, object-safe tracer). Its own test
//! binary: the global provider is process-wide.

use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry::{global, Context, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use span_profiler::__private::{current_label_id, label_id_of, otel_span_map_len};
use span_profiler::{ProfiledExt, ProfilingTracerProvider, PROFILE_ID_ATTRIBUTE};

#[test]
fn the_global_tracer_provider_gives_local_roots_the_attribute_and_labels() {
    let exporter = InMemorySpanExporter::default();
    let sdk = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(ProfilingTracerProvider::new(sdk));

    let tracer = global::tracer("global-test");
    let root_cx = Context::current_with_span(tracer.start("GET /global"));
    let root_id = root_cx.span().span_context().span_id();
    let child_cx = root_cx.with_span(tracer.start_with_context("child", &root_cx));
    assert_eq!(otel_span_map_len(), 2);

    let fut = {
        let _attached = child_cx.clone().attach();
        async { current_label_id() }.profiled()
    };
    assert_eq!(fut.labels().span_id_hex(), Some(root_id.to_string()));
    assert_eq!(fut.labels().span_name(), Some("GET /global"));
    let expected = label_id_of(&fut);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(fut), expected);

    drop(child_cx);
    drop(root_cx);
    assert_eq!(otel_span_map_len(), 0);
    let spans = exporter.get_finished_spans().unwrap();
    let attr = |name: &str| {
        let span = spans.iter().find(|s| s.name == name).expect("exported");
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == PROFILE_ID_ATTRIBUTE)
            .map(|kv| match &kv.value {
                Value::String(s) => s.to_string(),
                other => panic!("not a string: {other:?}"),
            })
    };
    assert_eq!(attr("GET /global"), Some(root_id.to_string()));
    assert_eq!(attr("child"), None);
}
