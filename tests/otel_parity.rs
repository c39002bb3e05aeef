//! Label semantics in parity with otel-profiling-go: each test of its
//! `otelpyroscope_test.go` (v0.5.3), restated through this crate's public API. Go reads
//! the labels a context carries with `pprof.ForLabels(ctx, ..)`; here the labels a
//! `.profiled()` call under the context would apply are read with `Labels`.
//!
//! One difference is deliberate and documented: Go's `trace_id` label is on by default;
//! here it is opt-in (`with_trace_id_label(true)`), because Pyroscope keeps `trace_id` out
//! of series labels only from v2.1.0. The `trace_id` cases therefore turn it on.

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use span_profiler::{LabelScope, Labels, ProfiledExt, ProfilingTracerProvider};

/// What Go's `collectLabels(ctx)` returns: the labels work under `cx` carries.
fn labels_of(cx: &Context) -> Labels {
    async {}.profiled_with(cx).labels()
}

fn span_id_of(cx: &Context) -> String {
    cx.span().span_context().span_id().to_string()
}

fn trace_id_hex(labels: &Labels) -> Option<String> {
    labels.trace_id().map(|id| format!("{id:032x}"))
}

fn sdk(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder().with_sampler(sampler).build()
}

/// `Test_tracerProvider`.
#[test]
fn children_and_spans_started_after_the_root_ended_carry_the_root_labels_and_a_new_root_does_not() {
    let provider = ProfilingTracerProvider::new(sdk(Sampler::AlwaysOn));
    let tracer = provider.tracer("");

    let root_cx = Context::current_with_span(tracer.start("RootSpan"));
    let root = labels_of(&root_cx);
    let span_id = root.span_id_hex().expect("span ID label");
    assert_eq!(span_id.len(), 16, "{span_id}");
    assert_eq!(span_id, span_id_of(&root_cx));
    assert_eq!(root.span_name(), Some("RootSpan"));

    // A nested child span has the same labels.
    let a_cx = root_cx.with_span(tracer.start_with_context("SpanA", &root_cx));
    assert_eq!(labels_of(&a_cx), root);

    a_cx.span().end();
    root_cx.span().end();

    // A child span created after the root span ended, from A's context.
    let b_cx = a_cx.with_span(tracer.start_with_context("SpanB", &a_cx));
    assert_eq!(
        labels_of(&b_cx),
        root,
        "the root's labels outlive its end()"
    );
    b_cx.span().end();

    // A new root span: none of its labels match the first root's.
    let c_cx = Context::current_with_span(tracer.start_with_context("SpanC", &Context::new()));
    let c = labels_of(&c_cx);
    assert_ne!(c.span_id_hex(), root.span_id_hex());
    assert_ne!(c.span_name(), root.span_name());
    assert_eq!(c.span_name(), Some("SpanC"));
    c_cx.span().end();
}

/// `Test_traceIDLabel_defaultEnabled` (with the label turned on, see the module docs).
#[test]
fn the_trace_id_label_is_the_roots_trace_id_on_the_root_its_child_and_grandchild() {
    let provider = ProfilingTracerProvider::new(sdk(Sampler::AlwaysOn)).with_trace_id_label(true);
    let tracer = provider.tracer("");

    let root_cx = Context::current_with_span(tracer.start("Root"));
    let want = root_cx.span().span_context().trace_id().to_string();
    assert_eq!(want.len(), 32);
    assert_eq!(
        trace_id_hex(&labels_of(&root_cx)).as_deref(),
        Some(want.as_str())
    );

    let child_cx = root_cx.with_span(tracer.start_with_context("Child", &root_cx));
    assert_eq!(
        trace_id_hex(&labels_of(&child_cx)).as_deref(),
        Some(want.as_str())
    );

    let grandchild_cx = child_cx.with_span(tracer.start_with_context("Grandchild", &child_cx));
    assert_eq!(
        trace_id_hex(&labels_of(&grandchild_cx)).as_deref(),
        Some(want.as_str())
    );

    grandchild_cx.span().end();
    child_cx.span().end();
    root_cx.span().end();
}

/// `Test_traceIDLabel_unsampledSpan`.
#[test]
fn an_unsampled_span_has_neither_trace_id_nor_span_id_label() {
    let provider = ProfilingTracerProvider::new(sdk(Sampler::AlwaysOff)).with_trace_id_label(true);
    let tracer = provider.tracer("");

    let cx = Context::current_with_span(tracer.start("Root"));
    assert!(
        !cx.span().span_context().is_sampled(),
        "expected an unsampled span"
    );
    let labels = labels_of(&cx);
    assert_eq!(
        labels.trace_id(),
        None,
        "trace_id absent on an unsampled span"
    );
    assert_eq!(
        labels.span_id(),
        None,
        "span_id absent on an unsampled span"
    );
    cx.span().end();
}

/// `Test_traceIDLabel_inheritsAcrossScopeAllSpans`.
#[test]
fn with_span_ids_from_all_spans_the_trace_id_stays_the_same_and_each_span_has_its_own_span_id() {
    let provider = ProfilingTracerProvider::new(sdk(Sampler::AlwaysOn))
        .with_span_id_scope(LabelScope::AllSpans)
        .with_trace_id_label(true);
    let tracer = provider.tracer("");

    let root_cx = Context::current_with_span(tracer.start("Root"));
    let want = root_cx.span().span_context().trace_id().to_string();
    let root = labels_of(&root_cx);
    assert_eq!(trace_id_hex(&root).as_deref(), Some(want.as_str()));
    assert_eq!(root.span_id_hex(), Some(span_id_of(&root_cx)));

    let child_cx = root_cx.with_span(tracer.start_with_context("Child", &root_cx));
    let child = labels_of(&child_cx);
    assert_eq!(trace_id_hex(&child).as_deref(), Some(want.as_str()));
    assert_eq!(
        child.span_id_hex(),
        Some(span_id_of(&child_cx)),
        "the child's own span_id"
    );
    child_cx.span().end();
    root_cx.span().end();
}

/// `Test_WithSpanIDLabelScope_typoRegression`: the span-id scope sets the span-id label,
/// not the span-name one.
#[test]
fn the_span_id_scope_and_the_span_name_scope_are_independent() {
    let provider = ProfilingTracerProvider::new(sdk(Sampler::AlwaysOn))
        .with_span_id_scope(LabelScope::AllSpans)
        .with_span_name_scope(LabelScope::LocalRoot);
    let tracer = provider.tracer("");

    let root_cx = Context::current_with_span(tracer.start("Root"));
    let child_cx = root_cx.with_span(tracer.start_with_context("Child", &root_cx));
    assert_ne!(span_id_of(&root_cx), span_id_of(&child_cx), "test setup");

    let child = labels_of(&child_cx);
    assert_eq!(child.span_id_hex(), Some(span_id_of(&child_cx)));
    assert_eq!(child.span_name(), Some("Root"));
    child_cx.span().end();
    root_cx.span().end();
}
