//! Exponential backoff with jitter that only lengthens: every delay is within
//! `[min, max]`, and the `n`-th delay is at least `min * 2^n` (capped at `max`).

use std::time::Duration;

/// Delays between attempts of one piece.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    /// The un-jittered delay of the next retry.
    next: Duration,
}

impl Backoff {
    /// `min <= max` is checked by the builder.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt. A server's `Retry-After` raises it (still within
    /// `max`). Jitter adds up to half the base delay, never subtracts.
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.max);
        let jitter = base.mul_f64(fastrand::f64() * 0.5);
        let delay = base
            .saturating_add(jitter)
            .max(retry_after.unwrap_or_default());
        delay.clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_min_and_max() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1_000));
        for _ in 0..200 {
            let mut b = Backoff::new(min, max);
            let delays: Vec<Duration> = (0..8).map(|_| b.next_delay(None)).collect();
            for (i, d) in delays.iter().enumerate() {
                assert!(*d >= min && *d <= max, "{d:?}");
                let floor = (min * 2u32.pow(i as u32)).min(max);
                assert!(*d >= floor, "delay {i} = {d:?} is below {floor:?}");
            }
            assert_eq!(delays[7], max);
        }
    }

    #[test]
    fn retry_after_lengthens_but_never_beyond_max() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_secs(2));
        assert!(b.next_delay(Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let min = Duration::from_millis(100);
        let distinct: std::collections::HashSet<Duration> = (0..50)
            .map(|_| Backoff::new(min, min * 10).next_delay(None))
            .collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }
}
