//! `ProfilerBuilder`: the profiler's options, their defaults and their validation.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{BuildError, StartError};
use crate::limits;
use crate::profiler::Profiler;
use crate::sampler::{Unwinder, DEFAULT_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ};
pub use crate::sink::upload::DEFAULT_MAX_UPLOAD_ATTEMPTS;
use crate::sink::upload::{Auth, Protocol};

/// `from_env()`: the environment variables and their parsing.
mod env;
/// OTLP options and their `OTEL_EXPORTER_OTLP_*` variables.
mod otlp;
/// From options to a checked `Config`.
mod validate;

pub(crate) use validate::Config;

/// Default sampling rate, in samples per second of CPU time per thread (Hz).
pub const DEFAULT_SAMPLE_RATE: u32 = DEFAULT_SAMPLE_RATE_HZ;

/// Highest accepted sampling rate, in Hz.
pub const MAX_SAMPLE_RATE: u32 = MAX_SAMPLE_RATE_HZ;

/// Default length of a profiling window: one file (or upload) per window.
pub const DEFAULT_UPLOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Shortest accepted window.
pub const MIN_UPLOAD_INTERVAL: Duration = Duration::from_millis(100);

/// Longest accepted window: Grafana looks for profiles within a minute of a span, and
/// the server refuses profiles older than an hour.
pub const MAX_UPLOAD_INTERVAL: Duration = Duration::from_secs(300);

/// Default directory for profile files.
pub const DEFAULT_OUTPUT_DIR: &str = "./profiles";

/// Default number of profile files kept in the output directory (oldest deleted first).
pub const DEFAULT_MAX_FILES: usize = 360;

/// Default total size of the profile files kept in the output directory, in bytes.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Default time limit of one upload request (connect, send, answer).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Default number of closed windows waiting for upload; the oldest is dropped (and
/// counted) when a new window finds the queue full.
pub const DEFAULT_QUEUE_CAPACITY: usize = 32;

/// Default shortest delay before retrying a failed upload.
pub const DEFAULT_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(500);

/// Default longest delay between retries of a failed upload.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Default age after which a profile that could not be uploaded is dropped: the server
/// refuses profiles older than an hour.
pub const DEFAULT_MAX_PROFILE_AGE: Duration = Duration::from_secs(50 * 60);

/// Longest accepted `max_profile_age`: the server's one-hour window.
pub const MAX_PROFILE_AGE_LIMIT: Duration = Duration::from_secs(60 * 60);

/// Default time `stop()` spends uploading what is left before giving up.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Default largest uncompressed pprof per upload request, in bytes (1 MiB): the server's
/// default ingestion burst is 2 MB, so larger requests can be refused with 429 forever.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = limits::SAFE_REQUEST_BYTES;

/// Largest accepted `max_request_bytes`: the server's 4 MiB profile limit.
pub const MAX_REQUEST_BYTES_LIMIT: usize = limits::MAX_PROFILE_BYTES;

/// Smallest accepted `max_request_bytes`.
pub const MIN_REQUEST_BYTES: usize = 16 * 1024;

/// Most tags (series labels) per profiler: with the Push API's 7 fixed series labels,
/// `service_namespace` and `span_name` they fill the server's 30 label names. Without a
/// [`service_namespace`](ProfilerBuilder::service_namespace) one more tag fits, and
/// `/ingest` (whose server adds 4 names: `__name__`, `__delta__`, `pyroscope_spy`,
/// `service_name`) leaves two more; `start()` checks the exact count.
pub const MAX_TAGS: usize = limits::MAX_TAGS;

/// Most samples per upload request (the server's limit per profile).
pub const MAX_REQUEST_SAMPLES: usize = limits::MAX_SAMPLES;

/// Configures and starts a [`Profiler`]. Setters never fail; [`start`](Self::start)
/// validates everything and says what to fix.
///
/// ```no_run
/// use std::time::Duration;
///
/// let profiler = span_profiler::Profiler::builder()
///     .application_name("checkout")
///     .sample_rate(100)
///     .upload_interval(Duration::from_secs(10))
///     .output_dir("./profiles")
///     .start()?;
/// // ... run the application ...
/// let report = profiler.stop()?;
/// println!("{} files written", report.files_written);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProfilerBuilder {
    pub(crate) application_name: Option<String>,
    /// The `service_namespace` series label (the traces' `service.namespace`).
    pub(crate) service_namespace: Option<String>,
    pub(crate) sample_rate: u32,
    pub(crate) unwinder: Unwinder,
    pub(crate) upload_interval: Duration,
    pub(crate) output_dir: Option<PathBuf>,
    pub(crate) max_files: usize,
    pub(crate) max_bytes: u64,
    pub(crate) max_label_sets: usize,
    pub(crate) max_span_names: usize,
    pub(crate) symbolize: crate::Symbolization,
    pub(crate) alloc_sample_bytes: u64,
    pub(crate) server_address: Option<String>,
    pub(crate) protocol: Protocol,
    /// Series labels, keys unique (a repeated key replaces the value).
    pub(crate) tags: Vec<(String, String)>,
    /// Credentials; the `Secret`s inside never show in `Debug`.
    pub(crate) auth: Auth,
    pub(crate) tenant_id: Option<String>,
    /// Extra headers; values are secrets (often API keys).
    pub(crate) http_headers: Vec<(String, crate::sink::upload::Secret)>,
    pub(crate) request_timeout: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) retry_backoff: (Duration, Duration),
    pub(crate) max_profile_age: Duration,
    pub(crate) max_upload_attempts: u32,
    pub(crate) stop_timeout: Duration,
    pub(crate) max_request_bytes: usize,
    /// PEM inputs of `tls_root_certificate_pem` (only set with the `tls` feature).
    pub(crate) tls_roots_pem: Vec<Vec<u8>>,
    /// The first malformed environment variable seen by `from_env`, reported by `start`.
    pub(crate) env_error: Option<BuildError>,
    /// Path, compression and resource options of `Protocol::Otlp`.
    pub(crate) otlp: crate::otlp::OtlpSettings,
    /// Options set from environment variables, so that their errors name the variable.
    pub(crate) env_origins: Vec<env::EnvOrigin>,
}

impl Default for ProfilerBuilder {
    fn default() -> Self {
        Self {
            application_name: None,
            service_namespace: None,
            sample_rate: DEFAULT_SAMPLE_RATE,
            unwinder: Unwinder::Auto,
            upload_interval: DEFAULT_UPLOAD_INTERVAL,
            output_dir: None,
            max_files: DEFAULT_MAX_FILES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_label_sets: crate::window::DEFAULT_MAX_LABEL_SETS,
            max_span_names: crate::window::DEFAULT_MAX_SPAN_NAMES,
            symbolize: crate::Symbolization::full(),
            alloc_sample_bytes: crate::alloc::DEFAULT_ALLOC_SAMPLE_BYTES,
            server_address: None,
            protocol: Protocol::Push,
            tags: Vec::new(),
            auth: Auth::None,
            tenant_id: None,
            http_headers: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            retry_backoff: (DEFAULT_RETRY_BACKOFF_MIN, DEFAULT_RETRY_BACKOFF_MAX),
            max_profile_age: DEFAULT_MAX_PROFILE_AGE,
            max_upload_attempts: DEFAULT_MAX_UPLOAD_ATTEMPTS,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            tls_roots_pem: Vec::new(),
            env_error: None,
            otlp: crate::otlp::OtlpSettings {
                path: crate::otlp::OTLP_PROFILES_PATH.to_owned(),
                ..Default::default()
            },
            env_origins: Vec::new(),
        }
    }
}

impl ProfilerBuilder {
    /// The application's name: Pyroscope's `service_name`, and the prefix of profile
    /// files. Must equal the OpenTelemetry resource `service.name` for Grafana's span
    /// links to find the profiles. Default: the `OTEL_SERVICE_NAME` environment variable
    /// ([`from_env`](Self::from_env) also reads `service.name` from
    /// `OTEL_RESOURCE_ATTRIBUTES`).
    ///
    /// What each protocol accepts: the Push API ([`Protocol::Push`], the default) and
    /// local files take any non-empty UTF-8 name of at most 2048 bytes, so OpenTelemetry's
    /// default `unknown_service:<executable>` and names with spaces work (file names are
    /// derived from it with unusable bytes replaced); `/ingest` ([`Protocol::Ingest`])
    /// takes only letters, digits and `_ . - /`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// The traces' OpenTelemetry resource `service.namespace`, sent as the series label
    /// `service_namespace` on every upload. Grafana's traces-to-profiles link selects
    /// `{service_name="..", service_namespace=".."}` when the traces carry a namespace,
    /// so without this the link finds nothing for namespaced services. Default: none
    /// ([`from_env`](Self::from_env) reads `service.namespace` from
    /// `OTEL_RESOURCE_ATTRIBUTES`). It takes one of the server's 30 series label names
    /// (see [`MAX_TAGS`]). Non-empty, at most 2048 bytes; with [`Protocol::Ingest`] it may
    /// not contain `,` or `}`.
    ///
    /// ```no_run
    /// let profiler = span_profiler::Profiler::builder()
    ///     .application_name("checkout")
    ///     .service_namespace("shop")
    ///     .server_address("http://localhost:4040")
    ///     .start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn service_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.service_namespace = Some(namespace.into());
        self
    }

    /// Samples per second of CPU time, per thread (default [`DEFAULT_SAMPLE_RATE`],
    /// 1 to [`MAX_SAMPLE_RATE`]). Above the kernel tick (often 250 Hz) expiries coalesce;
    /// each sample is then weighted by the expiries it stands for.
    pub fn sample_rate(mut self, hz: u32) -> Self {
        self.sample_rate = hz;
        self
    }

    /// How the signal handler walks stacks (default [`Unwinder::Auto`]: DWARF
    /// call-frame information wherever an object has it, frame pointers for frames
    /// without). Frame pointers are an optional speed-up, not a requirement.
    ///
    /// ```no_run
    /// use span_profiler::{Profiler, Unwinder};
    /// let profiler = Profiler::builder()
    ///     .application_name("checkout")
    ///     // Code built with `-C force-frame-pointers=yes` throughout: skip the tables.
    ///     .unwinder(Unwinder::FramePointers)
    ///     .start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unwinder(mut self, unwinder: Unwinder) -> Self {
        self.unwinder = unwinder;
        self
    }

    /// Length of one profiling window (default [`DEFAULT_UPLOAD_INTERVAL`]): each window
    /// becomes one file or upload. Between [`MIN_UPLOAD_INTERVAL`] and
    /// [`MAX_UPLOAD_INTERVAL`]; Grafana finds a span's profile only if it arrives within
    /// about a minute, so keep it at 15 s or less.
    pub fn upload_interval(mut self, interval: Duration) -> Self {
        self.upload_interval = interval;
        self
    }

    /// Directory for profile files (default [`DEFAULT_OUTPUT_DIR`]), created if missing.
    /// Files are named `<application name>-<pid>-<window start unix ms>.pb.gz`, the name
    /// with `/`, control characters and other bytes a file name cannot hold replaced by
    /// `_` and cut so that the whole file name stays within 255 bytes.
    pub fn output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output_dir = Some(dir.into());
        self
    }

    /// Allocation profiles: one sampled allocation per this many bytes allocated on
    /// average (default [`DEFAULT_ALLOC_SAMPLE_BYTES`](crate::alloc::DEFAULT_ALLOC_SAMPLE_BYTES),
    /// 512 KiB; 0 turns them off). Takes effect only with
    /// [`ProfiledAllocator`](crate::alloc::ProfiledAllocator) as the global allocator;
    /// each window then also yields `<app>-<pid>-<ms>.alloc.pb.gz`, and with a server
    /// address a `memory` profile upload (Push API or `/ingest`; not OTLP).
    pub fn alloc_sample_bytes(mut self, bytes: u64) -> Self {
        self.alloc_sample_bytes = bytes;
        self
    }

    /// Keep at most this many profile files of this application in the output directory;
    /// the oldest are deleted first (default [`DEFAULT_MAX_FILES`], at least 1).
    pub fn max_files(mut self, files: usize) -> Self {
        self.max_files = files;
        self
    }

    /// Keep at most this many bytes of this application's profile files in the output
    /// directory (default [`DEFAULT_MAX_BYTES`]); the newest file is always kept.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Most distinct label sets per window (default 10,000); samples of further sets keep
    /// their stacks and weights but lose their labels, and are counted.
    ///
    /// Memory: a window holds at most this many label sets (each about 200 bytes plus its
    /// values); the label registry holds one entry per live labelled span, freed one window
    /// after its last release. 100,000 distinct spans and 1,000 span names in one window
    /// grew resident memory by less than 128 MiB in the stress test, symbolizer included.
    pub fn max_label_sets(mut self, sets: usize) -> Self {
        self.max_label_sets = sets;
        self
    }

    /// Most distinct `span_name` values per window (default 200); further names become
    /// `other` (the `span_id` stays), counted.
    pub fn max_span_names(mut self, names: usize) -> Self {
        self.max_span_names = names;
        self
    }

    /// How addresses are named and how much memory that may take (default
    /// [`Symbolization::full`](crate::Symbolization::full): names, inlined frames, files
    /// and lines within [`DEFAULT_SYMBOLIZER_BUDGET`](crate::DEFAULT_SYMBOLIZER_BUDGET)).
    /// A budget below [`MIN_SYMBOLIZER_BUDGET`](crate::MIN_SYMBOLIZER_BUDGET) is refused
    /// by [`start`](Self::start).
    ///
    /// ```no_run
    /// use span_profiler::{Profiler, Symbolization};
    ///
    /// // A small container: function names only, no debug info read.
    /// let profiler = Profiler::builder()
    ///     .application_name("checkout")
    ///     .symbolize(Symbolization::functions_only())
    ///     .start()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn symbolize(mut self, symbolization: crate::Symbolization) -> Self {
        self.symbolize = symbolization;
        self
    }

    /// Uploads every window to this Pyroscope server (`http://host:4040`,
    /// `https://profiles-prod-001.grafana.net`, optionally with a base path). A malformed
    /// address is reported by [`start`](Self::start). With a server, profile files are
    /// written only if [`output_dir`](Self::output_dir) is also set.
    pub fn server_address(mut self, address: impl Into<String>) -> Self {
        self.server_address = Some(address.into());
        self
    }

    /// The upload protocol (default [`Protocol::Push`]).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Adds a series label to every upload (`region`, `pod`, ...); the same key again
    /// replaces the value. Keys: letters, digits, `_`, `.`, not `__`-prefixed, not a label
    /// the profiler sets itself; at most [`MAX_TAGS`] tags, so that the fixed labels,
    /// `service_namespace`, tags and `span_name` stay within the server's 30 label names.
    /// With [`Protocol::Ingest`] values may not contain `,` or `}`.
    ///
    /// Pyroscope v1.x (and v2 tenants with `validation.disable-label-sanitization=false`)
    /// rewrites `.` to `_` in label names: `a.b` beside `a_b` then name one label, and the
    /// whole profile is refused if their values differ. `start()` warns once per such pair.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.tags.iter_mut().find(|(k, _)| *k == key) {
            Some(existing) => existing.1 = value,
            None => self.tags.push((key, value)),
        }
        self
    }

    /// HTTP Basic authentication (Grafana Cloud: the stack's user id and an API token).
    /// Replaces an earlier [`bearer_token`](Self::bearer_token). The password never
    /// appears in `Debug` output, logs or errors.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Auth::Basic {
            user: user.into(),
            password: crate::sink::upload::Secret::new(password),
        };
        self
    }

    /// `Authorization: Bearer <token>`. Replaces an earlier [`basic_auth`](Self::basic_auth).
    /// The token never appears in `Debug` output, logs or errors.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Bearer(crate::sink::upload::Secret::new(token));
        self
    }

    /// The tenant of a multi-tenant server, sent as `X-Scope-OrgID`.
    pub fn tenant_id(mut self, tenant: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }

    /// An extra header sent with every upload (e.g. a gateway's API key). Values are
    /// treated as secrets: never in `Debug` output, logs or errors. Headers the uploader
    /// sets itself (`Content-Type`, `Host`, ...) are refused by [`start`](Self::start).
    pub fn http_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.http_headers
            .push((name.into(), crate::sink::upload::Secret::new(value)));
        self
    }

    /// Time limit of one upload request, from connecting to the end of the answer
    /// (default [`DEFAULT_REQUEST_TIMEOUT`]). A request that runs out of time is retried.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Closed windows that may wait for upload (default [`DEFAULT_QUEUE_CAPACITY`], at
    /// least 1). When a new window finds the queue full, the oldest is dropped and
    /// counted in `stats()`.
    pub fn queue_capacity(mut self, windows: usize) -> Self {
        self.queue_capacity = windows;
        self
    }

    /// Delays between retries of a failed upload: exponential from `min` to `max`, with
    /// jitter that only lengthens (every delay is within `[min, max]`). Default
    /// [`DEFAULT_RETRY_BACKOFF_MIN`] to [`DEFAULT_RETRY_BACKOFF_MAX`]. Connection errors,
    /// timeouts, 5xx and 429 are retried; other 4xx never are.
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry_backoff = (min, max);
        self
    }

    /// Retries stop, and the profile is dropped and counted, once it is this old (default
    /// [`DEFAULT_MAX_PROFILE_AGE`], at most [`MAX_PROFILE_AGE_LIMIT`]: the server refuses
    /// profiles older than an hour).
    pub fn max_profile_age(mut self, age: Duration) -> Self {
        self.max_profile_age = age;
        self
    }

    /// Most attempts of one profile piece that the server answers with a 5xx (or, on
    /// `/ingest`, a 422) before the piece is dropped and counted
    /// (`dropped.attempts_exhausted` in the upload stats); default
    /// [`DEFAULT_MAX_UPLOAD_ATTEMPTS`], at least 1. A window the server can never take
    /// (the Push API answers 500 for a body it cannot decode) then does not hold the
    /// queue until it is [`max_profile_age`](Self::max_profile_age) old. Connection
    /// errors, timeouts and 429 are not counted here: a server that is down or busy is
    /// retried until `max_profile_age`. On `/ingest`, a 422 is retried at most
    /// [`INGEST_422_RETRIES`](crate::INGEST_422_RETRIES) times.
    ///
    /// ```
    /// let builder = span_profiler::Profiler::builder().max_upload_attempts(4);
    /// # let _ = builder;
    /// ```
    pub fn max_upload_attempts(mut self, attempts: u32) -> Self {
        self.max_upload_attempts = attempts;
        self
    }

    /// Time `stop()` spends uploading the last window and anything still queued before it
    /// gives up (default [`DEFAULT_STOP_TIMEOUT`]); what could not be sent is reported.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Largest uncompressed pprof per upload request (default
    /// [`DEFAULT_MAX_REQUEST_BYTES`], [`MIN_REQUEST_BYTES`] to [`MAX_REQUEST_BYTES_LIMIT`]).
    /// Larger windows are split into several complete profiles, one request each; nothing
    /// is lost by splitting.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Also trusts these root certificates (PEM, one or more `CERTIFICATE` blocks) for
    /// `https://` servers, besides the webpki roots (Mozilla's list). For private CAs.
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.tls_roots_pem.push(pem.as_ref().to_vec());
        self
    }

    /// Validates the options and starts profiling every thread of the process.
    ///
    /// With `SPAN_PROFILER_ENABLED=false` in the environment (however the builder was
    /// made) it returns a profiler that does nothing, without checking the options.
    ///
    /// Fails with [`StartError::Build`] for an invalid option, and with the other
    /// [`StartError`] variants when the sampler cannot run here.
    pub fn start(self) -> Result<Profiler, StartError> {
        let config = self.validate()?;
        Profiler::start(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(builder: ProfilerBuilder) -> String {
        builder.validate().unwrap_err().to_string()
    }

    #[test]
    fn invalid_options_say_what_to_fix() {
        let ok = || ProfilerBuilder::default().application_name("app");
        assert!(err(ok().sample_rate(0)).contains("use 1 to 10000 Hz"));
        assert!(err(ok().sample_rate(10_001)).contains("out of range"));
        assert!(err(ok().upload_interval(Duration::from_millis(1))).contains("out of range"));
        assert!(err(ok().max_files(0)).contains("at least 1"));
        // Push (the default) takes OpenTelemetry's default service name; /ingest does not.
        assert!(ok()
            .application_name("unknown_service:demo")
            .validate()
            .is_ok());
        let e = err(ProfilerBuilder::default()
            .application_name("a:b")
            .server_address("http://127.0.0.1:4040")
            .protocol(Protocol::Ingest));
        assert!(
            e.contains("`a:b` contains `:`") && e.contains("/ingest"),
            "{e}"
        );
        assert!(err(ProfilerBuilder::default().application_name("")).contains("empty"));
        assert!(ok().sample_rate(10_000).validate().is_ok());
    }

    #[test]
    fn defaults_are_the_documented_constants() {
        let config = ProfilerBuilder::default()
            .application_name("x/y")
            .validate()
            .unwrap();
        assert_eq!(config.sample_rate, DEFAULT_SAMPLE_RATE);
        assert_eq!(config.upload_interval, DEFAULT_UPLOAD_INTERVAL);
        assert_eq!(config.output_dir, PathBuf::from(DEFAULT_OUTPUT_DIR));
        assert!(config.max_files >= 100);
        assert_eq!(config.max_label_sets, 10_000);
    }
}
