//! The future wrapper on a real multi-thread Tokio runtime: labels follow the task.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use span_profiler::__private::{current_label_id, label_id_of};
use span_profiler::{Labels, Profiled, ProfiledExt};

/// Polls `inner` and, on every poll, checks the thread's slot holds `expected`.
struct CheckEachPoll<F> {
    inner: Pin<Box<F>>,
    expected: Arc<AtomicU64>,
    polls: Arc<AtomicUsize>,
    mismatches: Arc<AtomicUsize>,
    threads: Arc<Mutex<HashSet<std::thread::ThreadId>>>,
}

impl<F: Future> Future for CheckEachPoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Relaxed);
        if current_label_id() != self.expected.load(Relaxed) {
            self.mismatches.fetch_add(1, Relaxed);
        }
        self.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn labels_follow_64_migrating_tasks_and_workers_read_zero_between_polls() {
    let outside_nonzero = Arc::new(AtomicUsize::new(0));
    let outside_reads = Arc::new(AtomicUsize::new(0));
    let (park_bad, park_reads) = (outside_nonzero.clone(), outside_reads.clone());
    let (unpark_bad, unpark_reads) = (outside_nonzero.clone(), outside_reads.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .on_thread_park(move || {
            park_reads.fetch_add(1, Relaxed);
            if current_label_id() != 0 {
                park_bad.fetch_add(1, Relaxed);
            }
        })
        .on_thread_unpark(move || {
            unpark_reads.fetch_add(1, Relaxed);
            if current_label_id() != 0 {
                unpark_bad.fetch_add(1, Relaxed);
            }
        })
        .build()
        .unwrap();

    let polls = Arc::new(AtomicUsize::new(0));
    let mismatches = Arc::new(AtomicUsize::new(0));
    let mut migrated = 0;
    let mut ids = HashSet::new();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..64u64 {
            let expected = Arc::new(AtomicU64::new(0));
            let threads = Arc::new(Mutex::new(HashSet::new()));
            let work = CheckEachPoll {
                inner: Box::pin(async move {
                    for round in 0..200u64 {
                        if round % 50 == 49 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        } else {
                            tokio::task::yield_now().await;
                        }
                        std::hint::black_box((0..200u64).sum::<u64>());
                    }
                }),
                expected: expected.clone(),
                polls: polls.clone(),
                mismatches: mismatches.clone(),
                threads: threads.clone(),
            };
            let profiled: Profiled<_> =
                work.with_labels(Labels::span(task + 1, format!("t{task}")));
            let id = label_id_of(&profiled);
            assert_ne!(id, 0);
            expected.store(id, Relaxed);
            ids.insert(id);
            tasks.push((tokio::spawn(profiled), threads));
        }
        for (handle, threads) in tasks {
            handle.await.unwrap();
            if threads.lock().unwrap().len() > 1 {
                migrated += 1;
            }
        }
    });
    drop(rt);

    assert_eq!(ids.len(), 64, "each task has its own label id");
    assert!(polls.load(Relaxed) >= 64 * 200, "every yield is a poll");
    assert_eq!(
        mismatches.load(Relaxed),
        0,
        "a poll saw another task's labels"
    );
    assert!(outside_reads.load(Relaxed) > 0, "park/unpark callbacks ran");
    assert_eq!(
        outside_nonzero.load(Relaxed),
        0,
        "a worker kept labels outside a poll"
    );
    assert!(
        migrated > 0,
        "no task moved between workers; the test proves nothing"
    );
}

/// A future that reads the slot when it is dropped.
struct ReadOnDrop(Arc<AtomicU64>);

impl Future for ReadOnDrop {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for ReadOnDrop {
    fn drop(&mut self) {
        self.0.store(current_label_id(), Relaxed);
    }
}

#[test]
fn the_inner_future_is_dropped_under_its_labels_and_the_slot_is_restored() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seen = Arc::new(AtomicU64::new(u64::MAX));
    let seen2 = seen.clone();
    let (inner_id, outer_id, after_drop) = rt.block_on(
        async move {
            let fut = ReadOnDrop(seen2).with_labels(Labels::span(9, "drop"));
            let inner_id = label_id_of(&fut);
            let outer_id = current_label_id();
            drop(fut);
            (inner_id, outer_id, current_label_id())
        }
        .with_labels(Labels::span(1, "outer")),
    );
    assert_eq!(
        seen.load(Relaxed),
        inner_id,
        "the drop ran under the inner labels"
    );
    assert_ne!(outer_id, 0);
    assert_eq!(
        after_drop, outer_id,
        "the outer labels came back after the drop"
    );
    assert_eq!(current_label_id(), 0);
}

#[test]
fn a_panic_inside_a_poll_restores_the_outer_labels() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inner_seen = Arc::new(AtomicU64::new(0));
    let seen = inner_seen.clone();
    let outer = async move {
        let outer_id = current_label_id();
        let panicking = async move {
            seen.store(current_label_id(), Relaxed);
            panic!("inside a labelled poll");
        }
        .with_labels(Labels::span(2, "inner"));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut fut = std::pin::pin!(panicking);
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = fut.as_mut().poll(&mut cx);
        }));
        assert!(caught.is_err());
        (outer_id, current_label_id())
    }
    .with_labels(Labels::span(1, "outer"));
    let (outer_id, after) = rt.block_on(outer);
    assert_ne!(outer_id, 0);
    assert_ne!(
        inner_seen.load(Relaxed),
        outer_id,
        "inner labels replaced the outer ones"
    );
    assert_eq!(
        after, outer_id,
        "the outer labels came back after the panic"
    );
    assert_eq!(current_label_id(), 0);
}

#[test]
fn nested_wrappers_use_the_innermost_labels_and_restore_the_outer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (inner_id, outer_before, outer_after) = rt.block_on(
        async {
            let before = current_label_id();
            let inner = async { current_label_id() }
                .with_labels(Labels::span(2, "inner"))
                .await;
            (inner, before, current_label_id())
        }
        .with_labels(Labels::span(1, "outer")),
    );
    assert_ne!(inner_id, outer_before);
    assert_ne!(inner_id, 0);
    assert_eq!(outer_before, outer_after);
}

#[test]
fn empty_labels_make_work_unlabelled_inside_a_labelled_scope() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inner = rt.block_on(
        async {
            async { current_label_id() }
                .with_labels(Labels::new())
                .await
        }
        .with_labels(Labels::span(1, "outer")),
    );
    assert_eq!(inner, 0);
}

#[test]
fn labels_current_shares_the_scope_id_and_merges() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (scope_id, current_id, merged_id, merged) = rt.block_on(
        async {
            let wrapped = async {}.with_labels(Labels::current());
            let merged = Labels::current().with("phase", "load");
            let merged_wrapped = async {}.with_labels(merged.clone());
            (
                current_label_id(),
                label_id_of(&wrapped),
                label_id_of(&merged_wrapped),
                merged,
            )
        }
        .with_labels(Labels::span(3, "job")),
    );
    assert_eq!(
        scope_id, current_id,
        "Labels::current() reuses the scope's id"
    );
    assert_ne!(merged_id, scope_id, "a merged set is a new set");
    assert_eq!(merged.span_name(), Some("job"));
    assert_eq!(merged.get("phase"), Some("load"));
}

#[test]
fn in_current_labels_carries_the_spawning_tasks_labels_across_workers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let (carried, bare, outside) = rt.block_on(async {
        let request = async {
            // The child yields and sleeps so it can resume on another worker.
            let child = async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                tokio::task::yield_now().await;
                Labels::current()
            };
            let carried = tokio::spawn(child.in_current_labels());
            let bare = tokio::spawn(async { Labels::current() });
            (carried.await.unwrap(), bare.await.unwrap())
        }
        .with_labels(Labels::span(0x51, "GET /report"));
        let (carried, bare) = request.await;
        let outside = tokio::spawn(async { Labels::current() }.in_current_labels())
            .await
            .unwrap();
        (carried, bare, outside)
    });
    assert_eq!(carried.span_id(), Some(0x51));
    assert_eq!(carried.span_name(), Some("GET /report"));
    assert!(bare.is_empty(), "without it a spawned task has no labels");
    assert!(outside.is_empty(), "outside any labels it applies none");
}

#[test]
fn accessors_reach_the_inner_future() {
    let mut fut = std::future::ready(5).with_labels(Labels::span(1, "x"));
    let _: &std::future::Ready<i32> = fut.inner();
    let inner: *const std::future::Ready<i32> = fut.inner_mut();
    assert!(std::ptr::eq(inner, fut.inner()));
    assert_eq!(fut.labels().span_name(), Some("x"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(fut.into_inner()), 5);
}

#[test]
fn profiled_is_send_and_sync_when_the_inner_future_is() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_sync<T: Sync>(_: &T) {}
    let fut = async {}.with_labels(Labels::span(1, "x"));
    assert_send(&fut);
    assert_sync(&fut);
    const _: fn() = || {
        fn send<T: Send>() {}
        send::<Profiled<std::future::Ready<()>>>();
    };
}
