//! The options a provider hands to its tracers, and the labels they give a span.

use std::sync::Arc;

use super::map::Root;
use crate::labels::set::{bounded_value, LabelSet};
use crate::labels::Labels;

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

impl Config {
    /// With local-root (or no) scopes for both labels and no per-span part, a child's
    /// labels are exactly its parent's: share the parent's handle.
    pub(super) fn child_shares_parent_labels(&self) -> bool {
        self.span_id != LabelScope::AllSpans && self.span_name != LabelScope::AllSpans
    }

    /// The labels of work directly under a span with id `span_id`.
    pub(super) fn labels(
        &self,
        span_id: u64,
        sampled: bool,
        name: Option<String>,
        root: Option<&Arc<Root>>,
        trace_id: Option<u128>,
    ) -> Labels {
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
        let set = LabelSet {
            span_id: id,
            span_name: name.filter(|n| !n.is_empty()).map(bounded_value),
            // A trace id alone would make a label set for every unsampled trace.
            trace_id: trace_id.filter(|_| id.is_some()),
            ..LabelSet::default()
        };
        Labels::from_set(set)
    }
}
