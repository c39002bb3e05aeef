//! The requests of both protocols, byte for byte as the server decodes them, and the
//! Push API's protobuf messages.
//!
//! Pieces arrive gzipped from the encoder and are gzipped nowhere else: the Push API
//! carries them as `raw_profile` in an uncompressed body, `/ingest` as the raw body.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Uri;

use super::config::{Auth, Protocol, UploadConfig};
use crate::error::BuildError;

/// Path of the Push API's one method.
pub(crate) const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// Path of the legacy endpoint.
pub(crate) const INGEST_PATH: &str = "/ingest";
/// `spyName` of `/ingest` and `otel.scope.name` of the Push API.
pub(crate) const SCOPE_NAME: &str = "span-profiler";
/// The rustc that built this crate (from the build script).
const RUSTC_VERSION: &str = env!("SPAN_PROFILER_RUSTC_VERSION");

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// One series per request here (one piece).
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    /// Series labels, sorted by name, names unique.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    /// The profiles of this series.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `push.v1.RawSample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// pprof bytes (gzipped).
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// A UUID, only logged by the server.
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// What a window's profiles measure: it picks the Push API's `__name__`, which with each
/// sample type and the period type makes Pyroscope's profile type ids
/// (`<__name__>:<type>:<unit>:<period type>:<period unit>`, `pkg/model`
/// `CreateProfileLabels`): `process_cpu:cpu:nanoseconds:cpu:nanoseconds`, and
/// `memory:alloc_space:bytes:space:bytes` with its siblings `alloc_objects:count`,
/// `inuse_space:bytes`, `inuse_objects:count`. `/ingest` derives the same names from
/// the sample types itself (`pkg/og/convert/pprof/profile.go` `metricName`: a type
/// containing `cpu` gives `process_cpu`, `alloc_` or `inuse_` gives `memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeriesKind {
    /// CPU profiles (`samples/count`, `cpu/nanoseconds`).
    #[default]
    Cpu,
    /// Allocation profiles (`alloc_objects`, `alloc_space`, `inuse_objects`,
    /// `inuse_space`; period type `space/bytes`).
    Memory,
}

impl SeriesKind {
    /// The series label `__name__`.
    pub(crate) fn metric_name(self) -> &'static str {
        match self {
            SeriesKind::Cpu => "process_cpu",
            SeriesKind::Memory => "memory",
        }
    }
}

/// One request, ready to be sent (and sent again on retry).
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Builds the requests of one uploader; everything that does not depend on the piece is
/// computed once.
#[derive(Debug)]
pub(crate) struct Requests {
    protocol: Protocol,
    /// OTLP: the endpoint's URI and whether bodies are gzipped.
    otlp: Option<(Uri, bool)>,
    /// The Push API's URI.
    push_uri: Uri,
    /// `{server}/ingest?name=<app>{tags}` (the rest of the query is per piece).
    ingest_prefix: String,
    sample_rate: u32,
    headers: HeaderMap,
    /// The Push API's series labels of CPU windows, and of allocation windows (they
    /// differ in `__name__` only).
    series_labels: Vec<LabelPair>,
    memory_series_labels: Vec<LabelPair>,
}

fn header_error(option: &'static str) -> BuildError {
    BuildError::InvalidOption {
        option,
        reason: "the value is not allowed in an HTTP header; use visible ASCII characters".into(),
    }
}

impl Requests {
    pub(crate) fn new(config: &UploadConfig) -> Result<Self, BuildError> {
        let push_uri = config.server.url(PUSH_PATH).parse::<Uri>().map_err(|err| {
            BuildError::InvalidOption {
                option: "server_address",
                reason: format!("`{}` does not make a valid URL: {err}", config.server),
            }
        })?;
        let mut headers = HeaderMap::new();
        let content_type = match config.protocol {
            Protocol::Push => "application/proto",
            Protocol::Ingest => "application/octet-stream",
            Protocol::Otlp => "application/x-protobuf",
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if config.protocol == Protocol::Push {
            headers.insert("connect-protocol-version", HeaderValue::from_static("1"));
        }
        if config.protocol == Protocol::Otlp && config.otlp.gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        let otlp_uri = match config.protocol {
            Protocol::Otlp => Some(
                config
                    .server
                    .url(&config.otlp.path)
                    .parse::<Uri>()
                    .map_err(|err| BuildError::InvalidOption {
                        option: "otlp_endpoint",
                        reason: format!("`{}` does not make a valid URL: {err}", config.server),
                    })?,
            ),
            _ => None,
        };
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("span-profiler/", env!("CARGO_PKG_VERSION"))),
        );
        let authorization = match &config.auth {
            Auth::None => None,
            Auth::Basic { user, password } => {
                let credentials = format!("{user}:{}", password.expose());
                Some((
                    format!("Basic {}", base64(credentials.as_bytes())),
                    "basic_auth",
                ))
            }
            Auth::Bearer(token) => Some((format!("Bearer {}", token.expose()), "bearer_token")),
        };
        if let Some((value, option)) = authorization {
            let mut value = HeaderValue::from_str(&value).map_err(|_| header_error(option))?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        if let Some(tenant) = &config.tenant_id {
            let value = HeaderValue::from_str(tenant).map_err(|_| header_error("tenant_id"))?;
            headers.insert("x-scope-orgid", value);
        }
        for (name, value) in &config.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| header_error("http_header"))?;
            let mut value =
                HeaderValue::from_str(value.expose()).map_err(|_| header_error("http_header"))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        Ok(Self {
            protocol: config.protocol,
            otlp: otlp_uri.map(|uri| (uri, config.otlp.gzip)),
            push_uri,
            ingest_prefix: config.server.url(&format!(
                "{INGEST_PATH}?name={}",
                percent_encode(&ingest_name(
                    &config.application_name,
                    config.service_namespace.as_deref(),
                    &config.tags
                ))
            )),
            sample_rate: config.sample_rate,
            headers,
            series_labels: series_labels(
                SeriesKind::Cpu,
                &config.application_name,
                config.service_namespace.as_deref(),
                &config.tags,
            ),
            memory_series_labels: series_labels(
                SeriesKind::Memory,
                &config.application_name,
                config.service_namespace.as_deref(),
                &config.tags,
            ),
        })
    }

    /// The request for one piece of the window `[start, end)`: gzipped pprof, or with
    /// [`Protocol::Otlp`] an uncompressed `ExportProfilesServiceRequest` (gzipped here,
    /// once, when compression is on). `kind` picks the Push API's `__name__`; `/ingest`
    /// needs nothing else (the server names the series from the sample types).
    pub(crate) fn prepare(
        &self,
        gzipped: &[u8],
        start: SystemTime,
        end: SystemTime,
        kind: SeriesKind,
    ) -> Prepared {
        if let Some((uri, gzip)) = &self.otlp {
            let body = if *gzip {
                gzip_body(gzipped)
            } else {
                gzipped.to_vec()
            };
            return Prepared {
                uri: uri.clone(),
                headers: self.headers.clone(),
                body: Bytes::from(body),
            };
        }
        match self.protocol {
            Protocol::Push => {
                let labels = match kind {
                    SeriesKind::Cpu => &self.series_labels,
                    SeriesKind::Memory => &self.memory_series_labels,
                };
                let request = PushRequest {
                    series: vec![RawProfileSeries {
                        labels: labels.clone(),
                        samples: vec![RawSample {
                            raw_profile: gzipped.to_vec(),
                            id: uuid_v4(),
                        }],
                    }],
                };
                Prepared {
                    uri: self.push_uri.clone(),
                    headers: self.headers.clone(),
                    body: Bytes::from(prost::Message::encode_to_vec(&request)),
                }
            }
            Protocol::Ingest | Protocol::Otlp => {
                let from = unix_seconds(start);
                // `until` is exclusive and after `from`, even for a window within one second.
                let until = unix_seconds(end).max(from + 1);
                let url = format!(
                    "{}&from={from}&until={until}&format=pprof&spyName={SCOPE_NAME}&sampleRate={}",
                    self.ingest_prefix, self.sample_rate
                );
                // The prefix was parsed at start as part of the push URI's checks; the rest
                // is digits and fixed ASCII, so this only fails on a bug.
                let uri = url.parse::<Uri>().unwrap_or_else(|_| self.push_uri.clone());
                Prepared {
                    uri,
                    headers: self.headers.clone(),
                    body: Bytes::copy_from_slice(gzipped),
                }
            }
        }
    }
}

/// Gzips an OTLP body (level 1, as the pprof encoder does).
fn gzip_body(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::new(1),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

/// The series labels of every Push request: fixed ones (`__name__` from `kind`,
/// `__delta__=false`), `service_namespace` when set, then tags, sorted by name.
pub(crate) fn series_labels(
    kind: SeriesKind,
    application_name: &str,
    namespace: Option<&str>,
    tags: &[(String, String)],
) -> Vec<LabelPair> {
    let pair = |name: &str, value: &str| LabelPair {
        name: name.to_owned(),
        value: value.to_owned(),
    };
    let mut labels = vec![
        pair("__name__", kind.metric_name()),
        // Our profiles are deltas over their window already (`alloc_*`) or snapshots
        // (`inuse_*`, CPU): the server must not subtract consecutive ones again.
        pair("__delta__", "false"),
        pair("service_name", application_name),
        pair("otel.scope.name", SCOPE_NAME),
        pair("otel.scope.version", env!("CARGO_PKG_VERSION")),
        pair("process.runtime.name", "rust"),
        pair("process.runtime.version", RUSTC_VERSION),
    ];
    if let Some(namespace) = namespace {
        labels.push(pair(crate::limits::SERVICE_NAMESPACE_LABEL, namespace));
    }
    labels.extend(tags.iter().map(|(k, v)| pair(k, v)));
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

/// `/ingest`'s `name`: `<app>{k=v,k=v}`, `service_namespace` first when set (values were
/// checked for `,` and `}`).
pub(crate) fn ingest_name(
    application_name: &str,
    namespace: Option<&str>,
    tags: &[(String, String)],
) -> String {
    let namespace = namespace.map(|ns| format!("{}={ns}", crate::limits::SERVICE_NAMESPACE_LABEL));
    let pairs: Vec<String> = namespace
        .into_iter()
        .chain(tags.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    format!("{application_name}{{{}}}", pairs.join(","))
}

/// Percent-encodes everything but RFC 3986's unreserved characters (so `+` is `%2B`).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random (version 4) UUID, for `RawSample.ID`.
fn uuid_v4() -> String {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Standard base64 with padding (RFC 4648), for Basic auth.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn ingest_names_are_percent_encoded_with_plus_as_2b() {
        let tags = vec![
            ("env".to_string(), "a+b c".to_string()),
            ("v".to_string(), "1".to_string()),
        ];
        let name = ingest_name("my.app/x", None, &tags);
        assert_eq!(name, "my.app/x{env=a+b c,v=1}");
        assert_eq!(
            ingest_name("my.app/x", Some("shop"), &tags),
            "my.app/x{service_namespace=shop,env=a+b c,v=1}"
        );
        assert_eq!(
            percent_encode(&name),
            "my.app%2Fx%7Benv%3Da%2Bb%20c%2Cv%3D1%7D"
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(uuid_v4(), id);
    }

    #[test]
    fn series_labels_are_sorted_and_carry_the_fixed_names() {
        let labels = series_labels(
            SeriesKind::Cpu,
            "app",
            Some("shop"),
            &[("zone".into(), "z1".into())],
        );
        assert!(labels.contains(&LabelPair {
            name: "service_namespace".into(),
            value: "shop".into()
        }));
        assert!(!series_labels(SeriesKind::Cpu, "app", None, &[])
            .iter()
            .any(|l| l.name == "service_namespace"));
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for fixed in crate::limits::FIXED_SERIES_LABELS {
            assert!(names.contains(&fixed), "{fixed}");
        }
        assert!(labels.contains(&LabelPair {
            name: "__name__".into(),
            value: "process_cpu".into()
        }));
        let version = labels
            .iter()
            .find(|l| l.name == "process.runtime.version")
            .unwrap();
        assert!(version.value.starts_with("1."), "{}", version.value);
    }

    #[test]
    fn memory_series_differ_from_cpu_series_in_their_name_only_and_are_never_deltaed_again() {
        let tags = [("zone".to_string(), "z1".to_string())];
        let cpu = series_labels(SeriesKind::Cpu, "app", None, &tags);
        let memory = series_labels(SeriesKind::Memory, "app", None, &tags);
        assert_eq!(cpu.len(), memory.len());
        for (c, m) in cpu.iter().zip(&memory) {
            assert_eq!(c.name, m.name);
            match c.name.as_str() {
                "__name__" => assert_eq!(
                    (c.value.as_str(), m.value.as_str()),
                    ("process_cpu", "memory")
                ),
                "__delta__" => assert_eq!((c.value.as_str(), m.value.as_str()), ("false", "false")),
                _ => assert_eq!(c.value, m.value),
            }
        }
    }
}
