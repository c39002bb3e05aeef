//! The warning when the profiler's application name differs from the `service.name` the
//! traces carry (Grafana's "Profiles" link would find nothing). Its own test binary: the
//! names, the log-once flag and the logger are process-wide.

use std::sync::Mutex;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Key;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use span_profiler::__private::{otel_note_application_name, otel_service_name_mismatch};
use span_profiler::ProfilingTracerProvider;

/// Records warnings of target `span_profiler`.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.target() == "span_profiler"
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) && record.level() == log::Level::Warn {
            self.0.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture(Mutex::new(Vec::new()));

fn warnings() -> Vec<String> {
    LOGGER.0.lock().unwrap().clone()
}

#[test]
fn a_differing_service_name_is_warned_about_once_and_a_matching_one_never() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    otel_note_application_name("checkout");
    // `new` first infers a name from the environment; the option set right after it is
    // what counts, so no warning may come from the inferred one.
    let same = ProfilingTracerProvider::new(SdkTracerProvider::builder().build())
        .with_service_name("checkout");
    let _tracer = same.tracer("a");
    assert_eq!(otel_service_name_mismatch(), None);
    assert!(
        warnings().is_empty(),
        "unexpected warnings: {:?}",
        warnings()
    );

    let other = ProfilingTracerProvider::new(SdkTracerProvider::builder().build())
        .with_service_name("cart");
    let _tracer = other.tracer("b");
    assert_eq!(
        otel_service_name_mismatch(),
        Some(("checkout".into(), "cart".into()))
    );
    let logged = warnings();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].contains("`checkout`") && logged[0].contains("`cart`"),
        "{}",
        logged[0]
    );
    assert!(
        logged[0].contains("with_service_name"),
        "the message says the fix: {}",
        logged[0]
    );

    // The profiler (re)started under yet another name: still only one warning.
    otel_note_application_name("billing");
    assert_eq!(
        otel_service_name_mismatch(),
        Some(("billing".into(), "cart".into()))
    );
    assert_eq!(warnings().len(), 1);
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
