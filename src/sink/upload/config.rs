//! Upload options and their rules (ARCHITECTURE.md "Upload" and "Server rules the encoder
//! and uploader obey"; auth and tenancy). Every check names the input and the rule; no
//! message ever repeats a secret.

use std::fmt;
use std::time::Duration;

use crate::error::BuildError;
use crate::labels::{MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES};
use crate::limits::{
    fixed_series_names, is_fixed_series_label, MAX_SERIES_LABEL_NAMES, RESERVED_SAMPLE_KEYS,
};

/// How profiles are sent to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// Pyroscope's Push API (`/push.v1.PusherService/Push`, Connect unary, protobuf): the
    /// default, and the only one that carries the `otel.scope.*` series labels (OTLP
    /// carries `process.runtime.*` as resource attributes).
    #[default]
    Push,
    /// The legacy `/ingest` endpoint (`format=pprof`). Tag values may then not contain
    /// `,` or `}`: the endpoint's `name` grammar has no escaping.
    Ingest,
    /// OpenTelemetry's profiles signal (OTLP/HTTP, protobuf, `profiles/v1development` of
    /// opentelemetry-proto v1.10.0): each window as an `ExportProfilesServiceRequest`
    /// whose samples link to their local root span (trace id and span id). Grafana
    /// Pyroscope accepts it at `/v1development/profiles` and turns the links into
    /// `span_id` / `trace_id` sample labels; an OpenTelemetry Collector forwards it. The
    /// server address is the OTLP base endpoint (`http://collector:4318`), to which
    /// [`OTLP_PROFILES_PATH`](crate::OTLP_PROFILES_PATH) is appended, unless the endpoint
    /// was given whole with
    /// [`ProfilerBuilder::otlp_endpoint`](crate::ProfilerBuilder::otlp_endpoint).
    Otlp,
}

/// Default most attempts (the first and its retries) per profile piece: a piece the
/// server keeps failing (the Push API answers 500 for a body it cannot decode) cannot
/// occupy the queue until it ages out.
pub const DEFAULT_MAX_UPLOAD_ATTEMPTS: u32 = 8;

/// Most retries of one piece after `/ingest` answered 422. That endpoint answers 422
/// for every failure that is not a rate limit, transient backend failures included
/// (grafana/pyroscope `pkg/ingester/pyroscope/ingest_handler.go`, v1.21.0 to v2.2.1; up to
/// v2.1.x rate limits too), and this crate validates profiles before sending, so a 422
/// is more likely transient than a bad profile. The Push API never answers 422 for a
/// transient failure, so its 422 is final.
pub const INGEST_422_RETRIES: u32 = 3;

/// A string that never appears in `Debug` output, logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Credentials sent with every request (never across a redirect: none is followed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Auth {
    #[default]
    None,
    /// `Authorization: Basic base64(user:password)` (Grafana Cloud: user id and API token).
    Basic { user: String, password: Secret },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

/// A validated server address: scheme, authority and an optional base path (kept
/// without its trailing `/`). Carries no credentials: an address with `user:password@`
/// is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerAddress {
    pub(crate) https: bool,
    pub(crate) authority: String,
    pub(crate) base_path: String,
}

impl ServerAddress {
    /// The absolute URL of `path` (which starts with `/`) on this server.
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!(
            "{scheme}://{}{}{path_and_query}",
            self.authority, self.base_path
        )
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url(""))
    }
}

/// Everything the uploader needs, validated by `ProfilerBuilder::start`.
#[derive(Debug, Clone)]
// Without the `upload` feature only validation reads it (a server address is an error).
#[cfg_attr(not(feature = "upload"), allow(dead_code))]
pub struct UploadConfig {
    pub(crate) server: ServerAddress,
    pub(crate) protocol: Protocol,
    pub(crate) application_name: String,
    /// The `service_namespace` series label (the traces' `service.namespace`), if any.
    pub(crate) service_namespace: Option<String>,
    /// User tags (series labels), keys unique, in the order given.
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) auth: Auth,
    pub(crate) tenant_id: Option<String>,
    /// Extra headers, names lowercase, values secret (they often carry API keys).
    pub(crate) headers: Vec<(String, Secret)>,
    pub(crate) request_timeout: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_profile_age: Duration,
    /// Most attempts per piece (at least 1).
    pub(crate) max_attempts: u32,
    /// Sampling rate in Hz (`/ingest`'s `sampleRate`).
    pub(crate) sample_rate: u32,
    /// Extra trusted root certificates (DER), besides the webpki roots (read only by the
    /// `tls` client; without it `https://` addresses are refused at build time).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) tls_roots: Vec<Vec<u8>>,
    /// Path, compression and resource options of [`Protocol::Otlp`].
    pub(crate) otlp: crate::otlp::OtlpSettings,
}

/// Parses a `server_address`: `http://` or `https://`, a host with an optional port, an
/// optional base path; no credentials, query or fragment.
pub(crate) fn validate_server_address(address: &str) -> Result<ServerAddress, BuildError> {
    const OPTION: &str = "server_address";
    let address = address.trim();
    let Some((scheme, rest)) = address.split_once("://") else {
        return Err(BuildError::invalid(
            OPTION,
            format!("`{address}` has no scheme; write it as `http://host:4040` or `https://host`"),
        ));
    };
    // The part before any path, query or fragment: the only place credentials can be.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..authority_end].contains('@') {
        // Never echo the address: it holds a password.
        return Err(BuildError::invalid(
            OPTION,
            "the address contains credentials (`user:password@`); remove them and use \
             `basic_auth(user, password)` so they are never logged"
                .into(),
        ));
    }
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => {
            return Err(BuildError::invalid(
                OPTION,
                format!("`{address}` has scheme `{scheme}`; use `http://` or `https://`"),
            ))
        }
    };
    if https && !cfg!(feature = "tls") {
        return Err(BuildError::invalid(
            OPTION,
            format!("`{address}` is https, but span-profiler was built without its `tls` feature; enable it"),
        ));
    }
    let authority = &rest[..authority_end];
    let tail = &rest[authority_end..];
    if tail.contains(['?', '#']) {
        return Err(BuildError::invalid(
            OPTION,
            format!("`{address}` has a query or fragment; give only scheme, host, port and an optional path"),
        ));
    }
    validate_authority(address, authority)?;
    let base_path = tail.trim_end_matches('/');
    if base_path.contains(|c: char| c.is_ascii_control() || c == ' ' || !c.is_ascii()) {
        return Err(BuildError::invalid(
            OPTION,
            format!("the path of `{address}` contains spaces, control or non-ASCII characters; percent-encode them"),
        ));
    }
    let server = ServerAddress {
        https,
        authority: authority.to_ascii_lowercase(),
        base_path: base_path.to_owned(),
    };
    #[cfg(feature = "upload")]
    if server.url("/").parse::<http::Uri>().is_err() {
        return Err(BuildError::invalid(
            OPTION,
            format!("`{address}` is not a valid URL"),
        ));
    }
    Ok(server)
}

fn validate_authority(address: &str, authority: &str) -> Result<(), BuildError> {
    let bad = |what: &str| {
        BuildError::invalid(
            "server_address",
            format!("`{address}` {what}; write it as `http://host:4040` or `https://host`"),
        )
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return Err(bad("has an unclosed `[`"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(bad("has text after the IPv6 address")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !host_ok {
        return Err(bad(
            "has a host with characters other than letters, digits, `.`, `-`, `_`",
        ));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("has a port that is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

/// Checks the user's tags: they become series labels next to the fixed ones (and
/// `service_namespace` when `namespace` is set).
pub(crate) fn validate_tags(
    tags: &[(String, String)],
    protocol: Protocol,
    namespace: bool,
) -> Result<(), BuildError> {
    const OPTION: &str = "tag";
    let fixed = match protocol {
        // Pyroscope turns every resource attribute (the namespace among them) into a
        // series label.
        Protocol::Otlp => crate::otlp::OTLP_FIXED_SERIES_LABELS,
        _ => fixed_series_names(protocol == Protocol::Ingest, namespace),
    };
    let allowed = MAX_SERIES_LABEL_NAMES - fixed - 1;
    if tags.len() > allowed {
        let what = match (protocol, namespace) {
            (Protocol::Otlp, _) => "the series labels Pyroscope derives from an OTLP request (4, and one per resource attribute, at most 8)",
            (Protocol::Push, false) => "the Push API's 7 fixed series labels",
            (Protocol::Push, true) => "the Push API's 7 fixed series labels, `service_namespace`",
            (Protocol::Ingest, false) => "the 4 series labels `/ingest` adds (`__name__`, `__delta__`, `pyroscope_spy`, `service_name`)",
            (Protocol::Ingest, true) => "the 4 series labels `/ingest` adds (`__name__`, `__delta__`, `pyroscope_spy`, `service_name`), `service_namespace`",
        };
        return Err(BuildError::invalid(
            OPTION,
            format!(
                "{} tags plus {what} and `span_name` make {} label names; the server accepts \
                 {MAX_SERIES_LABEL_NAMES}: use at most {allowed} tags",
                tags.len(),
                tags.len() + fixed + 1,
            ),
        ));
    }
    for (i, (key, value)) in tags.iter().enumerate() {
        validate_tag_key(key)?;
        if tags[..i].iter().any(|(k, _)| k == key) {
            return Err(BuildError::invalid(
                OPTION,
                format!("tag `{key}` is given twice; series label names must be unique"),
            ));
        }
        if value.is_empty() {
            return Err(BuildError::invalid(
                OPTION,
                format!("tag `{key}` has an empty value, which the server treats as no label; give it a value"),
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(BuildError::invalid(
                OPTION,
                format!(
                    "the value of tag `{key}` is {} bytes; the server accepts at most {MAX_LABEL_VALUE_BYTES}",
                    value.len()
                ),
            ));
        }
        if protocol == Protocol::Ingest {
            if let Some(c) = value.chars().find(|c| matches!(c, ',' | '}')) {
                return Err(BuildError::invalid(
                    OPTION,
                    format!(
                        "the value `{value}` of tag `{key}` contains `{c}`, which ends a value in \
                         `/ingest`'s name grammar (no escaping); remove it or use `Protocol::Push`"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn validate_tag_key(key: &str) -> Result<(), BuildError> {
    const OPTION: &str = "tag";
    if key.is_empty() {
        return Err(BuildError::invalid(
            OPTION,
            "a tag key is empty; use letters, digits, `_` and `.`".into(),
        ));
    }
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(BuildError::invalid(
            OPTION,
            format!(
                "tag key of {} bytes is longer than the server's {MAX_LABEL_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    if key.starts_with("__") {
        return Err(BuildError::invalid(
            OPTION,
            format!("tag key `{key}` starts with `__`, which the server reserves; rename it"),
        ));
    }
    if is_fixed_series_label(key) {
        return Err(BuildError::invalid(
            OPTION,
            format!("tag key `{key}` is a series label the profiler sets itself; rename it"),
        ));
    }
    if RESERVED_SAMPLE_KEYS.contains(&key) {
        return Err(BuildError::invalid(
            OPTION,
            format!(
                "tag key `{key}` is reserved for span labels (`span_id`, `span_name`, \
                 `trace_id`, `profile_id`); rename it"
            ),
        ));
    }
    let chars_ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !chars_ok || key.as_bytes()[0].is_ascii_digit() {
        return Err(BuildError::invalid(
            OPTION,
            format!("tag key `{key}` is invalid; use letters, digits, `_` and `.`, not starting with a digit"),
        ));
    }
    Ok(())
}

/// Header names the uploader sets itself.
const MANAGED_HEADERS: [&str; 8] = [
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "connect-protocol-version",
    "user-agent",
];

/// Checks one extra header; returns its lowercase name. `authorization` and
/// `x-scope-orgid` are refused when `basic_auth`/`bearer_token` or `tenant_id` set them.
pub(crate) fn validate_header(
    name: &str,
    value: &Secret,
    auth: &Auth,
    tenant_id: Option<&str>,
) -> Result<String, BuildError> {
    const OPTION: &str = "http_header";
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(BuildError::invalid(
            OPTION,
            format!(
                "header name `{}` is not a valid HTTP token; use letters, digits and `-`",
                name.escape_debug()
            ),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if MANAGED_HEADERS.contains(&lower.as_str()) {
        return Err(BuildError::invalid(
            OPTION,
            format!("header `{name}` is set by the uploader itself; leave it out"),
        ));
    }
    if lower == "authorization" && *auth != Auth::None {
        return Err(BuildError::invalid(
            OPTION,
            "header `Authorization` conflicts with `basic_auth`/`bearer_token`; use one of them"
                .into(),
        ));
    }
    if lower == "x-scope-orgid" && tenant_id.is_some() {
        return Err(BuildError::invalid(
            OPTION,
            "header `X-Scope-OrgID` conflicts with `tenant_id`; use one of them".into(),
        ));
    }
    // The value may be a secret: describe the problem without repeating it.
    check_header_value(
        OPTION,
        &format!("the value of header `{name}`"),
        value.expose(),
    )?;
    Ok(lower)
}

/// A header value: visible ASCII, spaces and tabs inside (no CR, LF or NUL).
pub(crate) fn check_header_value(
    option: &'static str,
    what: &str,
    value: &str,
) -> Result<(), BuildError> {
    if value.is_empty() {
        return Err(BuildError::invalid(option, format!("{what} is empty")));
    }
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(BuildError::invalid(
            option,
            format!(
                "{what} contains a control or non-ASCII character, not allowed in HTTP headers"
            ),
        ));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err(BuildError::invalid(
            option,
            format!("{what} starts or ends with whitespace; trim it"),
        ));
    }
    Ok(())
}

/// Reads PEM root certificates (one or more `CERTIFICATE` blocks per input) into DER.
#[cfg(feature = "tls")]
pub(crate) fn parse_tls_roots(pems: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, BuildError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    const OPTION: &str = "tls_root_certificate_pem";
    let mut ders = Vec::new();
    for (i, pem) in pems.iter().enumerate() {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|err| {
                BuildError::invalid(OPTION, format!("certificate #{} is not valid PEM ({err}); pass `-----BEGIN CERTIFICATE-----` blocks", i + 1))
            })?;
            let mut store = rustls::RootCertStore::empty();
            store.add(cert.clone()).map_err(|err| {
                BuildError::invalid(
                    OPTION,
                    format!("certificate #{} cannot be a trust anchor: {err}", i + 1),
                )
            })?;
            ders.push(cert.as_ref().to_vec());
            found += 1;
        }
        if found == 0 {
            return Err(BuildError::invalid(
                OPTION,
                format!(
                    "input #{} holds no `-----BEGIN CERTIFICATE-----` block",
                    i + 1
                ),
            ));
        }
    }
    Ok(ders)
}

/// Without the `tls` feature there is nothing to parse into.
#[cfg(not(feature = "tls"))]
pub(crate) fn parse_tls_roots(pems: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, BuildError> {
    debug_assert!(
        pems.is_empty(),
        "the option only exists with the `tls` feature"
    );
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn tag_err(pairs: &[(&str, &str)], protocol: Protocol) -> String {
        validate_tags(&tags(pairs), protocol, false)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn server_addresses_are_parsed_or_refused_with_the_rule() {
        let ok = validate_server_address("http://LocalHost:4040/").unwrap();
        assert_eq!(ok.url("/ingest"), "http://localhost:4040/ingest");
        let prefixed = validate_server_address("http://127.0.0.1:8080/pyroscope/").unwrap();
        assert_eq!(prefixed.url("/x"), "http://127.0.0.1:8080/pyroscope/x");
        let v6 = validate_server_address("http://[::1]:4040").unwrap();
        assert_eq!(v6.authority, "[::1]:4040");
        assert!(validate_server_address("localhost:4040")
            .unwrap_err()
            .to_string()
            .contains("no scheme"));
        assert!(validate_server_address("ftp://x")
            .unwrap_err()
            .to_string()
            .contains("scheme `ftp`"));
        assert!(validate_server_address("http://")
            .unwrap_err()
            .to_string()
            .contains("no host"));
        assert!(validate_server_address("http://h:99999")
            .unwrap_err()
            .to_string()
            .contains("port"));
        assert!(validate_server_address("http://h/?a=b")
            .unwrap_err()
            .to_string()
            .contains("query"));
        assert!(validate_server_address("http://h w")
            .unwrap_err()
            .to_string()
            .contains("host"));
    }

    #[test]
    fn credentials_in_the_address_are_refused_without_repeating_them() {
        let err = validate_server_address("https://alice:hunter2@example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("basic_auth"), "{err}");
        assert!(!err.contains("hunter2") && !err.contains("alice"), "{err}");
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn https_without_the_tls_feature_is_a_build_error() {
        let err = validate_server_address("https://example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tls` feature"), "{err}");
    }

    #[test]
    fn tags_break_no_series_label_rule() {
        assert!(validate_tags(
            &tags(&[("region", "eu-west-1"), ("pod.name", "a,b}")]),
            Protocol::Push,
            false
        )
        .is_ok());
        assert!(tag_err(&[("__x", "v")], Protocol::Push).contains("reserves"));
        assert!(tag_err(&[("service_namespace", "v")], Protocol::Push).contains("sets itself"));
        assert!(tag_err(&[("pyroscope_spy", "v")], Protocol::Ingest).contains("sets itself"));
        assert!(tag_err(&[("service_name", "v")], Protocol::Push).contains("sets itself"));
        assert!(tag_err(&[("span_name", "v")], Protocol::Push).contains("reserved for span labels"));
        assert!(tag_err(&[("profile_id", "v")], Protocol::Push).contains("reserved"));
        assert!(tag_err(&[("a-b", "v")], Protocol::Push).contains("invalid"));
        assert!(tag_err(&[("1a", "v")], Protocol::Push).contains("not starting with a digit"));
        assert!(tag_err(&[("", "v")], Protocol::Push).contains("empty"));
        assert!(tag_err(&[("k", "")], Protocol::Push).contains("empty value"));
        assert!(tag_err(&[("k", "a"), ("k", "b")], Protocol::Push).contains("twice"));
        let long = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
        assert!(tag_err(&[("k", &long)], Protocol::Push).contains("at most 2048"));
    }

    #[test]
    fn ingest_refuses_values_that_would_end_early() {
        let err = tag_err(&[("pod", "a,b")], Protocol::Ingest);
        assert!(
            err.contains("`a,b`") && err.contains("contains `,`"),
            "{err}"
        );
        assert!(tag_err(&[("pod", "a}")], Protocol::Ingest).contains("contains `}`"));
        assert!(validate_tags(&tags(&[("pod", "a=b{c")]), Protocol::Ingest, false).is_ok());
    }

    #[test]
    fn the_series_label_count_includes_the_fixed_labels_the_namespace_and_span_name() {
        use crate::limits::{FIXED_SERIES_LABELS, MAX_TAGS};
        let n_tags = |n: usize| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("k{i}"), "v".into())).collect()
        };
        // The public bound holds for every protocol with the namespace sent.
        assert_eq!(MAX_TAGS + FIXED_SERIES_LABELS.len() + 1 + 1, 30);
        assert!(validate_tags(&n_tags(MAX_TAGS), Protocol::Push, true).is_ok());
        let err = validate_tags(&n_tags(MAX_TAGS + 1), Protocol::Push, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("make 31 label names") && err.contains("at most 21 tags"),
            "{err}"
        );
        // Without a namespace the Push API leaves one more name.
        assert!(validate_tags(&n_tags(MAX_TAGS + 1), Protocol::Push, false).is_ok());
        // `/ingest`: the server's 4 names (`__delta__` and `pyroscope_spy` counted).
        assert!(validate_tags(&n_tags(24), Protocol::Ingest, true).is_ok());
        let err = validate_tags(&n_tags(25), Protocol::Ingest, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pyroscope_spy") && err.contains("at most 24 tags"),
            "{err}"
        );
    }

    #[test]
    fn headers_are_checked_without_repeating_their_values() {
        let secret = Secret::new("s3cr3t\nx");
        let err = validate_header("X-Api-Key", &secret, &Auth::None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`X-Api-Key`") && !err.contains("s3cr3t"),
            "{err}"
        );
        let fine = Secret::new("abc");
        assert_eq!(
            validate_header("X-Api-Key", &fine, &Auth::None, None).unwrap(),
            "x-api-key"
        );
        assert!(validate_header("Content-Type", &fine, &Auth::None, None).is_err());
        assert!(validate_header("bad name", &fine, &Auth::None, None).is_err());
        let bearer = Auth::Bearer(Secret::new("t"));
        assert!(validate_header("authorization", &fine, &bearer, None)
            .unwrap_err()
            .to_string()
            .contains("conflicts"));
        assert!(validate_header("Authorization", &fine, &Auth::None, None).is_ok());
        assert!(validate_header("X-Scope-OrgID", &fine, &Auth::None, Some("t")).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let auth = Auth::Basic {
            user: "alice".into(),
            password: Secret::new("hunter2"),
        };
        let shown = format!("{auth:?} {:?}", Auth::Bearer(Secret::new("tok3n")));
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
}
