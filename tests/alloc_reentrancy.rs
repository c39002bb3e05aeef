//! Recording a sampled allocation never allocates: this binary interposes `malloc`,
//! `calloc`, `realloc`, `free`, `posix_memalign`, `aligned_alloc` and `memalign`
//! (forwarding to glibc's `__libc_*` entry points) and counts the calls of each thread.
//! With `ProfiledAllocator<System>` as the global allocator and every allocation sampled
//! (64 KiB blocks at `alloc_sample_bytes(4096)`), each `alloc`, `alloc_zeroed`,
//! `realloc` and `dealloc` must reach the C allocator exactly once: the recording path
//! (countdown, stack walk, record buffer, live table) never calls it, so it can never
//! re-enter the wrapped allocator.

#[macro_use]
mod interpose;
mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::time::Duration;

use span_profiler::alloc::ProfiledAllocator;
use span_profiler::{Labels, ProfiledExt, Profiler};

#[global_allocator]
static ALLOC: ProfiledAllocator = ProfiledAllocator::system();

thread_local! {
    /// Calls of the interposed functions made by this thread.
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

#[inline(always)]
fn note() {
    CALLS.with(|c| c.set(c.get() + 1));
}

fn calls() -> u64 {
    CALLS.with(Cell::get)
}

interpose_c_allocator!(note);

/// Runs `f` and returns how many C allocator calls this thread made meanwhile.
fn c_calls(f: impl FnOnce()) -> u64 {
    let before = calls();
    f();
    calls() - before
}

/// `ALLOC.alloc`.
fn profiled_alloc(layout: Layout) -> *mut u8 {
    // SAFETY: every layout used here has a non-zero size.
    unsafe { ALLOC.alloc(layout) }
}

/// `ALLOC.alloc_zeroed`.
fn profiled_alloc_zeroed(layout: Layout) -> *mut u8 {
    // SAFETY: as in `profiled_alloc`.
    unsafe { ALLOC.alloc_zeroed(layout) }
}

/// `ALLOC.realloc`.
///
/// # Safety
/// `p` was allocated by `ALLOC` with `layout` and is not used afterwards.
unsafe fn profiled_realloc(p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: the caller's duties.
    unsafe { ALLOC.realloc(p, layout, new_size) }
}

/// `ALLOC.dealloc`.
///
/// # Safety
/// `p` was allocated by `ALLOC` with `layout` and is not used afterwards.
unsafe fn profiled_dealloc(p: *mut u8, layout: Layout) {
    // SAFETY: the caller's duties.
    unsafe { ALLOC.dealloc(p, layout) }
}

#[inline(never)]
fn sampled_allocations(rounds: usize) -> usize {
    let big = Layout::from_size_align(64 * 1024, 16).unwrap();
    let grown = Layout::from_size_align(128 * 1024, 16).unwrap();
    let mut checked = 0;
    for _ in 0..rounds {
        let mut p = std::ptr::null_mut();
        assert_eq!(c_calls(|| p = profiled_alloc(big)), 1, "alloc");
        assert!(!p.is_null());
        let old = p;
        let grow = || {
            // SAFETY: `old` came from `profiled_alloc(big)` and is replaced by the result.
            p = unsafe { profiled_realloc(old, big, grown.size()) };
        };
        assert_eq!(c_calls(grow), 1, "realloc");
        assert!(!p.is_null());
        let free_grown = || {
            // SAFETY: `p` came from the realloc to `grown` and is not used again.
            unsafe { profiled_dealloc(p, grown) }
        };
        assert_eq!(c_calls(free_grown), 1, "dealloc");
        assert_eq!(
            c_calls(|| p = profiled_alloc_zeroed(big)),
            1,
            "alloc_zeroed"
        );
        assert!(!p.is_null());
        let free_big = || {
            // SAFETY: `p` came from `profiled_alloc_zeroed(big)` and is not used again.
            unsafe { profiled_dealloc(p, big) }
        };
        assert_eq!(c_calls(free_big), 1, "dealloc");
        checked += 1;
    }
    checked
}

#[test]
fn recording_a_sampled_allocation_never_calls_the_inner_allocator() {
    let dir = common::temp_dir("alloc-reentrancy");
    let profiler = Profiler::builder()
        .application_name("alloc-reentrancy")
        .output_dir(&dir)
        .upload_interval(Duration::from_secs(1))
        .alloc_sample_bytes(4096)
        .start()
        .expect("start");
    let before = profiler.stats().alloc.sampled;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Labelled (so the thread publishes its stack bounds and the full walk runs), and
    // unlabelled on a fresh thread (a one-frame record).
    let checked = rt
        .block_on(async { sampled_allocations(20_000) }.with_labels(Labels::span(7, "reentrancy")));
    assert_eq!(checked, 20_000);
    std::thread::spawn(|| sampled_allocations(5_000))
        .join()
        .unwrap();
    let report = profiler.stop().expect("stop");
    let sampled = report.stats.alloc.sampled - before;
    // alloc, realloc and alloc_zeroed of 64 KiB or more at a 4 KiB interval: almost
    // every one is sampled.
    assert!(sampled > 60_000, "only {sampled} sampled allocations");
    let _ = std::fs::remove_dir_all(&dir);
}
