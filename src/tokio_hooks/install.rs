//! The four Tokio task hooks over a [`TaskTable`], and [`Hooks`], which chains the
//! application's own callbacks (Tokio keeps one callback per hook).

use std::cell::RefCell;
use std::sync::Arc;

use tokio::runtime::{Builder, TaskMeta};
use tokio::task::Id;

use super::state::{PollFrames, TaskTable, ThreadSlot, DEFAULT_SHARDS, HOOKS};
use crate::labels::registry::Registry;
use crate::sampler::slot;

/// An application callback for one task event.
type Callback = Arc<dyn Fn(&TaskMeta<'_>) + Send + Sync>;

thread_local! {
    /// The hooked polls in progress on this thread (innermost last). Only this thread's
    /// hooks touch it, and never while one of them holds a borrow, so borrows succeed.
    static FRAMES: RefCell<PollFrames<Id>> = const { RefCell::new(PollFrames::new()) };
}

/// Installs the label hooks on `builder` (see the [module docs](super)): every task
/// spawned on the runtime inherits the labels in force where it was spawned, applied
/// around each of its polls on whichever worker runs it.
///
/// Replaces any task hooks set on `builder` before; hooks set after this call replace
/// these. To keep callbacks of your own, pass them through [`Hooks`].
///
/// ```
/// let runtime = span_profiler::tokio_hooks::install(
///     tokio::runtime::Builder::new_multi_thread().enable_all(),
/// )
/// .build()
/// .unwrap();
/// # drop(runtime);
/// ```
pub fn install(builder: &mut Builder) -> &mut Builder {
    Hooks::new().install(builder)
}

/// The label hooks with options and the application's own task callbacks, which run
/// beside the label hooks (Tokio keeps only one callback per hook).
///
/// Your `on_task_spawn` runs after the new task's labels are recorded; your
/// `on_before_task_poll` and `on_after_task_poll` run while the task's labels are in
/// force (after the slot is written, before it is restored, also when your callback
/// panics); your `on_task_terminate` runs after the task's entry is released.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
/// use std::sync::Arc;
///
/// let spawned = Arc::new(AtomicUsize::new(0));
/// let counter = spawned.clone();
/// let mut builder = tokio::runtime::Builder::new_multi_thread();
/// span_profiler::tokio_hooks::Hooks::new()
///     .label_spawn_locations(true)
///     .on_task_spawn(move |_meta| {
///         counter.fetch_add(1, Relaxed);
///     })
///     .install(builder.enable_all());
/// let runtime = builder.build().unwrap();
/// runtime.block_on(async { tokio::spawn(async {}).await.unwrap() });
/// assert_eq!(spawned.load(Relaxed), 1);
/// ```
#[derive(Clone, Default)]
#[must_use = "hooks do nothing until `install`ed on a runtime builder"]
pub struct Hooks {
    spawn_locations: bool,
    on_task_spawn: Option<Callback>,
    on_before_task_poll: Option<Callback>,
    on_after_task_poll: Option<Callback>,
    on_task_terminate: Option<Callback>,
}

impl Hooks {
    /// The label hooks alone, spawn locations off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Label tasks that inherit no span with where they were spawned: the label
    /// `spawned_at="<file>:<line>"` (from Tokio's `TaskMeta::spawned_at`). Off by default.
    ///
    /// Their children get their own spawn location, not the parent's. Tasks under a
    /// span keep the span's labels.
    ///
    /// **Cardinality**: `spawned_at` is a *series* label on the Pyroscope server, so
    /// every distinct spawn site that runs becomes its own series (sites inside
    /// libraries such as hyper or tonic too), and each takes one of the label sets a
    /// window may hold. The number of sites is fixed by the program's code, so memory
    /// stays bounded; the series count can still be large in big programs.
    pub fn label_spawn_locations(mut self, on: bool) -> Self {
        self.spawn_locations = on;
        self
    }

    /// Your callback when a task is spawned (on the spawning thread).
    pub fn on_task_spawn<F>(mut self, f: F) -> Self
    where
        F: Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    {
        self.on_task_spawn = Some(Arc::new(f));
        self
    }

    /// Your callback before each poll of a task (the task's labels already in force).
    pub fn on_before_task_poll<F>(mut self, f: F) -> Self
    where
        F: Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    {
        self.on_before_task_poll = Some(Arc::new(f));
        self
    }

    /// Your callback after each poll of a task (the task's labels still in force).
    pub fn on_after_task_poll<F>(mut self, f: F) -> Self
    where
        F: Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    {
        self.on_after_task_poll = Some(Arc::new(f));
        self
    }

    /// Your callback when a task terminates (completes, is aborted or is dropped at
    /// runtime shutdown; also for `spawn_blocking` tasks).
    pub fn on_task_terminate<F>(mut self, f: F) -> Self
    where
        F: Fn(&TaskMeta<'_>) + Send + Sync + 'static,
    {
        self.on_task_terminate = Some(Arc::new(f));
        self
    }

    /// Sets the four task hooks of `builder`, replacing any set before.
    pub fn install(self, builder: &mut Builder) -> &mut Builder {
        let table = Arc::new(TaskTable::<Id>::new(
            Registry::global().clone(),
            DEFAULT_SHARDS,
            self.spawn_locations,
        ));
        let Hooks {
            on_task_spawn,
            on_before_task_poll,
            on_after_task_poll,
            on_task_terminate,
            ..
        } = self;

        let spawn_table = table.clone();
        builder.on_task_spawn(move |meta| {
            on_spawn(&spawn_table, meta);
            if let Some(user) = &on_task_spawn {
                user(meta);
            }
        });

        let before_table = table.clone();
        builder.on_before_task_poll(move |meta| {
            before_poll(&before_table, meta);
            if let Some(user) = &on_before_task_poll {
                user(meta);
            }
        });

        let after_table = table.clone();
        builder.on_after_task_poll(move |meta| {
            // Restores on drop: after your callback, also when it panics.
            let _restore = AfterPoll {
                table: &after_table,
                task: meta.id(),
            };
            if let Some(user) = &on_after_task_poll {
                user(meta);
            }
        });

        builder.on_task_terminate(move |meta| {
            on_terminate(&table, meta);
            if let Some(user) = &on_task_terminate {
                user(meta);
            }
        });
        builder
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("spawn_locations", &self.spawn_locations)
            .field("on_task_spawn", &self.on_task_spawn.is_some())
            .field("on_before_task_poll", &self.on_before_task_poll.is_some())
            .field("on_after_task_poll", &self.on_after_task_poll.is_some())
            .field("on_task_terminate", &self.on_task_terminate.is_some())
            .finish()
    }
}

/// Spawn hook: records the labels in force on the spawning thread for the new task.
fn on_spawn(table: &TaskTable<Id>, meta: &TaskMeta<'_>) {
    let parent = slot::current();
    let at = Some(meta.spawned_at());
    let recorded = FRAMES.try_with(|frames| match frames.try_borrow() {
        Ok(frames) => {
            table.on_spawn(&frames, meta.id(), parent, at);
            true
        }
        Err(_) => false,
    });
    if !matches!(recorded, Ok(true)) {
        // No frames to consult: inherit through the registry.
        table.on_spawn(&PollFrames::new(), meta.id(), parent, at);
    }
}

/// Before-poll hook: the task's label id (or 0) into the slot.
#[inline]
fn before_poll(table: &TaskTable<Id>, meta: &TaskMeta<'_>) {
    let written = FRAMES.try_with(|frames| match frames.try_borrow_mut() {
        Ok(mut frames) => {
            table.before_poll(&mut frames, &mut ThreadSlot, meta.id());
            true
        }
        Err(_) => false,
    });
    if !matches!(written, Ok(true)) {
        // Without a frame the matching after-poll could not restore; leave the slot.
        HOOKS.frames_unavailable.incr();
    }
}

/// After-poll hook, run when dropped.
struct AfterPoll<'a> {
    table: &'a TaskTable<Id>,
    task: Id,
}

impl Drop for AfterPoll<'_> {
    #[inline]
    fn drop(&mut self) {
        let _ = FRAMES.try_with(|frames| {
            if let Ok(mut frames) = frames.try_borrow_mut() {
                self.table
                    .after_poll(&mut frames, &mut ThreadSlot, self.task);
            }
        });
    }
}

/// Terminate hook: releases the task's entry (after the final poll when inside it).
fn on_terminate(table: &TaskTable<Id>, meta: &TaskMeta<'_>) {
    let done = FRAMES.try_with(|frames| match frames.try_borrow_mut() {
        Ok(mut frames) => {
            table.on_terminate(&mut frames, meta.id());
            true
        }
        Err(_) => false,
    });
    if !matches!(done, Ok(true)) {
        table.on_terminate(&mut PollFrames::new(), meta.id());
    }
}
