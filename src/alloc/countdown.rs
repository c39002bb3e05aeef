//! The per-thread byte countdown: which allocations are sampled.
//!
//! As Go's runtime does (`nextSample` in malloc.go), each thread counts down the bytes it
//! allocates from a distance drawn from an exponential distribution whose mean is the
//! sampling interval; the allocation that crosses zero is sampled and a new distance is
//! drawn. Sampling is then a Poisson process over allocated bytes: an allocation of `s`
//! bytes is sampled with probability `1 - exp(-s / mean)`, independent of how the program
//! splits its allocations, which is what makes the estimate in [`scale`] unbiased.
//!
//! Every thread-local here is `const`-initialised and has no destructor: no lazy
//! initialisation (which could allocate) and usable while a thread is being torn down.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

thread_local! {
    /// Bytes left before this thread's next sample; the fast path subtracts from it.
    static LEFT: Cell<i64> = const { Cell::new(0) };
    /// The recording session this thread's countdown was drawn for (0: none).
    static SESSION: Cell<u64> = const { Cell::new(0) };
    /// This thread's random state (0: not seeded yet).
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// True while this thread runs the allocator's own bookkeeping.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Distance between two checks of whether a recording started, while none runs.
pub(super) const IDLE_CHECK_BYTES: i64 = 256 * 1024;

/// The fast path: charges `size` bytes to this thread's countdown. True when it crossed
/// zero (the caller then takes the slow path). One subtraction and one branch.
#[inline(always)]
pub(super) fn charge(size: usize) -> bool {
    LEFT.with(|left| {
        let n = left.get().wrapping_sub(size as i64);
        left.set(n);
        n < 0
    })
}

/// Sets this thread's countdown.
pub(super) fn set_left(bytes: i64) {
    LEFT.with(|left| left.set(bytes));
}

/// Runs `f` unless this thread is already inside the allocator's bookkeeping (then
/// `None`): the reentrancy guard.
#[inline]
pub(super) fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    if BUSY.with(Cell::get) {
        return None;
    }
    BUSY.with(|b| b.set(true));
    let r = f();
    BUSY.with(|b| b.set(false));
    Some(r)
}

/// Whether this thread's countdown was drawn for `session`; records `session` as drawn.
pub(super) fn switch_session(session: u64) -> bool {
    SESSION.with(|s| {
        let same = s.get() == session;
        s.set(session);
        same
    })
}

/// Forgets the thread's session (in a forked child: the next recording redraws).
pub(super) fn forget_session() {
    SESSION.with(|s| s.set(0));
}

/// A distance to the next sample: exponential with mean `mean` bytes, at least 1.
pub(super) fn next_distance(mean: u64) -> i64 {
    // Uniform in (0, 1], 53 bits.
    let u = ((next_random() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let d = -u.ln() * mean as f64;
    // `as` saturates; the cap keeps `charge`'s subtraction far from overflow.
    (d as i64).clamp(1, i64::MAX / 4)
}

/// xorshift64* per thread, seeded from the thread-local's address and a process-wide
/// sequence (no system call, no allocation).
fn next_random() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    RNG.with(|rng| {
        let mut x = rng.get();
        if x == 0 {
            // Relaxed: any distinct value will do.
            let seq = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
            x = (rng as *const Cell<u64> as u64) ^ seq.rotate_left(17) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// What one sampled allocation of `size` bytes stands for at sampling interval `mean`:
/// (objects, bytes). The probability to sample it was `p = 1 - exp(-size / mean)`, so
/// it counts as `1 / p` allocations (Go's `scaleHeapSample`).
pub(super) fn scale(size: usize, mean: u64) -> (f64, f64) {
    if size == 0 || mean <= 1 {
        return (1.0, size as f64);
    }
    let p = 1.0 - (-(size as f64) / mean as f64).exp();
    if p <= 0.0 {
        return (1.0, size as f64);
    }
    (1.0 / p, size as f64 / p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_average_to_the_mean() {
        let n = 200_000;
        let mean = 64 * 1024;
        let sum: f64 = (0..n).map(|_| next_distance(mean) as f64).sum();
        let avg = sum / n as f64;
        assert!((avg / mean as f64 - 1.0).abs() < 0.01, "average {avg}");
    }

    #[test]
    fn small_allocations_weigh_about_the_interval_and_large_ones_themselves() {
        let (objects, bytes) = scale(16, 512 * 1024);
        assert!(
            (bytes - 512.0 * 1024.0).abs() / (512.0 * 1024.0) < 0.001,
            "{bytes}"
        );
        assert!(objects > 30_000.0);
        let (objects, bytes) = scale(64 << 20, 512 * 1024);
        assert!((objects - 1.0).abs() < 1e-9);
        assert!((bytes - (64u64 << 20) as f64).abs() < 1.0);
    }

    #[test]
    fn the_guard_refuses_reentry() {
        let inner = guarded(|| guarded(|| 1));
        assert_eq!(inner, Some(None));
        assert_eq!(guarded(|| 2), Some(2));
    }
}
