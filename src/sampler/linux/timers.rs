//! Per-thread CPU-time timers, the SIGPROF disposition, and the main-program check.

use std::io;

/// A POSIX timer id (`timer_t`), kept as an integer so it can cross threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerId(usize);

/// Why arming failed.
#[derive(Debug)]
pub(crate) enum ArmError {
    /// `EINVAL`: the thread already exited (normal under churn).
    Gone,
    /// `EAGAIN`: RLIMIT_SIGPENDING is exhausted.
    Again,
    /// Anything else.
    Other(io::Error),
}

/// The CPU clock of thread `tid` of this process (CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD).
pub(crate) fn thread_cpu_clock(tid: i32) -> libc::clockid_t {
    ((!(tid as libc::clockid_t)) << 3) | 6
}

/// Creates a timer on `tid`'s CPU clock that sends SIGPROF to `tid` with `cookie` every
/// `interval_ns` of that thread's CPU time.
pub(crate) fn arm(tid: i32, cookie: u64, interval_ns: u64) -> Result<TimerId, ArmError> {
    // SAFETY: `sigevent` is plain data; all-zero is a valid value before we fill it.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = libc::SIGPROF;
    sev.sigev_value = libc::sigval {
        sival_ptr: cookie as usize as *mut libc::c_void,
    };
    sev.sigev_notify_thread_id = tid;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: valid pointers to a filled `sigevent` and an out-parameter.
    if unsafe { libc::timer_create(thread_cpu_clock(tid), &mut sev, &mut timer) } != 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ESRCH) => ArmError::Gone,
            Some(libc::EAGAIN) => ArmError::Again,
            _ => ArmError::Other(err),
        });
    }
    let id = TimerId(timer as usize);
    let period = libc::timespec {
        tv_sec: (interval_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (interval_ns % 1_000_000_000) as libc::c_long,
    };
    let spec = libc::itimerspec {
        it_interval: period,
        it_value: period,
    };
    // SAFETY: `timer` was just created; `spec` is valid; no old value wanted.
    if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
        let err = io::Error::last_os_error();
        delete(id);
        return Err(ArmError::Other(err));
    }
    Ok(id)
}

/// Deletes a timer (also one whose thread exited). A signal already queued may still be
/// delivered afterwards; the handler ignores it by cookie once the session ends.
pub(crate) fn delete(timer: TimerId) {
    // SAFETY: `timer` came from `timer_create` and is deleted once (the owner forgets it).
    unsafe { libc::timer_delete(timer.0 as libc::timer_t) };
}

/// What SIGPROF is set to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// `SIG_DFL` or `SIG_IGN`: free to take.
    Default,
    /// Our handler.
    Ours,
    /// Someone else's handler.
    Foreign,
}

fn our_handler() -> usize {
    super::handler::on_sigprof as *const () as usize
}

/// Reads the SIGPROF disposition.
pub(crate) fn disposition() -> io::Result<Disposition> {
    // SAFETY: `sigaction` is plain data; zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    if unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match old.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => Disposition::Default,
        h if h == our_handler() => Disposition::Ours,
        _ => Disposition::Foreign,
    })
}

/// Installs our handler with `SA_SIGINFO | SA_RESTART`, nothing masked.
///
/// Not `SA_ONSTACK`: the handler runs on the interrupted thread's own stack. Std gives
/// each thread an 8 KiB alternate signal stack, and on a CPU with AVX-512 the kernel's
/// signal frame alone takes about 3 KiB of it; an unoptimised (debug) build of the
/// handler and the unwinder needs more than the rest and faulted in the guard page. A
/// thread's own stack has megabytes; running there is what gperftools and
/// async-profiler do too.
pub(crate) fn install() -> io::Result<()> {
    // SAFETY: `sigaction` is plain data; zero is a valid value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = our_handler();
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid `sigset_t` to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: a valid action; the handler is async-signal-safe (see `handler`).
    if unsafe { libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_cpu_clock_of_this_thread_matches_pthread_getcpuclockid() {
        // SAFETY: `gettid` has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let mut clock: libc::clockid_t = 0;
        // SAFETY: valid out-pointer; `pthread_self` is this thread.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        assert_eq!(rc, 0);
        assert_eq!(thread_cpu_clock(tid), clock);
    }
}
