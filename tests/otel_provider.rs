//! `ProfilingTracerProvider` over the real OpenTelemetry SDK with an in-memory exporter:
//! which spans are local roots, which get `pyroscope.profile.id`, which labels work under
//! them carries, and when `.profiled()` stops finding a span (when its last `Context` is
//! dropped, not when it ends).

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider as _,
};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};
use span_profiler::__private::{
    current_label_id, label_id_of, otel_unknown_spans, span_of, Registry,
};
use span_profiler::{
    ContextLabelsGuard, LabelScope, Labels, ProfiledExt, ProfilingTracerProvider,
    PROFILE_ID_ATTRIBUTE,
};

fn provider(
    sampler: Sampler,
) -> (
    ProfilingTracerProvider<SdkTracerProvider>,
    InMemorySpanExporter,
) {
    let exporter = InMemorySpanExporter::default();
    let sdk = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_sampler(sampler)
        .build();
    (ProfilingTracerProvider::new(sdk), exporter)
}

fn finished(exporter: &InMemorySpanExporter, name: &str) -> SpanData {
    let spans = exporter.get_finished_spans().expect("exporter readable");
    spans
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span named {name}"))
}

fn profile_id(span: &SpanData) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == PROFILE_ID_ATTRIBUTE)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => panic!("{PROFILE_ID_ATTRIBUTE} is not a string: {other:?}"),
        })
}

/// The labels a `.profiled()` call made where `cx` is current would apply.
fn labels_under(cx: &Context) -> Labels {
    let _attached = cx.clone().attach();
    async {}.profiled().labels()
}

fn remote_parent() -> Context {
    let sc = SpanContext::new(
        TraceId::from(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c),
        SpanId::from(0xb7ad_6b71_6920_3331),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(sc)
}

#[test]
fn the_local_root_gets_the_profile_id_attribute_and_children_do_not() {
    let (provider, exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let root_cx = Context::current_with_span(tracer.start("GET /orders/{id}"));
    let root_id = root_cx.span().span_context().span_id();
    let child_cx = root_cx.with_span(tracer.start_with_context("db.query", &root_cx));
    let grandchild = tracer.start_with_context("decode", &child_cx);
    drop(grandchild);
    drop(child_cx);
    drop(root_cx);

    let root = finished(&exporter, "GET /orders/{id}");
    assert_eq!(
        profile_id(&root).as_deref(),
        Some(root_id.to_string().as_str())
    );
    assert_eq!(profile_id(&root).map(|s| s.len()), Some(16));
    assert_eq!(profile_id(&finished(&exporter, "db.query")), None);
    assert_eq!(profile_id(&finished(&exporter, "decode")), None);
}

#[test]
fn work_under_a_child_carries_its_local_roots_id_and_name() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let root_cx = Context::current_with_span(tracer.start("GET /orders/{id}"));
    let child_cx = root_cx.with_span(tracer.start_with_context("db.query", &root_cx));
    let root_id = root_cx.span().span_context().span_id();

    let labels = labels_under(&child_cx);
    assert_eq!(labels.span_id_hex(), Some(root_id.to_string()));
    assert_eq!(labels.span_name(), Some("GET /orders/{id}"));
    assert_eq!(labels.trace_id(), None, "trace_id is off by default");
    // Child and root share one registered set: one label id for the whole request.
    let under_root = async {}.profiled_with(&root_cx);
    let under_child = async {}.profiled_with(&child_cx);
    assert_ne!(label_id_of(&under_root), 0);
    assert_eq!(label_id_of(&under_root), label_id_of(&under_child));
}

#[test]
fn a_root_with_a_remote_parent_is_a_local_root() {
    let (provider, exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let parent = remote_parent();
    let cx = parent.with_span(tracer.start_with_context("POST /checkout", &parent));
    let id = cx.span().span_context().span_id();
    assert_ne!(id, SpanId::from(0xb7ad_6b71_6920_3331));

    assert_eq!(labels_under(&cx).span_id_hex(), Some(id.to_string()));
    drop(cx);
    let span = finished(&exporter, "POST /checkout");
    assert_eq!(
        span.parent_span_id,
        SpanId::from(0xb7ad_6b71_6920_3331),
        "still the trace's child"
    );
    assert_eq!(profile_id(&span), Some(id.to_string()));
}

#[test]
fn a_context_holding_an_invalid_span_counts_as_no_parent() {
    let (provider, exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let invalid = Context::new().with_remote_span_context(SpanContext::empty_context());
    assert!(
        invalid.has_active_span(),
        "has_active_span is true even for an invalid span"
    );
    let cx = invalid.with_span(tracer.start_with_context("job", &invalid));
    let id = cx.span().span_context().span_id();

    assert_eq!(labels_under(&cx).span_id_hex(), Some(id.to_string()));
    drop(cx);
    assert_eq!(
        profile_id(&finished(&exporter, "job")),
        Some(id.to_string())
    );
}

#[test]
fn an_unsampled_root_gives_its_name_but_no_span_id() {
    let (provider, exporter) = provider(Sampler::AlwaysOff);
    let tracer = provider.tracer("test");
    let root_cx = Context::current_with_span(tracer.start("GET /health"));
    assert!(!root_cx.span().span_context().is_sampled());
    let child_cx = root_cx.with_span(tracer.start_with_context("check", &root_cx));

    for cx in [&root_cx, &child_cx] {
        let labels = labels_under(cx);
        assert_eq!(labels.span_id(), None);
        assert_eq!(labels.span_name(), Some("GET /health"));
    }
    drop((child_cx, root_cx));
    assert!(
        exporter.get_finished_spans().unwrap().is_empty(),
        "nothing sampled, nothing exported"
    );
}

#[test]
fn the_trace_id_label_is_added_when_asked_for() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.with_trace_id_label(true).tracer("test");
    let cx = Context::current_with_span(tracer.start("GET /a"));
    let trace_id = cx.span().span_context().trace_id();
    let labels = labels_under(&cx);
    assert_eq!(
        labels.trace_id().map(|t| format!("{t:032x}")),
        Some(trace_id.to_string())
    );
}

#[test]
fn all_spans_scope_labels_each_span_with_its_own_id_and_name() {
    let (provider, exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider
        .with_span_id_scope(LabelScope::AllSpans)
        .with_span_name_scope(LabelScope::AllSpans)
        .tracer("test");
    let root_cx = Context::current_with_span(tracer.start("root"));
    let child_cx = root_cx.with_span(tracer.start_with_context("child", &root_cx));
    let child_id = child_cx.span().span_context().span_id();

    let labels = labels_under(&child_cx);
    assert_eq!(labels.span_id_hex(), Some(child_id.to_string()));
    assert_eq!(labels.span_name(), Some("child"));
    drop((child_cx, root_cx));
    assert_eq!(
        profile_id(&finished(&exporter, "child")),
        Some(child_id.to_string())
    );
    assert!(profile_id(&finished(&exporter, "root")).is_some());
}

#[test]
fn mixed_scopes_take_the_roots_id_and_the_childs_name() {
    let (provider, exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider
        .with_span_name_scope(LabelScope::AllSpans)
        .tracer("test");
    let root_cx = Context::current_with_span(tracer.start("root"));
    let root_id = root_cx.span().span_context().span_id();
    let child_cx = root_cx.with_span(tracer.start_with_context("child", &root_cx));

    let labels = labels_under(&child_cx);
    assert_eq!(labels.span_id_hex(), Some(root_id.to_string()));
    assert_eq!(labels.span_name(), Some("child"));
    drop((child_cx, root_cx));
    assert_eq!(profile_id(&finished(&exporter, "child")), None);
}

#[test]
fn scopes_set_to_off_give_no_labels_and_no_attribute() {
    let (provider, exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider
        .with_span_id_scope(LabelScope::Off)
        .with_span_name_scope(LabelScope::Off)
        .tracer("test");
    let cx = Context::current_with_span(tracer.start("quiet"));
    assert!(labels_under(&cx).is_empty());
    assert_eq!(label_id_of(&async {}.profiled_with(&cx)), 0);
    drop(cx);
    assert_eq!(profile_id(&finished(&exporter, "quiet")), None);
}

#[test]
fn after_a_span_ends_new_wrappers_guards_and_children_under_its_context_keep_the_root_labels_until_the_context_is_dropped(
) {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let cx = Context::current_with_span(tracer.start("GET /slow"));
    let id = cx.span().span_context().span_id();
    let before = async {}.profiled_with(&cx);
    let label_id = label_id_of(&before);
    assert_ne!(label_id, 0);

    cx.span().end();

    // Work that outlives the response: a new wrapper, a guard, a child span.
    let unknown_before = otel_unknown_spans();
    let after = async {}.profiled_with(&cx);
    assert_eq!(
        label_id_of(&after),
        label_id,
        "the ended span still gives its labels"
    );
    {
        let guard = ContextLabelsGuard::enter(&cx);
        assert_eq!(guard.labels().span_id_hex(), Some(id.to_string()));
        assert_eq!(current_label_id(), label_id);
    }
    let child_cx = cx.with_span(tracer.start_with_context("late child", &cx));
    assert_eq!(labels_under(&child_cx).span_id_hex(), Some(id.to_string()));
    assert_eq!(labels_under(&child_cx).span_name(), Some("GET /slow"));
    assert_eq!(otel_unknown_spans(), unknown_before, "nothing was unknown");

    let set = Registry::global()
        .resolve(label_id)
        .expect("still registered");
    assert_eq!(
        span_of(&set),
        (Some(u64::from_be_bytes(id.to_bytes())), Some("GET /slow"))
    );
    drop(set);
    // Once the contexts and the wrappers are gone, nothing holds the labels.
    drop((before, after, child_cx, cx));
    assert!(
        Registry::global().resolve(label_id).is_none(),
        "freed with the last holder"
    );
}

#[test]
fn the_guard_applies_the_contexts_labels_and_restores_the_previous_ones() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let cx = Context::current_with_span(tracer.start("batch"));
    let expected = label_id_of(&async {}.profiled_with(&cx));
    assert_eq!(current_label_id(), 0);
    {
        let _otel = cx.clone().attach();
        let guard = ContextLabelsGuard::enter_current();
        assert_eq!(current_label_id(), expected);
        assert_eq!(guard.labels().span_name(), Some("batch"));
        {
            let _none = ContextLabelsGuard::enter(&Context::new());
            assert_eq!(
                current_label_id(),
                0,
                "a context without a span labels nothing"
            );
        }
        assert_eq!(current_label_id(), expected);
    }
    assert_eq!(current_label_id(), 0);
}

#[test]
fn spans_started_under_another_providers_parent_get_no_root_labels() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let (other_sdk, _other_exporter) = {
        let exporter = InMemorySpanExporter::default();
        (
            SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build(),
            exporter,
        )
    };
    let foreign_cx = Context::current_with_span(other_sdk.tracer("plain").start("foreign"));
    let cx = foreign_cx.with_span(tracer.start_with_context("child", &foreign_cx));
    assert!(labels_under(&cx).is_empty());
    let before = otel_unknown_spans();
    assert!(labels_under(&foreign_cx).is_empty());
    assert!(
        otel_unknown_spans() > before,
        "the lookup of a foreign span is counted"
    );
}

#[test]
fn profiled_in_context_attaches_the_context_and_applies_its_labels() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let tracer = provider.tracer("test");
    let cx = Context::current_with_span(tracer.start("GET /b"));
    let id = cx.span().span_context().span_id();
    let fut = async move {
        let seen = Context::current().span().span_context().span_id();
        (seen, current_label_id())
    }
    .profiled_in_context(cx.clone());
    let label_id = label_id_of(&fut);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (seen, slot) = rt.block_on(fut);
    assert_eq!(seen, id);
    assert_eq!(slot, label_id);
    assert_ne!(slot, 0);
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn the_otel_wrappers_are_send() {
    let (provider, _exporter) = provider(Sampler::AlwaysOn);
    let cx = Context::current_with_span(provider.tracer("t").start("s"));
    assert_send(&async {}.profiled());
    assert_send(&async {}.profiled_with(&cx));
    assert_send(&async {}.profiled_in_context(cx));
}
