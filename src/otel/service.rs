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
    /// The traces' `service.namespace`: `None` until a provider handed out a tracer,
    /// then `Some(None)` for traces without one.
    trace_namespace: Option<Option<String>>,
    /// The `service_namespace` the profiler sends: `None` until a profiler started.
    profiler_namespace: Option<Option<String>>,
}

static NAMES: Mutex<Names> = Mutex::new(Names {
    service: None,
    application: None,
    trace_namespace: None,
    profiler_namespace: None,
});
static WARNED: LogOnce = LogOnce::new();
static WARNED_NAMESPACE: LogOnce = LogOnce::new();

/// Notes the traces' `service.namespace` (`None`: they have none) and warns (once) if the
/// profiler does not send the same `service_namespace`.
pub(crate) fn note_trace_namespace(namespace: Option<&str>) {
    let mut names = lock(&NAMES);
    names.trace_namespace = Some(namespace.map(str::to_owned));
    check_namespace(&names);
}

/// Called by the profiler when it starts uploading, with the `service_namespace` it sends.
pub(crate) fn note_profiler_namespace(namespace: Option<&str>) {
    let mut names = lock(&NAMES);
    names.profiler_namespace = Some(namespace.map(str::to_owned));
    check_namespace(&names);
}

/// The traces' namespace and the profiler's differ now: `Some((profiler, traces))`.
pub(crate) fn namespace_mismatch() -> Option<(Option<String>, String)> {
    let names = lock(&NAMES);
    namespace_difference(&names)
}

fn namespace_difference(names: &Names) -> Option<(Option<String>, String)> {
    match (&names.profiler_namespace, &names.trace_namespace) {
        (Some(sent), Some(Some(traces))) if sent.as_deref() != Some(traces.as_str()) => {
            Some((sent.clone(), traces.clone()))
        }
        _ => None,
    }
}

fn check_namespace(names: &Names) {
    let Some((sent, traces)) = namespace_difference(names) else {
        return;
    };
    if WARNED_NAMESPACE.first() {
        let sent = match sent {
            Some(ns) => format!("sends `service_namespace=\"{ns}\"`"),
            None => "sends no `service_namespace`".to_owned(),
        };
        log::warn!(
            target: "span_profiler",
            "the traces carry `service.namespace=\"{traces}\"` but the profiler {sent}, so \
             Grafana's \"Profiles\" link (which selects `service_name` and \
             `service_namespace`) will find no profile; set `service_namespace(\"{traces}\")` \
             on the profiler builder (or `service.namespace` in OTEL_RESOURCE_ATTRIBUTES \
             and use `from_env()`)"
        );
    }
}

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

/// The `service.namespace` of the environment's resource (`OTEL_RESOURCE_ATTRIBUTES`).
pub(crate) fn service_namespace_from_env() -> Option<String> {
    crate::resource::attribute_from_env("service.namespace")
}

/// The `service.name` that `Resource::builder().build()` of opentelemetry_sdk 0.33
/// detects. Its detectors run in order and later ones win: `OTEL_SERVICE_NAME` if
/// non-empty (else `unknown_service:<executable file name>`), then `service.name` from
/// `OTEL_RESOURCE_ATTRIBUTES` (`k=v` pairs split at `,`, trimmed, the last pair wins),
/// which therefore overrides `OTEL_SERVICE_NAME`.
pub(crate) fn service_name_from_env() -> String {
    let from_attributes = crate::resource::attribute_from_env("service.name");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(traces: Option<Option<&str>>, profiler: Option<Option<&str>>) -> Names {
        Names {
            trace_namespace: traces.map(|t| t.map(str::to_owned)),
            profiler_namespace: profiler.map(|p| p.map(str::to_owned)),
            ..Names::default()
        }
    }

    #[test]
    fn a_trace_namespace_the_profiler_does_not_send_is_a_mismatch_and_a_matching_one_is_not() {
        assert_eq!(namespace_difference(&names(Some(None), Some(None))), None);
        assert_eq!(
            namespace_difference(&names(Some(Some("shop")), Some(None))),
            Some((None, "shop".into()))
        );
        assert_eq!(
            namespace_difference(&names(Some(Some("shop")), Some(Some("store")))),
            Some((Some("store".into()), "shop".into()))
        );
        assert_eq!(
            namespace_difference(&names(Some(Some("shop")), Some(Some("shop")))),
            None
        );
        // Not known yet on one side: nothing to compare.
        assert_eq!(namespace_difference(&names(Some(Some("shop")), None)), None);
        // A namespace only on the profiler: Grafana selects none, the link still works.
        assert_eq!(
            namespace_difference(&names(Some(None), Some(Some("shop")))),
            None
        );
    }
}
