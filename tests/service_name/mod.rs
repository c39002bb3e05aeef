//! Shared by the two service-name warning tests (one per order, each its own process:
//! the names, the log-once flag and the logger are process-wide).

use std::path::PathBuf;
use std::sync::Mutex;

use span_profiler::{Profiler, ProfilingTracerProvider};

/// Records warnings of target `span_profiler`.
pub struct Capture(Mutex<Vec<String>>);

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

/// Installs the capturing logger (once per process).
pub fn capture_warnings() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
}

/// The warnings about the service name so far (others, e.g. about frame pointers, are
/// not this test's business).
pub fn service_name_warnings() -> Vec<String> {
    LOGGER
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.contains("service name"))
        .cloned()
        .collect()
}

/// Starts a profiler named `name` that writes into a fresh directory.
pub fn start_profiler(name: &str) -> Profiler {
    let dir = std::env::temp_dir().join(format!(
        "span-profiler-service-name-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Profiler::builder()
        .application_name(name)
        .output_dir(PathBuf::from(&dir))
        .start()
        .expect("the profiler starts")
}

/// A provider whose traces carry `service.name` = `name`.
pub fn provider(
    name: &str,
) -> ProfilingTracerProvider<opentelemetry_sdk::trace::SdkTracerProvider> {
    ProfilingTracerProvider::new(opentelemetry_sdk::trace::SdkTracerProvider::builder().build())
        .with_service_name(name)
}

/// Asserts exactly one warning, naming both names and the fix.
pub fn assert_one_warning(application: &str, service: &str) {
    let logged = service_name_warnings();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].contains(&format!("`{application}`"))
            && logged[0].contains(&format!("`{service}`")),
        "{}",
        logged[0]
    );
    assert!(
        logged[0].contains("with_service_name"),
        "the message says the fix: {}",
        logged[0]
    );
}
