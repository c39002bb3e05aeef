//! Loom model of the sample buffer (`src/sampler/buffer.rs`): producers (signal handlers
//! on different threads) claim, fill and publish slots while a drainer empties them.
//! Checks that no record is torn, lost, or drained twice, and that every producer that
//! found no free slot knows it (a counted drop).
//!
//! A signal handler interrupting its own thread is not a thread and cannot be modelled
//! by loom; what crosses threads here is exactly what the buffer shares.
#![cfg(span_profiler_loom)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use loom::sync::Arc;
use loom::thread;
use span_profiler::__private::SampleBuffer;

const FRAMES: usize = 3;

/// Executions explored, and whether any of them drained a record while producers ran
/// (guards against a model that silently explores nothing interesting). One per test.
struct Coverage {
    runs: AtomicUsize,
    early: AtomicBool,
}

impl Coverage {
    const fn new() -> Self {
        Self {
            runs: AtomicUsize::new(0),
            early: AtomicBool::new(false),
        }
    }
}

/// Pushes one record whose every field derives from `label`; false when the buffer was
/// full (the handler would count a drop).
fn push(buffer: &SampleBuffer, label: u64) -> bool {
    let Some(mut claim) = buffer.claim() else {
        return false;
    };
    claim.write(|record| {
        record.label_id = label;
        record.weight = label * 10;
        record.tid = label as i32;
        record.len = FRAMES;
        for frame in record.frames.iter_mut().take(FRAMES) {
            *frame = label as usize;
        }
    });
    claim.publish();
    true
}

/// Drains, checking each record is whole; returns the labels seen.
fn drain(buffer: &SampleBuffer, seen: &mut Vec<u64>) {
    buffer.drain(|record| {
        let label = record.label_id;
        assert_eq!(record.weight, label * 10, "torn record");
        assert_eq!(record.tid, label as i32, "torn record");
        assert_eq!(record.frames(), &[label as usize; FRAMES], "torn record");
        seen.push(label);
    });
}

fn model(coverage: &'static Coverage, capacity: usize, producers: u64, per_producer: u64) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        coverage.runs.fetch_add(1, Relaxed);
        let buffer = Arc::new(SampleBuffer::new(capacity));
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                let buffer = buffer.clone();
                thread::spawn(move || {
                    let mut dropped = 0;
                    for i in 0..per_producer {
                        if !push(&buffer, 1 + p * per_producer + i) {
                            dropped += 1;
                        }
                    }
                    dropped
                })
            })
            .collect();
        let mut seen = Vec::new();
        // The collector drains while producers run.
        drain(&buffer, &mut seen);
        if !seen.is_empty() {
            coverage.early.store(true, Relaxed);
        }
        let dropped: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        drain(&buffer, &mut seen);
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "a record was drained twice");
        assert_eq!(
            seen.len() as u64 + dropped,
            producers * per_producer,
            "a record was lost"
        );
    });
    let runs = coverage.runs.load(Relaxed);
    assert!(
        coverage.early.load(Relaxed),
        "no execution drained during production ({runs} runs)"
    );
}

#[test]
fn two_producers_and_a_concurrent_drain_lose_nothing_and_tear_nothing() {
    static COVERAGE: Coverage = Coverage::new();
    model(&COVERAGE, 2, 2, 1);
}

#[test]
fn a_full_buffer_drops_are_all_accounted_for() {
    // Capacity 2, three records: at least one producer may find no free slot.
    static COVERAGE: Coverage = Coverage::new();
    model(&COVERAGE, 2, 2, 2);
}
