//! OTLP profiles export (ARCHITECTURE.md "OTLP export"): each closed window as an
//! OpenTelemetry `ExportProfilesServiceRequest` (`profiles/v1development`, pinned to
//! opentelemetry-proto v1.10.0), every sample linked to its local root span, sent by the
//! uploader as `POST /v1development/profiles` with `Content-Type: application/x-protobuf`.

/// A closed window to requests.
pub(crate) mod encode;
/// The request messages (prost derives for the pinned proto).
pub(crate) mod proto;

use proto::KeyValue;

/// The path OpenTelemetry SDKs append to `OTEL_EXPORTER_OTLP_ENDPOINT` for profiles.
pub const OTLP_PROFILES_PATH: &str = "/v1development/profiles";

/// The opentelemetry-proto release whose `profiles/v1development` messages are written.
pub const OTLP_PROTO_VERSION: &str = "1.10.0";

/// Series labels Pyroscope derives from every OTLP request besides the tags: its own
/// `__delta__`, `__otel__`, `__name__`, `service_name`, and one per resource attribute
/// ([`resource`] writes at most 8).
pub(crate) const OTLP_FIXED_SERIES_LABELS: usize = 4 + 8;

/// OTLP options of an upload configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OtlpSettings {
    /// The request path on the server (from `base_path` of the address when the endpoint
    /// was given whole: then empty).
    pub(crate) path: String,
    /// Gzip the body (`Content-Encoding: gzip`).
    pub(crate) gzip: bool,
    /// `service.namespace` of the resource, when set.
    pub(crate) service_namespace: Option<String>,
}

/// The resource attributes of every request: `service.name` (the application name, which
/// must equal the traces' `service.name`), `service.namespace` when given, `process.*`,
/// `telemetry.sdk.*`, then the user's tags. `process.pid` is left out on purpose:
/// Pyroscope makes every resource attribute a series label, and a pid would start new
/// series at every restart.
pub(crate) fn resource(
    application_name: &str,
    settings: &OtlpSettings,
    tags: &[(String, String)],
) -> Vec<KeyValue> {
    use encode::string_attribute as attr;
    let mut attributes = vec![attr("service.name", application_name)];
    if let Some(namespace) = settings
        .service_namespace
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        attributes.push(attr("service.namespace", namespace));
    }
    if let Some(exe) = executable_name() {
        attributes.push(attr("process.executable.name", &exe));
    }
    attributes.extend([
        attr("process.runtime.name", "rust"),
        attr(
            "process.runtime.version",
            env!("SPAN_PROFILER_RUSTC_VERSION"),
        ),
        attr("telemetry.sdk.name", encode::SCOPE_NAME),
        attr("telemetry.sdk.language", "rust"),
        attr("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ]);
    for (k, v) in tags {
        attributes.push(attr(k, v));
    }
    attributes
}

fn executable_name() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.file_name()?.to_string_lossy().into_owned())
}
