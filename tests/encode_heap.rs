//! Encoding a window makes a few heap blocks, however many samples, stacks, locations and
//! strings it has: what grows with the window goes to mapped arrays, and every element is
//! encoded through reused buffers. glibc's per-thread cache keeps freed small blocks
//! resident on the encode thread, so a per-sample or per-string allocation shows as a
//! creeping resident set (the soak example), long before it shows in time.
//!
//! A counting allocator counts the calls made on this test's thread while a warm window
//! (its addresses already in the symbolizer's cache, as for every window after the first)
//! is encoded, for a window and for one ten times its size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, SystemTime};

use span_profiler::__private::label_id_of;
use span_profiler::__private::pprof::{EncodeWindowOptions, PreparedWindow, WindowSample};
use span_profiler::{Labels, Profiled, ProfiledExt};

thread_local! {
    /// Allocation calls (alloc, realloc) of this thread while `COUNTING` is set.
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count_call() {
    // `try_with`: nothing to count on a thread whose locals are gone.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = CALLS.try_with(|c| c.set(c.get() + 1));
        }
    });
}

struct Counting;

// SAFETY: every call is passed to `System` unchanged; only a thread-local counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_call();
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_call();
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Frames per stack.
const DEPTH: usize = 20;

#[inline(never)]
fn code_region_anchor() -> u64 {
    std::hint::black_box(1)
}

/// Stack `i`: 20 of 2,000 addresses inside this binary's code (well within the
/// symbolizer's cache), shared like a call tree's callers.
fn stack(i: usize) -> Vec<usize> {
    let base = code_region_anchor as *const () as usize;
    (0..DEPTH)
        .map(|d| base + ((i >> (d / 4)) * 7 + d * 101) % 2_000 * 61)
        .collect()
}

/// A window of `stacks` distinct stacks, each under one of `labels`.
fn window(stacks: usize, labels: &[Profiled<std::future::Ready<()>>]) -> PreparedWindow {
    let samples: Vec<WindowSample> = (0..stacks)
        .map(|i| {
            let id = label_id_of(&labels[i % labels.len()]);
            (stack(i), id, (i % 5 + 1) as u64)
        })
        .collect();
    let end = SystemTime::now();
    let opts = EncodeWindowOptions {
        sample_rate_hz: 100,
        max_piece_bytes: None,
        max_piece_samples: None,
    };
    PreparedWindow::new(&samples, end - Duration::from_secs(10), end, opts)
}

/// Allocation calls of one warm encoding of `w`, and its sample count.
fn calls_of_warm_encoding(w: &mut PreparedWindow) -> (u64, usize) {
    // The first encoding fills the symbolizer's cache.
    w.encode();
    CALLS.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    let out = w.encode();
    COUNTING.with(|on| on.set(false));
    (CALLS.with(Cell::get), out.samples.iter().sum())
}

#[test]
fn a_warm_windows_encoding_makes_a_few_heap_blocks_whatever_its_size() {
    // One label set per request (fresh span ids, as in production): every set is new
    // strings.
    let labels: Vec<_> = (0..2_000u64)
        .map(|i| {
            let l = Labels::span(0x2000_0000 + i, format!("GET /route/{}", i % 40))
                .with("region", if i % 2 == 0 { "eu" } else { "us" });
            std::future::ready(()).with_labels(l)
        })
        .collect();
    let mut small = window(400, &labels[..200]);
    let mut large = window(4_000, &labels);
    let (small_calls, small_samples) = calls_of_warm_encoding(&mut small);
    let (large_calls, large_samples) = calls_of_warm_encoding(&mut large);
    assert_eq!((small_samples, large_samples), (400, 4_000));
    println!("allocation calls: {small_calls} (400 samples), {large_calls} (4,000 samples)");
    // Before: about 8 per sample (a vector per stack and per location, strings per
    // piece and per label set), over 30,000 for the large window.
    assert!(
        large_calls <= 400,
        "{large_calls} allocation calls for 4,000 samples: something allocates per sample, stack or string"
    );
    // Growth with the window: a few more doublings of the same buffers, never per item.
    assert!(
        large_calls <= small_calls + 100,
        "{small_calls} calls for 400 samples, {large_calls} for 4,000"
    );
}
