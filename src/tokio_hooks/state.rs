//! Per-task label state of the task hooks.
//!
//! Independent of Tokio's unstable API (it builds without `tokio_unstable`), so that the
//! loom models in `loom-tests/` exercise exactly the code the hooks run:
//!
//! - [`TaskTable`]: task id -> the labels the task inherited at spawn, one counted
//!   [`LabelHandle`] per labelled task. Written at spawn (spawning thread) and at
//!   terminate, read at every poll (polling thread): sharded mutexes, so workers polling
//!   different tasks rarely meet on one lock.
//! - [`PollFrames`]: one per thread, the stack of polls in progress on it (nested only
//!   when a runtime runs inside another's task). Each frame keeps the slot value that
//!   before-poll replaced, so after-poll restores it without looking at the table.
//!
//! Tokio calls `on_task_terminate` *before* the last `on_after_task_poll` of a task. The
//! terminate step removes the task's entry, and when that task is the one being polled on
//! this thread it parks the entry's handle in the poll's frame: the slot still holds the
//! task's label id until after-poll restores it, and only then is the handle dropped. So
//! no sample can read an id whose last handle is already gone. Terminate outside a poll
//! (runtime shutdown, `spawn_blocking` tasks, which have no entry) releases at once.
//!
//! Without `--cfg tokio_unstable` no hook runs, so outside the tests only the counters
//! are used (by `stats()`).
#![cfg_attr(
    not(any(tokio_unstable, test, feature = "__internal")),
    allow(dead_code)
)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::panic::Location;

use crate::counters::{Counter, LogOnce};
use crate::id_hash::IdHashBuilder as IdBuild;
use crate::labels::registry::{LabelHandle, Registry};
use crate::labels::set::LabelSet;
use crate::sync::{lock, Mutex};

/// Shards of a [`TaskTable`] used by the hooks: enough that 4 to 64 workers polling
/// different tasks seldom share a lock.
pub const DEFAULT_SHARDS: usize = 64;

/// The label key a span-less task gets when spawn locations are labelled.
pub const SPAWNED_AT_KEY: &str = "spawned_at";

/// Where a hook writes label ids: the calling thread's slot in production, a plain value
/// per modelled thread in loom models (a signal is not a thread, and loom runs its
/// threads on one OS thread, so the real thread-local cannot be modelled).
pub trait LabelSlot {
    /// Writes `id`, returning the previous value.
    fn replace(&mut self, id: u64) -> u64;
    /// The value in force.
    fn current(&self) -> u64;
}

/// The calling thread's real label slot.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadSlot;

impl LabelSlot for ThreadSlot {
    #[inline]
    fn replace(&mut self, id: u64) -> u64 {
        crate::sampler::slot::replace(id)
    }

    #[inline]
    fn current(&self) -> u64 {
        crate::sampler::slot::current()
    }
}

/// Tallies of the hooks (all installations together).
#[derive(Debug)]
pub(crate) struct HookCounters {
    /// Tasks that got an entry (inherited labels or a spawn-location label).
    pub(crate) tasks_labelled: Counter,
    /// Entries released at terminate (`tasks_labelled - tasks_released` are alive).
    pub(crate) tasks_released: Counter,
    /// Spawns under a label id that was no longer live (the child got no labels).
    pub(crate) parent_expired: Counter,
    /// After-poll calls that did not match the innermost before-poll of the thread.
    pub(crate) unbalanced_polls: Counter,
    /// Polls the hooks could not label because the thread's frame stack was gone
    /// (thread-local destruction) or busy.
    pub(crate) frames_unavailable: Counter,
}

/// The hooks' tallies.
pub(crate) static HOOKS: HookCounters = HookCounters {
    tasks_labelled: Counter::new(),
    tasks_released: Counter::new(),
    parent_expired: Counter::new(),
    unbalanced_polls: Counter::new(),
    frames_unavailable: Counter::new(),
};

/// A snapshot of the hooks' tallies, for tests and `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookCountersSnapshot {
    /// Tasks that got an entry (inherited labels or a spawn-location label).
    pub tasks_labelled: u64,
    /// Entries released at terminate.
    pub tasks_released: u64,
    /// Spawns under a label id that was no longer live.
    pub parent_expired: u64,
    /// After-poll calls that did not match the thread's innermost before-poll.
    pub unbalanced_polls: u64,
    /// Polls left unlabelled because the thread's frame stack was unavailable.
    pub frames_unavailable: u64,
}

/// The hooks' tallies now.
pub fn hook_counters() -> HookCountersSnapshot {
    HookCountersSnapshot {
        tasks_labelled: HOOKS.tasks_labelled.get(),
        tasks_released: HOOKS.tasks_released.get(),
        parent_expired: HOOKS.parent_expired.get(),
        unbalanced_polls: HOOKS.unbalanced_polls.get(),
        frames_unavailable: HOOKS.frames_unavailable.get(),
    }
}

/// What a labelled task carries from spawn to terminate.
struct TaskEntry {
    /// Keeps the label id registered while the task exists.
    handle: LabelHandle,
    /// True when the labels are the task's own spawn location, not inherited ones.
    location: bool,
}

/// One lock's worth of entries, alone on its cache lines.
#[repr(align(128))]
struct Shard<K> {
    map: Mutex<HashMap<K, TaskEntry, IdBuild>>,
}

/// Task id -> inherited labels, for one installation of the hooks.
///
/// `K` is `tokio::task::Id` in production and `u64` in loom models.
pub struct TaskTable<K> {
    registry: Registry,
    /// Invariant: at least one shard; an entry lives in shard `shard_of(id)` only.
    shards: Box<[Shard<K>]>,
    /// Spawn location -> its label handle, when span-less tasks are labelled by spawn
    /// location. Grows with the number of distinct spawn sites in the program's code,
    /// which is fixed, so it is bounded.
    locations: Option<Mutex<HashMap<(&'static str, u32), LabelHandle>>>,
}

/// One poll in progress on a thread.
struct Frame<K> {
    task: K,
    /// The slot value before-poll replaced; after-poll writes it back.
    prev: u64,
    /// The id before-poll wrote (0: none).
    label: u64,
    /// `label` is the task's spawn-location label, not a span's.
    location: bool,
    /// The task's handle, parked here by a terminate that ran inside this poll; dropped
    /// after the slot is restored.
    deferred: Option<LabelHandle>,
}

/// The polls in progress on one thread, innermost last.
pub struct PollFrames<K> {
    stack: Vec<Frame<K>>,
}

impl<K> PollFrames<K> {
    /// An empty stack (no allocation until the first poll).
    pub const fn new() -> Self {
        Self { stack: Vec::new() }
    }

    /// Number of polls in progress.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }
}

impl<K> Default for PollFrames<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash> TaskTable<K> {
    /// A table over `registry` with `shards` locks (at least one), labelling span-less
    /// tasks by spawn location when `spawn_locations` is set.
    pub fn new(registry: Registry, shards: usize, spawn_locations: bool) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Shard {
                map: Mutex::new(HashMap::with_hasher(IdBuild::default())),
            })
            .collect();
        let locations = spawn_locations.then(|| Mutex::new(HashMap::new()));
        Self {
            registry,
            shards,
            locations,
        }
    }

    #[inline]
    fn shard(&self, task: &K) -> &Shard<K> {
        let hash = IdBuild::default().hash_one(task);
        // Middle bits: the map inside uses the low bits for buckets and the top 7 as tags.
        let index = (hash >> 20) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Spawn hook, on the spawning thread: the new task inherits `parent`, the label id
    /// in force there (0: none). `frames` are the spawning thread's polls in progress.
    /// A task without labels gets its spawn location's label when the table labels
    /// locations, and no entry otherwise.
    pub fn on_spawn(
        &self,
        frames: &PollFrames<K>,
        task: K,
        parent: u64,
        spawned_at: Option<&'static Location<'static>>,
    ) {
        let entry = match self.inherit(frames, parent) {
            Some(handle) => TaskEntry {
                handle,
                location: false,
            },
            None => match (spawned_at, &self.locations) {
                (Some(at), Some(locations)) => TaskEntry {
                    handle: self.location_handle(locations, at),
                    location: true,
                },
                _ => return,
            },
        };
        HOOKS.tasks_labelled.incr();
        // A task id is spawned once, so nothing is replaced.
        lock(&self.shard(&task).map).insert(task, entry);
    }

    /// A handle on `parent` for a child, or `None` when the child inherits nothing.
    fn inherit(&self, frames: &PollFrames<K>, parent: u64) -> Option<LabelHandle> {
        if parent == 0 {
            return None;
        }
        if let Some(top) = frames.stack.last().filter(|top| top.label == parent) {
            if top.location {
                // A spawn location is not a span: the child gets its own location.
                return None;
            }
            // Spawned in a hooked poll that no wrapper overrides: share the parent's
            // handle (a shard lock instead of the registry's global one).
            let shared = lock(&self.shard(&top.task).map)
                .get(&top.task)
                .map(|e| e.handle.clone());
            if let Some(handle) = shared.or_else(|| top.deferred.clone()) {
                return Some(handle);
            }
        }
        let handle = self.registry.acquire(parent);
        if handle.is_none() {
            static LOGGED: LogOnce = LogOnce::new();
            HOOKS.parent_expired.incr();
            if LOGGED.first() {
                log::warn!(
                    target: "span_profiler",
                    "a task was spawned under label id {parent}, which is no longer \
                     registered, so it inherits no labels; keep a handle (a wrapper or a \
                     span) alive while spawning; further cases are only counted"
                );
            }
        }
        handle
    }

    fn location_handle(
        &self,
        locations: &Mutex<HashMap<(&'static str, u32), LabelHandle>>,
        at: &'static Location<'static>,
    ) -> LabelHandle {
        let mut map = lock(locations);
        map.entry((at.file(), at.line()))
            .or_insert_with(|| {
                let mut set = LabelSet::default();
                let value =
                    crate::labels::set::bounded_value(format!("{}:{}", at.file(), at.line()));
                set.insert(SPAWNED_AT_KEY.to_owned(), value);
                self.registry.register(std::sync::Arc::new(set))
            })
            .clone()
    }

    /// Before-poll hook, on the polling thread: writes the task's label id, or 0 for a
    /// task without an entry (never leaves a previous poll's value), and records what it
    /// replaced.
    #[inline]
    pub fn before_poll(&self, frames: &mut PollFrames<K>, slot: &mut impl LabelSlot, task: K) {
        let (label, location) = lock(&self.shard(&task).map)
            .get(&task)
            .map_or((0, false), |entry| (entry.handle.id(), entry.location));
        let prev = slot.replace(label);
        frames.stack.push(Frame {
            task,
            prev,
            label,
            location,
            deferred: None,
        });
    }

    /// After-poll hook, on the polling thread: restores the value the matching
    /// before-poll replaced, then drops a handle a terminate parked in the poll's frame.
    #[inline]
    pub fn after_poll(&self, frames: &mut PollFrames<K>, slot: &mut impl LabelSlot, task: K) {
        match frames.stack.last() {
            Some(top) if top.task == task => {
                if let Some(frame) = frames.stack.pop() {
                    slot.replace(frame.prev);
                    drop(frame.deferred); // after the restore: see the module docs
                }
            }
            _ => Self::unbalanced(frames, slot, task),
        }
    }

    /// An after-poll that is not the innermost poll's: unwinds to the task's frame if
    /// there is one (restoring the value before it), and counts the mismatch.
    #[cold]
    fn unbalanced(frames: &mut PollFrames<K>, slot: &mut impl LabelSlot, task: K) {
        static LOGGED: LogOnce = LogOnce::new();
        HOOKS.unbalanced_polls.incr();
        if LOGGED.first() {
            log::warn!(
                target: "span_profiler",
                "a task's after-poll hook did not match the thread's innermost before-poll \
                 hook; a hook installed by other code may have replaced ours; further cases \
                 are only counted"
            );
        }
        if frames.stack.iter().any(|frame| frame.task == task) {
            while let Some(frame) = frames.stack.pop() {
                slot.replace(frame.prev);
                drop(frame.deferred);
                if frame.task == task {
                    break;
                }
            }
        }
    }

    /// Terminate hook: releases the task's entry. When the task is the one being polled
    /// on this thread (its final poll), its handle waits in the poll's frame until
    /// after-poll has restored the slot.
    pub fn on_terminate(&self, frames: &mut PollFrames<K>, task: K) {
        let Some(entry) = lock(&self.shard(&task).map).remove(&task) else {
            return; // an unlabelled or `spawn_blocking` task
        };
        HOOKS.tasks_released.incr();
        match frames.stack.last_mut() {
            Some(top) if top.task == task => top.deferred = Some(entry.handle),
            _ => drop(entry),
        }
    }

    /// Label id of `task`'s entry (0: no entry).
    pub fn label_of(&self, task: K) -> u64 {
        lock(&self.shard(&task).map)
            .get(&task)
            .map_or(0, |entry| entry.handle.id())
    }

    /// Number of tasks with an entry.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(&shard.map).len()).sum()
    }

    /// True when no task has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of distinct spawn locations labelled so far.
    pub fn spawn_locations(&self) -> usize {
        self.locations
            .as_ref()
            .map_or(0, |locations| lock(locations).len())
    }
}

impl<K> std::fmt::Debug for TaskTable<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskTable")
            .field("shards", &self.shards.len())
            .field("spawn_locations", &self.locations.is_some())
            .finish_non_exhaustive()
    }
}

impl<K> std::fmt::Debug for PollFrames<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollFrames")
            .field("depth", &self.stack.len())
            .finish()
    }
}

#[cfg(all(test, not(span_profiler_loom)))]
mod tests {
    use super::*;
    use crate::labels::registry::RegistryLen;

    /// A slot that is a plain value, like the loom models use.
    #[derive(Default)]
    struct FakeSlot(u64);

    impl LabelSlot for FakeSlot {
        fn replace(&mut self, id: u64) -> u64 {
            std::mem::replace(&mut self.0, id)
        }
        fn current(&self) -> u64 {
            self.0
        }
    }

    fn span(registry: &Registry, name: &str) -> LabelHandle {
        let set = LabelSet {
            span_name: Some(name.to_owned().into()),
            ..LabelSet::default()
        };
        registry.register(std::sync::Arc::new(set))
    }

    #[test]
    fn a_child_inherits_the_spawning_threads_label_and_polls_under_it() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry.clone(), 4, false);
        let request = span(&registry, "request");
        let (mut frames, mut slot) = (PollFrames::new(), FakeSlot(request.id()));
        table.on_spawn(&frames, 1, slot.current(), None);
        drop(request);
        assert_eq!(
            registry.len().live,
            1,
            "the child's entry keeps the id alive"
        );
        slot.0 = 77; // whatever ran on the polling thread before
        table.before_poll(&mut frames, &mut slot, 1);
        assert_eq!(slot.0, table.label_of(1));
        assert_ne!(slot.0, 0);
        table.after_poll(&mut frames, &mut slot, 1);
        assert_eq!(slot.0, 77);
        assert_eq!(frames.depth(), 0);
    }

    #[test]
    fn an_unlabelled_task_is_polled_under_zero_whatever_the_slot_held() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry, 4, false);
        let (mut frames, mut slot) = (PollFrames::new(), FakeSlot(0));
        table.on_spawn(&frames, 5, 0, None);
        assert!(table.is_empty(), "an unlabelled task needs no entry");
        slot.0 = 9;
        table.before_poll(&mut frames, &mut slot, 5);
        assert_eq!(slot.0, 0);
        table.after_poll(&mut frames, &mut slot, 5);
        assert_eq!(slot.0, 9);
    }

    #[test]
    fn terminate_inside_the_final_poll_keeps_the_id_until_after_poll() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry.clone(), 1, false);
        let request = span(&registry, "request");
        let id = request.id();
        let (mut frames, mut slot) = (PollFrames::new(), FakeSlot(id));
        table.on_spawn(&frames, 3, id, None);
        drop(request);
        slot.0 = 0;
        table.before_poll(&mut frames, &mut slot, 3);
        table.on_terminate(&mut frames, 3);
        assert!(table.is_empty());
        assert_eq!(
            slot.0, id,
            "the final poll still runs under the task's labels"
        );
        assert!(
            registry.resolve(id).is_some(),
            "released only after the slot is restored"
        );
        table.after_poll(&mut frames, &mut slot, 3);
        assert_eq!(slot.0, 0);
        assert_eq!(registry.len(), RegistryLen::default());
    }

    #[test]
    fn terminate_outside_a_poll_releases_at_once() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry.clone(), 2, false);
        let request = span(&registry, "request");
        let mut frames = PollFrames::new();
        table.on_spawn(&frames, 8, request.id(), None);
        drop(request);
        table.on_terminate(&mut frames, 8);
        assert_eq!(registry.len(), RegistryLen::default());
        table.on_terminate(&mut frames, 8); // a second terminate finds nothing
        table.on_terminate(&mut frames, 99); // e.g. a spawn_blocking task
    }

    #[test]
    fn a_nested_poll_restores_the_outer_tasks_label() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry.clone(), 4, false);
        let outer = span(&registry, "outer");
        let (mut frames, mut slot) = (PollFrames::new(), FakeSlot(outer.id()));
        table.on_spawn(&frames, 1, outer.id(), None);
        slot.0 = 0;
        table.on_spawn(&frames, 2, 0, None);
        table.before_poll(&mut frames, &mut slot, 1);
        table.before_poll(&mut frames, &mut slot, 2);
        assert_eq!(slot.0, 0);
        table.after_poll(&mut frames, &mut slot, 2);
        assert_eq!(slot.0, outer.id());
        table.after_poll(&mut frames, &mut slot, 1);
        assert_eq!(slot.0, 0);
    }

    #[test]
    fn an_unmatched_after_poll_unwinds_to_its_frame_and_is_counted() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry, 4, false);
        let (mut frames, mut slot) = (PollFrames::new(), FakeSlot(4));
        let before = HOOKS.unbalanced_polls.get();
        table.before_poll(&mut frames, &mut slot, 1);
        table.before_poll(&mut frames, &mut slot, 2);
        table.after_poll(&mut frames, &mut slot, 1);
        assert_eq!(slot.0, 4);
        assert_eq!(frames.depth(), 0);
        table.after_poll(&mut frames, &mut slot, 3);
        assert_eq!(slot.0, 4, "no frame: nothing to restore");
        assert!(HOOKS.unbalanced_polls.get() >= before + 2);
    }

    #[test]
    fn span_less_tasks_get_their_spawn_location_and_so_do_their_children() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry.clone(), 4, true);
        let (mut frames, mut slot) = (PollFrames::new(), FakeSlot(0));
        let here = Location::caller();
        table.on_spawn(&frames, 1, 0, Some(here));
        let label = table.label_of(1);
        let set = registry.resolve(label).expect("registered");
        let expected = format!("{}:{}", here.file(), here.line());
        assert_eq!(set.pairs, vec![(SPAWNED_AT_KEY.to_owned(), expected)]);

        // A child spawned inside that task's poll gets its own location, not the parent's.
        table.before_poll(&mut frames, &mut slot, 1);
        let child_site = Location::caller();
        table.on_spawn(&frames, 2, slot.current(), Some(child_site));
        assert_ne!(table.label_of(2), label);
        table.after_poll(&mut frames, &mut slot, 1);
        // Two tasks at one site share one label set.
        table.on_spawn(&frames, 3, 0, Some(here));
        assert_eq!(table.label_of(3), label);
        assert_eq!(table.spawn_locations(), 2);

        // A task spawned under a span keeps the span.
        let request = span(&registry, "request");
        table.on_spawn(&frames, 4, request.id(), Some(here));
        assert_eq!(table.label_of(4), request.id());
    }

    #[test]
    fn a_spawn_under_an_expired_id_inherits_nothing_and_is_counted() {
        let registry = Registry::new();
        let table = TaskTable::<u64>::new(registry.clone(), 4, false);
        let gone = span(&registry, "gone").id(); // handle dropped: freed
        let before = HOOKS.parent_expired.get();
        table.on_spawn(&PollFrames::new(), 1, gone, None);
        assert_eq!(table.label_of(1), 0);
        assert!(HOOKS.parent_expired.get() > before);
    }

    #[test]
    fn task_ids_spread_over_the_shards() {
        let table = TaskTable::<u64>::new(Registry::new(), DEFAULT_SHARDS, false);
        let mut used = std::collections::HashSet::new();
        for id in 1..=256u64 {
            used.insert(table.shard(&id) as *const Shard<u64>);
        }
        assert!(
            used.len() >= DEFAULT_SHARDS * 3 / 4,
            "only {} shards used",
            used.len()
        );
    }
}
