//! The profiled allocator under load: 8 threads allocate, grow, zero, check and free
//! blocks of random sizes for 10 s at `alloc_sample_bytes(4096)` (many samples per
//! second, a busy live table). Every block is filled with a pattern and checked before it
//! is freed, so a tracking bug that corrupted memory would show; the run must not
//! deadlock; `fork()` in the middle gives a child that allocates and exits normally.

mod common;

use std::time::{Duration, Instant};

use span_profiler::alloc::ProfiledAllocator;
use span_profiler::{Labels, ProfiledExt, Profiler};

#[global_allocator]
static ALLOC: ProfiledAllocator = ProfiledAllocator::system();

const THREADS: u64 = 8;
const RUN: Duration = Duration::from_secs(10);

/// Checks a block's first and last 256 bytes against its fill byte.
fn check(fill: u8, v: &[u8]) {
    let n = v.len().min(256);
    assert!(
        v[..n].iter().chain(&v[v.len() - n..]).all(|&b| b == fill),
        "block corrupted"
    );
}

#[inline(never)]
fn churn(seed: u64, deadline: Instant) -> u64 {
    let mut rng = common::Rng::new(seed);
    let mut live: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            ops += 1;
            match rng.range(0, 4) {
                0 | 1 => {
                    let len = rng.range(1, 64 * 1024) as usize;
                    let fill = rng.range(1, 256) as u8;
                    live.push((fill, vec![fill; len]));
                }
                2 => {
                    // Zeroed memory stays zero; growing moves it (realloc).
                    let len = rng.range(1, 16 * 1024) as usize;
                    let mut v = vec![0u8; len];
                    check(0, &v);
                    v.resize(2 * len, 0);
                    check(0, &v);
                }
                _ => {
                    if !live.is_empty() {
                        let i = rng.range(0, live.len() as u64) as usize;
                        let (fill, v) = live.swap_remove(i);
                        check(fill, &v);
                    }
                }
            }
            if live.len() > 256 {
                live.truncate(128);
            }
        }
    }
    ops
}

/// Forks; the child allocates and frees for a while and exits 0. Waits at most 20 s.
fn fork_and_check_child() {
    // SAFETY: the child only allocates through the profiled allocator (whose state is
    // atomics and const thread-locals: usable after fork) and calls `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut total = 0usize;
        for i in 0..20_000 {
            let v = vec![i as u8; 1 + (i * 37) % 50_000];
            total = total.wrapping_add(v.len());
            std::hint::black_box(&v);
        }
        let code = if total > 0 { 0 } else { 1 };
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is writable.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child status {status:#x}"
            );
            return;
        }
        if Instant::now() > deadline {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child did not finish within 20 s (deadlock?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn eight_threads_churning_at_4_kib_sampling_never_deadlock_or_corrupt_and_fork_works() {
    let dir = common::temp_dir("alloc-stress");
    let profiler = Profiler::builder()
        .application_name("alloc-stress")
        .output_dir(&dir)
        .upload_interval(Duration::from_secs(2))
        .alloc_sample_bytes(4096)
        .start()
        .expect("start");
    let deadline = Instant::now() + RUN;
    let ops: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    let labels = Labels::span(0x100 + t, format!("churn-{}", t % 3));
                    if t % 2 == 0 {
                        rt.block_on(async move { churn(t, deadline) }.with_labels(labels))
                    } else {
                        churn(t, deadline)
                    }
                })
            })
            .collect();
        std::thread::sleep(RUN / 2);
        fork_and_check_child();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let stats = profiler.stats().alloc;
    let report = profiler.stop().expect("stop");
    eprintln!(
        "{ops} operations; {stats:?}; final {:?}",
        report.stats.alloc
    );
    assert!(stats.sampled > 10_000, "{stats:?}");
    assert!(stats.live_pointers <= stats.table_size);
    // Everything the workers allocated is freed: few tracked pointers remain (the
    // profiler's own and the test harness's).
    assert!(
        report.stats.alloc.live_pointers < 2_000,
        "{:?}",
        report.stats.alloc
    );
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".alloc.pb.gz"))
        .collect();
    assert!(!files.is_empty(), "no allocation profile written");
    let _ = std::fs::remove_dir_all(&dir);
}
