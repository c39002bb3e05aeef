//! Lifecycle: start/stop cycles leave nothing behind, stray SIGPROFs are ignored, foreign
//! handlers are refused or detected, a forked child is inert.

mod sampler_common;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use sampler_common::{sampler_lock, spin_for, thread_count, timer_count};
use span_profiler::__private::{Sampler, SamplerConfig};
use span_profiler::StartError;

fn config(rate: u32) -> SamplerConfig {
    SamplerConfig {
        sample_rate_hz: rate,
        ..Default::default()
    }
}

/// A thread that burns CPU until dropped, so timers really fire.
struct Busy(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Busy {
    fn new() -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Relaxed) {
                spin_for(Duration::from_millis(1), |x| {
                    x.wrapping_mul(3).wrapping_add(1)
                });
            }
        });
        Busy(stop, Some(handle))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
        self.1.take().unwrap().join().unwrap();
    }
}

extern "C" fn foreign_handler(_signo: libc::c_int) {}

/// Installs `foreign_handler` for SIGPROF; returns the previous action.
fn install_foreign() -> libc::sigaction {
    // SAFETY: plain data; zero is valid.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = foreign_handler as *const () as usize;
    // SAFETY: plain data; zero is valid.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; the handler does nothing.
    let rc = unsafe { libc::sigaction(libc::SIGPROF, &action, &mut old) };
    assert_eq!(rc, 0);
    old
}

fn restore(old: &libc::sigaction) {
    // SAFETY: `old` came from `sigaction`.
    let rc = unsafe { libc::sigaction(libc::SIGPROF, old, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
}

#[test]
fn twenty_start_stop_cycles_leave_no_extra_threads_and_no_timers() {
    let _lock = sampler_lock();
    let busy = Busy::new();
    let threads_before = thread_count();
    assert_eq!(timer_count(), 0);
    let mut samples = 0;
    for cycle in 0..20 {
        let mut sampler = Sampler::start(config(1000)).expect("start");
        // Every live thread is armed. Counted after start: other tests' harness threads
        // may exit meanwhile (their timers stay until the next scan, so this holds).
        let live = thread_count();
        assert!(
            timer_count() >= live,
            "cycle {cycle}: {} timers for {live} threads",
            timer_count()
        );
        spin_for(Duration::from_millis(20), |x| {
            x ^ (x << 1).wrapping_add(cycle)
        });
        sampler.maintain();
        sampler.drain(&mut |_| samples += 1);
        let stats = sampler.stop();
        assert_eq!(stats.arm_failures_other, 0);
        assert_eq!(timer_count(), 0, "cycle {cycle}: timers left after stop");
        assert!(
            thread_count() <= threads_before,
            "cycle {cycle}: threads left after stop"
        );
    }
    drop(busy);
    assert!(samples > 0, "the cycles recorded nothing");
}

#[test]
fn sigprof_from_kill_or_raise_is_ignored_during_and_after_a_session() {
    let _lock = sampler_lock();
    let mut sampler = Sampler::start(config(100)).expect("start");
    for _ in 0..5 {
        // SAFETY: our handler is installed; it ignores signals not from a timer. `raise`
        // is handled before it returns.
        unsafe { libc::raise(libc::SIGPROF) };
        // `kill` targets the process: its signal may still be pending on another thread
        // when the next is sent, and the two would merge. Wait until it was handled.
        let before = sampler.stats().ignored_not_timer;
        // SAFETY: as above.
        unsafe { libc::kill(libc::getpid(), libc::SIGPROF) };
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while sampler.stats().ignored_not_timer == before && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    let mut recorded = 0;
    sampler.drain(&mut |_| recorded += 1);
    let stats = sampler.stop();
    assert!(
        stats.ignored_not_timer >= 10,
        "ignored {}",
        stats.ignored_not_timer
    );
    assert_eq!(recorded, stats.samples as usize);
    // After stop the handler stays installed (never SIG_DFL, which would kill us).
    // SAFETY: as above.
    unsafe { libc::raise(libc::SIGPROF) };
}

#[test]
fn a_foreign_handler_installed_before_start_is_refused_with_a_clear_error() {
    let _lock = sampler_lock();
    let old = install_foreign();
    let err = Sampler::start(config(100)).expect_err("must refuse");
    restore(&old);
    assert!(matches!(err, StartError::ForeignSignalHandler), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("another SIGPROF handler"), "{message}");
    // Nothing was left half-started.
    assert_eq!(timer_count(), 0);
    Sampler::start(config(100))
        .expect("starts once the foreign handler is gone")
        .stop();
}

#[test]
fn a_handler_replaced_during_a_session_is_detected_and_timers_are_deleted() {
    let _lock = sampler_lock();
    let mut sampler = Sampler::start(config(100)).expect("start");
    assert!(timer_count() > 0);
    let old = install_foreign();
    sampler.maintain();
    let stats = sampler.stats();
    assert!(stats.handler_replaced);
    assert_eq!(
        timer_count(),
        0,
        "timers must be deleted once our handler is gone"
    );
    // New threads are not armed any more.
    std::thread::spawn(|| {}).join().unwrap();
    sampler.maintain();
    assert_eq!(timer_count(), 0);
    sampler.stop();
    restore(&old);
}

#[test]
fn a_second_start_while_one_runs_is_refused() {
    let _lock = sampler_lock();
    let sampler = Sampler::start(config(100)).expect("start");
    assert!(matches!(
        Sampler::start(config(100)),
        Err(StartError::AlreadyRunning)
    ));
    sampler.stop();
    Sampler::start(config(100))
        .expect("start after stop")
        .stop();
}

#[test]
fn an_out_of_range_rate_is_refused() {
    let _lock = sampler_lock();
    let err = Sampler::start(config(0)).expect_err("0 Hz");
    assert!(err.to_string().contains("sample_rate_hz"), "{err}");
    assert!(Sampler::start(config(1_000_000)).is_err());
}

#[test]
fn a_forked_child_is_inert_and_can_start_its_own_session() {
    let _lock = sampler_lock();
    let busy = Busy::new();
    let sampler = Sampler::start(config(1000)).expect("start");
    // SAFETY: the child only burns CPU, starts/stops a sampler and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Child: no timers were inherited; the parent's session must not run here.
        let code = if timer_count() != 0 {
            10
        } else {
            spin_for(Duration::from_millis(50), |x| x.wrapping_add(5));
            match Sampler::start(config(1000)) {
                Ok(child) => {
                    spin_for(Duration::from_millis(50), |x| x.wrapping_add(7));
                    let stats = child.stop();
                    if timer_count() == 0 && stats.threads_armed == 0 {
                        0
                    } else {
                        11
                    }
                }
                Err(_) => 12,
            }
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0);
    // The parent keeps profiling: samples keep arriving after the fork.
    let mut sampler = sampler;
    sampler.drain(&mut |_| {});
    let before = sampler.stats().samples;
    spin_for(Duration::from_millis(300), |x| x.wrapping_add(9));
    sampler.maintain();
    sampler.drain(&mut |_| {});
    let after_fork = sampler.stats().samples - before;
    assert!(after_fork > 0, "the parent stopped sampling after fork()");
    let stats = sampler.stop();
    drop(busy);
    assert!(stats.threads_armed == 0 && timer_count() == 0);
}

#[test]
fn a_thread_that_calls_arm_current_thread_has_its_timer_before_any_scan() {
    let _serial = sampler_lock();
    // No collector runs beside this bare session: after `start`'s own scan, only the
    // threads themselves can create timers.
    let mut sampler = Sampler::start(config(100)).expect("start");
    let baseline = timer_count();
    let armed = std::thread::spawn(move || {
        span_profiler::arm_current_thread();
        let once = timer_count();
        span_profiler::arm_current_thread();
        (once, timer_count())
    })
    .join()
    .unwrap();
    assert_eq!(
        armed,
        (baseline + 1, baseline + 1),
        "one timer for the thread that asked, and only one however often it asks"
    );
    // The exited thread's timer stays listed until a scan deletes it.
    let listed = timer_count();
    let unarmed = std::thread::spawn(timer_count).join().unwrap();
    assert_eq!(
        unarmed, listed,
        "a thread that did not ask waits for a scan"
    );
    sampler.maintain();
    assert_eq!(sampler.stats().armed_by_thread, 1);
    sampler.stop();
    // With no session running, the call does nothing.
    let after = timer_count();
    std::thread::spawn(span_profiler::arm_current_thread)
        .join()
        .unwrap();
    assert_eq!(timer_count(), after);
}

/// Runs `work` on this thread with a one-page alternate signal stack above a guard page,
/// then takes the alternate stack down again.
fn with_tiny_alternate_stack<T>(work: impl FnOnce() -> T) -> T {
    const PAGE: usize = 4096;
    // SAFETY: an anonymous private mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    // SAFETY: the first page of the mapping made above.
    assert_eq!(unsafe { libc::mprotect(base, PAGE, libc::PROT_NONE) }, 0);
    let stack = libc::stack_t {
        // SAFETY: inside the mapping.
        ss_sp: unsafe { base.cast::<u8>().add(PAGE) }.cast(),
        ss_flags: 0,
        ss_size: PAGE,
    };
    // SAFETY: `stack` describes mapped, writable memory that outlives its use below.
    let rc = unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let out = work();
    let off = libc::stack_t {
        ss_sp: std::ptr::null_mut(),
        ss_flags: libc::SS_DISABLE,
        ss_size: 0,
    };
    // SAFETY: disables this thread's alternate stack; then nothing refers to the mapping.
    unsafe {
        assert_eq!(libc::sigaltstack(&off, std::ptr::null_mut()), 0);
        libc::munmap(base, 2 * PAGE);
    }
    out
}

#[test]
fn a_thread_with_a_one_page_alternate_signal_stack_is_sampled_without_faulting() {
    let _serial = sampler_lock();
    let collector = sampler_common::Collector::start(config(1000));
    let tid = std::thread::spawn(|| {
        with_tiny_alternate_stack(|| {
            span_profiler::arm_current_thread();
            spin_for(Duration::from_millis(300), |x| {
                x.wrapping_mul(7).wrapping_add(3)
            });
            // SAFETY: `gettid` has no preconditions.
            unsafe { libc::gettid() }
        })
    })
    .join()
    .expect("the thread ran to its end");
    let (samples, _) = collector.finish();
    let sampled = samples.iter().filter(|s| s.tid == tid).count();
    assert!(
        sampled >= 10,
        "only {sampled} samples of the thread with the small alternate stack"
    );
}
