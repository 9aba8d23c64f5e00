//! Reconnect delays: exponential, capped, with jitter from an injected seeded RNG.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Delays between reconnect attempts of one link.
///
/// The n-th consecutive failure waits a random time in `[cap / 2, cap]` where
/// `cap = min(max_delay_ms, base_delay_ms * 2^n)` ("equal jitter"): the lower half keeps a
/// failing peer from being hammered, the random upper half spreads the reconnects of many links
/// that failed together. The RNG is seeded by the caller, so a test replays the same delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_delay_ms: u64,
    max_delay_ms: u64,
    failures: u32,
    rng: StdRng,
}

impl Backoff {
    /// A backoff starting at `base_delay_ms` (at least 1) and capped at `max_delay_ms`.
    pub fn new(base_delay_ms: u64, max_delay_ms: u64, seed: u64) -> Self {
        let base_delay_ms = base_delay_ms.max(1);
        Backoff {
            base_delay_ms,
            max_delay_ms: max_delay_ms.max(base_delay_ms),
            failures: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay_ms(&mut self) -> u64 {
        // 2^20 times any sane base is past any sane cap, and keeps the shift from overflowing.
        let exponent = self.failures.min(20);
        let cap = self
            .base_delay_ms
            .saturating_mul(1 << exponent)
            .min(self.max_delay_ms);
        self.failures = self.failures.saturating_add(1);
        let half = cap / 2;
        half + self.rng.random_range(0..=cap - half)
    }

    /// Consecutive failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Called once a session got going: the next failure waits the base delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_their_jitter_band() {
        let mut backoff = Backoff::new(100, 5_000, 7);
        let mut caps = Vec::new();
        for failure in 0..12u32 {
            let cap = (100u64 << failure).min(5_000);
            let delay = backoff.next_delay_ms();
            assert!(
                (cap / 2..=cap).contains(&delay),
                "failure {failure}: {delay} outside [{}, {cap}]",
                cap / 2
            );
            caps.push(cap);
        }
        assert_eq!(caps.last(), Some(&5_000));
        backoff.reset();
        assert!(backoff.next_delay_ms() <= 100);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_another_seed_differs() {
        let delays = |seed| {
            let mut backoff = Backoff::new(50, 60_000, seed);
            (0..16).map(|_| backoff.next_delay_ms()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut backoff = Backoff::new(u64::MAX / 2, u64::MAX, 3);
        for _ in 0..100 {
            assert!(backoff.next_delay_ms() >= u64::MAX / 4);
        }
        assert_eq!(backoff.failures(), 100);
    }
}
