//! The check that the profiler's application name equals the traces' `service.name`.
//!
//! Grafana's "Profiles" link queries Pyroscope with `service_name="<resource service.name>"`
//! (ARCHITECTURE.md "Server rules the encoder and uploader obey"): if the profiler uploads under another name, the link finds
//! nothing. Both names are noted here as they become known (a provider's when a tracer is
//! taken from it, the profiler's when it starts); a difference is logged once.

use std::sync::Mutex;

use crate::counters::LogOnce;
use crate::sync::lock;

#[derive(Debug, Default)]
struct Names {
    /// The service name the traces carry (the last provider's that handed out a tracer).
    service: Option<String>,
    /// The profiler's application name (the last one started).
    application: Option<String>,
}

static NAMES: Mutex<Names> = Mutex::new(Names {
    service: None,
    application: None,
});
static WARNED: LogOnce = LogOnce::new();

/// Notes the service name traces carry and warns (once) if it differs from the
/// application name.
pub(crate) fn note_service_name(name: &str) {
    let mut names = lock(&NAMES);
    if names.service.as_deref() != Some(name) {
        names.service = Some(name.to_owned());
        check(&names);
    }
}

/// Called by the profiler when it starts, with its `application_name`: warns (once) if
/// it differs from the service name of the traces.
pub(crate) fn note_application_name(name: &str) {
    let mut names = lock(&NAMES);
    if names.application.as_deref() != Some(name) {
        names.application = Some(name.to_owned());
        check(&names);
    }
}

fn check(names: &Names) {
    let (Some(app), Some(service)) = (&names.application, &names.service) else {
        return;
    };
    if app != service && WARNED.first() {
        log::warn!(
            target: "span_profiler",
            "the profiler's application name `{app}` differs from the service name `{service}` \
             the traces carry, so Grafana's \"Profiles\" link on a span will find no profile; \
             use the same name for both (`application_name(..)`, and the Resource's \
             `service.name` or `ProfilingTracerProvider::with_service_name(..)`)"
        );
    }
}

/// The `service.name` that `Resource::builder().build()` of opentelemetry_sdk 0.33
/// detects. Its detectors run in order and later ones win: `OTEL_SERVICE_NAME` if
/// non-empty (else `unknown_service:<executable file name>`), then `service.name` from
/// `OTEL_RESOURCE_ATTRIBUTES` (`k=v` pairs split at `,`, trimmed, the last pair wins),
/// which therefore overrides `OTEL_SERVICE_NAME`.
pub(crate) fn service_name_from_env() -> String {
    let from_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .ok()
        .and_then(|attrs| {
            attrs
                .split_terminator(',')
                .filter_map(|pair| pair.split_once('='))
                .rfind(|(k, _)| k.trim() == "service.name")
                .map(|(_, v)| v.trim().to_owned())
        });
    if let Some(name) = from_attributes {
        return name;
    }
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
    {
        return name;
    }
    std::env::current_exe()
        .ok()
        .and_then(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .map(|n| format!("unknown_service:{n}"))
        })
        .unwrap_or_else(|| "unknown_service".to_owned())
}
