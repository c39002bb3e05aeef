//! Labels: what a sample is tagged with and the registry that gives each set an id (the
//! per-thread slot that carries an id to the signal handler is the sampler's:
//! `crate::sampler::slot`).

pub(crate) mod registry;
pub(crate) mod set;

use std::fmt;
use std::sync::Arc;

use crate::counters::{LogOnce, LABELS};
use crate::sampler::slot;
use registry::{LabelHandle, Registry};
use set::{bounded_value, validate_key, LabelSet};

/// Set while a profiler exports OTLP: label sets built for spans then carry the trace id
/// (OTLP links need it) even when no `trace_id` label was asked for; pprof never writes it
/// unless asked. `Relaxed`: a span started just before the flag flips gets no trace id,
/// and its link carries the span id alone, which the server accepts.
static CARRY_TRACE_IDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns carrying trace ids on or off (the writer, when it starts and stops OTLP export).
#[cfg_attr(not(feature = "upload"), allow(dead_code))]
pub(crate) fn carry_trace_ids(on: bool) {
    CARRY_TRACE_IDS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether label sets built now should carry the trace id.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
pub(crate) fn trace_ids_carried() -> bool {
    CARRY_TRACE_IDS.load(std::sync::atomic::Ordering::Relaxed)
}
pub use set::{LabelError, MAX_LABEL_KEY_BYTES, MAX_LABEL_VALUE_BYTES};

/// An immutable set of profiling labels: a span id, a span name, an optional trace id and
/// extra string pairs.
///
/// Build a set once and attach it to work with [`ProfiledExt::with_labels`]
/// (or the OpenTelemetry helpers); every CPU sample taken while that work runs carries
/// these labels. The innermost labelled scope replaces the whole set while it is active;
/// to *add* to the labels in force, build a merged set once with
/// `Labels::current().with(key, value)`, never per poll.
///
/// `span_id` is written as 16 lowercase hex digits, exactly as OpenTelemetry prints a
/// `SpanId`, so Grafana can find the samples of a span. `span_name` and every extra pair
/// become *series* labels on the Pyroscope server: keep their values low-cardinality
/// (a route template such as `GET /orders/{id}`, never a raw URL).
///
/// ```
/// use span_profiler::{Labels, ProfiledExt};
///
/// let labels = Labels::span(0x00f0_67aa_0ba9_02b7, "GET /orders/{id}").with("region", "eu");
/// assert_eq!(labels.span_id_hex().as_deref(), Some("00f067aa0ba902b7"));
/// let work = async { 2 + 2 }.with_labels(labels);
/// # let _ = work;
/// ```
///
/// [`ProfiledExt::with_labels`]: crate::ProfiledExt::with_labels
#[derive(Clone, Default)]
pub struct Labels {
    set: Arc<LabelSet>,
    /// The registered id of `set`, when this value came from the registry (shared by
    /// clones, so work labelled from one `Labels` shows one id).
    handle: Option<LabelHandle>,
}

impl Labels {
    /// No labels: work wrapped with these is sampled unlabelled (label id 0), even
    /// inside a labelled scope.
    ///
    /// ```
    /// assert!(span_profiler::Labels::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The labels of a span: its id (printed as 16 lowercase hex digits, big-endian, as
    /// OpenTelemetry prints a `SpanId`) and its name.
    ///
    /// ```
    /// let labels = span_profiler::Labels::span(1, "GET /health");
    /// assert_eq!(labels.span_id_hex().as_deref(), Some("0000000000000001"));
    /// assert_eq!(labels.span_name(), Some("GET /health"));
    /// // The server treats an empty label as absent: an empty name gives no `span_name`.
    /// assert_eq!(span_profiler::Labels::span(1, "").span_name(), None);
    /// ```
    pub fn span(span_id: u64, span_name: impl Into<String>) -> Labels {
        let span_name = span_name.into();
        Self::from_set(LabelSet {
            span_id: Some(span_id),
            span_name: (!span_name.is_empty()).then(|| bounded_value(span_name).into()),
            ..LabelSet::default()
        })
    }

    /// The labels in force on this thread right now (those of the innermost labelled
    /// scope), or empty labels outside any. Samples taken under the returned value show
    /// the same label id as the scope it came from.
    ///
    /// ```
    /// use span_profiler::{Labels, ProfiledExt};
    ///
    /// let outer = Labels::span(7, "job");
    /// let fut = async {
    ///     let merged = Labels::current().with("phase", "load");
    ///     assert_eq!(merged.span_name(), Some("job"));
    /// };
    /// futures_lite_block_on(fut.with_labels(outer));
    /// # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// #     rt.block_on(f)
    /// # }
    /// ```
    pub fn current() -> Labels {
        Self::from_id(slot::current())
    }

    /// Labels for a registered id (empty for 0 or an id no longer live).
    pub(crate) fn from_id(id: u64) -> Labels {
        if id == 0 {
            return Labels::new();
        }
        match Registry::global().acquire(id) {
            Some(handle) => Self::from_handle(Some(handle)),
            None => match Registry::global().resolve(id) {
                // Retired (its last handle is gone): a copy registers anew when used.
                Some(set) => Labels { set, handle: None },
                None => Labels::new(),
            },
        }
    }

    pub(crate) fn from_handle(handle: Option<LabelHandle>) -> Labels {
        match handle {
            Some(handle) => Labels {
                set: handle.set().clone(),
                handle: Some(handle),
            },
            None => Labels::new(),
        }
    }

    pub(crate) fn from_set(set: LabelSet) -> Labels {
        Labels {
            set: Arc::new(set),
            handle: None,
        }
    }

    /// Adds (or replaces) the pair `key = value`.
    ///
    /// Never fails: a reserved or invalid key (see [`Labels::try_with`]) or an empty value
    /// drops the pair, counts it and logs the broken rule once; a value longer than
    /// [`MAX_LABEL_VALUE_BYTES`] is cut on a UTF-8 boundary and counted.
    ///
    /// ```
    /// let labels = span_profiler::Labels::span(1, "checkout")
    ///     .with("region", "eu-west-1")
    ///     .with("span_id", "ignored: reserved");
    /// assert_eq!(labels.get("region"), Some("eu-west-1"));
    /// assert_eq!(labels.get("span_id"), None);
    /// ```
    pub fn with(self, key: impl Into<String>, value: impl Into<String>) -> Labels {
        static LOGGED: LogOnce = LogOnce::new();
        let key = key.into();
        match self.clone().try_with(key.as_str(), value) {
            Ok(labels) => labels,
            Err(err) => {
                LABELS.rejected_pairs.incr();
                if LOGGED.first() {
                    log::warn!(
                        target: "span_profiler",
                        "label dropped: {err}; further drops are only counted \
                         (stats: rejected_label_pairs)"
                    );
                }
                self
            }
        }
    }

    /// Adds (or replaces) `key = value`, or says why the pair is refused.
    ///
    /// Keys are non-empty, at most [`MAX_LABEL_KEY_BYTES`] bytes of `[A-Za-z0-9_.]` not
    /// starting with a digit; `span_id`, `trace_id`, `span_name`, `profile_id` and keys
    /// starting with `__` are reserved. Values are non-empty.
    ///
    /// ```
    /// use span_profiler::{LabelError, Labels};
    ///
    /// let err = Labels::new().try_with("profile_id", "x").unwrap_err();
    /// assert!(matches!(err, LabelError::ReservedKey { .. }));
    /// assert!(Labels::new().try_with("tenant", "acme").is_ok());
    /// ```
    pub fn try_with(
        self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Labels, LabelError> {
        let key = key.into();
        validate_key(&key)?;
        let value = value.into();
        if value.is_empty() {
            return Err(LabelError::EmptyValue { key });
        }
        let mut set = LabelSet::clone(&self.set);
        set.insert(key, bounded_value(value));
        Ok(Self::from_set(set))
    }

    /// Adds the trace id (written as 32 lowercase hex digits). Only recent Pyroscope
    /// servers treat `trace_id` specially; older ones make one series per trace.
    ///
    /// ```
    /// let labels = span_profiler::Labels::span(1, "a").with_trace_id(0xabc);
    /// assert_eq!(labels.trace_id(), Some(0xabc));
    /// ```
    pub fn with_trace_id(self, trace_id: u128) -> Labels {
        let mut set = LabelSet::clone(&self.set);
        set.trace_id = Some(trace_id);
        set.trace_id_label = true;
        Self::from_set(set)
    }

    /// The span id, if any.
    pub fn span_id(&self) -> Option<u64> {
        self.set.span_id
    }

    /// The span id as the `span_id` sample label writes it (16 lowercase hex digits).
    pub fn span_id_hex(&self) -> Option<String> {
        self.set.span_id.map(set::span_id_hex)
    }

    /// The span name, if any.
    pub fn span_name(&self) -> Option<&str> {
        self.set.span_name.as_deref()
    }

    /// The trace id, if any.
    pub fn trace_id(&self) -> Option<u128> {
        self.set.trace_id
    }

    /// The value of the extra pair `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.set
            .pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The extra pairs, in the order they were added.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.set.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when no label is set.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// A handle to the registered set (registering it now if needed), or `None` for
    /// empty labels, which use id 0.
    pub(crate) fn into_handle(self) -> Option<LabelHandle> {
        if self.set.is_empty() {
            return None;
        }
        match self.handle {
            Some(handle) => Some(handle),
            None => Some(Registry::global().register(self.set)),
        }
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Labels");
        if let Some(id) = self.span_id_hex() {
            d.field("span_id", &id);
        }
        if let Some(name) = self.span_name() {
            d.field("span_name", &name);
        }
        if let Some(trace) = self.trace_id() {
            d.field("trace_id", &set::trace_id_hex(trace));
        }
        for (k, v) in self.pairs() {
            d.field(k, &v);
        }
        d.finish()
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        self.set == other.set
    }
}

impl Eq for Labels {}
