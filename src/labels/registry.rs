//! The process-global registry: label id -> label set.
//!
//! Ids come from a monotonic counter, start at 1 and are never reused (0 means "no
//! labels"). An entry lives while any [`LabelHandle`] for it exists. While a profiler
//! runs, an entry whose last handle was released is *retired* rather than freed: a signal
//! handler may have read its id from a thread's slot just before the release, and that
//! sample is only resolved by the collector later. A retired entry is freed at the end of
//! the first drain that began after its release ([`Registry::on_drain`]): every scoped
//! source restores the slot before it releases its handle, so any sample carrying the id
//! was in the buffer before the release, and the collector resolves each id as it drains
//! it (the windows keep the resolved sets). A busy service therefore keeps about two
//! drains' worth of released sets (a few hundred milliseconds of requests), not a
//! window's.
//! When no profiler runs, entries are freed at their last release, so an installed tracer
//! provider with the profiler off never grows the registry.
//!
//! Synchronisation: the entries are split into shards by id, each a mutex over its live
//! map, its retired queue and its own copy of the collector's state (profiling or not,
//! drains done). Registering and releasing lock only the entry's shard, so
//! threads starting and ending spans meet on one lock only when their ids share a shard;
//! the collector's calls (`on_drain`, `set_profiling`) visit every
//! shard in turn. The grace rule holds per shard exactly as it would under one lock: an
//! entry's release and each collector call are ordered by its shard's mutex, and the
//! collector finishes a call on every shard before it begins its next drain.
//!
//! A handle's reference count is an atomic in the shared entry so that cloning a handle
//! (once per wrapper or spawned task) takes no lock; only the 1 -> 0 transition and
//! lookups by id lock a shard, and the release re-checks the count under the lock,
//! because a lookup may have revived the entry in between.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::OnceLock;

use crate::id_hash::{shard_index, IdHashBuilder};
use crate::labels::set::LabelSet;
use crate::sync::{lock, Arc, AtomicU64, AtomicUsize, Mutex};

/// Shards of a registry: enough that threads registering and releasing label sets at
/// once (one per request) seldom share a lock. A power of two. Loom models use two, so
/// that a model still crosses shards without exploring 64 mutexes.
#[cfg(not(span_profiler_loom))]
pub(crate) const DEFAULT_SHARDS: usize = 64;
/// Shards of a registry (loom models: two, see the non-loom constant).
#[cfg(span_profiler_loom)]
pub(crate) const DEFAULT_SHARDS: usize = 2;

/// One registered label set.
struct Entry {
    id: u64,
    set: std::sync::Arc<LabelSet>,
    /// Number of live [`LabelHandle`]s. Only changed by handle clone/drop and, under the
    /// shard lock, by lookups that revive an entry; the entry is retired only when it
    /// is 0 under the lock.
    refs: AtomicUsize,
}

/// Where an entry released while profiling waits before it is freed.
struct Retired {
    id: u64,
    /// The shard's `drains` when the entry was released.
    drains_at_release: u64,
}

/// One shard: the entries whose id maps to it, and the collector's state as this shard
/// has seen it (every collector call updates every shard).
#[derive(Default)]
struct Shard {
    live: HashMap<u64, Arc<Entry>, IdHashBuilder>,
    /// Released entries in release order (so in `drains_at_release` order).
    retired: VecDeque<Retired>,
    /// The sets of the entries in `retired`, by id: the collector looks retired ids up
    /// (tens of thousands wait at once on a busy service, and a scan of the queue per
    /// lookup made resolving a window quadratic).
    retired_sets: HashMap<u64, std::sync::Arc<LabelSet>, IdHashBuilder>,
    /// Whether a profiler is running (releases retire instead of freeing).
    profiling: bool,
    /// Drains completed since the registry was created.
    drains: u64,
}

/// Id -> label set, with reference counts and the grace period. Cloning shares the
/// registry.
#[derive(Clone)]
pub struct Registry {
    shared: SharedRef,
}

/// How a registry (and each of its handles) reaches its state. The global registry's
/// state lives for the whole process, so its handles hold a plain reference and creating
/// or dropping one touches no shared reference count (one cache line that every thread
/// making spans would otherwise write).
#[derive(Clone)]
enum SharedRef {
    Global(&'static Shared),
    Counted(Arc<Shared>),
}

impl std::ops::Deref for SharedRef {
    type Target = Shared;

    #[inline]
    fn deref(&self) -> &Shared {
        match self {
            SharedRef::Global(shared) => shared,
            SharedRef::Counted(shared) => shared,
        }
    }
}

struct Shared {
    /// Next id to hand out; starts at 1, only ever incremented.
    next_id: AtomicU64,
    /// Invariant: a power of two, at least one; entry `id` lives in
    /// `shards[shard_index(id, shards.len())]` only.
    shards: Box<[Mutex<Shard>]>,
}

impl Shared {
    fn new(shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            next_id: AtomicU64::new(1),
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    #[inline]
    fn shard(&self, id: u64) -> &Mutex<Shard> {
        &self.shards[shard_index(id, self.shards.len())]
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.len();
        f.debug_struct("Registry")
            .field("live", &len.live)
            .field("retired", &len.retired)
            .field("shards", &self.shared.shards.len())
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
    /// An empty registry with [`DEFAULT_SHARDS`] shards (tests; the profiler uses
    /// [`Registry::global`]).
    pub fn new() -> Self {
        Self::with_shards(DEFAULT_SHARDS)
    }

    /// An empty registry with `shards` locks (rounded up to a power of two, at least one).
    pub fn with_shards(shards: usize) -> Self {
        Self {
            shared: SharedRef::Counted(Arc::new(Shared::new(shards))),
        }
    }

    /// The process-global registry.
    pub fn global() -> &'static Registry {
        static SHARED: OnceLock<Shared> = OnceLock::new();
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| Registry {
            shared: SharedRef::Global(SHARED.get_or_init(|| Shared::new(DEFAULT_SHARDS))),
        })
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
        lock(self.shared.shard(id)).live.insert(id, entry.clone());
        LabelHandle {
            entry,
            registry: self.clone(),
        }
    }

    /// A new handle to the live entry `id`, if it is live.
    pub fn acquire(&self, id: u64) -> Option<LabelHandle> {
        let shard = lock(self.shared.shard(id));
        let entry = shard.live.get(&id)?.clone();
        // Relaxed: the increment happens under the shard lock, which orders it with
        // the release's re-check of `refs` (also under that lock).
        entry.refs.fetch_add(1, Relaxed);
        drop(shard);
        Some(LabelHandle {
            entry,
            registry: self.clone(),
        })
    }

    /// The set behind `id`, live or retired (the collector's lookup).
    pub fn resolve(&self, id: u64) -> Option<std::sync::Arc<LabelSet>> {
        let shard = lock(self.shared.shard(id));
        if let Some(entry) = shard.live.get(&id) {
            return Some(entry.set.clone());
        }
        shard.retired_sets.get(&id).cloned()
    }

    /// Called when a handle's count went 1 -> 0.
    fn release(&self, id: u64) {
        let mut shard = lock(self.shared.shard(id));
        let std::collections::hash_map::Entry::Occupied(slot) = shard.live.entry(id) else {
            return;
        };
        // Relaxed: read under the lock that every revival (`acquire`) also holds.
        if slot.get().refs.load(Relaxed) != 0 {
            return; // revived by `acquire` after the count reached 0
        }
        let entry = slot.remove();
        if shard.profiling {
            let retired = Retired {
                id,
                drains_at_release: shard.drains,
            };
            shard.retired.push_back(retired);
            shard.retired_sets.insert(id, entry.set.clone());
        }
        // Freed after the shard is unlocked.
        drop(shard);
        drop(entry);
    }

    /// Switches between "profiling" (releases retire) and "idle" (releases free). Going
    /// idle frees every retired entry: the caller has drained for the last time.
    pub fn set_profiling(&self, on: bool) {
        for shard in self.shared.shards.iter() {
            let mut shard = lock(shard);
            shard.profiling = on;
            if !on {
                // Dropped after the shard is unlocked.
                shard.retired.clear();
                let retired = std::mem::take(&mut shard.retired_sets);
                drop(shard);
                drop(retired);
            }
        }
    }

    /// The collector finished one drain of the sample buffer and resolved the label ids
    /// it found: frees retired entries whose grace (a whole drain that began after their
    /// release) is over.
    pub fn on_drain(&self) {
        for shard in self.shared.shards.iter() {
            let mut shard = lock(shard);
            shard.drains += 1;
            let drains = shard.drains;
            // Entries retire in order, so expired ones are at the front.
            while let Some(front) = shard.retired.front() {
                // `drains_at_release + 1` ended a drain that may have begun before the
                // release; `+ 2` ended one that began after it.
                if drains >= front.drains_at_release + 2 {
                    let id = front.id;
                    shard.retired.pop_front();
                    shard.retired_sets.remove(&id);
                } else {
                    break;
                }
            }
        }
    }

    /// How many label sets are live and retired (summed shard by shard: exact when
    /// nothing registers or releases meanwhile).
    pub fn len(&self) -> RegistryLen {
        self.shared
            .shards
            .iter()
            .fold(RegistryLen::default(), |acc, shard| {
                let shard = lock(shard);
                RegistryLen {
                    live: acc.live + shard.live.len(),
                    retired: acc.retired + shard.retired.len(),
                }
            })
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
            span_name: Some(name.to_owned().into()),
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
        assert!(
            reg.resolve(id).is_some(),
            "that drain may have begun before the release"
        );
        reg.on_drain(); // began after the release
        assert!(reg.resolve(id).is_none());
        assert_eq!(reg.len(), RegistryLen::default());
    }

    #[test]
    fn entries_released_between_drains_are_freed_in_release_order() {
        let reg = Registry::new();
        reg.set_profiling(true);
        let first = reg.register(set("a"));
        let second = reg.register(set("b"));
        let (a, b) = (first.id(), second.id());
        drop(first);
        reg.on_drain();
        drop(second);
        reg.on_drain();
        assert!(
            reg.resolve(a).is_none(),
            "a drain began after its release and ended"
        );
        assert!(
            reg.resolve(b).is_some(),
            "released during the drain that just ended"
        );
        reg.on_drain();
        assert!(reg.resolve(b).is_none());
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
