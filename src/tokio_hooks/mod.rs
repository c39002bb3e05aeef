//! Tokio task hooks: spawned tasks inherit the labels in force where they were spawned,
//! as goroutines inherit pprof labels in Go.
//!
//! Without the hooks, `tokio::spawn(child)` inside a labelled request loses the labels
//! unless `child` is wrapped: `tokio::spawn(child.in_current_labels())`
//! ([`ProfiledExt::in_current_labels`], the shape of tracing's `.in_current_span()`),
//! or [`ProfiledExt::with_labels`], `.profiled()`. With them,
//! every task spawned on the runtime remembers the labels in force on the spawning
//! thread and gets them around each of its polls, on whichever worker runs it; a
//! wrapper inside the task still overrides them during its own polls, and children,
//! grandchildren and so on inherit in turn. Tasks spawned outside any labels are polled
//! with no labels (id 0), never with a previous task's.
//!
//! The wrapper keeps working for everyone; the hooks are an enhancement for programs
//! that can set Tokio's unstable flag.
//!
//! # Enabling
//!
//! All four task hooks are behind `--cfg tokio_unstable`, which only the final binary
//! can set, for every crate of the build. Either in `.cargo/config.toml`:
//!
//! ```toml
//! [build]
//! rustflags = ["--cfg", "tokio_unstable"]
//! ```
//!
//! or in the environment:
//!
//! ```sh
//! RUSTFLAGS="--cfg tokio_unstable" cargo build --release
//! ```
//!
//! `RUSTFLAGS` *replaces* the config file's `rustflags` rather than adding to them, so
//! repeat every flag you need there. Without the flag this module contains only this
//! page; everything else in the crate builds and works the same.
//!
//! Then build the runtime yourself and call `install` (or `Hooks::install`) on the
//! builder. `#[tokio::main]` builds its runtime out of reach, so replace it with a
//! manual `Builder`:
//!
//! ```ignore
//! fn main() {
//!     let runtime = span_profiler::tokio_hooks::install(
//!         tokio::runtime::Builder::new_multi_thread().enable_all(),
//!     )
//!     .build()
//!     .expect("tokio runtime");
//!     runtime.block_on(serve());
//! }
//! ```
//!
//! # What is and is not covered
//!
//! - `tokio::spawn`, `Handle::spawn`, `JoinSet::spawn` and everything else that spawns
//!   onto a hooked runtime: covered.
//! - The future given to `Runtime::block_on` is not a task: no hooks run for it; wrap it.
//! - `spawn_blocking` closures get no spawn hook and no poll hooks: use
//!   [`crate::spawn_blocking`] (or [`crate::with_current_labels`]) to carry the current
//!   labels into the closure. A plain `tokio::task::spawn_blocking` closure runs
//!   unlabelled.
//! - `LocalSet` (`spawn_local`) tasks get neither spawn nor poll hooks. They run inside
//!   the poll of whatever drives the `LocalSet` (`run_until`, or the `LocalSet` awaited
//!   as a future) and see that poll's labels: none under `block_on`, the driving task's
//!   inherited ones when the driver is itself a hooked task. Wrap local tasks that need
//!   their own labels. A task `tokio::spawn`ed from a local task inherits normally.
//! - A span that has ended while a wrapper still holds its labels: tasks spawned during
//!   that wrapper's polls still inherit them (the wrapper keeps the id registered);
//!   tasks spawned after the wrapper is dropped do not.
//!
//! # Cost
//!
//! Per poll: one uncontended lock of one of 64 shards (the task's), a hash lookup, two
//! writes of the slot and a push and pop on a thread-local stack. Per spawn under
//! labels: the spawning task's shard lock to share its handle (the registry's lock
//! instead when a wrapper's labels are in force), the child's shard lock to insert it,
//! and a reference-count increment; a spawn outside labels costs one slot read.
//! Each labelled task holds one counted handle on its label set from spawn to
//! terminate; the entry is released at terminate, after the final poll has restored
//! the slot (Tokio runs terminate *before* the final after-poll).
//!
//! [`ProfiledExt::with_labels`]: crate::ProfiledExt::with_labels
//! [`ProfiledExt::in_current_labels`]: crate::ProfiledExt::in_current_labels

/// Per-task state, independent of Tokio's unstable API (modelled by loom).
pub(crate) mod state;

/// The four hooks on a `tokio::runtime::Builder`, and callback chaining.
#[cfg(tokio_unstable)]
mod install;

#[cfg(tokio_unstable)]
pub use install::{install, Hooks};
