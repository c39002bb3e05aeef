//! The symbolizer's memory budget bounds what the heap really holds, not only what the
//! symbolizer counts: a counting allocator measures the heap a live symbolizer keeps (each
//! allocation as the allocator's chunk, header and rounding included) after a cold window
//! of this test binary's addresses, and compares it with the budget and with the bytes
//! `stats()` would report.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use span_profiler::__private::symbolize::{code_addresses, inspect_cold};
use span_profiler::Symbolization;

/// Bytes of the allocator's chunks live now (what `malloc` took from its arenas).
static LIVE: AtomicI64 = AtomicI64::new(0);

/// glibc's chunk of a live allocation: its usable size and the 8-byte header before it.
fn chunk_bytes(ptr: *mut u8) -> i64 {
    // SAFETY: `ptr` is a live allocation of `System` (glibc's malloc on this target).
    let usable = unsafe { libc::malloc_usable_size(ptr.cast()) };
    usable as i64 + 8
}

struct Counting;

// SAFETY: every call is passed to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(chunk_bytes(ptr), Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(chunk_bytes(ptr), Relaxed);
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn the_budget_bounds_the_heap_the_symbolizer_really_holds() {
    // Spread over the whole binary: more units than either budget holds.
    let addrs = code_addresses(10_000);
    assert!(addrs.len() > 5_000, "only {} addresses", addrs.len());
    for budget in [1usize << 20, 4 << 20] {
        let before = LIVE.load(Relaxed);
        let (stats, held) = inspect_cold(
            &addrs,
            Symbolization::full().memory_budget(budget),
            |stats| (stats, (LIVE.load(Relaxed) - before) as f64),
        );
        let counted = stats.bytes as f64;
        // The budget was pressed: something had to go to stay within it.
        assert!(
            stats.units_evicted + stats.cache_flushes + stats.symbol_only > 0,
            "the budget was never reached: {stats:?}"
        );
        println!(
            "budget {:.0} MiB: counted {:.2} MiB, heap held {:.2} MiB",
            budget as f64 / MIB,
            counted / MIB,
            held / MIB
        );
        assert!(counted <= budget as f64, "counted {counted} over {budget}");
        // A few structures outside the count (the module list, boxes of a few words).
        assert!(
            held <= budget as f64 * 1.05,
            "the symbolizer holds {:.2} MiB on the heap, over its {:.0} MiB budget",
            held / MIB,
            budget as f64 / MIB
        );
        assert!(
            (counted - held).abs() <= held * 0.1,
            "counted {:.2} MiB, held {:.2} MiB: the count is off by more than a tenth",
            counted / MIB,
            held / MIB
        );
    }
}
