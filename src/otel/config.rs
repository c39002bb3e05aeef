//! The options a provider hands to its tracers, and the labels they give a span.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use super::map::Root;
use crate::labels::registry::{LabelHandle, Registry};
use crate::labels::set::{bounded_cow, LabelSet};

/// Which spans a label is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LabelScope {
    /// The label is never written.
    Off,
    /// Work under a span carries its *local root's* value (the first span of the trace in
    /// this process). The default: Grafana's "Profiles" link sits on local roots.
    #[default]
    LocalRoot,
    /// Work under a span carries that span's own value. For `span_id`, every span then
    /// gets `pyroscope.profile.id`; for `span_name`, every span name becomes a series
    /// label value on the server, so keep span names low-cardinality.
    AllSpans,
}

/// The options a provider hands to its tracers.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) span_id: LabelScope,
    pub(crate) span_name: LabelScope,
    pub(crate) trace_id: bool,
}

/// Set once any provider in the process was configured with a [`LabelScope::AllSpans`]
/// scope: its children build their own labels from their local root's id, name and
/// sampling, so from then on every provider keeps that for its roots (a child may sit
/// under a root of another provider). Relaxed: a flag that only ever goes from false to
/// true, read when a root is built; a root built before it was set has no record, and
/// its children are labelled as under an unknown root.
static ROOTS_READ_BY_CHILDREN: AtomicBool = AtomicBool::new(false);

impl Config {
    /// With local-root (or no) scopes for both labels and no per-span part, a child's
    /// labels are exactly its parent's: share the parent's handle.
    pub(super) fn child_shares_parent_labels(&self) -> bool {
        self.span_id != LabelScope::AllSpans && self.span_name != LabelScope::AllSpans
    }

    /// Notes a provider's configuration (see [`ROOTS_READ_BY_CHILDREN`]).
    pub(super) fn note(&self) {
        if !self.child_shares_parent_labels() {
            ROOTS_READ_BY_CHILDREN.store(true, Relaxed);
        }
    }

    /// Whether a local root must keep its [`Root`] record: some child may build its own
    /// labels from it, or (feature `task-metrics`) its task metrics are recorded on it.
    /// Otherwise nothing reads it, and a request saves its allocation.
    pub(super) fn keep_roots(&self) -> bool {
        cfg!(feature = "task-metrics")
            || !self.child_shares_parent_labels()
            || ROOTS_READ_BY_CHILDREN.load(Relaxed)
    }

    /// The labels of work directly under a span with id `span_id`, registered (`None`
    /// for an empty set, which is label id 0). A span name that is a `&'static str`
    /// (`Cow::Borrowed`) is shared, not copied.
    pub(super) fn handle(
        &self,
        span_id: u64,
        sampled: bool,
        name: Option<Cow<'static, str>>,
        root: Option<&Root>,
        trace_id: Option<u128>,
    ) -> Option<LabelHandle> {
        let id = match self.span_id {
            LabelScope::Off => None,
            LabelScope::LocalRoot => root.filter(|r| r.sampled).map(|r| r.span_id),
            LabelScope::AllSpans => sampled.then_some(span_id),
        };
        let name = match self.span_name {
            LabelScope::Off => None,
            LabelScope::LocalRoot => root.map(|r| r.name.clone()),
            LabelScope::AllSpans => name,
        };
        let span_name = name.filter(|n| !n.is_empty()).map(bounded_cow);
        // A trace id alone would make a label set for every unsampled trace.
        let trace_id = trace_id.filter(|_| id.is_some());
        // An empty set is label id 0: nothing to register (`LabelSet::is_empty`; no pairs).
        if id.is_none() && span_name.is_none() {
            return None;
        }
        // Built straight into its allocation (the set is 128 bytes: moving it first
        // showed in the tracer's profile). What `Labels::from_set(set).into_handle()`
        // does, without the detour.
        let set = Arc::new(LabelSet {
            span_id: id,
            span_name,
            trace_id,
            // Carried for OTLP links whenever export runs, written to pprof when asked.
            trace_id_label: self.trace_id && trace_id.is_some(),
            pairs: Vec::new(),
        });
        Some(Registry::global().register(set))
    }
}
