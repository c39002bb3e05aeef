//! How many heap allocations a local root span costs through `ProfilingTracerProvider`
//! beyond the SDK's own, counted by a global allocator that tallies this thread's calls.
//! Its own test binary: it replaces the global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use opentelemetry::trace::{Span as _, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use span_profiler::ProfilingTracerProvider;

/// The system allocator, counting the allocations of the thread that has counting on.
struct Counting;

thread_local! {
    /// Allocations (and reallocations) made on this thread while `COUNTING` is set.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_alloc() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counting touches only const-initialised thread-locals without
// destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: the caller's `layout` is passed on as it came.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this `layout` (every allocation does).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: as in `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per call of `f`, averaged over many calls after a warm-up (maps grown,
/// thread-locals made).
fn allocs_per_call(mut f: impl FnMut()) -> f64 {
    const CALLS: usize = 1_000;
    for _ in 0..CALLS {
        f();
    }
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    for _ in 0..CALLS {
        f();
    }
    COUNTING.with(|on| on.set(false));
    ALLOCS.with(Cell::get) as f64 / CALLS as f64
}

#[test]
fn a_local_root_allocates_only_what_its_labels_and_attribute_need() {
    let sdk = SdkTracerProvider::builder().build();
    let bare = sdk.tracer("allocs");
    let profiling = ProfilingTracerProvider::new(sdk.clone()).tracer("allocs");

    let sdk_root = allocs_per_call(|| bare.start("GET /allocs").end());
    let profiling_root = allocs_per_call(|| profiling.start("GET /allocs").end());
    let extra = profiling_root - sdk_root;
    println!("allocations per root: sdk {sdk_root}, profiling {profiling_root}");
    // The attribute's value (its 16 digits), the SDK's attribute list (an SDK span
    // without attributes allocates it at its first one), the label set and its registry
    // entry; with task metrics also the root's record, which they are written from.
    let limit = if cfg!(feature = "task-metrics") {
        5.0
    } else {
        4.0
    };
    assert!(
        extra <= limit,
        "{extra} allocations per root beyond the SDK (at most {limit})"
    );
}
