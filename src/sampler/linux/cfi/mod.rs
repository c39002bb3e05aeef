//! DWARF CFI unwinding: frame pointers become optional.
//!
//! Off the handler, each loaded object's `.eh_frame` is compiled into a compact table
//! sorted by address (`build`, `table`), found in memory through `dl_iterate_phdr`
//! (`loaded`) and published atomically (`publish`). The collector checks the loader's
//! add/remove counters on every tick and rebuilds only when they moved, compiling only
//! new objects. In the handler, `walk` binary-searches those immutable tables per
//! frame and reads the stack only inside its published bounds; frames without a usable
//! rule take a frame-pointer step (counted).
//!
//! - `table`: the compact rows and the lookup.
//! - `build`: `.eh_frame` -> rows with gimli.
//! - `loaded`: the loaded objects' CFI in memory, reused between builds.
//! - `publish`: the atomic pointer and the readers' grace.
//! - `walk`: the walk (signal-safe, reentrant, stateless).

mod build;
mod loaded;
mod publish;
mod table;
mod walk;

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

pub(crate) use publish::with_tables;
pub(crate) use walk::{unwind as walk, Mode as WalkMode, Walk};

use crate::counters::LogOnce;
use crate::sampler::Unwinder;
use crate::sync::lock_std as lock;

/// The handler's mode: 0 frame pointers, 1 CFI then frame pointers, 2 CFI only.
static MODE: AtomicU8 = AtomicU8::new(1);

/// Sets how the handler walks stacks (at session start).
pub(crate) fn set_mode(unwinder: Unwinder) {
    let mode = match unwinder {
        Unwinder::FramePointers => 0,
        Unwinder::Auto => 1,
        Unwinder::Dwarf => 2,
    };
    // Relaxed: the handler reads only this byte; a signal racing the session start
    // walks one sample the old way.
    MODE.store(mode, Relaxed);
}

/// Whether the current mode reads tables (so the collector must maintain them).
fn uses_tables() -> bool {
    // Relaxed: see `set_mode`.
    MODE.load(Relaxed) != 0
}

/// The handler's mode ([`set_mode`]): 0 frame pointers, 1 CFI then frame pointers, 2 CFI
/// only. Signal-safe (one relaxed load).
#[inline(always)]
pub(crate) fn mode() -> u8 {
    // Relaxed: see `set_mode`.
    MODE.load(Relaxed)
}

/// What the table maintenance did (counters since the process started, gauges now).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CfiCounts {
    /// Gauge: objects with a published table.
    pub(crate) objects: u64,
    /// Gauge: objects whose CFI could not be used (they unwind by frame pointer).
    pub(crate) objects_failed: u64,
    /// Gauge: objects without `PT_GNU_EH_FRAME`.
    pub(crate) objects_without_cfi: u64,
    /// Gauge: rows the compact form cannot express (frame-pointer steps there).
    pub(crate) rows_inexpressible: u64,
    /// Gauge: bytes of published rows.
    pub(crate) table_bytes: u64,
    /// Gauge: bytes of replaced tables waiting for their grace.
    pub(crate) retired_bytes: u64,
    /// Table publications (the first one and every change of the loaded objects).
    pub(crate) rebuilds: u64,
    /// Objects compiled (an unchanged object is reused, not recompiled).
    pub(crate) objects_built: u64,
    /// Wall time spent compiling, ns.
    pub(crate) build_ns: u64,
}

/// The collector's side, kept across sessions (tables outlive a session so the next
/// one reuses them).
#[derive(Default)]
pub(crate) struct Maintainer {
    loaded: loaded::Loaded,
    publisher: publish::Publisher,
    /// The loader's (adds, subs) at the last rebuild; `None`: never built.
    generation: Option<(u64, u64)>,
    counts: CfiCounts,
}

/// The maintainer between sessions (a session takes it out and puts it back).
static IDLE: Mutex<Option<Maintainer>> = Mutex::new(None);

static LOG_FAILED: LogOnce = LogOnce::new();

impl Maintainer {
    /// Takes the process's maintainer (a fresh one the first time).
    pub(crate) fn take() -> Maintainer {
        lock(&IDLE).take().unwrap_or_default()
    }

    /// Hands it back at the end of a session.
    pub(crate) fn put_back(self) {
        *lock(&IDLE) = Some(self);
    }

    /// On every collector tick: rebuilds when the set of loaded objects changed, and
    /// frees replaced tables whose grace has passed.
    pub(crate) fn maintain(&mut self) {
        self.publisher.reclaim();
        if !uses_tables() {
            return;
        }
        let now = loaded::generation();
        if self.generation == Some(now) {
            return;
        }
        let t0 = Instant::now();
        let refresh = self.loaded.refresh();
        self.counts.build_ns += t0.elapsed().as_nanos() as u64;
        self.counts.objects_built += refresh.built;
        self.counts.rebuilds += 1;
        self.counts.objects = refresh.tables.len() as u64;
        self.counts.objects_failed = refresh.failed.len() as u64;
        self.counts.objects_without_cfi = refresh.without_cfi;
        self.counts.rows_inexpressible =
            refresh.tables.iter().map(|t| t.inexpressible as u64).sum();
        if let Some((name, reason)) = refresh.failed.first() {
            if LOG_FAILED.first() {
                log::warn!(
                    "span-profiler: cannot use the unwind tables of {name} ({reason}); its \
                     frames are walked by frame pointer ({} object(s) affected)",
                    refresh.failed.len()
                );
            }
        }
        self.publisher.publish(table::Tables::new(refresh.tables));
        self.generation = Some(now);
        self.counts.table_bytes = publish::published_bytes() as u64;
        self.counts.retired_bytes = self.publisher.retired_bytes() as u64;
    }

    /// The counters so far.
    pub(crate) fn counts(&self) -> CfiCounts {
        CfiCounts {
            retired_bytes: self.publisher.retired_bytes() as u64,
            ..self.counts
        }
    }
}

#[cfg(test)]
mod tests;
