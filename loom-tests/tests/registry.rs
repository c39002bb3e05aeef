//! Loom models of the label registry: reference counting across threads and the
//! release-plus-grace rule that keeps an id resolvable for samples read before release.
//!
//! Run: `RUSTFLAGS="--cfg span_profiler_loom -C force-frame-pointers=yes" \
//!       cargo test -p span-profiler-loom-tests --release`
//!
//! Not modelled: the per-thread label slot. Its writer and its reader (the signal
//! handler) run on the same thread; a signal is not a thread, so loom cannot express it.
#![cfg(span_profiler_loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use span_profiler::__private::{LabelSet, Registry, RegistryLen};

fn set() -> std::sync::Arc<LabelSet> {
    std::sync::Arc::new(LabelSet::default())
}

/// The collector's side: drains the one-sample buffer (the drained id must still
/// resolve) and ends each round with a drain.
fn collect(reg: &Registry, buffer: &AtomicU64, rounds: usize) {
    for _ in 0..rounds {
        take_sample(reg, buffer);
        reg.on_drain();
    }
}

/// Takes the buffer's sample, if any: its id must still resolve.
fn take_sample(reg: &Registry, buffer: &AtomicU64) {
    // Acquire: pairs with a worker's Release publication of its sample.
    let id = buffer.swap(0, Ordering::Acquire);
    if id != 0 {
        assert!(
            reg.resolve(id).is_some(),
            "drained id {id} was freed too early"
        );
    }
}

/// Dropping the last handle on one thread while another thread revives the entry by id:
/// a revived handle always resolves, and once every handle is gone the entry is freed.
#[test]
fn a_lookup_racing_the_last_release_never_sees_a_freed_entry() {
    loom::model(|| {
        let reg = Registry::new();
        let handle = reg.register(set());
        let id = handle.id();
        let reg2 = reg.clone();
        let t = thread::spawn(move || {
            if let Some(revived) = reg2.acquire(id) {
                assert!(reg2.resolve(id).is_some(), "a held id must resolve");
                drop(revived);
            }
        });
        drop(handle);
        t.join().unwrap();
        assert_eq!(
            reg.len(),
            RegistryLen::default(),
            "no profiler: freed at last release"
        );
    });
}

/// Clones released on two threads at once: exactly one release frees the entry.
#[test]
fn concurrent_releases_free_the_entry_once() {
    loom::model(|| {
        let reg = Registry::new();
        reg.set_profiling(true);
        let a = reg.register(set());
        let b = a.clone();
        let t = thread::spawn(move || drop(b));
        drop(a);
        t.join().unwrap();
        assert_eq!(
            reg.len(),
            RegistryLen {
                live: 0,
                retired: 1
            }
        );
    });
}

/// A "handler" publishes the id (as the sample buffer does) and then its wrapper is
/// dropped, while the collector drains, resolves what it drained, and advances its drain
/// count. Every id the collector drains must still resolve.
#[test]
fn an_id_read_before_its_release_resolves_when_drained() {
    loom::model(|| {
        let reg = Registry::new();
        reg.set_profiling(true);
        // The sample buffer, reduced to one cell: 0 = empty.
        let buffer = Arc::new(AtomicU64::new(0));

        let handle = reg.register(set());
        let (reg_w, buffer_w) = (reg.clone(), buffer.clone());
        let worker = thread::spawn(move || {
            // Release: publishes the sample; pairs with the collector's Acquire swap.
            buffer_w.store(handle.id(), Ordering::Release);
            drop(handle);
            drop(reg_w);
        });

        collect(&reg, &buffer, 3);
        worker.join().unwrap();
        take_sample(&reg, &buffer);
    });
}

/// Two handles whose ids fall in different shards (ids 1 and 2 of a two-shard registry)
/// are released on two threads while the collector drains: the grace
/// rule holds in each shard, so every id the collector drains still resolves, and once
/// the grace is over both entries are freed.
#[test]
fn releases_in_two_shards_racing_the_collector_keep_their_grace() {
    loom::model(|| {
        let reg = Registry::with_shards(2);
        reg.set_profiling(true);
        let buffer = Arc::new(AtomicU64::new(0));

        let workers: Vec<_> = (0..2)
            .map(|_| {
                let handle = reg.register(set());
                let (reg_w, buffer_w) = (reg.clone(), buffer.clone());
                thread::spawn(move || {
                    // Release: publishes the sample; pairs with the collector's Acquire
                    // swap. A full cell is a dropped sample, as in the real buffer.
                    let _ = buffer_w.compare_exchange(
                        0,
                        handle.id(),
                        Ordering::Release,
                        Ordering::Relaxed,
                    );
                    drop(handle);
                    drop(reg_w);
                })
            })
            .collect();

        collect(&reg, &buffer, 2);
        for worker in workers {
            worker.join().unwrap();
        }
        take_sample(&reg, &buffer);
        // Both released by now: two more drains end every grace.
        reg.on_drain();
        reg.on_drain();
        assert_eq!(reg.len(), RegistryLen::default(), "both entries freed");
    });
}
