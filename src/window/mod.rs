//! Window aggregation: drained samples become one window per upload interval, weights
//! added per (stack, label set), with the per-window caps that keep memory and the
//! server's label rules bounded.
//!
//! Everything here runs on the collector thread, never in the signal handler.

pub(crate) mod aggregate;

pub(crate) use aggregate::{
    ClosedWindow, ProfileKind, WindowAggregator, WindowLimits, WindowSample,
    DEFAULT_MAX_LABEL_SETS, DEFAULT_MAX_SPAN_NAMES,
};

use crate::counters::Counter;

/// Tallies of what aggregation did, for `stats()`.
///
/// Every sample or label that a cap or a lookup changes is counted here; nothing is lost
/// silently. "Samples" are calls of `WindowAggregator::add` (one signal each); "weight"
/// is the sum of their weights (timer expiries).
#[derive(Debug)]
pub(crate) struct WindowCounters {
    /// Samples whose label id no longer resolved (freed after its grace period): kept,
    /// encoded without labels.
    pub(crate) label_expired: Counter,
    /// Samples that went to the unlabelled overflow bucket because their window already
    /// had `max_label_sets` distinct label sets.
    pub(crate) label_sets_overflowed: Counter,
    /// Weight of those samples (stacks and weights are kept, only labels are lost).
    pub(crate) label_sets_overflowed_weight: Counter,
    /// Samples whose `span_name` was replaced by `"other"` because their window already
    /// had `max_span_names` distinct span names (their `span_id` is kept).
    pub(crate) span_names_overflowed: Counter,
    /// Samples that lost one or more label pairs because the pair's key was beyond the
    /// window's `max_label_keys` distinct keys.
    pub(crate) label_keys_removed: Counter,
    /// Samples whose stack was deeper than the server keeps (1000 frames) and was cut to
    /// its 1000 innermost frames.
    pub(crate) stacks_truncated: Counter,
    /// Samples dropped because they had no frame or zero weight (nothing to attribute).
    pub(crate) samples_empty: Counter,
}

impl WindowCounters {
    pub(crate) const fn new() -> Self {
        Self {
            label_expired: Counter::new(),
            label_sets_overflowed: Counter::new(),
            label_sets_overflowed_weight: Counter::new(),
            span_names_overflowed: Counter::new(),
            label_keys_removed: Counter::new(),
            stacks_truncated: Counter::new(),
            samples_empty: Counter::new(),
        }
    }
}

/// The process-wide window tallies: what every window of the profiler counts into.
pub(crate) static WINDOW: WindowCounters = WindowCounters::new();
