//! A strict loopback Pyroscope receiver for the upload tests: both endpoints of
//! the Pyroscope server (the Push API and `/ingest`, as ARCHITECTURE.md "Upload" describes them), every server rule it lists, scriptable faults,
//! and a record of every request.
//!
//! It runs on its own thread with its own runtime, so tests are plain `#[test]`s and
//! nothing the receiver does shares a runtime with the code under test. A request that
//! breaks a rule is answered like the server answers it (400, 404, 415) and recorded with
//! the broken rule, so tests can assert that no request broke any.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use span_profiler::__private::pprof::{decode, validate, Profile};
use tokio::sync::Notify;

/// The Push API's messages, written here from the server's protocol (not taken from the crate, so a
/// wrong field number on either side shows).
pub mod push {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub series: Vec<RawProfileSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawProfileSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<LabelPair>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<RawSample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawSample {
        #[prost(bytes = "vec", tag = "1")]
        pub raw_profile: Vec<u8>,
        #[prost(string, tag = "2")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// The OTLP endpoint's decoder and rules.
#[path = "otlp_check.rs"]
pub mod otlp_check;

/// Label names a series may have.
pub const MAX_SERIES_LABEL_NAMES: usize = 30;
/// Samples per profile.
pub const MAX_SAMPLES: usize = 16_000;

/// Which Pyroscope the receiver behaves like (grafana/pyroscope `pkg/validation`
/// `ValidateLabels`; `validation.disable-label-sanitization` is false in v1.21.0 and true
/// from v2.0.0; `trace_id` stays out of series labels from v2.1.0, `pkg/model/pprofsplit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerVersion {
    /// v1.x: label names must be `[A-Za-z_][A-Za-z0-9_.]*`, `.` is rewritten to `_`
    /// (`a.b` beside `a_b` with another value is refused), `trace_id` is a series label.
    V1,
    /// v2.1 and later: label names are any UTF-8, not rewritten; `trace_id` is no series
    /// label.
    #[default]
    V2_1,
}

/// What the receiver does with the next request (one script entry per request, in order;
/// once the script is empty every request gets the server's normal answer).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and a Connect-style JSON error, after recording the request.
    Status(u16),
    /// Answer 429 with a `Retry-After` header (seconds).
    RetryAfter(u64),
    /// Read the request, then never answer (until the receiver is dropped).
    NeverAnswer,
    /// Wait, then give the normal answer.
    Delay(Duration),
}

/// Which endpoint a request went to, with what the endpoint's own fields said.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Push,
    Ingest {
        name: String,
        from: u64,
        until: u64,
        spy_name: String,
        sample_rate: u32,
    },
    Other,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the request (head and body) had been read.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Header names lowercase.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub endpoint: Endpoint,
    /// Series labels as sent (for `/ingest`: derived from `name` plus the names the server
    /// adds, `__delta__` and `pyroscope_spy` included, like the server does).
    pub series_labels: Vec<(String, String)>,
    /// The decoded profiles (one per raw sample).
    pub profiles: Vec<Profile>,
    /// The profiles as they arrived (gzipped pprof), for external readers.
    pub raw_profiles: Vec<Vec<u8>>,
    /// `/v1development/profiles`: the request as Pyroscope converts it.
    pub otlp: Option<otlp_check::OtlpRequest>,
    /// `Ok` if the request broke no rule; else the rule it broke.
    pub verdict: Result<(), String>,
    /// The status the receiver answered (0 for never).
    pub answered: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every sample of every profile in the request, readable.
    pub fn samples(&self) -> Vec<span_profiler::__private::pprof::SampleView> {
        self.profiles
            .iter()
            .flat_map(span_profiler::__private::pprof::samples)
            .collect()
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.series_labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    version: ServerVersion,
    script: VecDeque<Fault>,
    received: Vec<Received>,
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    shutdown: Notify,
}

/// A running receiver. Dropping it stops it (connections left unanswered are closed).
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// TLS material: a private CA (PEM, for the client's custom root) and a server
/// certificate for `127.0.0.1` signed by it.
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl TlsMaterial {
    pub fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "span-profiler test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        Self {
            ca_pem: ca_cert.pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }
}

/// A loopback address with nothing listening on it (yet): connections are refused.
pub fn unused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

impl Receiver {
    /// Listens on a fresh loopback port.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), None)
    }

    /// Listens with TLS.
    pub fn start_tls(tls: &TlsMaterial) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Some(tls))
    }

    /// Listens on `addr` (e.g. one from [`unused_addr`] that clients already target).
    pub fn start_on(addr: SocketAddr, tls: Option<&TlsMaterial>) -> Self {
        let listener = std::net::TcpListener::bind(addr).expect("bind the receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tls.map(|tls| {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
            // Both providers are compiled into the tests: pick one explicitly, as the
            // uploader does.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(
                    vec![CertificateDer::from(tls.cert_der.clone())],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.key_der.clone())),
                )
                .expect("server cert");
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            shutdown: Notify::new(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("test-receiver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                runtime.block_on(accept_loop(listener, acceptor, thread_shared));
            })
            .expect("receiver thread");
        Self {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// Behave like this server version from the next request on.
    pub fn set_version(&self, version: ServerVersion) {
        self.state().version = version;
    }

    /// Grafana's traces-to-profiles query: the samples, across every accepted request,
    /// of series whose labels match every `selector` pair (`service_name`,
    /// `service_namespace`, ...) and whose `span_id` sample label is one of `span_ids`.
    pub fn span_query(
        &self,
        selector: &[(&str, &str)],
        span_ids: &[&str],
    ) -> Vec<span_profiler::__private::pprof::SampleView> {
        self.received()
            .iter()
            .filter(|r| r.answered == 200)
            .filter(|r| selector.iter().all(|(k, v)| r.label(k) == Some(*v)))
            // Grafana's link asks for the `process_cpu` profile type unless told otherwise.
            .filter(|r| {
                selector.iter().any(|(k, _)| *k == "__name__")
                    || r.label("__name__") == Some("process_cpu")
            })
            .flat_map(|r| r.samples())
            .filter(|s| {
                s.labels
                    .iter()
                    .any(|(k, v)| k == "span_id" && span_ids.contains(&v.as_str()))
            })
            .collect()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Appends faults for the next requests.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state().script.extend(faults);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state().connections
    }

    /// Waits until at least `n` requests were received; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        while state.received.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "waited {timeout:?} for {n} requests, got {}: {:#?}",
                    state.received.len(),
                    state.received
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        state.received.clone()
    }

    /// Asserts that no request broke a rule, and returns the accepted ones.
    pub fn assert_all_valid(&self) -> Vec<Received> {
        let received = self.received();
        for r in &received {
            if let Err(rule) = &r.verdict {
                panic!("request to {} broke a server rule: {rule}", r.path);
            }
        }
        received
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.shutdown.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = shared.shutdown.notified() => return,
        };
        shared.state.lock().unwrap().connections += 1;
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, shared.clone()));
            let http = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let at = Instant::now();
    let mut received = Received {
        at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len(),
        endpoint: Endpoint::Other,
        series_labels: Vec::new(),
        profiles: Vec::new(),
        raw_profiles: Vec::new(),
        otlp: None,
        verdict: Ok(()),
        answered: 0,
    };
    let version = shared.state.lock().unwrap().version;
    let normal = check(&parts, &body, &mut received, version);
    let fault = shared.state.lock().unwrap().script.pop_front();
    let (status, retry_after) = match fault {
        Some(Fault::NeverAnswer) => {
            record(&shared, received);
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(Fault::Status(code)) => (code, None),
        Some(Fault::RetryAfter(secs)) => (429, Some(secs)),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            (normal.0, None)
        }
        None => (normal.0, None),
    };
    received.answered = status;
    let message = if status == normal.0 {
        normal.1
    } else {
        format!("scripted fault {status}")
    };
    record(&shared, received);
    let mut response = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if let Some(secs) = retry_after {
        response = response.header("retry-after", secs.to_string());
    }
    let body = if status == 200 {
        Bytes::new()
    } else {
        let code = match status {
            400 | 422 => "invalid_argument",
            500 => "unknown",
            401 => "unauthenticated",
            404 => "not_found",
            429 => "resource_exhausted",
            _ => "internal",
        };
        let message = message.replace('"', "'");
        Bytes::from(format!("{{\"code\":\"{code}\",\"message\":\"{message}\"}}"))
    };
    Ok(response
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap())
}

fn record(shared: &Shared, received: Received) {
    shared.state.lock().unwrap().received.push(received);
    shared.changed.notify_all();
}

/// Applies the server's rules; fills `received`; returns the normal answer.
fn check(
    parts: &http::request::Parts,
    body: &[u8],
    received: &mut Received,
    version: ServerVersion,
) -> (u16, String) {
    let result = match parts.uri.path() {
        "/push.v1.PusherService/Push" => check_push(parts, body, received, version),
        "/ingest" => check_ingest(parts, body, received, version),
        "/v1development/profiles" => otlp_check::check(
            header(parts, "content-type"),
            header(parts, "content-encoding").is_some_and(|e| e.eq_ignore_ascii_case("gzip")),
            body,
        )
        .map(|request| received.otlp = Some(request)),
        other => Err((404, format!("no such endpoint {other}"))),
    };
    match result {
        Ok(()) => (200, String::new()),
        Err((status, rule)) => {
            received.verdict = Err(rule.clone());
            (status, rule)
        }
    }
}

type Rule = (u16, String);

fn bad(rule: impl Into<String>) -> Rule {
    (400, rule.into())
}

fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, Rule> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(16 << 20)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("body is not valid gzip: {e}")))?;
    Ok(out)
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

fn check_push(
    parts: &http::request::Parts,
    body: &[u8],
    received: &mut Received,
    version: ServerVersion,
) -> Result<(), Rule> {
    received.endpoint = Endpoint::Push;
    if parts.method != http::Method::POST {
        return Err((405, "the Push API takes POST".into()));
    }
    if header(parts, "content-type") != Some("application/proto") {
        return Err((
            415,
            format!(
                "content-type must be application/proto, got {:?}",
                header(parts, "content-type")
            ),
        ));
    }
    let body_gzipped = match header(parts, "content-encoding") {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(other) => return Err((415, format!("unsupported content-encoding {other}"))),
    };
    let raw = if body_gzipped {
        gunzip(body)?
    } else {
        body.to_vec()
    };
    let request =
        push::PushRequest::decode(&raw[..]).map_err(|e| bad(format!("PushRequest: {e}")))?;
    if request.series.is_empty() {
        return Err(bad("a push request without series"));
    }
    for series in &request.series {
        let labels: Vec<(String, String)> = series
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        // Checked as the server stores them (v1 renames); recorded as sent. `__delta__`
        // is a name the Push API takes from clients (Alloy sends it).
        let stored = check_series_labels(&labels, version, &["__delta__"])?;
        if series.samples.is_empty() {
            return Err(bad("a series without samples"));
        }
        let mut profiles = Vec::new();
        for sample in &series.samples {
            if body_gzipped && is_gzip(&sample.raw_profile) {
                return Err(bad(
                    "the profile is gzipped twice (body and raw_profile): gzip once",
                ));
            }
            // The distributor's `RawFromBytes` error is no connect error: connect answers
            // CodeUnknown, HTTP 500 (pkg/distributor/distributor.go, v2.1.0).
            let profile = check_profile(&sample.raw_profile, 500)?;
            check_series_with_sample_keys(&stored, &profile, version)?;
            check_push_name_and_delta(&stored, &profile)?;
            profiles.push(profile);
            received.raw_profiles.push(sample.raw_profile.clone());
        }
        received.series_labels = labels;
        received.profiles.extend(profiles);
    }
    Ok(())
}

/// `__name__` as `/ingest` derives it from the sample types
/// (`pkg/og/convert/pprof/profile.go` `metricName`: `wall` first, then the first type
/// containing `cpu` gives `process_cpu`, `alloc_`/`inuse_`/`space`/`objects` gives
/// `memory`, `mutex_`, `block_`, `goroutines` their own names).
pub fn metric_name(profile: &Profile) -> String {
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| profile.string_table[t.r#type as usize].as_str())
        .collect();
    if types.contains(&"wall") {
        return "wall".into();
    }
    let mut last = "";
    for st in types {
        last = st;
        if st.contains("cpu") {
            return "process_cpu".into();
        }
        if st.contains("alloc_") || st.contains("inuse_") || st == "space" || st == "objects" {
            return "memory".into();
        }
        if st.contains("mutex_") {
            return "mutex".into();
        }
        if st.contains("block_") {
            return "block".into();
        }
        if st.contains("goroutines") {
            return "goroutines".into();
        }
    }
    last.into()
}

/// A Push's `__name__` and `__delta__` against its profile. The server stores `__name__`
/// as sent, so one that is not the profile's kind files it under profile types Grafana
/// never queries (`memory:alloc_space:bytes:space:bytes` needs `memory`); refused here.
/// `__delta__` must be `true` or `false` when sent, and a `memory` profile with
/// `alloc_*` types must send `false`: otherwise the server treats the series as
/// cumulative, subtracts each profile from the previous one and drops the first
/// (`pkg/phlaredb/head.go` `Ingest`, `deltaprofiles.go` `isDeltaSupported`), which
/// breaks profiles that are per-window deltas already.
fn check_push_name_and_delta(labels: &[(String, String)], profile: &Profile) -> Result<(), Rule> {
    let get = |name: &str| {
        labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let derived = metric_name(profile);
    let sent = get("__name__").unwrap_or("");
    if sent != derived {
        return Err(bad(format!(
            "__name__={sent} but the profile's sample types make it {derived}"
        )));
    }
    let delta = get("__delta__");
    if !matches!(delta, None | Some("true") | Some("false")) {
        return Err(bad(format!("__delta__={delta:?}: true or false")));
    }
    let alloc_types = profile
        .sample_type
        .iter()
        .any(|t| profile.string_table[t.r#type as usize].starts_with("alloc_"));
    if derived == "memory" && alloc_types && delta != Some("false") {
        return Err(bad(
            "a memory profile with alloc_* types pushed without __delta__=false: the server \
             would subtract consecutive profiles again and drop the first",
        ));
    }
    Ok(())
}

/// Series label rules: `__name__` (`process_cpu` or `memory`), `service_name`, names unique and well
/// formed for `version` (v1: legacy names with `.` rewritten to `_`, a rewritten name
/// that meets another with a different value refused), no other `__` names than
/// `server_names` (the ones the server adds itself), at most 30 names, sizes. Returns
/// the labels as the server stores them.
fn check_series_labels(
    labels: &[(String, String)],
    version: ServerVersion,
    server_names: &[&str],
) -> Result<Vec<(String, String)>, Rule> {
    let mut stored: Vec<(String, String)> = Vec::new();
    for (name, value) in labels {
        if name.is_empty() || name.len() > 1024 {
            return Err(bad(format!("series label name of {} bytes", name.len())));
        }
        if value.is_empty() || value.len() > 2048 {
            return Err(bad(format!(
                "series label {name} has a value of {} bytes",
                value.len()
            )));
        }
        if name.starts_with("__") && name != "__name__" && !server_names.contains(&name.as_str()) {
            return Err(bad(format!("reserved series label name {name}")));
        }
        let name = match version {
            ServerVersion::V2_1 => name.clone(),
            ServerVersion::V1 => {
                let legacy = name.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_alphabetic()
                        || b == b'_'
                        || b == b'.'
                        || (i > 0 && b.is_ascii_digit())
                });
                if !legacy {
                    return Err(bad(format!("invalid label name '{name}'")));
                }
                name.replace('.', "_")
            }
        };
        match stored.iter().find(|(n, _)| *n == name) {
            Some((_, v)) if v == value && version == ServerVersion::V1 => continue,
            Some(_) => return Err(bad(format!("duplicate series label name {name}"))),
            None => stored.push((name, value.clone())),
        }
    }
    match stored.iter().find(|(n, _)| n == "__name__") {
        Some((_, v)) if v == "process_cpu" || v == "memory" => {}
        other => {
            return Err(bad(format!(
                "__name__ must be process_cpu or memory, got {other:?}"
            )))
        }
    }
    if !stored.iter().any(|(n, _)| n == "service_name") {
        return Err(bad("no service_name series label"));
    }
    if stored.len() > MAX_SERIES_LABEL_NAMES {
        return Err(bad(format!(
            "{} series label names; at most {MAX_SERIES_LABEL_NAMES}",
            stored.len()
        )));
    }
    Ok(stored)
}

/// Every string sample-label key except `span_id`/`trace_id` becomes a series label.
fn check_series_with_sample_keys(
    labels: &[(String, String)],
    profile: &Profile,
    version: ServerVersion,
) -> Result<(), Rule> {
    let mut names: HashSet<String> = labels.iter().map(|(n, _)| n.clone()).collect();
    for sample in &profile.sample {
        for label in &sample.label {
            if label.str == 0 {
                continue;
            }
            let key = &profile.string_table[label.key as usize];
            // Before v2.1 `trace_id` is a series label like any other.
            if key != "span_id" && (key != "trace_id" || version == ServerVersion::V1) {
                names.insert(key.clone());
            }
        }
    }
    if names.len() > MAX_SERIES_LABEL_NAMES {
        return Err(bad(format!(
            "series labels and sample-label keys make {} names; at most {MAX_SERIES_LABEL_NAMES}",
            names.len()
        )));
    }
    Ok(())
}

/// Decodes and validates one profile (the crate's decoder implements ARCHITECTURE.md "Server
/// validation"), plus the per-profile limits.
fn check_profile(bytes: &[u8], undecodable: u16) -> Result<Profile, Rule> {
    let profile =
        decode(bytes).map_err(|e| (undecodable, format!("profile does not decode: {e}")))?;
    validate(&profile).map_err(|e| bad(format!("invalid profile: {e}")))?;
    if profile.sample.len() > MAX_SAMPLES {
        return Err(bad(format!(
            "{} samples; at most {MAX_SAMPLES}",
            profile.sample.len()
        )));
    }
    Ok(profile)
}

/// `/ingest`'s application name grammar (the Push API takes any non-empty UTF-8
/// `service_name`).
fn check_app_name(app: &str) -> Result<(), Rule> {
    if app.is_empty()
        || !app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
    {
        return Err(bad(format!("invalid application name {app:?}")));
    }
    Ok(())
}

/// Go's `url.QueryUnescape`: `%XX` and `+` as a space.
fn query_unescape(s: &str) -> Result<String, Rule> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .ok_or_else(|| bad(format!("bad escape in {s}")))?;
                out.push(
                    u8::from_str_radix(hex, 16).map_err(|_| bad(format!("bad escape in {s}")))?,
                );
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad("query is not UTF-8"))
}

/// `name` grammar: app `[A-Za-z0-9_.\-/]+`, then optionally `{k=v,...}` with keys
/// `[A-Za-z0-9_.]+` and values ending at `,` or `}` (no escaping).
fn parse_ingest_name(name: &str) -> Result<(String, Vec<(String, String)>), Rule> {
    let (app, rest) = match name.find('{') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    check_app_name(app)?;
    let mut tags = Vec::new();
    if let Some(rest) = rest {
        let inner = rest
            .strip_suffix('}')
            .ok_or_else(|| bad(format!("name {name:?} has no closing }}")))?;
        if inner.contains('}') {
            return Err(bad(format!("name {name:?} has text after its labels")));
        }
        for pair in inner.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("label {pair:?} has no =")))?;
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            {
                return Err(bad(format!("invalid label key {k:?}")));
            }
            tags.push((k.to_string(), v.to_string()));
        }
    }
    Ok((app.to_string(), tags))
}

fn check_ingest(
    parts: &http::request::Parts,
    body: &[u8],
    received: &mut Received,
    version: ServerVersion,
) -> Result<(), Rule> {
    if parts.method != http::Method::POST {
        return Err((405, "/ingest takes POST".into()));
    }
    if header(parts, "content-type").is_some_and(|ct| ct.starts_with("multipart/")) {
        return Err(bad(
            "multipart body with format=pprof: the server would parse the multipart bytes as pprof",
        ));
    }
    let query = parts
        .uri
        .query()
        .ok_or_else(|| bad("/ingest without a query"))?;
    let mut fields = std::collections::HashMap::new();
    for item in query.split('&') {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("query item {item:?} has no =")))?;
        if fields
            .insert(query_unescape(k)?, query_unescape(v)?)
            .is_some()
        {
            return Err(bad(format!("query parameter {k} given twice")));
        }
    }
    let field = |k: &str| {
        fields
            .get(k)
            .cloned()
            .ok_or_else(|| bad(format!("query has no {k}")))
    };
    let number = |k: &str| -> Result<u64, Rule> {
        field(k)?
            .parse::<u64>()
            .map_err(|_| bad(format!("{k} is not a number")))
    };
    let name = field("name")?;
    let (app, tags) = parse_ingest_name(&name)?;
    let (from, until) = (number("from")?, number("until")?);
    if from > until {
        return Err(bad(format!("from {from} is after until {until}")));
    }
    if field("format")? != "pprof" {
        return Err(bad("format must be pprof"));
    }
    let spy_name = field("spyName")?;
    let spy = spy_name.clone();
    let sample_rate =
        u32::try_from(number("sampleRate")?).map_err(|_| bad("sampleRate too large"))?;
    received.endpoint = Endpoint::Ingest {
        name,
        from,
        until,
        spy_name,
        sample_rate,
    };
    if body.len() > 4 << 20 {
        return Err((413, "body too large".into()));
    }
    // Everything after the name is 422 (ingest_handler.go).
    let profile = check_profile(body, 422)?;
    // The server's own names (pkg/og/convert/pprof/profile.go `createLabels`), `__name__`
    // derived from the sample types.
    let mut labels = vec![
        ("__name__".to_string(), metric_name(&profile)),
        ("__delta__".to_string(), "false".to_string()),
        ("pyroscope_spy".to_string(), spy),
        ("service_name".to_string(), app),
    ];
    labels.extend(tags);
    let labels =
        check_series_labels(&labels, version, &["__delta__"]).map_err(|(_, rule)| (422, rule))?;
    check_series_with_sample_keys(&labels, &profile, version).map_err(|(_, rule)| (422, rule))?;
    received.series_labels = labels;
    received.profiles.push(profile);
    received.raw_profiles.push(body.to_vec());
    Ok(())
}

/// The receiver's own rules, checked against hand-made requests.
#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn the_ingest_name_grammar_is_parsed_strictly() {
        assert_eq!(parse_ingest_name("app").unwrap(), ("app".into(), vec![]));
        let (app, tags) = parse_ingest_name("my.app/x{env=a b,v=1=2}").unwrap();
        assert_eq!(app, "my.app/x");
        assert_eq!(
            tags,
            vec![("env".into(), "a b".into()), ("v".into(), "1=2".into())]
        );
        assert!(parse_ingest_name("a:b").is_err());
        assert!(parse_ingest_name("app{k=v").is_err());
        assert!(parse_ingest_name("app{k=v}x}").is_err());
        assert!(parse_ingest_name("app{k-x=v}").is_err());
        assert_eq!(query_unescape("a+b%2Bc").unwrap(), "a b+c");
    }

    fn profile_of(types: &[&str]) -> Profile {
        use span_profiler::__private::pprof::ValueType;
        let mut string_table = vec![String::new(), "count".to_string()];
        let mut sample_type = Vec::new();
        for t in types {
            string_table.push(t.to_string());
            sample_type.push(ValueType {
                r#type: string_table.len() as i64 - 1,
                unit: 1,
            });
        }
        Profile {
            string_table,
            sample_type,
            ..Profile::default()
        }
    }

    #[test]
    fn push_names_must_match_the_sample_types_and_memory_allocs_must_not_be_deltaed_again() {
        let labels = |name: &str, delta: Option<&str>| {
            let mut l = vec![("__name__".to_string(), name.to_string())];
            if let Some(d) = delta {
                l.push(("__delta__".to_string(), d.to_string()));
            }
            l
        };
        let cpu = profile_of(&["samples", "cpu"]);
        let heap = profile_of(&[
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
        ]);
        let inuse = profile_of(&["inuse_objects", "inuse_space"]);
        assert_eq!(metric_name(&cpu), "process_cpu");
        assert_eq!(metric_name(&heap), "memory");
        assert!(check_push_name_and_delta(&labels("process_cpu", None), &cpu).is_ok());
        assert!(check_push_name_and_delta(&labels("process_cpu", Some("false")), &cpu).is_ok());
        assert!(check_push_name_and_delta(&labels("memory", Some("false")), &heap).is_ok());
        assert!(check_push_name_and_delta(&labels("memory", None), &inuse).is_ok());
        let err =
            |l: Vec<(String, String)>, p: &Profile| check_push_name_and_delta(&l, p).unwrap_err().1;
        assert!(err(labels("process_cpu", Some("false")), &heap).contains("make it memory"));
        assert!(err(labels("memory", None), &cpu).contains("make it process_cpu"));
        assert!(err(labels("memory", None), &heap).contains("__delta__=false"));
        assert!(err(labels("memory", Some("true")), &heap).contains("__delta__=false"));
        assert!(err(labels("memory", Some("no")), &heap).contains("true or false"));
    }

    #[test]
    fn series_labels_break_rules_as_the_server_sees_them() {
        let ok = vec![
            ("__name__".to_string(), "process_cpu".to_string()),
            ("service_name".to_string(), "app".to_string()),
        ];
        let v2 = ServerVersion::V2_1;
        assert!(check_series_labels(&ok, v2, &[]).is_ok());
        let mut dup = ok.clone();
        dup.push(("service_name".into(), "x".into()));
        assert!(check_series_labels(&dup, v2, &[])
            .unwrap_err()
            .1
            .contains("duplicate"));
        let mut reserved = ok.clone();
        reserved.push(("__x".into(), "y".into()));
        assert!(check_series_labels(&reserved, v2, &[]).is_err());
        let wrong = vec![
            ("__name__".to_string(), "goroutines".to_string()),
            ("service_name".to_string(), "app".to_string()),
        ];
        assert!(check_series_labels(&wrong, v2, &[]).is_err());
        // v1 rewrites `.` to `_`: equal values merge, different values collide.
        let mut dotted = ok.clone();
        dotted.extend([
            ("a.b".to_string(), "1".to_string()),
            ("a_b".to_string(), "1".to_string()),
        ]);
        assert_eq!(
            check_series_labels(&dotted, ServerVersion::V1, &[])
                .unwrap()
                .len(),
            3
        );
        assert!(check_series_labels(&dotted, v2, &[]).is_ok());
        dotted[3].1 = "2".into();
        assert!(check_series_labels(&dotted, ServerVersion::V1, &[])
            .unwrap_err()
            .1
            .contains("duplicate"));
        assert!(check_series_labels(&dotted, v2, &[]).is_ok());
        let mut many = ok;
        many.extend((0..29).map(|i| (format!("k{i}"), "v".to_string())));
        assert!(check_series_labels(&many, v2, &[])
            .unwrap_err()
            .1
            .contains("at most 30"));
    }
}
