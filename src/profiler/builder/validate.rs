//! Validation: from the builder's options to a checked [`Config`], each failure a
//! [`BuildError`] that names the option (or environment variable) and the fix.

use std::path::PathBuf;
use std::time::Duration;

use super::env;
use super::*;
use crate::error::BuildError;
use crate::sampler::check_sample_rate;
use crate::sink::upload::{
    parse_tls_roots, validate_header, validate_server_address, validate_tags, Auth, UploadConfig,
};

impl ProfilerBuilder {
    pub(crate) fn validate(self) -> Result<Config, BuildError> {
        self.validate_with(&|name| std::env::var(name).ok())
    }

    /// [`validate`](Self::validate) reading the environment through `env`.
    pub(crate) fn validate_with(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, BuildError> {
        if !env::enabled(env)? {
            return Ok(Config::disabled());
        }
        if let Some(err) = self.env_error.clone() {
            return Err(err);
        }
        let mut env_options = self.env_options();
        if self.application_name.is_none()
            && env("OTEL_SERVICE_NAME").is_some_and(|n| !n.is_empty())
        {
            env_options.push(("application_name", "OTEL_SERVICE_NAME"));
        }
        self.validate_options(env)
            .map_err(|err| env::name_the_variable(err, &env_options))
    }

    fn validate_options(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, BuildError> {
        let name = match self.application_name.clone() {
            Some(name) => name,
            None => env("OTEL_SERVICE_NAME").unwrap_or_default(),
        };
        let upload_protocol = self.server_address.as_ref().map(|_| self.protocol);
        validate_application_name(&name, upload_protocol)?;
        if let Some(namespace) = &self.service_namespace {
            validate_namespace(namespace, self.protocol)?;
        }
        check_sample_rate("sample_rate", self.sample_rate)?;
        if !(MIN_UPLOAD_INTERVAL..=MAX_UPLOAD_INTERVAL).contains(&self.upload_interval) {
            return Err(BuildError::invalid(
                "upload_interval",
                format!(
                    "{:?} is out of range; use {MIN_UPLOAD_INTERVAL:?} to {MAX_UPLOAD_INTERVAL:?} \
                     (10 s is typical)",
                    self.upload_interval
                ),
            ));
        }
        if self.max_files == 0 {
            return Err(BuildError::invalid(
                "max_files",
                "0 would delete every file; keep at least 1".into(),
            ));
        }
        if self.max_label_sets == 0 || self.max_span_names == 0 {
            return Err(BuildError::invalid(
                "max_label_sets/max_span_names",
                "0 would drop every label; allow at least 1".into(),
            ));
        }
        if self.symbolize.budget() < crate::MIN_SYMBOLIZER_BUDGET {
            return Err(BuildError::invalid(
                "symbolize",
                format!(
                    "a memory budget of {} bytes is too small; allow at least {} bytes (1 MiB)",
                    self.symbolize.budget(),
                    crate::MIN_SYMBOLIZER_BUDGET
                ),
            ));
        }
        let upload = match &self.server_address {
            Some(address) => Some(upload_config(&self, address, &name)?),
            None => None,
        };
        Ok(Config {
            enabled: true,
            write_files: upload.is_none() || self.output_dir.is_some(),
            // OTLP requests carry more series labels than Push (one per resource
            // attribute, the namespace among them): the window's label-key budget counts
            // them as tags.
            series_tags: upload.as_ref().map_or(0, |u| match u.protocol {
                crate::sink::upload::Protocol::Otlp => {
                    u.tags.len() + crate::otlp::OTLP_FIXED_SERIES_LABELS
                        - crate::limits::FIXED_SERIES_LABELS.len()
                }
                _ => u.tags.len() + usize::from(u.service_namespace.is_some()),
            }),
            upload,
            stop_timeout: self.stop_timeout,
            max_request_bytes: self.max_request_bytes,
            application_name: name,
            sample_rate: self.sample_rate,
            unwinder: self.unwinder,
            upload_interval: self.upload_interval,
            output_dir: self
                .output_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_OUTPUT_DIR)),
            max_files: self.max_files,
            max_bytes: self.max_bytes,
            max_label_sets: self.max_label_sets,
            max_span_names: self.max_span_names,
            symbolize: self.symbolize,
            alloc_sample_bytes: self.alloc_sample_bytes,
        })
    }
}

/// Validated options.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// False when `SPAN_PROFILER_ENABLED=false`: `Profiler::start` must then return an
    /// inert profiler at once (no sampler, no threads, no files, no uploads); the other
    /// fields are then defaults and were not validated.
    pub(crate) enabled: bool,
    /// Set when `server_address` was given: upload every window.
    pub(crate) upload: Option<UploadConfig>,
    /// Write files: true without a server, and with one only if `output_dir` was set.
    pub(crate) write_files: bool,
    /// Number of user tags (series labels): the window's sample-label keys are capped
    /// with `WindowLimits::label_keys_within(series_tags)`.
    pub(crate) series_tags: usize,
    /// How long `stop()` spends uploading what is left.
    pub(crate) stop_timeout: Duration,
    /// Largest uncompressed piece: `EncodeOptions::max_piece_bytes` when uploading.
    pub(crate) max_request_bytes: usize,
    pub(crate) application_name: String,
    pub(crate) sample_rate: u32,
    pub(crate) unwinder: Unwinder,
    pub(crate) upload_interval: Duration,
    pub(crate) output_dir: PathBuf,
    pub(crate) max_files: usize,
    pub(crate) max_bytes: u64,
    pub(crate) max_label_sets: usize,
    pub(crate) max_span_names: usize,
    pub(crate) symbolize: crate::Symbolization,
    /// Bytes per allocation sample; 0: no allocation profiles.
    pub(crate) alloc_sample_bytes: u64,
}

impl Config {
    /// The configuration of a profiler switched off by `SPAN_PROFILER_ENABLED=false`.
    fn disabled() -> Self {
        Self {
            enabled: false,
            upload: None,
            write_files: false,
            series_tags: 0,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            application_name: String::new(),
            sample_rate: DEFAULT_SAMPLE_RATE,
            unwinder: Unwinder::Auto,
            upload_interval: DEFAULT_UPLOAD_INTERVAL,
            output_dir: PathBuf::from(DEFAULT_OUTPUT_DIR),
            max_files: DEFAULT_MAX_FILES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_label_sets: crate::window::DEFAULT_MAX_LABEL_SETS,
            max_span_names: crate::window::DEFAULT_MAX_SPAN_NAMES,
            symbolize: crate::Symbolization::full(),
            alloc_sample_bytes: 0,
        }
    }
}

/// Checks the upload options (only when a server address is set).
fn upload_config(
    b: &ProfilerBuilder,
    address: &str,
    name: &str,
) -> Result<UploadConfig, BuildError> {
    let server = validate_server_address(address)?;
    if !cfg!(feature = "upload") {
        return Err(BuildError::invalid(
            "server_address",
            "span-profiler was built without its `upload` feature; enable it to upload".into(),
        ));
    }
    validate_tags(&b.tags, b.protocol, b.service_namespace.is_some())?;
    for (a, b_, version) in legacy_label_collisions(&b.tags, b.protocol) {
        log::warn!(
            target: "span_profiler",
            "tags `{a}` and `{b_}` name the same label on Pyroscope servers that rewrite `.` to \
             `_` in label names ({version}): when their values differ the server refuses every \
             profile; rename one of them"
        );
    }
    match &b.auth {
        Auth::None => {}
        Auth::Basic { user, password } => {
            if user.contains(':') {
                return Err(BuildError::invalid(
                    "basic_auth",
                    format!("user `{user}` contains `:`, which Basic auth cannot carry"),
                ));
            }
            crate::sink::upload::check_header_value("basic_auth", "the user", user)?;
            crate::sink::upload::check_header_value(
                "basic_auth",
                "the password",
                password.expose(),
            )?;
        }
        Auth::Bearer(token) => {
            crate::sink::upload::check_header_value("bearer_token", "the token", token.expose())?;
        }
    }
    if let Some(tenant) = &b.tenant_id {
        crate::sink::upload::check_header_value(
            "tenant_id",
            &format!("tenant `{}`", tenant.escape_debug()),
            tenant,
        )?;
    }
    let mut headers = Vec::with_capacity(b.http_headers.len());
    for (header, value) in &b.http_headers {
        let lower = validate_header(header, value, &b.auth, b.tenant_id.as_deref())?;
        headers.push((lower, value.clone()));
    }
    if b.request_timeout.is_zero() {
        return Err(BuildError::invalid(
            "request_timeout",
            "0 would fail every upload; use a few seconds (10 s is typical)".into(),
        ));
    }
    if b.queue_capacity == 0 {
        return Err(BuildError::invalid(
            "queue_capacity",
            "0 would drop every window; allow at least 1".into(),
        ));
    }
    let (min, max) = b.retry_backoff;
    if min.is_zero() || min > max {
        return Err(BuildError::invalid(
            "retry_backoff",
            format!(
                "({min:?}, {max:?}) is not a range; use 0 < min <= max (default 500 ms to 30 s)"
            ),
        ));
    }
    if b.max_profile_age.is_zero() || b.max_profile_age > MAX_PROFILE_AGE_LIMIT {
        return Err(BuildError::invalid(
            "max_profile_age",
            format!(
                "{:?} is out of range; use more than 0 and at most {MAX_PROFILE_AGE_LIMIT:?}                  (the server refuses older profiles)",
                b.max_profile_age
            ),
        ));
    }
    if b.max_upload_attempts == 0 {
        return Err(BuildError::invalid(
            "max_upload_attempts",
            "0 would never send a profile; allow at least 1 attempt (8 is the default)".into(),
        ));
    }
    if !(MIN_REQUEST_BYTES..=MAX_REQUEST_BYTES_LIMIT).contains(&b.max_request_bytes) {
        return Err(BuildError::invalid(
            "max_request_bytes",
            format!(
                "{} is out of range; use {MIN_REQUEST_BYTES} to {MAX_REQUEST_BYTES_LIMIT} bytes (1 MiB is typical)",
                b.max_request_bytes
            ),
        ));
    }
    Ok(UploadConfig {
        server,
        protocol: b.protocol,
        application_name: name.to_owned(),
        service_namespace: b.service_namespace.clone(),
        tags: b.tags.clone(),
        auth: b.auth.clone(),
        tenant_id: b.tenant_id.clone(),
        headers,
        request_timeout: b.request_timeout,
        queue_capacity: b.queue_capacity,
        backoff_min: min,
        backoff_max: max,
        max_profile_age: b.max_profile_age,
        max_attempts: b.max_upload_attempts,
        sample_rate: b.sample_rate,
        tls_roots: parse_tls_roots(&b.tls_roots_pem)?,
        otlp: crate::otlp::OtlpSettings {
            service_namespace: b.service_namespace.clone(),
            ..b.otlp.clone()
        },
    })
}

/// The application name rules: the Push API (and local files) take any non-empty UTF-8
/// `service_name` of at most 2048 bytes (`pkg/validation` `isValidServiceName` and
/// `MaxLabelValueLength`); `/ingest`'s `name` grammar takes only `[A-Za-z0-9_.\-/]`.
/// `upload` is the protocol when a server is set.
pub(crate) fn validate_application_name(
    name: &str,
    upload: Option<Protocol>,
) -> Result<(), BuildError> {
    if name.is_empty() {
        return Err(BuildError::invalid(
            "application_name",
            "the name is empty; set it with `application_name(..)` or the OTEL_SERVICE_NAME \
             environment variable (it must equal the OpenTelemetry `service.name`)"
                .into(),
        ));
    }
    if name.len() > limits::MAX_LABEL_VALUE_BYTES {
        return Err(BuildError::invalid(
            "application_name",
            format!(
                "the name is {} bytes; the server's `service_name` label takes at most {}",
                name.len(),
                limits::MAX_LABEL_VALUE_BYTES
            ),
        ));
    }
    if upload == Some(Protocol::Ingest) {
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
        {
            return Err(BuildError::invalid(
                "application_name",
                format!(
                    "`{name}` contains `{bad}`, which `/ingest`'s name grammar does not allow \
                     (letters, digits, `_ . - /`); use `Protocol::Push` (the default), which \
                     takes any UTF-8 name, or rename the application"
                ),
            ));
        }
    }
    Ok(())
}

/// `service_namespace`: a series label value (non-empty, at most 2048 bytes); in
/// `/ingest`'s name it may not contain `,` or `}` (no escaping there).
fn validate_namespace(namespace: &str, protocol: Protocol) -> Result<(), BuildError> {
    const OPTION: &str = "service_namespace";
    if namespace.is_empty() {
        return Err(BuildError::invalid(
            OPTION,
            "the namespace is empty, which the server treats as no label; give the traces' \
             `service.namespace` or leave it unset"
                .into(),
        ));
    }
    if namespace.len() > limits::MAX_LABEL_VALUE_BYTES {
        return Err(BuildError::invalid(
            OPTION,
            format!(
                "the namespace is {} bytes; the server accepts at most {}",
                namespace.len(),
                limits::MAX_LABEL_VALUE_BYTES
            ),
        ));
    }
    if protocol == Protocol::Ingest {
        if let Some(c) = namespace.chars().find(|c| matches!(c, ',' | '}')) {
            return Err(BuildError::invalid(
                OPTION,
                format!(
                    "`{namespace}` contains `{c}`, which ends a value in `/ingest`'s name grammar \
                     (no escaping); remove it or use `Protocol::Push`"
                ),
            ));
        }
    }
    Ok(())
}

/// Pairs of series label names (tags against tags and the fixed names) that are one name
/// once `.` is rewritten to `_`, as Pyroscope v1.x does by default and v2.x does when a
/// tenant turns label sanitization back on (`pkg/validation` `SanitizeLegacyLabelName`;
/// `validation.disable-label-sanitization` defaults to false in v1.21.0 and to true from
/// v2.0.0). Each pair with the server versions it breaks on.
pub(crate) fn legacy_label_collisions(
    tags: &[(String, String)],
    protocol: Protocol,
) -> Vec<(String, String, &'static str)> {
    const VERSIONS: &str = "Pyroscope v1.x, and v2.x tenants with label sanitization on";
    let fixed: &[&str] = match protocol {
        // An OTLP request's resource attributes include the same `otel.*` /
        // `process.runtime.*` names as Push's fixed labels.
        Protocol::Push | Protocol::Otlp => &limits::FIXED_SERIES_LABELS,
        Protocol::Ingest => &limits::INGEST_SERIES_LABELS,
    };
    let names: Vec<&str> = fixed
        .iter()
        .copied()
        .chain([limits::SERVICE_NAMESPACE_LABEL])
        .chain(tags.iter().map(|(k, _)| k.as_str()))
        .collect();
    let mut pairs = Vec::new();
    for (i, tag) in tags.iter().enumerate() {
        let j = fixed.len() + 1 + i;
        let sanitized = tag.0.replace('.', "_");
        for other in &names[..j] {
            if *other != tag.0 && other.replace('.', "_") == sanitized {
                pairs.push((other.to_string(), tag.0.clone(), VERSIONS));
            }
        }
    }
    pairs
}
