//! Task hooks on real Tokio runtimes, checked at label level: the slot is read on every
//! poll of children and grandchildren that no labelling wrapper touches.
//!
//! Needs `--cfg tokio_unstable`:
//! `RUSTFLAGS="--cfg tokio_unstable -C force-frame-pointers=yes" cargo test --test hooks_labels`
#![cfg(tokio_unstable)]

use std::collections::HashSet;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

mod sampler_common;

use sampler_common::{holds, spin_for, Collector, Symbols};
use span_profiler::__private::{
    current_label_id, hook_counters, label_id_of, Registry, SamplerConfig,
};
use span_profiler::tokio_hooks::{self, Hooks};
use span_profiler::{Labels, ProfiledExt};
use tokio::runtime::{Builder, Runtime};

/// Tests run one at a time: some read the process-wide hook counters and the registry,
/// and every runtime here would spawn labelled tasks that move those counters.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What every checked poll saw.
#[derive(Default)]
struct Seen {
    polls: AtomicUsize,
    mismatches: AtomicUsize,
    /// Distinct threads per checked task, summed: more than the task count means tasks
    /// migrated between workers.
    thread_switches: AtomicUsize,
}

/// Polls `inner` and, before every poll, compares the thread's label slot with
/// `expected`. It does not label anything itself.
struct Checked<F> {
    inner: Pin<Box<F>>,
    expected: u64,
    seen: Arc<Seen>,
    last_thread: Option<ThreadId>,
}

fn checked<F: Future>(expected: u64, seen: &Arc<Seen>, inner: F) -> Checked<F> {
    Checked {
        inner: Box::pin(inner),
        expected,
        seen: seen.clone(),
        last_thread: None,
    }
}

impl<F: Future> Future for Checked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.seen.polls.fetch_add(1, Relaxed);
        if current_label_id() != self.expected {
            self.seen.mismatches.fetch_add(1, Relaxed);
        }
        let me = std::thread::current().id();
        if self.last_thread.is_some_and(|last| last != me) {
            self.seen.thread_switches.fetch_add(1, Relaxed);
        }
        self.last_thread = Some(me);
        self.inner.as_mut().poll(cx)
    }
}

/// A few hundred polls with some CPU work, yields and short sleeps (so tasks park and
/// are woken on other workers).
async fn work(rounds: u64) {
    for round in 0..rounds {
        std::hint::black_box((0..500u64).map(|i| i ^ round).sum::<u64>());
        if round % 25 == 24 {
            tokio::time::sleep(Duration::from_micros(300)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

fn runtime(hooked: bool) -> Runtime {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(4).enable_all();
    if hooked {
        tokio_hooks::install(&mut builder);
    }
    builder.build().expect("runtime")
}

/// A labelled request spawns `children` children, each spawning `grandchildren`; none of
/// them is wrapped. Every poll of them is checked against `expect(request id)`.
fn request_tree(
    rt: &Runtime,
    children: usize,
    grandchildren: usize,
    expect_inherit: bool,
) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let labels = Labels::span(0x00f0_67aa_0ba9_02b7, "GET /orders/{id}");
    let seen2 = seen.clone();
    rt.block_on(async move {
        let request = async move {
            let request_id = current_label_id();
            assert_ne!(request_id, 0);
            let expected = if expect_inherit { request_id } else { 0 };
            let mut kids = Vec::new();
            for _ in 0..children {
                let seen = seen2.clone();
                kids.push(tokio::spawn(checked(
                    expected,
                    &seen2.clone(),
                    async move {
                        let mut grandkids = Vec::new();
                        for _ in 0..grandchildren {
                            grandkids.push(tokio::spawn(checked(expected, &seen, work(200))));
                        }
                        work(200).await;
                        for grandkid in grandkids {
                            grandkid.await.expect("grandchild");
                        }
                    },
                )));
            }
            for kid in kids {
                kid.await.expect("child");
            }
        }
        .with_labels(labels);
        tokio::spawn(request).await.expect("request");
    });
    seen
}

#[test]
fn children_and_grandchildren_carry_the_request_labels_on_every_poll_across_4_workers() {
    let _serial = serial();
    let rt = runtime(true);
    let seen = request_tree(&rt, 8, 4, true);
    let polls = seen.polls.load(Relaxed);
    assert!(polls >= 40 * 200, "only {polls} polls");
    assert_eq!(seen.mismatches.load(Relaxed), 0, "of {polls} polls");
    let switches = seen.thread_switches.load(Relaxed);
    assert!(
        switches > 0,
        "no task ever moved between workers; the test proves nothing"
    );
}

#[test]
fn without_the_hooks_children_and_grandchildren_run_unlabelled() {
    let _serial = serial();
    let rt = runtime(false);
    let seen = request_tree(&rt, 8, 4, false);
    let polls = seen.polls.load(Relaxed);
    assert!(polls >= 40 * 200, "only {polls} polls");
    assert_eq!(
        seen.mismatches.load(Relaxed),
        0,
        "some of {polls} polls were labelled"
    );
}

#[test]
fn labels_current_inside_a_grandchild_is_the_requests_span() {
    let _serial = serial();
    let rt = runtime(true);
    let labels = Labels::span(0xabcd, "POST /checkout").with("region", "eu");
    let got = rt.block_on(async move {
        tokio::spawn(
            async {
                tokio::spawn(async { tokio::spawn(async { Labels::current() }).await })
                    .await
                    .expect("child")
                    .expect("grandchild")
            }
            .with_labels(labels),
        )
        .await
        .expect("request")
    });
    assert_eq!(got.span_id(), Some(0xabcd));
    assert_eq!(got.span_name(), Some("POST /checkout"));
    assert_eq!(got.get("region"), Some("eu"));
}

#[test]
fn a_wrapper_inside_a_child_overrides_during_its_polls_and_its_spawns_inherit_the_override() {
    let _serial = serial();
    let rt = runtime(true);
    let seen_outer = Arc::new(Seen::default());
    let seen_inner = Arc::new(Seen::default());
    let (outer, inner) = (seen_outer.clone(), seen_inner.clone());
    rt.block_on(async move {
        let request = async move {
            let request_id = current_label_id();
            let child = tokio::spawn(checked(request_id, &outer.clone(), async move {
                work(20).await;
                let phase = Labels::current().with("phase", "load");
                let inner2 = inner.clone();
                let phase_scope = async move {
                    let phase_id = current_label_id();
                    assert_ne!(phase_id, request_id);
                    assert_eq!(Labels::current().get("phase"), Some("load"));
                    assert_eq!(Labels::current().span_name(), Some("job"));
                    tokio::spawn(checked(phase_id, &inner2, work(100)))
                        .await
                        .expect("grandchild");
                };
                phase_scope.with_labels(phase).await;
                // Back under the inherited labels, in the child's own polls.
                work(20).await;
                tokio::spawn(checked(request_id, &outer, work(50)))
                    .await
                    .expect("after");
            }));
            child.await.expect("child");
        }
        .with_labels(Labels::span(0x77, "job"));
        tokio::spawn(request).await.expect("request");
    });
    for seen in [&seen_outer, &seen_inner] {
        assert!(seen.polls.load(Relaxed) >= 50);
        assert_eq!(seen.mismatches.load(Relaxed), 0);
    }
}

/// Polls `fut` once on this thread with a no-op waker.
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(fut).poll(&mut cx)
}

#[test]
fn an_unlabelled_task_is_polled_under_zero_inside_a_labelled_poll_and_the_outer_id_returns() {
    let _serial = serial();
    // A hooked runtime run from inside a labelled poll on this thread: its unlabelled task
    // must not see the outer labels, and the outer labels must be back afterwards.
    let inner_rt = tokio_hooks::install(&mut Builder::new_current_thread())
        .build()
        .unwrap();
    let labels = Labels::span(0x42, "outer");
    let outer = async {
        let outer_id = current_label_id();
        let (seen_in_task, seen_in_labelled) = inner_rt.block_on(async {
            // The spawn must happen inside the wrapper's poll: the handle is the output.
            #[allow(clippy::async_yields_async)]
            let unlabelled = async { tokio::spawn(async { current_label_id() }) }
                .with_labels(Labels::new())
                .await;
            let labelled = tokio::spawn(async { current_label_id() });
            (unlabelled.await.unwrap(), labelled.await.unwrap())
        });
        (outer_id, seen_in_task, seen_in_labelled, current_label_id())
    }
    .with_labels(labels);
    let Poll::Ready((outer_id, in_task, in_labelled, after)) = poll_once(outer) else {
        panic!("the outer future completes in one poll");
    };
    assert_ne!(outer_id, 0);
    assert_eq!(
        in_task, 0,
        "a task spawned outside labels must be polled under 0"
    );
    assert_eq!(
        in_labelled, outer_id,
        "spawned under the outer labels: inherits them"
    );
    assert_eq!(after, outer_id, "the outer poll's labels are restored");
    assert_eq!(current_label_id(), 0);
}

#[test]
fn the_applications_callbacks_are_chained_and_run_under_the_tasks_labels() {
    let _serial = serial();
    #[derive(Default)]
    struct Calls {
        spawns: AtomicUsize,
        befores: AtomicUsize,
        afters: AtomicUsize,
        terminates: AtomicUsize,
        /// Label ids seen by the before/after callbacks of tasks spawned under `job`.
        ids: Mutex<HashSet<u64>>,
    }
    let calls = Arc::new(Calls::default());
    let (c1, c2, c3, c4) = (calls.clone(), calls.clone(), calls.clone(), calls.clone());
    let mut builder = Builder::new_multi_thread();
    Hooks::new()
        .on_task_spawn(move |_| {
            c1.spawns.fetch_add(1, Relaxed);
        })
        .on_before_task_poll(move |_| {
            c2.befores.fetch_add(1, Relaxed);
            c2.ids.lock().unwrap().insert(current_label_id());
        })
        .on_after_task_poll(move |_| {
            c3.afters.fetch_add(1, Relaxed);
            c3.ids.lock().unwrap().insert(current_label_id());
        })
        .on_task_terminate(move |_| {
            c4.terminates.fetch_add(1, Relaxed);
        })
        .install(builder.worker_threads(2).enable_all());
    let rt = builder.build().unwrap();
    let job = async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            set.spawn(work(10));
        }
        while set.join_next().await.is_some() {}
        current_label_id()
    }
    .with_labels(Labels::span(9, "job"));
    // The job runs inside `block_on` (not a task): only its 10 children are hooked.
    let job_id = rt.block_on(job);
    drop(rt);
    assert_eq!(calls.spawns.load(Relaxed), 10);
    // Terminate also fires for blocking tasks, which the runtime's 2 worker threads are
    // (at shutdown); the spawn hook never does.
    assert_eq!(calls.terminates.load(Relaxed), 10 + 2);
    let (befores, afters) = (calls.befores.load(Relaxed), calls.afters.load(Relaxed));
    assert!(befores >= 10 * 10, "{befores} polls");
    assert_eq!(befores, afters);
    let ids = calls.ids.lock().unwrap();
    assert_eq!(*ids, HashSet::from([job_id]), "callbacks saw {ids:?}");
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_task_outliving_its_spawner_holds_the_labels_until_its_final_poll_is_over() {
    let _serial = serial();
    let terminate_saw = Arc::new(Mutex::new(Vec::new()));
    let saw = terminate_saw.clone();
    let mut builder = Builder::new_multi_thread();
    Hooks::new()
        .on_task_terminate(move |_| {
            let id = current_label_id();
            // Terminate runs inside the final poll: the slot still holds the task's id,
            // and that id must still be registered.
            saw.lock()
                .unwrap()
                .push((id, id != 0 && Registry::global().resolve(id).is_some()));
        })
        .install(builder.worker_threads(2).enable_all());
    let rt = builder.build().unwrap();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (label_id, child) = rt.block_on(async {
        let spawner = async {
            let id = current_label_id();
            let child = tokio::spawn(async move {
                release_rx.await.expect("released");
                work(5).await;
                current_label_id()
            });
            (id, child)
        }
        .with_labels(Labels::span(0x5eed, "spawner"));
        tokio::spawn(spawner).await.unwrap()
    });
    // The spawner and its wrapper are gone: the child's entry is the only holder.
    assert!(
        Registry::global().resolve(label_id).is_some(),
        "the child keeps the id alive"
    );
    release_tx.send(()).unwrap();
    let child_saw = rt.block_on(child).unwrap();
    assert_eq!(child_saw, label_id);
    // The spawner's own terminate sees 0 (it inherited nothing); keep the labelled ones.
    let labelled = || -> Vec<(u64, bool)> {
        terminate_saw
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|(id, _)| *id != 0)
            .collect()
    };
    eventually("the child's terminate ran", || !labelled().is_empty());
    assert_eq!(
        labelled(),
        vec![(label_id, true)],
        "terminate saw (id, registered)"
    );
    eventually("the id is freed after the final poll", || {
        Registry::global().resolve(label_id).is_none()
    });
}

#[test]
fn entries_are_released_for_completed_aborted_and_shut_down_tasks() {
    let _serial = serial();
    let before = hook_counters();
    let rt = runtime(true);
    let label_id = rt.block_on(
        async {
            let done = tokio::spawn(work(3));
            let aborted = tokio::spawn(std::future::pending::<()>());
            for _ in 0..20 {
                // Never completes: dropped when the runtime shuts down.
                tokio::spawn(std::future::pending::<()>());
            }
            done.await.unwrap();
            aborted.abort();
            assert!(aborted.await.unwrap_err().is_cancelled());
            current_label_id()
        }
        .with_labels(Labels::span(0xdead, "leaky?")),
    );
    // The wrapper is gone; the 20 pending tasks still hold the id.
    assert!(Registry::global().resolve(label_id).is_some());
    let mid = hook_counters();
    assert_eq!(mid.tasks_labelled - before.tasks_labelled, 22);
    assert_eq!(
        mid.tasks_released - before.tasks_released,
        2,
        "the completed and the aborted"
    );
    drop(rt);
    let after = hook_counters();
    assert_eq!(after.tasks_labelled - before.tasks_labelled, 22);
    assert_eq!(
        after.tasks_released - before.tasks_released,
        22,
        "every labelled task's entry is released"
    );
    assert!(
        Registry::global().resolve(label_id).is_none(),
        "no task keeps the id alive"
    );
}

#[test]
fn tasks_spawned_in_a_wrapper_of_an_ended_span_inherit_and_tasks_spawned_after_it_do_not() {
    let _serial = serial();
    let rt = runtime(true);
    let (during, after, wrapper_id) = rt.block_on(async {
        tokio::spawn(async {
            let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
            // The span's only `Labels` is moved into the wrapper: "the span ended".
            let wrapper = async move {
                let id = current_label_id();
                let during = tokio::spawn(async move {
                    gate_rx.await.unwrap();
                    work(10).await;
                    current_label_id()
                });
                (id, during)
            }
            .with_labels(Labels::span(0x0e0d, "ended"));
            let (wrapper_id, during) = wrapper.await; // the wrapper is dropped here
            let after = tokio::spawn(async { current_label_id() }).await.unwrap();
            assert!(
                Registry::global().resolve(wrapper_id).is_some(),
                "the task spawned during the wrapper's polls keeps the id alive"
            );
            gate_tx.send(()).unwrap();
            (during.await.unwrap(), after, wrapper_id)
        })
        .await
        .unwrap()
    });
    assert_ne!(wrapper_id, 0);
    assert_eq!(
        during, wrapper_id,
        "spawned during the wrapper's polls: inherits"
    );
    assert_eq!(after, 0, "spawned after the wrapper was dropped: no labels");
    eventually("the id is freed with its last task", || {
        Registry::global().resolve(wrapper_id).is_none()
    });
}

#[cfg(feature = "otel")]
#[test]
fn an_ended_opentelemetry_span_still_labels_its_wrappers_and_the_tasks_they_spawn_until_its_context_is_dropped(
) {
    let _serial = serial();
    use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    let provider =
        span_profiler::ProfilingTracerProvider::new(SdkTracerProvider::builder().build());
    let tracer = provider.tracer("hooks");
    let rt = runtime(true);
    let cx = opentelemetry::Context::current_with_span(tracer.start("GET /slow"));
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let wrapper = async move {
        gate_rx.await.unwrap();
        let during = tokio::spawn(async { current_label_id() }).await.unwrap();
        (current_label_id(), during)
    }
    .profiled_with(&cx);
    let wrapper_id = label_id_of(&wrapper);
    assert_ne!(wrapper_id, 0);
    let handle = rt.spawn(wrapper);
    cx.span().end();
    // Ended but its context still held: a new wrapper finds the span (otel-profiling-go's
    // semantics), and a task spawned under it inherits its labels.
    let late = rt
        .block_on(
            rt.spawn(async { tokio::spawn(async { current_label_id() }).await }.profiled_with(&cx)),
        )
        .unwrap()
        .unwrap();
    assert_eq!(late, wrapper_id);
    gate_tx.send(()).unwrap();
    let (in_wrapper, during) = rt.block_on(handle).unwrap();
    assert_eq!(in_wrapper, wrapper_id);
    assert_eq!(
        during, wrapper_id,
        "the existing wrapper's polls still hand out its labels"
    );
}

#[test]
fn span_less_tasks_are_labelled_with_their_spawn_location_when_asked() {
    let _serial = serial();
    let mut builder = Builder::new_multi_thread();
    Hooks::new()
        .label_spawn_locations(true)
        .install(builder.worker_threads(2).enable_all());
    let rt = builder.build().unwrap();
    let (plain, plain_line, child, child_line, spanned) = rt.block_on(async {
        let plain_line = line!() + 1;
        let plain = tokio::spawn(async {
            let child_line = line!() + 1;
            let child = tokio::spawn(async { Labels::current() }).await.unwrap();
            (Labels::current(), child, child_line)
        });
        let (plain, child, child_line) = plain.await.unwrap();
        let spanned = tokio::spawn(
            async { tokio::spawn(async { Labels::current() }).await.unwrap() }
                .with_labels(Labels::span(1, "span")),
        )
        .await
        .unwrap();
        (plain, plain_line, child, child_line, spanned)
    });
    let file = file!();
    assert_eq!(
        plain.get("spawned_at"),
        Some(format!("{file}:{plain_line}").as_str())
    );
    assert_eq!(plain.span_id(), None);
    assert_eq!(
        child.get("spawned_at"),
        Some(format!("{file}:{child_line}").as_str())
    );
    assert_eq!(spanned.span_name(), Some("span"));
    assert_eq!(
        spanned.get("spawned_at"),
        None,
        "tasks under a span keep the span's labels"
    );
}

#[test]
fn spawn_locations_are_off_by_default() {
    let _serial = serial();
    let rt = runtime(true);
    let seen = rt.block_on(async { tokio::spawn(async { current_label_id() }).await.unwrap() });
    assert_eq!(seen, 0);
}

#[test]
fn local_set_tasks_get_no_hooks_and_see_the_labels_of_the_poll_that_drives_them() {
    let _serial = serial();
    let rt = tokio_hooks::install(&mut Builder::new_current_thread())
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let driver_id = Arc::new(AtomicU64::new(0));
    let driver_id2 = driver_id.clone();
    let (spawned_in_label, spawned_task_from_local) = local.block_on(&rt, async move {
        // The spawn must happen inside the wrapper's poll: the handle is the output.
        #[allow(clippy::async_yields_async)]
        let labelled = async move {
            driver_id2.store(current_label_id(), Relaxed);
            // Spawned under labels, but a local task inherits nothing of its own: it
            // runs when the LocalSet polls it, under whatever that poll has.
            tokio::task::spawn_local(async { current_label_id() })
        }
        .with_labels(Labels::span(3, "driver"))
        .await;
        let local_task = labelled.await.unwrap();
        // A runtime task spawned from a labelled local scope inherits normally.
        #[allow(clippy::async_yields_async)]
        let from_local = async { tokio::spawn(async { current_label_id() }) }
            .with_labels(Labels::span(4, "from local"))
            .await
            .await
            .unwrap();
        (local_task, from_local)
    });
    assert_eq!(
        spawned_in_label, 0,
        "the local task ran under the driver's (empty) labels"
    );
    assert_ne!(spawned_task_from_local, 0);
    assert_ne!(spawned_task_from_local, driver_id.load(Relaxed));

    // Driven from inside a labelled poll, local tasks see that poll's labels.
    let local = tokio::task::LocalSet::new();
    let seen = rt.block_on(
        async {
            let id = current_label_id();
            let seen = local
                .run_until(async {
                    tokio::task::spawn_local(async { current_label_id() })
                        .await
                        .unwrap()
                })
                .await;
            (id, seen)
        }
        .with_labels(Labels::span(5, "driving poll")),
    );
    assert_eq!(seen.1, seen.0, "local tasks see the driving poll's labels");
    // Wrapped local tasks carry their own.
    let own = local.block_on(&rt, async {
        tokio::task::spawn_local(
            async { Labels::current().span_name().map(str::to_owned) }
                .with_labels(Labels::span(6, "own")),
        )
        .await
        .unwrap()
    });
    assert_eq!(own.as_deref(), Some("own"));
}

#[test]
fn plain_spawn_blocking_runs_unlabelled_under_the_hooks_and_the_helper_carries_labels() {
    let _serial = serial();
    let rt = runtime(true);
    let (plain, helper, expected) = rt.block_on(async {
        tokio::spawn(
            async {
                let plain = tokio::task::spawn_blocking(current_label_id).await.unwrap();
                let helper = span_profiler::spawn_blocking(current_label_id)
                    .await
                    .unwrap();
                (plain, helper, current_label_id())
            }
            .with_labels(Labels::span(8, "blocking")),
        )
        .await
        .unwrap()
    });
    assert_ne!(expected, 0);
    assert_eq!(plain, 0, "tokio's hooks never see spawn_blocking");
    assert_eq!(helper, expected);
}

/// The CPU work of the request's children and grandchildren (its own constants, so no
/// other function can be merged with it; sampled frames are matched against its range).
#[inline(never)]
fn burn_request_work(cpu: Duration) -> Duration {
    spin_for(cpu, |x| {
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0x5bd1_e995
    })
}

/// CPU used by the burning tasks and how often they moved between threads.
#[derive(Default)]
struct Burned {
    cpu_ns: AtomicU64,
    thread_switches: AtomicUsize,
}

/// Burns `total` CPU in 0.6 - 1.5 ms slices, yielding or sleeping in between, so the
/// task is rescheduled often (and may be picked up by another worker). No wrapper.
async fn burn_task(total: Duration, burned: Arc<Burned>) {
    let (mut used, mut last, mut round) = (Duration::ZERO, None, 0u64);
    while used < total {
        used += burn_request_work(Duration::from_micros(600 + (round * 389) % 900));
        let me = std::thread::current().id();
        if last.is_some_and(|last| last != me) {
            burned.thread_switches.fetch_add(1, Relaxed);
        }
        last = Some(me);
        if round % 4 == 3 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        } else {
            tokio::task::yield_now().await;
        }
        round += 1;
    }
    burned.cpu_ns.fetch_add(used.as_nanos() as u64, Relaxed);
}

/// A labelled request spawns 4 children, each spawning 2 grandchildren; the 12 burn CPU
/// without any wrapper on a 4-worker runtime, sampled at 1 kHz. Returns the request's
/// label id, the samples taken inside the burner, and what the tasks burned.
fn sampled_request_tree(hooked: bool) -> (u64, Vec<sampler_common::Sample>, Arc<Burned>) {
    const PER_TASK: Duration = Duration::from_millis(150);
    let rt = runtime(hooked);
    let burner = Symbols::load().range_of(burn_request_work as *const () as usize);
    let collector = Collector::start(SamplerConfig {
        sample_rate_hz: 1000,
        ..Default::default()
    });
    // Let the collector's discovery scan arm every worker (unlabelled threads included).
    std::thread::sleep(Duration::from_millis(300));
    let burned = Arc::new(Burned::default());
    let burned2 = burned.clone();
    let request_id = rt.block_on(async move {
        let request = async move {
            let mut children = Vec::new();
            for _ in 0..4 {
                let burned = burned2.clone();
                children.push(tokio::spawn(async move {
                    let grandchildren: Vec<_> = (0..2)
                        .map(|_| tokio::spawn(burn_task(PER_TASK, burned.clone())))
                        .collect();
                    burn_task(PER_TASK, burned).await;
                    for grandchild in grandchildren {
                        grandchild.await.expect("grandchild");
                    }
                }));
            }
            for child in children {
                child.await.expect("child");
            }
            current_label_id()
        }
        .with_labels(Labels::span(0x5a3e_1e5a_3e1e_5a3e, "GET /report"));
        tokio::spawn(request).await.expect("request")
    });
    let (samples, stats) = collector.finish();
    drop(rt);
    let inside: Vec<_> = samples
        .into_iter()
        .filter(|s| holds(&s.frames, &burner))
        .collect();
    let (total, carrying) = weights(&inside, request_id);
    eprintln!(
        "hooked={hooked}: {} samples (weight {total}, {carrying} with the request's id) \
         inside the burner; {:.3} s burned, {} thread switches; stats: {stats:?}",
        inside.len(),
        burned.cpu_ns.load(Relaxed) as f64 / 1e9,
        burned.thread_switches.load(Relaxed),
    );
    assert_ne!(request_id, 0);
    (request_id, inside, burned)
}

/// Total weight (periods of CPU time) of `samples`, and of those with label id `id`.
fn weights(samples: &[sampler_common::Sample], id: u64) -> (u64, u64) {
    let total = samples.iter().map(|s| s.weight).sum();
    let carrying = samples
        .iter()
        .filter(|s| s.label_id == id)
        .map(|s| s.weight)
        .sum();
    (total, carrying)
}

#[test]
fn samples_of_unwrapped_children_and_grandchildren_carry_the_requests_labels_only_with_hooks() {
    let _serial = serial();
    // 12 tasks x 150 ms at 1 kHz: about 1800 ms of weight expected in the burner (timer
    // overruns are weighted, so the sample count itself is lower: a few hundred at kernel
    // HZ=250, about 130 seen on a loaded machine).
    const MIN_WEIGHT: u64 = 900;
    const MIN_SAMPLES: usize = 50;

    let (request_id, inside, burned) = sampled_request_tree(true);
    let (total, carrying) = weights(&inside, request_id);
    let carrying_samples = inside.iter().filter(|s| s.label_id == request_id).count();
    assert!(
        total >= MIN_WEIGHT && inside.len() >= MIN_SAMPLES,
        "only {} samples (weight {total}) inside the burner",
        inside.len()
    );
    assert!(
        carrying * 100 >= total * 99 && carrying_samples * 100 >= inside.len() * 99,
        "with the hooks, weight {carrying} of {total} ({carrying_samples} of {} samples) \
         carries the request's label id",
        inside.len()
    );
    assert!(
        burned.thread_switches.load(Relaxed) > 0,
        "no task ever moved between workers; the test proves nothing"
    );

    let (request_id, inside, _) = sampled_request_tree(false);
    let (total, carrying) = weights(&inside, request_id);
    assert!(
        total >= MIN_WEIGHT && inside.len() >= MIN_SAMPLES,
        "only {} samples (weight {total}) inside the burner",
        inside.len()
    );
    assert_eq!(
        carrying, 0,
        "without the hooks, weight {carrying} of {total} carries the request's label id"
    );
}
