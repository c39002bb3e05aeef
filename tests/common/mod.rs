//! Shared helpers for the integration tests: CPU burners, thread CPU clocks, profile
//! loading, external tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use span_profiler::__private::pprof::{decode, samples, validate, Profile, SampleView};

/// Serialises the tests of one binary that start the (process-wide) profiler.
pub fn profiler_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spins on the calling thread until it has used `cpu` of CPU time.
#[inline(never)]
pub fn spin_cpu(cpu: Duration) {
    let start = thread_cpu();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while thread_cpu() - start < cpu {
        for _ in 0..200 {
            x = std::hint::black_box(x.rotate_left(7) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
    }
    std::hint::black_box(x);
}

/// A tiny deterministic PRNG (xorshift64*), enough to randomise slice lengths.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (hi - lo)
    }
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("span-profiler-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `*.pb.gz` files in `dir`, sorted by name.
pub fn profile_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".pb.gz")))
        .collect();
    files.sort();
    files
}

/// Decodes and validates (every server rule) each profile file in `dir`.
pub fn load_profiles(dir: &Path) -> Vec<(PathBuf, Profile)> {
    profile_files(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            let profile = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            validate(&profile).unwrap_or_else(|e| panic!("{}: invalid: {e}", path.display()));
            (path, profile)
        })
        .collect()
}

/// Every sample of every profile in `dir`.
pub fn all_samples(dir: &Path) -> Vec<SampleView> {
    load_profiles(dir)
        .iter()
        .flat_map(|(_, p)| samples(p))
        .collect()
}

/// Path of an external tool, or `None` (test skipped) when missing; with
/// `SPAN_PROFILER_REQUIRE_TOOLS=1` a missing tool fails the test instead.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("SPAN_PROFILER_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("`{name}` is required (SPAN_PROFILER_REQUIRE_TOOLS=1) but not on PATH");
        }
        eprintln!("SKIPPED: `{name}` is not installed");
    }
    found
}

/// Runs `go tool pprof <args>` and returns its stdout, failing the test on error.
pub fn go_pprof(go: &Path, args: &[&str]) -> String {
    let out = Command::new(go)
        .arg("tool")
        .arg("pprof")
        .args(args)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("running go tool pprof");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
