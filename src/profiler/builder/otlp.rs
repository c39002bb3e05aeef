//! The builder's OTLP options and their environment variables (read only when
//! `SPAN_PROFILER_EXPORTER=otlp` asks for OTLP export: `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set in most OpenTelemetry deployments for traces, and its presence alone never
//! switches profile export on).

use std::time::Duration;

use super::ProfilerBuilder;
use crate::error::BuildError;
use crate::sink::upload::Protocol;

/// `SPAN_PROFILER_EXPORTER`: `otlp` switches OTLP profile export on.
pub(crate) const EXPORTER_VAR: &str = "SPAN_PROFILER_EXPORTER";

/// The OTLP/HTTP endpoint OpenTelemetry SDKs use when none is configured.
pub(crate) const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4318";

impl ProfilerBuilder {
    /// Exports profiles as OTLP to this endpoint, used as given (the whole URL, like
    /// `OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT`): e.g.
    /// `http://collector:4318/v1development/profiles` or
    /// `http://pyroscope:4040/v1development/profiles`. Sets the protocol to
    /// [`Protocol::Otlp`]. To give a base endpoint instead, to which
    /// [`OTLP_PROFILES_PATH`](crate::OTLP_PROFILES_PATH) is appended, use
    /// [`server_address`](Self::server_address) with
    /// [`protocol(Protocol::Otlp)`](Self::protocol).
    ///
    /// ```no_run
    /// let profiler = span_profiler::Profiler::builder()
    ///     .application_name("checkout")
    ///     .otlp_endpoint("http://localhost:4040/v1development/profiles")
    ///     .start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.server_address = Some(endpoint.into());
        self.protocol = Protocol::Otlp;
        self.otlp.path = String::new();
        self
    }

    /// Gzips OTLP request bodies (`Content-Encoding: gzip`); default off, as in
    /// OpenTelemetry SDKs. Only [`Protocol::Otlp`] reads it (pprof is always gzipped).
    ///
    /// ```no_run
    /// let profiler = span_profiler::Profiler::builder()
    ///     .application_name("checkout")
    ///     .server_address("http://collector:4318")
    ///     .protocol(span_profiler::Protocol::Otlp)
    ///     .otlp_gzip(true)
    ///     .start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn otlp_gzip(mut self, gzip: bool) -> Self {
        self.otlp.gzip = gzip;
        self
    }

    /// Applies `SPAN_PROFILER_EXPORTER` and, when it asks for OTLP, the
    /// `OTEL_EXPORTER_OTLP_*` variables; returns the first malformed one.
    pub(super) fn apply_otlp_env(
        mut self,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> (Self, Option<BuildError>) {
        let Some(exporter) = get(EXPORTER_VAR) else {
            return (self, None);
        };
        match exporter.trim().to_ascii_lowercase().as_str() {
            "otlp" => {}
            "pyroscope" => return (self, None),
            _ => {
                return (
                    self,
                    Some(BuildError::invalid(
                        EXPORTER_VAR,
                        format!("`{exporter}` is not an exporter; use `otlp` or `pyroscope`"),
                    )),
                )
            }
        }
        let either = |name: &str| {
            get(&format!("OTEL_EXPORTER_OTLP_PROFILES_{name}"))
                .map(|v| (v, format!("OTEL_EXPORTER_OTLP_PROFILES_{name}")))
                .or_else(|| {
                    get(&format!("OTEL_EXPORTER_OTLP_{name}"))
                        .map(|v| (v, format!("OTEL_EXPORTER_OTLP_{name}")))
                })
        };
        let mut error = None;
        if let Some((protocol, var)) = either("PROTOCOL") {
            if protocol.trim() != "http/protobuf" {
                error = Some(BuildError::invalid(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    format!(
                        "{var} is `{protocol}`; profiles are exported as `http/protobuf` only: \
                         set OTEL_EXPORTER_OTLP_PROFILES_PROTOCOL=http/protobuf and an HTTP \
                         endpoint (port 4318 on a collector)"
                    ),
                ));
            }
        }
        if let Some(endpoint) = get("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT") {
            self = self.otlp_endpoint(endpoint.trim());
        } else {
            if let Some(base) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
                self.server_address = Some(base.trim().to_owned());
            } else if self.server_address.is_none() {
                self.server_address = Some(DEFAULT_OTLP_ENDPOINT.to_owned());
            }
            self.protocol = Protocol::Otlp;
            self.otlp.path = crate::otlp::OTLP_PROFILES_PATH.to_owned();
        }
        if let Some((headers, var)) = either("HEADERS") {
            match parse_headers(&headers) {
                Some(pairs) => {
                    for (name, value) in pairs {
                        self = self.http_header(name, value);
                    }
                }
                None => {
                    error.get_or_insert(BuildError::invalid(
                        "OTEL_EXPORTER_OTLP_HEADERS",
                        format!("{var} is not a list of `name=value` pairs separated by `,`"),
                    ));
                }
            }
        }
        if let Some((timeout, var)) = either("TIMEOUT") {
            match timeout.trim().parse::<u64>() {
                Ok(ms) => self.request_timeout = Duration::from_millis(ms),
                Err(_) => {
                    error.get_or_insert(BuildError::invalid(
                        "OTEL_EXPORTER_OTLP_TIMEOUT",
                        format!("{var} `{timeout}` is not a whole number of milliseconds"),
                    ));
                }
            }
        }
        if let Some((compression, var)) = either("COMPRESSION") {
            match compression.trim() {
                "gzip" => self.otlp.gzip = true,
                "none" => self.otlp.gzip = false,
                _ => {
                    error.get_or_insert(BuildError::invalid(
                        "OTEL_EXPORTER_OTLP_COMPRESSION",
                        format!("{var} is `{compression}`; use `gzip` or `none`"),
                    ));
                }
            }
        }
        (self, error)
    }
}

/// `name=value,name=value`, values percent-decoded (the OpenTelemetry SDKs' format).
/// Secrets are never echoed: a malformed list gives `None`.
fn parse_headers(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (name, value) = item.split_once('=')?;
            let name = name.trim();
            if name.is_empty() {
                return None;
            }
            Some((name.to_owned(), percent_decode(value.trim())?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn upload(pairs: &[(&str, &str)]) -> Option<crate::sink::upload::UploadConfig> {
        let env = env_of(pairs);
        ProfilerBuilder::default()
            .application_name("svc")
            .apply_env(&env)
            .validate_with(&env)
            .expect("valid")
            .upload
    }

    #[test]
    fn an_otlp_endpoint_alone_never_switches_profile_export_on() {
        assert!(upload(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).is_none());
        assert!(upload(&[(
            "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
            "http://collector:4318/v1development/profiles"
        )])
        .is_none());
    }

    #[test]
    fn the_exporter_switch_reads_endpoint_headers_timeout_and_compression_like_the_sdks() {
        let u = upload(&[
            (EXPORTER_VAR, "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b,x-other=c"),
            ("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "9000"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ])
        .expect("otlp on");
        assert_eq!(u.protocol, Protocol::Otlp);
        assert_eq!(
            u.server.url(&u.otlp.path),
            "http://collector:4318/v1development/profiles"
        );
        assert_eq!(u.request_timeout, Duration::from_millis(2500));
        assert!(u.otlp.gzip);
        let headers: Vec<_> = u
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("x-api-key", "a b"), ("x-other", "c")]);
    }

    #[test]
    fn the_profiles_endpoint_is_used_whole_and_wins_over_the_base_endpoint() {
        let u = upload(&[
            (EXPORTER_VAR, "OTLP"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            (
                "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
                "http://pyroscope:4040/custom/path",
            ),
        ])
        .expect("otlp on");
        assert_eq!(
            u.server.url(&u.otlp.path),
            "http://pyroscope:4040/custom/path"
        );
        assert!(!u.otlp.gzip);
        let u = upload(&[(EXPORTER_VAR, "otlp")]).expect("otlp on");
        assert_eq!(
            u.server.url(&u.otlp.path),
            "http://localhost:4318/v1development/profiles"
        );
    }

    #[test]
    fn malformed_otlp_variables_are_build_errors_naming_the_variable() {
        for (pairs, var) in [
            (vec![(EXPORTER_VAR, "zipkin")], EXPORTER_VAR),
            (
                vec![
                    (EXPORTER_VAR, "otlp"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
                ],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
            (
                vec![
                    (EXPORTER_VAR, "otlp"),
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
                ],
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ),
            (
                vec![
                    (EXPORTER_VAR, "otlp"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![
                    (EXPORTER_VAR, "otlp"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
                ],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
        ] {
            let env = env_of(&pairs);
            let err = ProfilerBuilder::default()
                .application_name("svc")
                .apply_env(&env)
                .validate_with(&env)
                .expect_err("malformed");
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }
}
