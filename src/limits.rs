//! The Pyroscope server's rules that this crate's output must obey: one home for every
//! limit, each with the server source it comes from (grafana/pyroscope, `pkg/validation`
//! unless noted; the defaults of its per-tenant limits). The public constants of the
//! crate (`MAX_LABEL_VALUE_BYTES`, `MAX_TAGS`, `MAX_REQUEST_SAMPLES`, ...) are defined from
//! these. ARCHITECTURE.md ("Server rules") lists them with their consequences.

use std::time::Duration;

/// Longest label name, in bytes (`MaxLabelNameLength`, default 1024).
pub const MAX_LABEL_NAME_BYTES: usize = 1024;

/// Longest label value, in bytes (`MaxLabelValueLength`, default 2048).
pub const MAX_LABEL_VALUE_BYTES: usize = 2048;

/// Label names per series (`MaxLabelNamesPerSeries`, default 30).
pub const MAX_SERIES_LABEL_NAMES: usize = 30;

/// Labels per sample (`MaxProfileStacktraceSampleLabels`, default 100).
pub const MAX_LABELS_PER_SAMPLE: usize = 100;

/// Samples per profile (`MaxProfileStacktraceSamples`, default 16000).
pub const MAX_SAMPLES: usize = 16_000;

/// Deepest stack kept; deeper ones are cut to their innermost frames
/// (`MaxProfileStacktraceDepth`, default 1000).
pub const MAX_STACK_DEPTH: usize = 1000;

/// Largest uncompressed profile (`MaxProfileSizeBytes`, default 4 MiB).
pub const MAX_PROFILE_BYTES: usize = 4 << 20;

/// Uncompressed pprof per request that stays clear of the default ingestion rate
/// limit's 2 MB burst (`IngestionBurstSizeMB`): larger requests can be refused with 429
/// on every retry.
pub(crate) const SAFE_REQUEST_BYTES: usize = 1 << 20;

/// How old a profile's `time_nanos` may be (`RejectOlderThan`, default 1 h).
pub const MAX_PROFILE_AGE: Duration = Duration::from_secs(3600);

/// How far in the future `time_nanos` may be (`CreationGracePeriod`, default 10 min).
pub const MAX_PROFILE_AHEAD: Duration = Duration::from_secs(600);

/// Series label names every Push upload carries besides the user's tags, in the order
/// they are sent: the required `__name__` (`process_cpu` or `memory`), `__delta__=false`
/// (every profile sent is already a window's delta or a snapshot: without it the server
/// would subtract consecutive `memory` `alloc_*` profiles once more, `pkg/phlaredb/head.go`
/// `isDeltaSupported`, and drop each series' first one), the service, and what the
/// official SDKs add (pyroscope-go / pyroscope-rs).
pub(crate) const FIXED_SERIES_LABELS: [&str; 7] = [
    "__name__",
    "__delta__",
    "service_name",
    "otel.scope.name",
    "otel.scope.version",
    "process.runtime.name",
    "process.runtime.version",
];

/// Sample-label keys this crate writes itself or the server treats specially: the
/// server decodes `span_id` into a column and keeps `trace_id` out of series labels
/// (v2.1, `pkg/model/pprofsplit`); `span_name` becomes a series label; `profile_id` is
/// silently renamed to `span_id` (`pkg/pprof`).
pub(crate) const RESERVED_SAMPLE_KEYS: [&str; 4] =
    ["span_id", "trace_id", "span_name", "profile_id"];

/// Prefix of the server's own label names (`__name__`, `__delta__`, ...): users may not
/// send others.
pub(crate) const RESERVED_PREFIX: &str = "__";

/// The series label Grafana's traces-to-profiles link selects besides `service_name`
/// when the traces' resource has `service.namespace` (grafana/grafana
/// `createSpanLink.tsx`, `defaultProfilingKeys`: `service.name -> service_name`,
/// `service.namespace -> service_namespace`).
pub(crate) const SERVICE_NAMESPACE_LABEL: &str = "service_namespace";

/// Series label names the server itself gives an `/ingest` upload besides the name's
/// labels (`pkg/og/convert/pprof/profile.go` `createLabels`, v1.21.0 to v2.2.1):
/// `__name__`, `__delta__`, `pyroscope_spy` and `service_name`.
pub(crate) const INGEST_SERIES_LABELS: [&str; 4] =
    ["__name__", "__delta__", "pyroscope_spy", "service_name"];

/// Most user tags: the fixed series labels, `service_namespace` (when set) and
/// `span_name` take the rest of the 30 label names. The Push API's seven fixed names are
/// the larger set (`/ingest` has four), so this bound holds for both protocols.
pub(crate) const MAX_TAGS: usize = MAX_SERIES_LABEL_NAMES - FIXED_SERIES_LABELS.len() - 2;

/// Series label names an upload carries besides the user's tags: the protocol's fixed
/// names and `service_namespace` when it is sent.
pub(crate) const fn fixed_series_names(ingest: bool, namespace: bool) -> usize {
    let fixed = if ingest {
        INGEST_SERIES_LABELS.len()
    } else {
        FIXED_SERIES_LABELS.len()
    };
    fixed + namespace as usize
}

/// Series label names set by the profiler or the server, which tags may not use.
pub(crate) fn is_fixed_series_label(key: &str) -> bool {
    FIXED_SERIES_LABELS.contains(&key)
        || INGEST_SERIES_LABELS.contains(&key)
        || key == SERVICE_NAMESPACE_LABEL
}

/// Whether `key` may not be used by users as a label or tag key.
pub(crate) fn is_reserved_key(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX) || RESERVED_SAMPLE_KEYS.contains(&key)
}
