//! Objects loaded and unloaded while the sampler runs: a library `dlopen`ed after start
//! is unwound through by its own call-frame information once the collector's next tick
//! rebuilt the tables, and `dlclose` while sampling at 1 kHz never crashes the handler
//! (the tables hold compiled rows, never pointers into an object's memory).
//!
//! The library is the system's zlib (`libz.so.1`, Debian `zlib1g`, built without frame
//! pointers), which this test binary does not link: its `crc32` is the CPU-heavy leaf.

mod sampler_common;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sampler_common::{holds, sampler_lock, spin_for, thread_cpu, Collector, Symbols};
use span_profiler::__private::SamplerConfig;

/// zlib's `uLong crc32(uLong crc, const Bytef *buf, uInt len)`.
type Crc32 = unsafe extern "C" fn(u64, *const u8, u32) -> u64;

struct Libz {
    handle: *mut c_void,
    crc32: Crc32,
}

impl Libz {
    fn open() -> Libz {
        // SAFETY: a NUL-terminated name; `dlopen` has no other preconditions.
        let handle =
            unsafe { libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(
            !handle.is_null(),
            "dlopen(libz.so.1) failed: install zlib1g"
        );
        // SAFETY: `handle` is a live handle; a NUL-terminated symbol name.
        let sym = unsafe { libc::dlsym(handle, c"crc32".as_ptr()) };
        assert!(!sym.is_null(), "libz.so.1 has no crc32");
        // SAFETY: zlib's documented `crc32` signature.
        let crc32 = unsafe { std::mem::transmute::<*mut c_void, Crc32>(sym) };
        Libz { handle, crc32 }
    }

    /// Whether `pc` lies in this library (by `dladdr`, while it is loaded).
    fn contains(&self, pc: usize) -> bool {
        // SAFETY: zero is a valid `Dl_info`; `dladdr` fills it.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: any address may be asked about; `info` is a valid out-pointer.
        if unsafe { libc::dladdr(pc as *const c_void, &mut info) } == 0 || info.dli_fname.is_null()
        {
            return false;
        }
        // SAFETY: a non-null `dli_fname` is a NUL-terminated string of the loader.
        let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        name.to_string_lossy().contains("libz.so")
    }
}

impl Drop for Libz {
    fn drop(&mut self) {
        // SAFETY: `handle` came from `dlopen` and is closed once.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// Checksums `buf` in zlib until `cpu` of this thread's CPU time is spent.
#[inline(never)]
fn checksum_in_libz(crc32: Crc32, buf: &[u8], cpu: Duration) -> u64 {
    let mut crc = 0u64;
    let start = thread_cpu();
    while thread_cpu() - start < cpu {
        // SAFETY: `buf` is valid for `buf.len()` bytes (below 4 GiB).
        crc = unsafe { crc32(crc, buf.as_ptr(), buf.len() as u32) };
    }
    std::hint::black_box(crc)
}

#[test]
fn a_library_loaded_after_start_is_unwound_through_its_own_cfi_after_one_collector_tick() {
    let _lock = sampler_lock();
    let collector = Collector::start(SamplerConfig {
        sample_rate_hz: 1000,
        ..SamplerConfig::default()
    });
    // Let this thread's stack bounds be published (its first samples record the leaf
    // only) before the library exists.
    spin_for(Duration::from_millis(200), |i| {
        std::hint::black_box(i.wrapping_mul(3))
    });
    std::thread::sleep(Duration::from_millis(250));
    let libz = Libz::open();
    // One collector tick (100 ms) with a margin.
    std::thread::sleep(Duration::from_millis(250));
    let buf = vec![7u8; 256 * 1024];
    checksum_in_libz(libz.crc32, &buf, Duration::from_millis(1500));
    let (samples, stats) = collector.finish();

    let caller = Symbols::load().range_of(checksum_in_libz as Crc32Caller as usize);
    let in_libz: Vec<_> = samples
        .iter()
        .filter(|s| s.frames.first().is_some_and(|&pc| libz.contains(pc)))
        .collect();
    let through = in_libz.iter().filter(|s| holds(&s.frames, &caller)).count();
    eprintln!(
        "{through} of {} samples in libz reach checksum_in_libz; rebuilds {}, objects {}",
        in_libz.len(),
        stats.unwind_table_rebuilds,
        stats.unwind_objects
    );
    assert!(
        in_libz.len() >= 30,
        "only {} samples in libz",
        in_libz.len()
    );
    assert!(
        through * 100 >= in_libz.len() * 95,
        "only {through} of {} samples in libz reach their caller",
        in_libz.len()
    );
    assert!(stats.unwind_table_rebuilds >= 2, "{stats:?}");
}

/// `checksum_in_libz`'s type, to take its address.
type Crc32Caller = fn(Crc32, &[u8], Duration) -> u64;

#[test]
fn dlclose_while_sampling_at_1khz_never_crashes_the_handler() {
    let _lock = sampler_lock();
    let collector = Collector::start(SamplerConfig {
        sample_rate_hz: 1000,
        ..SamplerConfig::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..1)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let buf = vec![1u8; 64 * 1024];
                let mut cycles = 0u64;
                while !stop.load(Relaxed) {
                    let libz = Libz::open();
                    checksum_in_libz(libz.crc32, &buf, Duration::from_millis(10));
                    drop(libz);
                    cycles += 1;
                }
                cycles
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Relaxed);
    let cycles: u64 = loops.into_iter().map(|t| t.join().unwrap()).sum();
    let (samples, stats) = collector.finish();
    eprintln!(
        "{cycles} open/close cycles, {} samples, {} table rebuilds",
        samples.len(),
        stats.unwind_table_rebuilds
    );
    assert!(cycles >= 10, "only {cycles} open/close cycles");
    assert!(samples.len() >= 30, "only {} samples", samples.len());
    assert!(stats.unwind_table_rebuilds >= 3, "{stats:?}");
}
