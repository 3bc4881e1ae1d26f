//! The one retry backoff of the project: capped exponential with full jitter.
//!
//! Plain state, no clock and no RNG of its own: the caller passes a random number, so tests
//! (and simulations) are deterministic.

use std::time::Duration;

/// Capped exponential backoff with full jitter (AWS "full jitter": uniform in [0, ceiling]).
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// `base` is the ceiling of the first retry, `cap` the largest ceiling ever used.
    pub fn new(base: Duration, cap: Duration) -> Self {
        assert!(
            !base.is_zero() && base <= cap,
            "backoff needs 0 < base <= cap"
        );
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        // 2^attempt saturates long before u32 overflow matters: the cap bounds it anyway.
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt, given a uniformly random `random`.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling().as_millis() as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(random % (ceiling + 1))
    }

    /// After a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let ceilings: Vec<u64> = (0..12)
            .map(|_| {
                let c = b.ceiling().as_millis() as u64;
                let d = b.next_delay(u64::MAX).as_millis() as u64;
                assert!(d <= c);
                c
            })
            .collect();
        assert_eq!(&ceilings[..4], &[100, 200, 400, 800]);
        assert_eq!(*ceilings.last().unwrap_or(&0), 30_000, "capped");
        for _ in 0..100 {
            b.next_delay(7);
        }
        assert_eq!(
            b.ceiling(),
            Duration::from_secs(30),
            "no overflow after many attempts"
        );
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert_eq!(b.next_delay(0), Duration::ZERO, "full jitter reaches zero");
    }
}
