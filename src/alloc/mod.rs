//! Allocation profiles per span: which request allocated what.
//!
//! Install [`ProfiledAllocator`](crate::alloc::ProfiledAllocator) as the global allocator and every window of a running
//! [`Profiler`](crate::Profiler) also yields an allocation profile with Go's heap sample
//! types (`alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`) and the same
//! `span_id` / `span_name` labels as the CPU profile:
//!
//! ```no_run
//! use span_profiler::alloc::ProfiledAllocator;
//!
//! #[global_allocator]
//! static ALLOC: ProfiledAllocator = ProfiledAllocator::system();
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let profiler = span_profiler::Profiler::builder()
//!     .application_name("checkout")
//!     .alloc_sample_bytes(512 * 1024) // the default; 0 turns allocation profiles off
//!     .start()?;
//! // ... files `checkout-<pid>-<ms>.alloc.pb.gz` appear beside the CPU profiles.
//! profiler.stop()?;
//! # Ok(()) }
//! ```
//!
//! With a server address the allocation profiles are uploaded like the CPU profiles
//! (Push API or `/ingest`), as Pyroscope's `memory` profile types
//! (`memory:alloc_space:bytes:space:bytes` and siblings); OTLP export carries CPU profiles
//! only and counts the allocation windows it leaves out
//! ([`AllocStats::windows_not_exported`](crate::alloc::AllocStats::windows_not_exported)).
//!
//! How it works (see ARCHITECTURE.md, "Allocation profiles"):
//! - `countdown`: a per-thread byte countdown drawn from an exponential distribution
//!   (Go's sampling); the fast path is one subtraction and one branch.
//! - `records`: the sampled allocations' lock-free buffer, drained by the collector.
//! - `live`: sampled pointers not yet freed, with a filter that answers most `dealloc`s
//!   with one load.
//! - `window`: the collector's side: per-window totals and the in-use snapshot.

mod countdown;
mod live;

/// Serializes the unit tests that put pointers into the process-wide live table (they
/// count its entries).
#[cfg(test)]
static TEST_LIVE_TABLE: std::sync::Mutex<()> = std::sync::Mutex::new(());
mod records;
pub(crate) mod window;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Once;

use crate::counters::Counter;

/// Default sampling interval of allocation profiles: one sample per 512 KiB allocated on
/// average (Go's `runtime.MemProfileRate`).
pub const DEFAULT_ALLOC_SAMPLE_BYTES: u64 = 512 * 1024;

/// A global allocator that samples allocations for the running profiler and forwards
/// every call to `A`.
///
/// ```
/// use span_profiler::alloc::ProfiledAllocator;
///
/// #[global_allocator]
/// static ALLOC: ProfiledAllocator = ProfiledAllocator::system();
/// # fn main() { let v = vec![1u8; 4096]; assert_eq!(v.len(), 4096); }
/// ```
///
/// Any allocator can be wrapped (`ProfiledAllocator::new(mimalloc::MiMalloc)`). While no
/// profiler runs (or with [`alloc_sample_bytes(0)`](crate::ProfilerBuilder::alloc_sample_bytes))
/// it adds a subtraction and a branch to `alloc` and one load to `dealloc`. Its own
/// bookkeeping never allocates and takes no lock, so it never calls `A` re-entrantly.
///
/// The crate must be linked into the executable (static TLS), as for the CPU sampler.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProfiledAllocator<A: GlobalAlloc = System> {
    inner: A,
}

impl ProfiledAllocator<System> {
    /// The system allocator, profiled.
    pub const fn system() -> Self {
        Self { inner: System }
    }
}

impl<A: GlobalAlloc> ProfiledAllocator<A> {
    /// `inner`, profiled.
    pub const fn new(inner: A) -> Self {
        Self { inner }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

// SAFETY: every call is forwarded to `inner` with the caller's arguments unchanged; the
// bookkeeping around it only reads and writes this module's own atomics and const
// thread-locals and never touches the allocated memory.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ProfiledAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's duties for `GlobalAlloc::alloc` are passed on unchanged.
        let ptr = unsafe { self.inner.alloc(layout) };
        if countdown::charge(layout.size()) && !ptr.is_null() {
            sampled(ptr, layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if countdown::charge(layout.size()) && !ptr.is_null() {
            sampled(ptr, layout.size());
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Forget before freeing: once freed, another thread may get (and sample) the
        // same address.
        if live::maybe_tracked(ptr as usize) {
            live::forget(ptr as usize);
        }
        // SAFETY: the caller's duties for `GlobalAlloc::dealloc` are passed on unchanged.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Forgotten before the call (as in `dealloc`); if the realloc fails, the old
        // block stays allocated but untracked.
        if live::maybe_tracked(ptr as usize) {
            live::forget(ptr as usize);
        }
        // SAFETY: the caller's duties for `GlobalAlloc::realloc` are passed on unchanged.
        let new = unsafe { self.inner.realloc(ptr, layout, new_size) };
        // The new block is a new allocation of `new_size` bytes.
        if countdown::charge(new_size) && !new.is_null() {
            sampled(new, new_size);
        }
        new
    }
}

/// The sampling interval in bytes while a profiler records allocations; 0: not recording.
static SAMPLE_BYTES: AtomicU64 = AtomicU64::new(0);
/// The current recording session (changes at every start, so threads redraw).
static SESSION: AtomicU64 = AtomicU64::new(0);
/// Serials of sampled allocations (0 is "untracked").
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// What the allocator did (process-wide, monotonically increasing).
pub(crate) struct AllocCounters {
    /// Allocations sampled.
    pub(crate) sampled: Counter,
    /// Sampled allocations whose record found no free buffer entry (weight kept).
    pub(crate) dropped: Counter,
    /// Sampled allocations not tracked as live (their table neighbourhood was full).
    pub(crate) untracked: Counter,
    /// Allocation windows not uploaded because the profiler exports OTLP.
    pub(crate) not_exported: Counter,
}

pub(crate) static COUNTERS: AllocCounters = AllocCounters {
    sampled: Counter::new(),
    dropped: Counter::new(),
    untracked: Counter::new(),
    not_exported: Counter::new(),
};

/// What the profiled allocator did (in [`Stats::alloc`](crate::Stats::alloc)). Counters
/// are process-wide since the process started; `live_pointers` is a gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocStats {
    /// Allocations sampled.
    pub sampled: u64,
    /// Sampled allocations whose record found the buffer full: their stack is lost, their
    /// weight is kept (under the frame `dropped_allocation_records`, with their labels).
    pub dropped_records: u64,
    /// Sampled allocations not tracked as live (the table's neighbourhood was full):
    /// missing from `inuse_*`.
    pub untracked: u64,
    /// Sampled allocations tracked as live now.
    pub live_pointers: u64,
    /// Capacity of the live-pointer table.
    pub table_size: u64,
    /// Allocation windows not uploaded because the profiler exports OTLP
    /// ([`Protocol::Otlp`](crate::Protocol::Otlp) carries CPU profiles only); they are
    /// still written as files when an output directory is set. The Push API and
    /// `/ingest` upload every allocation window.
    pub windows_not_exported: u64,
}

impl AllocStats {
    /// The counters now.
    pub(crate) fn now() -> Self {
        Self {
            sampled: COUNTERS.sampled.get(),
            dropped_records: COUNTERS.dropped.get(),
            untracked: COUNTERS.untracked.get(),
            live_pointers: live::live(),
            table_size: live::CAPACITY as u64,
            windows_not_exported: COUNTERS.not_exported.get(),
        }
    }
}

/// The slow path: this thread's countdown crossed zero.
#[cold]
#[inline(never)]
fn sampled(ptr: *mut u8, size: usize) {
    let _ = countdown::guarded(|| {
        // Relaxed: a thread that sees the start or stop late samples a few more or
        // fewer bytes; records carry everything the collector needs.
        let mean = SAMPLE_BYTES.load(Relaxed);
        if mean == 0 {
            countdown::set_left(countdown::IDLE_CHECK_BYTES);
            return;
        }
        let session = SESSION.load(Relaxed);
        let drawn = countdown::switch_session(session);
        countdown::set_left(countdown::next_distance(mean));
        if drawn {
            record(ptr as usize, size, mean);
        }
        // Else: this thread's first crossing in this session only started its countdown.
    });
}

/// Frames of the recording path itself at the top of every stack (`stack_here`,
/// `record`, `sampled`, all `#[inline(never)]`): cut by the collector.
pub(crate) const OWN_FRAMES: usize = 3;

#[inline(never)]
fn record(ptr: usize, size: usize, mean: u64) {
    COUNTERS.sampled.incr();
    let (objects, bytes) = countdown::scale(size, mean);
    let label_id = crate::sampler::slot::current();
    // Relaxed: a unique number is all that is needed.
    let serial = SERIAL.fetch_add(1, Relaxed);
    // Inserted before the record is published: a collector that drains the record
    // then finds the pointer in the table (or its removal).
    let tracked = live::insert(ptr, serial);
    if !tracked {
        COUNTERS.untracked.incr();
    }
    let pushed = records::push(|r| {
        r.size = size;
        r.objects = objects;
        r.bytes = bytes;
        r.label_id = label_id;
        r.serial = if tracked { serial } else { 0 };
        r.len = crate::sampler::stack_here(&mut r.frames);
    });
    if !pushed {
        COUNTERS.dropped.incr();
        records::add_dropped(label_id, objects, bytes);
        if tracked {
            live::forget(ptr);
        }
    }
}

/// Starts recording with one sample per `sample_bytes` on average (0: does nothing).
pub(crate) fn start_recording(sample_bytes: u64) {
    static ATFORK: Once = Once::new();
    if sample_bytes == 0 {
        return;
    }
    ATFORK.call_once(|| {
        // SAFETY: `atfork_child` is an `extern "C" fn()` that only stores atomics and a
        // const thread-local, which is allowed in a forked child.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
        if rc != 0 {
            log::warn!(target: "span_profiler", "pthread_atfork failed ({rc}); a forked child keeps sampling allocations into a buffer nobody drains");
        }
    });
    // Relaxed: see `sampled`.
    SESSION.fetch_add(1, Relaxed);
    SAMPLE_BYTES.store(sample_bytes, Relaxed);
}

/// Stops recording (records already published stay for the final drain).
pub(crate) fn stop_recording() {
    // Relaxed: see `sampled`.
    SAMPLE_BYTES.store(0, Relaxed);
}

/// In a forked child no collector exists: recording stops there.
extern "C" fn atfork_child() {
    stop_recording();
    countdown::forget_session();
}
