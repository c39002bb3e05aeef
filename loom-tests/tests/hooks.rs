//! Loom models of the task hooks' per-task state (`TaskTable` + `PollFrames`): Tokio
//! calls `on_task_terminate` *before* the last `on_after_task_poll`, on the polling
//! thread, while the spawner and other workers run on.
//!
//! Run: `RUSTFLAGS="--cfg span_profiler_loom -C force-frame-pointers=yes" \
//!       cargo test -p span-profiler-loom-tests --release --test hooks`
//!
//! Each modelled thread owns its `PollFrames` and a plain-value slot ([`ModelSlot`]):
//! the real slot is a thread-local read by a signal handler on the same thread, which
//! loom cannot express (its threads share one OS thread, and a signal is not a thread).
#![cfg(span_profiler_loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use span_profiler::__private::{LabelSet, LabelSlot, PollFrames, Registry, RegistryLen, TaskTable};

/// One modelled thread's label slot.
#[derive(Default)]
struct ModelSlot(u64);

impl LabelSlot for ModelSlot {
    fn replace(&mut self, id: u64) -> u64 {
        std::mem::replace(&mut self.0, id)
    }
    fn current(&self) -> u64 {
        self.0
    }
}

fn span(registry: &Registry) -> span_profiler::__private::LabelHandle {
    registry.register(std::sync::Arc::new(LabelSet::default()))
}

/// The spawner drops its own handle while a worker runs the child's final poll: between
/// terminate and after-poll the slot still holds the id, so it must still be registered
/// (no profiler runs, so a released entry would be freed at once); afterwards the slot is
/// restored and nothing is left.
#[test]
fn the_final_polls_id_stays_registered_until_after_poll_restores_the_slot() {
    loom::model(|| {
        let registry = Registry::new();
        let table = Arc::new(TaskTable::<u64>::new(registry.clone(), 1, false));
        let request = span(&registry);
        let id = request.id();
        table.on_spawn(&PollFrames::new(), 1, id, None);

        let (worker_table, worker_registry) = (table.clone(), registry.clone());
        let worker = thread::spawn(move || {
            let (mut frames, mut slot) = (PollFrames::new(), ModelSlot(0));
            worker_table.before_poll(&mut frames, &mut slot, 1);
            assert_eq!(slot.current(), id);
            worker_table.on_terminate(&mut frames, 1);
            assert_eq!(slot.current(), id, "terminate does not touch the slot");
            assert!(
                worker_registry.resolve(slot.current()).is_some(),
                "the slot holds an id whose last handle is gone"
            );
            worker_table.after_poll(&mut frames, &mut slot, 1);
            assert_eq!(slot.current(), 0);
            assert_eq!(frames.depth(), 0);
        });
        drop(request); // the spawner's wrapper ends, concurrently with the poll
        worker.join().unwrap();
        assert!(table.is_empty());
        assert_eq!(registry.len(), RegistryLen::default(), "nothing leaked");
    });
}

/// A child spawned inside a poll shares the parent's handle (cloned from the table),
/// while another worker terminates a sibling of the same labels outside any poll (as at
/// runtime shutdown). Counts stay exact: the id lives exactly while some task has it.
#[test]
fn a_spawn_sharing_the_parents_handle_races_a_siblings_release() {
    loom::model(|| {
        let registry = Registry::new();
        let table = Arc::new(TaskTable::<u64>::new(registry.clone(), 2, false));
        let request = span(&registry);
        let id = request.id();
        table.on_spawn(&PollFrames::new(), 1, id, None); // parent
        table.on_spawn(&PollFrames::new(), 2, id, None); // sibling
        drop(request);

        let sibling_table = table.clone();
        let shutdown = thread::spawn(move || {
            sibling_table.on_terminate(&mut PollFrames::new(), 2);
        });

        let (mut frames, mut slot) = (PollFrames::new(), ModelSlot(0));
        table.before_poll(&mut frames, &mut slot, 1);
        table.on_spawn(&frames, 3, slot.current(), None); // grandchild
        table.on_terminate(&mut frames, 1);
        table.after_poll(&mut frames, &mut slot, 1);
        shutdown.join().unwrap();

        assert_eq!(
            table.label_of(3),
            id,
            "the grandchild inherited the parent's labels"
        );
        assert!(
            registry.resolve(id).is_some(),
            "the grandchild keeps the id alive"
        );
        table.on_terminate(&mut PollFrames::new(), 3);
        assert_eq!(registry.len(), RegistryLen::default());
    });
}

/// While a profiler runs, a sample taken between terminate and after-poll is published
/// to the buffer (reduced to one cell) and drained by the collector, which advances
/// drains concurrently: every id it drains resolves.
#[test]
fn a_sample_taken_during_the_final_poll_resolves_when_drained() {
    loom::model(|| {
        let registry = Registry::new();
        registry.set_profiling(true);
        let table = Arc::new(TaskTable::<u64>::new(registry.clone(), 1, false));
        let request = span(&registry);
        table.on_spawn(&PollFrames::new(), 1, request.id(), None);
        drop(request);
        let buffer = Arc::new(AtomicU64::new(0));

        let (worker_table, worker_buffer) = (table.clone(), buffer.clone());
        let worker = thread::spawn(move || {
            let (mut frames, mut slot) = (PollFrames::new(), ModelSlot(0));
            worker_table.before_poll(&mut frames, &mut slot, 1);
            worker_table.on_terminate(&mut frames, 1);
            // The handler reads the slot here. Release: publishes the sample; pairs with
            // the collector's Acquire swap.
            worker_buffer.store(slot.current(), Ordering::Release);
            worker_table.after_poll(&mut frames, &mut slot, 1);
        });

        for _ in 0..3 {
            // Acquire: pairs with the worker's Release store of the sample.
            let id = buffer.swap(0, Ordering::Acquire);
            if id != 0 {
                assert!(
                    registry.resolve(id).is_some(),
                    "drained id {id} was freed too early"
                );
            }
            registry.on_drain();
        }
        worker.join().unwrap();
        let id = buffer.swap(0, Ordering::Acquire);
        if id != 0 {
            assert!(
                registry.resolve(id).is_some(),
                "drained id {id} was freed too early"
            );
        }
        assert!(table.is_empty());
    });
}
