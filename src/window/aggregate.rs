//! One open window: weights per (stack, label set), with the per-window caps.
//!
//! Stacks are interned (one copy per distinct stack). Label ids are resolved once per id
//! per window through the global registry, and the resolved sets are interned by content,
//! so two ids with equal labels share one set. The caps are applied as sets are first
//! seen, which keeps memory bounded whatever the application does:
//! - `max_span_names` distinct `span_name` values; later names become `"other"` (the
//!   `span_id` stays), counted in `span_names_overflowed`;
//! - `max_label_keys` distinct keys of extra pairs; pairs with later keys are removed,
//!   counted in `label_keys_removed`;
//! - `max_label_sets` distinct label sets (after the two rules above); samples of later
//!   sets go to an unlabelled overflow bucket that keeps their stacks and weights,
//!   counted in `label_sets_overflowed` (samples) and `label_sets_overflowed_weight`.
//!
//! A sample whose id no longer resolves (freed after its grace period) is kept without
//! labels and counted in `label_expired`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::labels::registry::Registry;
use crate::labels::set::LabelSet;
use crate::limits::{FIXED_SERIES_LABELS, MAX_SERIES_LABEL_NAMES, MAX_STACK_DEPTH};
use crate::window::{WindowCounters, WINDOW};

/// Default cap on distinct label sets per window.
pub(crate) const DEFAULT_MAX_LABEL_SETS: usize = 10_000;
/// Default cap on distinct `span_name` values per window.
pub(crate) const DEFAULT_MAX_SPAN_NAMES: usize = 200;
/// Name that replaces `span_name` values beyond the per-window cap.
pub(crate) const OTHER_SPAN_NAME: &str = "other";

/// Index of "no labels" in [`ClosedWindow::label_sets`].
pub(crate) const NO_LABELS: u32 = 0;
/// Index of the overflow bucket (no labels, but counted apart) in
/// [`ClosedWindow::label_sets`].
pub(crate) const OVERFLOW_LABELS: u32 = 1;

/// Label ids cached per window before lookups stop being cached (a bound on memory for
/// applications that create label sets without limit; lookups then take the registry
/// lock once per sample).
const MAX_CACHED_IDS_PER_SET: usize = 4;

/// What a window measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ProfileKind {
    /// CPU samples: a weight (timer expiries) per sample.
    #[default]
    Cpu,
    /// Sampled allocations: `[alloc_objects, alloc_space, inuse_objects, inuse_space]`
    /// per sample, sampled every `sample_bytes` on average.
    Alloc { sample_bytes: u64 },
}

/// Per-window caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowLimits {
    /// Distinct label sets per window; default [`DEFAULT_MAX_LABEL_SETS`].
    pub max_label_sets: usize,
    /// Distinct `span_name` values per window; default [`DEFAULT_MAX_SPAN_NAMES`].
    pub max_span_names: usize,
    /// Distinct keys of extra label pairs (not counting `span_id`, `span_name`,
    /// `trace_id`) per window; see [`WindowLimits::label_keys_within`].
    pub max_label_keys: usize,
}

impl WindowLimits {
    /// Keys left for extra sample-label pairs when each series already carries the
    /// fixed series labels, `series_tags` user tags and `span_name`, so that the total
    /// stays within the server's 30 label names.
    pub(crate) const fn label_keys_within(series_tags: usize) -> usize {
        MAX_SERIES_LABEL_NAMES.saturating_sub(FIXED_SERIES_LABELS.len() + series_tags + 1)
    }
}

impl Default for WindowLimits {
    /// The defaults, for a profiler without user tags.
    fn default() -> Self {
        Self {
            max_label_sets: DEFAULT_MAX_LABEL_SETS,
            max_span_names: DEFAULT_MAX_SPAN_NAMES,
            max_label_keys: Self::label_keys_within(0),
        }
    }
}

/// What one label id resolved to in this window.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    /// Index into `sets` (or [`OVERFLOW_LABELS`]).
    index: u32,
    /// The caps replaced its span name.
    renamed: bool,
    /// The caps removed some of its pairs.
    keys_removed: bool,
}

/// One open window.
pub(crate) struct WindowAggregator {
    limits: WindowLimits,
    start: SystemTime,
    stacks: Vec<Arc<[usize]>>,
    stack_index: HashMap<Arc<[usize]>, u32>,
    /// Index 0: no labels; 1: overflow bucket; then the interned sets.
    sets: Vec<Arc<LabelSet>>,
    set_index: HashMap<Arc<LabelSet>, u32>,
    /// Label id -> index into `sets`, or `None` when the id did not resolve.
    ids: HashMap<u64, Option<Resolved>>,
    span_names: HashSet<String>,
    keys: HashSet<String>,
    weights: HashMap<(u32, u32), u64>,
    kind: ProfileKind,
    /// Allocation windows: values per (stack, label set).
    values: HashMap<(u32, u32), [u64; 4]>,
    /// Where this window counts what its caps did: [`WINDOW`] (shown by `stats()`),
    /// or a test's own counters.
    counters: &'static WindowCounters,
}

impl std::fmt::Debug for WindowAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowAggregator")
            .field("stacks", &self.stacks.len())
            .field("label_sets", &(self.sets.len() - 2))
            .field("samples", &self.weights.len())
            .finish()
    }
}

impl WindowAggregator {
    /// An empty window that opened at `start`, counting into [`WINDOW`].
    pub(crate) fn new(limits: WindowLimits, start: SystemTime) -> Self {
        Self::counting_into(limits, start, &WINDOW)
    }

    /// An empty window that counts into `counters`.
    pub(crate) fn counting_into(
        limits: WindowLimits,
        start: SystemTime,
        counters: &'static WindowCounters,
    ) -> Self {
        let empty = Arc::new(LabelSet::default());
        Self {
            limits,
            start,
            stacks: Vec::new(),
            stack_index: HashMap::new(),
            sets: vec![empty.clone(), empty],
            set_index: HashMap::new(),
            ids: HashMap::new(),
            span_names: HashSet::new(),
            keys: HashSet::new(),
            weights: HashMap::new(),
            kind: ProfileKind::Cpu,
            values: HashMap::new(),
            counters,
        }
    }

    /// An empty allocation window that opened at `start`.
    pub(crate) fn new_alloc(limits: WindowLimits, start: SystemTime, sample_bytes: u64) -> Self {
        Self {
            kind: ProfileKind::Alloc { sample_bytes },
            ..Self::new(limits, start)
        }
    }

    /// When the window opened.
    pub(crate) fn start(&self) -> SystemTime {
        self.start
    }

    /// Adds allocation values `[alloc_objects, alloc_space, inuse_objects, inuse_space]`
    /// for a stack and an already resolved label set (`None`: no labels). The caps apply
    /// as in [`add`](Self::add).
    pub(crate) fn add_alloc(
        &mut self,
        frames: &[usize],
        set: Option<Arc<LabelSet>>,
        values: [u64; 4],
    ) {
        if frames.is_empty() || values == [0; 4] {
            return;
        }
        let frames = &frames[..frames.len().min(MAX_STACK_DEPTH)];
        let stack = self.intern_stack(frames);
        let labels = set.map_or(NO_LABELS, |set| self.intern_set(set).index);
        let v = self.values.entry((stack, labels)).or_insert([0; 4]);
        for (sum, add) in v.iter_mut().zip(values) {
            *sum += add;
        }
    }

    /// Adds one sample. `frames[0]` is the interrupted PC (leaf), `frames[1..]` are return
    /// addresses (callers). `label_id` 0 means no labels. Samples with no frame or zero
    /// weight carry nothing to attribute: they are counted and dropped.
    pub(crate) fn add(&mut self, frames: &[usize], label_id: u64, weight: u64) {
        if frames.is_empty() || weight == 0 {
            self.counters.samples_empty.incr();
            return;
        }
        let frames = if frames.len() > MAX_STACK_DEPTH {
            self.counters.stacks_truncated.incr();
            &frames[..MAX_STACK_DEPTH]
        } else {
            frames
        };
        let stack = self.intern_stack(frames);
        let resolved = self.labels_of(label_id);
        let labels = resolved.index;
        if labels == OVERFLOW_LABELS {
            self.counters.label_sets_overflowed.incr();
            self.counters.label_sets_overflowed_weight.add(weight);
        } else {
            if resolved.renamed {
                self.counters.span_names_overflowed.incr();
            }
            if resolved.keys_removed {
                self.counters.label_keys_removed.incr();
            }
        }
        *self.weights.entry((stack, labels)).or_insert(0) += weight;
    }

    /// No sample was added since the window opened.
    pub(crate) fn is_empty(&self) -> bool {
        self.weights.is_empty() && self.values.is_empty()
    }

    /// Closes the window at `end`: samples sorted by (stack, label set).
    pub(crate) fn close(self, end: SystemTime) -> ClosedWindow {
        let mut samples: Vec<WindowSample> = self
            .weights
            .into_iter()
            .map(|((stack, labels), weight)| WindowSample {
                stack,
                labels,
                weight,
                values: [0; 4],
            })
            .chain(
                self.values
                    .into_iter()
                    .map(|((stack, labels), values)| WindowSample {
                        stack,
                        labels,
                        weight: 0,
                        values,
                    }),
            )
            .collect();
        samples.sort_unstable_by_key(|s| (s.stack, s.labels));
        ClosedWindow {
            kind: self.kind,
            start: self.start,
            end,
            stacks: self.stacks,
            label_sets: self.sets,
            samples,
        }
    }

    fn intern_stack(&mut self, frames: &[usize]) -> u32 {
        if let Some(&i) = self.stack_index.get(frames) {
            return i;
        }
        let i = self.stacks.len() as u32;
        let stack: Arc<[usize]> = Arc::from(frames);
        self.stacks.push(stack.clone());
        self.stack_index.insert(stack, i);
        i
    }

    /// Where `label_id`'s samples go, resolving it once per window.
    fn labels_of(&mut self, label_id: u64) -> Resolved {
        const UNLABELLED: Resolved = Resolved {
            index: NO_LABELS,
            renamed: false,
            keys_removed: false,
        };
        if label_id == 0 {
            return UNLABELLED;
        }
        let resolved = match self.ids.get(&label_id) {
            Some(&cached) => cached,
            None => {
                let index = Registry::global()
                    .resolve(label_id)
                    .map(|set| self.intern_set(set));
                if self.ids.len() < MAX_CACHED_IDS_PER_SET * self.limits.max_label_sets.max(1) {
                    self.ids.insert(label_id, index);
                }
                index
            }
        };
        match resolved {
            Some(resolved) => resolved,
            None => {
                self.counters.label_expired.incr();
                UNLABELLED
            }
        }
    }

    /// Applies the span-name and key caps to `set`, then interns it (or answers the
    /// overflow bucket when the window is full).
    fn intern_set(&mut self, set: Arc<LabelSet>) -> Resolved {
        if set.is_empty() {
            return Resolved {
                index: NO_LABELS,
                renamed: false,
                keys_removed: false,
            };
        }
        let mut renamed = false;
        let mut keys_removed = false;
        let mut capped: Option<LabelSet> = None;
        if let Some(name) = &set.span_name {
            if !self.span_names.contains(name.as_ref()) {
                if self.span_names.len() < self.limits.max_span_names {
                    self.span_names.insert(name.to_string());
                } else {
                    renamed = true;
                    capped.get_or_insert_with(|| (*set).clone()).span_name =
                        Some(OTHER_SPAN_NAME.into());
                }
            }
        }
        for (key, _) in &set.pairs {
            if !self.keys.contains(key) {
                if self.keys.len() < self.limits.max_label_keys {
                    self.keys.insert(key.clone());
                } else {
                    keys_removed = true;
                }
            }
        }
        if keys_removed {
            let keys = &self.keys;
            capped
                .get_or_insert_with(|| (*set).clone())
                .pairs
                .retain(|(k, _)| keys.contains(k));
        }
        let set = match capped {
            Some(changed) => Arc::new(changed),
            None => set,
        };
        let index = if let Some(&i) = self.set_index.get(&set) {
            i
        } else if set.is_empty() {
            NO_LABELS
        } else if self.sets.len() - 2 >= self.limits.max_label_sets {
            OVERFLOW_LABELS
        } else {
            let i = self.sets.len() as u32;
            self.set_index.insert(set.clone(), i);
            self.sets.push(set);
            i
        };
        Resolved {
            index,
            renamed,
            keys_removed,
        }
    }
}

/// One sample of a closed window: a stack, a label set and their summed weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowSample {
    /// Index into [`ClosedWindow::stacks`].
    pub(crate) stack: u32,
    /// Index into [`ClosedWindow::label_sets`] ([`NO_LABELS`], [`OVERFLOW_LABELS`], or a set).
    pub(crate) labels: u32,
    /// Summed weight (timer expiries), never 0 in CPU windows (0 in allocation windows).
    pub(crate) weight: u64,
    /// Allocation windows: `[alloc_objects, alloc_space, inuse_objects, inuse_space]`.
    pub(crate) values: [u64; 4],
}

/// A closed window, ready for encoding.
#[derive(Debug, Clone)]
pub(crate) struct ClosedWindow {
    /// CPU or allocation samples.
    pub(crate) kind: ProfileKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    /// Distinct stacks, leaf first, as return addresses except the leaf PC.
    pub(crate) stacks: Vec<Arc<[usize]>>,
    /// Label sets after the caps; indices [`NO_LABELS`] and [`OVERFLOW_LABELS`] are empty.
    pub(crate) label_sets: Vec<Arc<LabelSet>>,
    /// Sorted by (stack, labels); one entry per distinct pair.
    pub(crate) samples: Vec<WindowSample>,
}

cfg_internal! {
    impl ClosedWindow {
        /// Total weight of the window's samples.
        pub(crate) fn total_weight(&self) -> u64 {
            self.samples.iter().map(|s| s.weight).sum()
        }
    }
}

#[cfg(all(test, not(span_profiler_loom)))]
mod tests {
    use super::*;
    use crate::labels::registry::LabelHandle;

    fn register(span_id: Option<u64>, name: Option<&str>, pairs: &[(&str, &str)]) -> LabelHandle {
        let set = LabelSet {
            span_id,
            span_name: name.map(|n| n.to_owned().into()),
            trace_id: None,
            trace_id_label: false,
            pairs: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Registry::global().register(Arc::new(set))
    }

    /// A window counting into its own counters, so that counts are exact while other
    /// tests run.
    fn window(limits: WindowLimits) -> WindowAggregator {
        let counters = Box::leak(Box::new(WindowCounters::new()));
        WindowAggregator::counting_into(limits, SystemTime::now(), counters)
    }

    /// Closes `w`, also answering the counters it counted into.
    fn close(w: WindowAggregator) -> (ClosedWindow, &'static WindowCounters) {
        let counters = w.counters;
        (w.close(SystemTime::now()), counters)
    }

    fn weight_of(w: &ClosedWindow, labels: impl Fn(&LabelSet) -> bool) -> u64 {
        w.samples
            .iter()
            .filter(|s| labels(&w.label_sets[s.labels as usize]))
            .map(|s| s.weight)
            .sum()
    }

    #[test]
    fn equal_stacks_and_labels_add_up_and_different_ones_stay_apart() {
        let a = register(Some(1), Some("a"), &[]);
        let b = register(Some(2), Some("b"), &[]);
        let mut w = window(WindowLimits::default());
        assert!(w.is_empty());
        w.add(&[0x10, 0x20], a.id(), 1);
        w.add(&[0x10, 0x20], a.id(), 3);
        w.add(&[0x10, 0x20], b.id(), 2);
        w.add(&[0x11, 0x20], a.id(), 1);
        w.add(&[0x10, 0x20], 0, 5);
        assert!(!w.is_empty());
        let (c, n) = close(w);
        assert_eq!(c.stacks.len(), 2);
        assert_eq!(c.samples.len(), 4);
        assert_eq!(c.total_weight(), 12);
        let a_stack0 = c
            .samples
            .iter()
            .find(|s| s.stack == 0 && c.label_sets[s.labels as usize].span_id == Some(1));
        assert_eq!(a_stack0.unwrap().weight, 4);
        assert_eq!(weight_of(&c, |l| l.is_empty()), 5);
        assert_eq!(n.samples_empty.get(), 0, "all five were aggregated");
    }

    #[test]
    fn two_ids_with_equal_labels_share_one_set() {
        let a = register(Some(7), Some("same"), &[("k", "v")]);
        let b = register(Some(7), Some("same"), &[("k", "v")]);
        assert_ne!(a.id(), b.id());
        let mut w = window(WindowLimits::default());
        w.add(&[1], a.id(), 1);
        w.add(&[1], b.id(), 1);
        let c = w.close(SystemTime::now());
        assert_eq!(c.samples.len(), 1);
        assert_eq!(c.samples[0].weight, 2);
    }

    #[test]
    fn an_expired_label_id_keeps_the_sample_without_labels_and_is_counted() {
        let id = register(Some(3), Some("gone"), &[]).id(); // handle dropped: freed (no profiler)
        let mut w = window(WindowLimits::default());
        w.add(&[1, 2], id, 2);
        w.add(&[1, 2], id, 1);
        let (c, n) = close(w);
        assert_eq!(n.label_expired.get(), 2);
        // The profiler's windows count into the process-wide counters `stats()` shows.
        let before = WINDOW.label_expired.get();
        WindowAggregator::new(WindowLimits::default(), SystemTime::now()).add(&[1], id, 1);
        assert!(WINDOW.label_expired.get() > before);
        assert_eq!(c.samples.len(), 1);
        assert_eq!(c.samples[0].labels, NO_LABELS);
        assert_eq!(c.samples[0].weight, 3);
    }

    #[test]
    fn span_names_beyond_the_cap_become_other_and_keep_their_span_id() {
        let handles: Vec<_> = (0..5)
            .map(|i| register(Some(100 + i), Some(&format!("route{i}")), &[]))
            .collect();
        let limits = WindowLimits {
            max_span_names: 3,
            ..WindowLimits::default()
        };
        let mut w = window(limits);
        for h in &handles {
            w.add(&[1], h.id(), 1);
        }
        w.add(&[2], handles[4].id(), 1);
        w.add(&[2], handles[0].id(), 1);
        let (c, n) = close(w);
        assert_eq!(
            n.span_names_overflowed.get(),
            3,
            "route3, route4 and route4 again"
        );
        let names: HashSet<_> = c
            .label_sets
            .iter()
            .filter_map(|s| s.span_name.clone())
            .collect();
        assert_eq!(names.len(), 4, "three routes plus other: {names:?}");
        assert!(names.contains(OTHER_SPAN_NAME));
        let other_ids: HashSet<_> = c
            .samples
            .iter()
            .map(|s| &c.label_sets[s.labels as usize])
            .filter(|l| l.span_name.as_deref() == Some(OTHER_SPAN_NAME))
            .map(|l| l.span_id)
            .collect();
        assert_eq!(other_ids, HashSet::from([Some(103), Some(104)]));
        assert_eq!(c.total_weight(), 7);
    }

    #[test]
    fn label_sets_beyond_the_cap_go_to_the_overflow_bucket_with_their_weight() {
        let handles: Vec<_> = (0..10)
            .map(|i| register(Some(200 + i), Some("r"), &[]))
            .collect();
        let limits = WindowLimits {
            max_label_sets: 4,
            ..WindowLimits::default()
        };
        let mut w = window(limits);
        for (i, h) in handles.iter().enumerate() {
            w.add(&[0x100 + i], h.id(), 2);
        }
        let (c, n) = close(w);
        let distinct: HashSet<_> = c
            .samples
            .iter()
            .filter(|s| s.labels > OVERFLOW_LABELS)
            .map(|s| s.labels)
            .collect();
        assert_eq!(distinct.len(), 4);
        assert_eq!(n.label_sets_overflowed.get(), 6);
        assert_eq!(n.label_sets_overflowed_weight.get(), 12);
        let overflow: Vec<_> = c
            .samples
            .iter()
            .filter(|s| s.labels == OVERFLOW_LABELS)
            .collect();
        assert_eq!(overflow.len(), 6, "stacks are kept apart in the bucket");
        assert!(c.label_sets[OVERFLOW_LABELS as usize].is_empty());
        assert_eq!(c.total_weight(), 20, "nothing is lost");
    }

    #[test]
    fn pairs_with_keys_beyond_the_cap_are_removed_and_counted() {
        let a = register(Some(1), Some("r"), &[("k1", "a"), ("k2", "b")]);
        let b = register(Some(1), Some("r"), &[("k1", "a"), ("k3", "c")]);
        let limits = WindowLimits {
            max_label_keys: 2,
            ..WindowLimits::default()
        };
        let mut w = window(limits);
        w.add(&[1], a.id(), 1);
        w.add(&[1], b.id(), 1);
        w.add(&[2], b.id(), 1);
        let (c, n) = close(w);
        assert_eq!(n.label_keys_removed.get(), 2);
        for s in &c.samples {
            let set = &c.label_sets[s.labels as usize];
            assert!(set.pairs.iter().all(|(k, _)| k != "k3"), "{set:?}");
            assert_eq!(set.span_id, Some(1));
        }
    }

    #[test]
    fn deep_stacks_are_cut_to_their_innermost_frames() {
        let frames: Vec<usize> = (1..=1500).collect();
        let mut w = window(WindowLimits::default());
        w.add(&frames, 0, 1);
        w.add(&[], 0, 1);
        w.add(&[5], 0, 0);
        let (c, n) = close(w);
        assert_eq!(c.stacks[0].len(), MAX_STACK_DEPTH);
        assert_eq!(c.stacks[0][0], 1, "the leaf is kept");
        assert_eq!(n.stacks_truncated.get(), 1);
        assert_eq!(n.samples_empty.get(), 2);
        assert_eq!(c.samples.len(), 1);
    }

    #[test]
    fn default_limits_leave_room_for_the_server_label_names() {
        let l = WindowLimits::default();
        assert_eq!(l.max_label_sets, 10_000);
        assert_eq!(l.max_span_names, 200);
        assert_eq!(
            FIXED_SERIES_LABELS.len() + 1 + l.max_label_keys,
            MAX_SERIES_LABEL_NAMES
        );
        assert_eq!(WindowLimits::label_keys_within(40), 0);
    }
}
