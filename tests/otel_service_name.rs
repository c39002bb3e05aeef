//! The warning when the profiler's application name differs from the `service.name` the
//! traces carry (Grafana's "Profiles" link would find nothing), through the public API:
//! the profiler starts first, tracers are taken afterwards. The other order is
//! `otel_service_name_tracer_first.rs` (its own process: the warning is logged once per
//! process).

mod service_name;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Key;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use span_profiler::ProfilingTracerProvider;

use service_name::{assert_one_warning, capture_warnings, provider, service_name_warnings};

#[test]
fn a_profiler_started_before_a_differing_tracer_is_warned_about_once() {
    capture_warnings();
    let profiler = service_name::start_profiler("a");

    // The same name: no warning. (`new` first infers a name from the environment; the
    // option set right after it is what counts, so none may come from the inferred one.)
    let _same = provider("a").tracer("same");
    assert!(
        service_name_warnings().is_empty(),
        "{:?}",
        service_name_warnings()
    );

    let _other = provider("b").tracer("other");
    assert_one_warning("a", "b");

    // More tracers, and the profiler restarted under yet another name: still one.
    let _again = provider("b").tracer("again");
    profiler.stop().expect("stop");
    let profiler = service_name::start_profiler("c");
    assert_one_warning("a", "b");
    profiler.stop().expect("stop");
}

#[test]
fn the_inferred_service_name_is_the_one_the_sdk_resource_detects() {
    let provider = ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
    let resource = Resource::builder().build();
    let sdk_name = resource
        .get(&Key::new("service.name"))
        .expect("the SDK always sets it");
    assert_eq!(provider.service_name(), sdk_name.as_str());
}
