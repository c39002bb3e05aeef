//! Carrying labels into blocking closures, which no task hook sees.

use crate::labels::registry::{LabelHandle, Registry};
use crate::sampler::slot::{self, SlotGuard};

/// Runs `f` on Tokio's blocking pool (`tokio::task::spawn_blocking`) with the labels in
/// force here: every CPU sample of the closure carries them, as if it were a task
/// spawned under the hooks. Without labels in force, the closure runs unlabelled.
///
/// Tokio's task hooks never see `spawn_blocking` closures, so a plain
/// `tokio::task::spawn_blocking` runs unlabelled even with
/// [`tokio_hooks`](crate::tokio_hooks) installed. This works with or without the hooks
/// and `tokio_unstable`.
///
/// Panics like `tokio::task::spawn_blocking` when called outside a Tokio runtime.
///
/// ```
/// use span_profiler::{Labels, ProfiledExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let span = Labels::span(0xabc, "GET /report");
/// let total = async {
///     span_profiler::spawn_blocking(|| (0..1_000u64).sum::<u64>()).await.unwrap()
/// }
/// .with_labels(span)
/// .await;
/// assert_eq!(total, 499_500);
/// # }
/// ```
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(with_current_labels(f))
}

/// Wraps `f` so that it runs with the labels in force *here*, wherever and whenever it
/// is called: for thread pools, `std::thread::spawn`, `rayon`, or
/// `Handle::spawn_blocking`. The returned closure keeps the labels registered until it
/// has run or is dropped, and is `Send` when `f` is.
///
/// The labels are in force for exactly the call (restored afterwards, also on panic);
/// with no labels in force here, the closure runs with none (id 0), whatever its
/// thread had.
///
/// ```
/// use span_profiler::{Labels, ProfiledExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let job = async { span_profiler::with_current_labels(|| Labels::current()) }
///     .with_labels(Labels::span(7, "import"))
///     .await;
/// let seen = std::thread::spawn(job).join().unwrap();
/// assert_eq!(seen.span_name(), Some("import"));
/// # }
/// ```
pub fn with_current_labels<F, R>(f: F) -> impl FnOnce() -> R
where
    F: FnOnce() -> R,
{
    let handle: Option<LabelHandle> = match slot::current() {
        0 => None,
        id => Registry::global().acquire(id),
    };
    move || {
        let scope = SlotGuard::enter(handle.as_ref().map_or(0, LabelHandle::id));
        let result = f();
        drop(scope);
        drop(handle); // after the restore: the id stays registered while it is in force
        result
    }
}

#[cfg(all(test, not(span_profiler_loom)))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::labels::set::LabelSet;

    fn register(name: &str) -> LabelHandle {
        Registry::global().register(Arc::new(LabelSet {
            span_name: Some(name.to_owned().into()),
            ..LabelSet::default()
        }))
    }

    #[test]
    fn the_closure_runs_under_the_captured_id_which_stays_registered_until_it_ran() {
        let handle = register("captured");
        let id = handle.id();
        let job = {
            let _scope = SlotGuard::enter(id);
            with_current_labels(slot::current)
        };
        drop(handle);
        assert_eq!(slot::current(), 0);
        assert!(
            Registry::global().resolve(id).is_some(),
            "the closure keeps the id registered"
        );
        let (seen, after) = std::thread::spawn(move || {
            let _thread_scope = SlotGuard::enter(0x5eed); // whatever the pool thread had
            (job(), slot::current())
        })
        .join()
        .unwrap();
        assert_eq!(seen, id);
        assert_eq!(after, 0x5eed, "the thread's own value is restored");
    }

    #[test]
    fn without_labels_here_the_closure_runs_under_zero_whatever_its_thread_had() {
        let job = with_current_labels(slot::current);
        let (seen, after) = std::thread::spawn(move || {
            let _thread_scope = SlotGuard::enter(0x77);
            (job(), slot::current())
        })
        .join()
        .unwrap();
        assert_eq!(seen, 0);
        assert_eq!(after, 0x77);
    }

    fn boom() {
        panic!("boom")
    }

    #[test]
    fn a_panicking_closure_restores_the_slot() {
        let handle = register("panics");
        let job = {
            let _scope = SlotGuard::enter(handle.id());
            with_current_labels(boom)
        };
        let _thread_scope = SlotGuard::enter(0x99);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        assert!(result.is_err());
        assert_eq!(slot::current(), 0x99);
    }

    #[test]
    fn spawn_blocking_carries_the_labels_of_the_spawning_poll() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = register("blocking");
        let id = handle.id();
        let (inside, plain) = runtime.block_on(async move {
            let _scope = SlotGuard::enter(id);
            let inside = spawn_blocking(slot::current);
            let plain = tokio::task::spawn_blocking(slot::current);
            (inside.await.unwrap(), plain.await.unwrap())
        });
        drop(handle);
        assert_eq!(inside, id);
        assert_eq!(plain, 0, "tokio's own spawn_blocking carries nothing");
    }
}
