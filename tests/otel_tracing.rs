//! Through tracing-opentelemetry 0.34: `layer().with_tracer(ProfilingTracer)`. The layer
//! builds OpenTelemetry spans lazily and attaches their context on enter, so a tracing
//! root span gets `pyroscope.profile.id` and `.profiled()` inside it finds its labels.

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use span_profiler::__private::otel_span_map_len;
use span_profiler::{ProfiledExt, ProfilingTracerProvider, PROFILE_ID_ATTRIBUTE};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn a_tracing_root_span_gets_the_profile_id_and_its_children_share_its_labels() {
    let exporter = InMemorySpanExporter::default();
    let sdk = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let provider = ProfilingTracerProvider::new(sdk);
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing-test"));
    let subscriber = tracing_subscriber::registry().with(layer);

    let (root_id, under_root, under_child) = tracing::subscriber::with_default(subscriber, || {
        let root = tracing::info_span!("GET /users/{id}");
        let _root = root.enter();
        let root_id = Context::current().span().span_context().span_id();
        let under_root = async {}.profiled().labels();
        let child = tracing::info_span!("load_user");
        let _child = child.enter();
        assert_ne!(Context::current().span().span_context().span_id(), root_id);
        let under_child = async {}.profiled().labels();
        (root_id, under_root, under_child)
    });

    assert_eq!(under_root.span_id_hex(), Some(root_id.to_string()));
    assert_eq!(under_root.span_name(), Some("GET /users/{id}"));
    assert_eq!(
        under_child, under_root,
        "the child's work carries the root's labels"
    );
    assert_eq!(
        otel_span_map_len(),
        0,
        "closed tracing spans leave no map entries"
    );

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
    assert_eq!(attr("GET /users/{id}"), Some(root_id.to_string()));
    assert_eq!(attr("load_user"), None);
}
