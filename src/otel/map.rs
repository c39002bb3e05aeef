//! The span-id map: from each live span this crate's tracer built to the label handle of
//! work under it.
//!
//! The tracer cannot put values into the context that will hold a span, and a parent's
//! `SpanRef` cannot be downcast to our span type, so this process-global map is how a
//! child finds its local root and how `.profiled()` finds the labels of the current span.
//! A span's entry is inserted when the tracer builds it and removed when the span object
//! is dropped (not at `end()`: children and wrappers under an ended span's context keep
//! its root's labels, as in otel-profiling-go), so with no live span the map is empty, and the label handles it held are
//! released (freeing their registry entries when no profiler runs).
//!
//! The map is split into shards, each a `Mutex<HashMap>`, chosen by the mixed span id, so
//! that spans started and ended on different threads rarely meet on one lock. No other
//! lock is taken while a shard is held, and values are dropped after the shard is
//! released (dropping a `LabelHandle` may lock the label registry).

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::id_hash::{shard_index, IdHashBuilder};
use crate::labels::registry::LabelHandle;
use crate::sync::lock;

/// What a child span or a `.profiled()` call needs to know about its local root.
#[derive(Debug)]
pub(crate) struct Root {
    /// The local root's span id.
    pub(crate) span_id: u64,
    /// The local root's name when it was built (borrowed when the span was named by a
    /// `&'static str`).
    pub(crate) name: Cow<'static, str>,
    /// Whether the local root was sampled (only sampled roots give a `span_id` label).
    pub(crate) sampled: bool,
    /// The monitor of the futures metered under this root (feature `task-metrics`): set
    /// when the first one is built, read when the root span ends.
    #[cfg(feature = "task-metrics")]
    pub(crate) task_monitor: OnceLock<tokio_metrics::TaskMonitor>,
    /// Set when the root span ended and its task metrics were written (feature
    /// `task-metrics`): wrappers made later are not metered, since nothing would record
    /// their polls. Relaxed: a late wrapper that misses the flag only meters in vain.
    #[cfg(feature = "task-metrics")]
    pub(crate) metrics_recorded: std::sync::atomic::AtomicBool,
}

impl Root {
    pub(crate) fn new(span_id: u64, name: Cow<'static, str>, sampled: bool) -> Self {
        Self {
            span_id,
            name,
            sampled,
            #[cfg(feature = "task-metrics")]
            task_monitor: OnceLock::new(),
            #[cfg(feature = "task-metrics")]
            metrics_recorded: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

cfg_task_metrics! {
    /// The local root span a wrapper's task metrics go to (feature `task-metrics`).
    pub(crate) type RootLink = Option<Arc<Root>>;
}
/// Without the feature `task-metrics` a wrapper links to no root span.
#[cfg(not(feature = "task-metrics"))]
pub(crate) type RootLink = ();

/// One live span's entry.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The labels of work under this span (`None`: no labels).
    pub(crate) handle: Option<LabelHandle>,
    /// The span's local root (`None` when the span's parent was not known to this map,
    /// and when nothing reads it: see `Config::keep_roots`).
    pub(crate) root: Option<Arc<Root>>,
}

/// Number of shards; a power of two.
const SHARDS: usize = 64;

type Shard = Mutex<HashMap<u64, Node, IdHashBuilder>>;

fn shards() -> &'static [Shard; SHARDS] {
    static MAP: OnceLock<[Shard; SHARDS]> = OnceLock::new();
    MAP.get_or_init(|| std::array::from_fn(|_| Mutex::new(HashMap::default())))
}

fn shard(span_id: u64) -> &'static Shard {
    &shards()[shard_index(span_id, SHARDS)]
}

/// Inserts `node` for `span_id` unless the id already has an entry. Returns whether it
/// was inserted: only then does the caller own (and later remove) the entry. An id can be
/// present already when an inner tracer hands out its parent's span context again (the
/// no-op tracer does).
pub(crate) fn insert(span_id: u64, node: Node) -> bool {
    let mut map = lock(shard(span_id));
    if let Entry::Vacant(slot) = map.entry(span_id) {
        slot.insert(node);
        return true;
    }
    drop(map);
    // `node` (and its handle) is released after the shard is unlocked.
    drop(node);
    false
}

/// Removes the entry of `span_id`; its handle is released after the shard is unlocked.
pub(crate) fn remove(span_id: u64) {
    let removed = lock(shard(span_id)).remove(&span_id);
    drop(removed);
}

/// A copy of the entry of `span_id`, if the span is live and known.
pub(crate) fn get(span_id: u64) -> Option<Node> {
    lock(shard(span_id)).get(&span_id).cloned()
}

/// Number of live entries (for tests and stats).
pub(crate) fn len() -> usize {
    shards().iter().map(|s| lock(s).len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_that_is_already_present_is_not_taken_over() {
        let id = 0x5eed_0000_0000_0001;
        assert!(insert(
            id,
            Node {
                handle: None,
                root: None
            }
        ));
        let root = Arc::new(Root::new(7, "n".into(), true));
        assert!(!insert(
            id,
            Node {
                handle: None,
                root: Some(root)
            }
        ));
        assert!(
            get(id).expect("present").root.is_none(),
            "the first entry stays"
        );
        remove(id);
        assert!(get(id).is_none());
    }

    #[test]
    fn sequential_ids_spread_over_many_shards() {
        let used: std::collections::HashSet<usize> = (1..=256u64)
            .map(|id| shard(id) as *const Shard as usize - shards().as_ptr() as usize)
            .collect();
        assert!(used.len() > SHARDS / 2, "only {} shards used", used.len());
    }
}
