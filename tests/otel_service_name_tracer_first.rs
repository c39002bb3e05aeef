//! The service-name warning when the tracer is taken before the profiler starts (the
//! other order is in `otel_service_name.rs`), through the public API alone.

mod service_name;

use opentelemetry::trace::TracerProvider as _;

use service_name::{assert_one_warning, capture_warnings, provider, service_name_warnings};

#[test]
fn a_tracer_taken_before_a_differing_profiler_starts_is_warned_about_once() {
    capture_warnings();
    let _tracer = provider("b").tracer("first");
    assert!(
        service_name_warnings().is_empty(),
        "no profiler yet, nothing to compare: {:?}",
        service_name_warnings()
    );

    let profiler = service_name::start_profiler("a");
    assert_one_warning("a", "b");
    let _more = provider("b").tracer("second");
    assert_one_warning("a", "b");
    profiler.stop().expect("stop");
}
