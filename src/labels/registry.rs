//! The process-global registry: label id -> label set.
//!
//! Ids come from a monotonic counter, start at 1 and are never reused (0 means "no
//! labels"). An entry lives while any [`LabelHandle`] for it exists. While a profiler
//! runs, an entry whose last handle was released is *retired* rather than freed: a signal
//! handler may have read its id from a thread's slot just before the release, and that
//! sample is only resolved by the collector later. A retired entry is freed at the first
//! [`Registry::on_drain`] that follows both a window close and a drain after its release:
//! by then every sample that could carry its id has been drained and its window resolved.
//! When no profiler runs, entries are freed at their last release, so an installed tracer
//! provider with the profiler off never grows the registry.
//!
//! Synchronisation: the maps live under one mutex. A handle's reference count is an
//! atomic in the shared entry so that cloning a handle (once per wrapper or spawned task)
//! takes no lock; only the 1 -> 0 transition and lookups by id lock the map, and the
//! release re-checks the count under the lock, because a lookup may have revived the
//! entry in between.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::OnceLock;

use crate::labels::set::LabelSet;
use crate::sync::{lock, Arc, AtomicU64, AtomicUsize, Mutex};

/// One registered label set.
struct Entry {
    id: u64,
    set: std::sync::Arc<LabelSet>,
    /// Number of live [`LabelHandle`]s. Only changed by handle clone/drop and, under the
    /// registry lock, by lookups that revive an entry; the entry is retired only when it
    /// is 0 under the lock.
    refs: AtomicUsize,
}

/// Where an entry released while profiling waits before it is freed.
struct Retired {
    id: u64,
    set: std::sync::Arc<LabelSet>,
    /// `windows` when the entry was released.
    windows_at_release: u64,
    /// `drains` when the entry was released.
    drains_at_release: u64,
}

#[derive(Default)]
struct Maps {
    live: HashMap<u64, Arc<Entry>>,
    retired: VecDeque<Retired>,
    /// Whether a profiler is running (releases retire instead of freeing).
    profiling: bool,
    /// Windows closed since the registry was created.
    windows: u64,
    /// Drains completed since the registry was created.
    drains: u64,
}

/// Id -> label set, with reference counts and the grace period. Cloning shares the
/// registry.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    /// Next id to hand out; starts at 1, only ever incremented.
    next_id: AtomicU64,
    maps: Mutex<Maps>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let maps = lock(&self.shared.maps);
        f.debug_struct("Registry")
            .field("live", &maps.live.len())
            .field("retired", &maps.retired.len())
            .finish()
    }
}

/// Sizes of the registry, for tests and `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryLen {
    /// Label sets with a live handle (or waiting for their grace period).
    pub live: usize,
    /// Released ids whose grace period has not ended yet.
    pub retired: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry (tests; the profiler uses [`Registry::global`]).
    pub fn new() -> Self {
        let shared = Shared {
            next_id: AtomicU64::new(1),
            maps: Mutex::new(Maps::default()),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The process-global registry.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// Registers `set` under a fresh id and returns the first handle to it.
    pub fn register(&self, set: std::sync::Arc<LabelSet>) -> LabelHandle {
        // Relaxed: uniqueness only needs the atomicity of the increment.
        let id = self.shared.next_id.fetch_add(1, Relaxed);
        let entry = Arc::new(Entry {
            id,
            set,
            refs: AtomicUsize::new(1),
        });
        lock(&self.shared.maps).live.insert(id, entry.clone());
        LabelHandle {
            entry,
            registry: self.clone(),
        }
    }

    /// A new handle to the live entry `id`, if it is live.
    pub fn acquire(&self, id: u64) -> Option<LabelHandle> {
        let maps = lock(&self.shared.maps);
        let entry = maps.live.get(&id)?.clone();
        // Relaxed: the increment happens under the registry lock, which orders it with
        // the release's re-check of `refs` (also under the lock).
        entry.refs.fetch_add(1, Relaxed);
        drop(maps);
        Some(LabelHandle {
            entry,
            registry: self.clone(),
        })
    }

    /// The set behind `id`, live or retired (the collector's lookup).
    pub fn resolve(&self, id: u64) -> Option<std::sync::Arc<LabelSet>> {
        let maps = lock(&self.shared.maps);
        if let Some(entry) = maps.live.get(&id) {
            return Some(entry.set.clone());
        }
        maps.retired
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.set.clone())
    }

    /// Called when a handle's count went 1 -> 0.
    fn release(&self, id: u64) {
        let mut maps = lock(&self.shared.maps);
        let Some(entry) = maps.live.get(&id) else {
            return;
        };
        // Relaxed: read under the lock that every revival (`acquire`) also holds.
        if entry.refs.load(Relaxed) != 0 {
            return; // revived by `acquire` after the count reached 0
        }
        let Some(entry) = maps.live.remove(&id) else {
            return;
        };
        if maps.profiling {
            let retired = Retired {
                id,
                set: entry.set.clone(),
                windows_at_release: maps.windows,
                drains_at_release: maps.drains,
            };
            maps.retired.push_back(retired);
        }
    }

    /// Switches between "profiling" (releases retire) and "idle" (releases free). Going
    /// idle frees every retired entry: the caller has drained and closed its last window.
    pub fn set_profiling(&self, on: bool) {
        let mut maps = lock(&self.shared.maps);
        maps.profiling = on;
        if !on {
            maps.retired.clear();
        }
    }

    /// The collector finished one drain of the sample buffer and resolved the label ids
    /// it found: frees retired entries whose grace (a window close, and a whole drain
    /// that began after their release) is over.
    pub fn on_drain(&self) {
        let mut maps = lock(&self.shared.maps);
        maps.drains += 1;
        let (windows, drains) = (maps.windows, maps.drains);
        // Entries retire in order, so expired ones are at the front.
        while let Some(front) = maps.retired.front() {
            // `drains_at_release + 1` ended a drain that may have begun before the
            // release; `+ 2` ended one that began after it.
            if windows > front.windows_at_release && drains >= front.drains_at_release + 2 {
                maps.retired.pop_front();
            } else {
                break;
            }
        }
    }

    /// The collector closed a window and resolved every label id in it.
    pub fn on_window_closed(&self) {
        lock(&self.shared.maps).windows += 1;
    }

    /// How many label sets are live and retired.
    pub fn len(&self) -> RegistryLen {
        let maps = lock(&self.shared.maps);
        RegistryLen {
            live: maps.live.len(),
            retired: maps.retired.len(),
        }
    }
}

/// A counted reference to one registered label set; the id stays valid while it exists.
pub struct LabelHandle {
    entry: Arc<Entry>,
    registry: Registry,
}

impl LabelHandle {
    /// The label id samples carry.
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// The registered labels.
    pub fn set(&self) -> &std::sync::Arc<LabelSet> {
        &self.entry.set
    }
}

impl Clone for LabelHandle {
    fn clone(&self) -> Self {
        // Relaxed: we hold a handle, so the count is at least 1 and cannot reach 0
        // concurrently; like `Arc::clone`, the increment needs no ordering.
        self.entry.refs.fetch_add(1, Relaxed);
        Self {
            entry: self.entry.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl Drop for LabelHandle {
    fn drop(&mut self) {
        // AcqRel: the decrement that reaches 0 must see every other handle's earlier
        // decrement (Acquire) and publish ours (Release), like `Arc`'s drop; pairs with
        // the other handles' `fetch_sub` here. `release` then re-checks under the lock.
        if self.entry.refs.fetch_sub(1, AcqRel) == 1 {
            self.registry.release(self.entry.id);
        }
    }
}

impl fmt::Debug for LabelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelHandle")
            .field("id", &self.entry.id)
            .finish()
    }
}

#[cfg(all(test, not(span_profiler_loom)))]
mod tests {
    use super::*;

    fn set(name: &str) -> std::sync::Arc<LabelSet> {
        std::sync::Arc::new(LabelSet {
            span_name: Some(name.into()),
            ..LabelSet::default()
        })
    }

    #[test]
    fn ids_are_monotonic_and_never_reused() {
        let reg = Registry::new();
        let a = reg.register(set("a"));
        let a_id = a.id();
        drop(a);
        let b = reg.register(set("b"));
        assert!(b.id() > a_id);
        assert_ne!(b.id(), 0);
    }

    #[test]
    fn entries_are_freed_at_last_release_when_no_profiler_runs() {
        let reg = Registry::new();
        let a = reg.register(set("a"));
        let a2 = a.clone();
        let id = a.id();
        drop(a);
        assert!(reg.resolve(id).is_some(), "one handle is still alive");
        drop(a2);
        assert!(reg.resolve(id).is_none());
        assert_eq!(reg.len(), RegistryLen::default());
    }

    #[test]
    fn entries_stay_through_the_grace_period_while_profiling() {
        let reg = Registry::new();
        reg.set_profiling(true);
        let a = reg.register(set("a"));
        let id = a.id();
        drop(a);
        assert_eq!(
            reg.len(),
            RegistryLen {
                live: 0,
                retired: 1
            }
        );
        assert_eq!(reg.resolve(id).unwrap().span_name.as_deref(), Some("a"));
        reg.on_drain(); // may have begun before the release
        assert!(reg.resolve(id).is_some());
        reg.on_drain(); // began after the release, but no window closed yet
        assert!(reg.resolve(id).is_some());
        reg.on_window_closed();
        assert!(reg.resolve(id).is_some(), "freed only by the next drain");
        reg.on_drain();
        assert!(reg.resolve(id).is_none());
        assert_eq!(reg.len(), RegistryLen::default());
    }

    #[test]
    fn a_release_just_before_a_window_close_waits_for_a_later_drain() {
        let reg = Registry::new();
        reg.set_profiling(true);
        let id = {
            let a = reg.register(set("a"));
            a.id()
        };
        reg.on_window_closed();
        assert!(reg.resolve(id).is_some());
        reg.on_drain();
        assert!(
            reg.resolve(id).is_some(),
            "that drain may have begun before the release"
        );
        reg.on_drain();
        assert!(reg.resolve(id).is_none());
    }

    #[test]
    fn stopping_the_profiler_frees_retired_entries() {
        let reg = Registry::new();
        reg.set_profiling(true);
        drop(reg.register(set("a")));
        assert_eq!(reg.len().retired, 1);
        reg.set_profiling(false);
        assert_eq!(reg.len(), RegistryLen::default());
    }

    #[test]
    fn acquire_shares_the_id_and_keeps_the_entry_alive() {
        let reg = Registry::new();
        let a = reg.register(set("a"));
        let b = reg.acquire(a.id()).expect("live");
        assert_eq!(a.id(), b.id());
        let id = a.id();
        drop(a);
        assert!(reg.resolve(id).is_some());
        drop(b);
        assert!(reg.acquire(id).is_none());
    }
}
