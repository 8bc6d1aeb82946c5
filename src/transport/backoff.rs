//! Reconnect delays of the transporters: exponential with jitter, so agents
//! cut off together (a backend restart) do not all come back in the same
//! second.

use std::time::Duration;

/// Reconnect delays: `initial` doubling up to `max`; each delay is drawn in
/// [0, d] ("full jitter") so a fleet of agents cut off together (a backend
/// restart) spreads its reconnections over the whole window instead of
/// coming back in one burst, and an agent is never more than `max` late.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
            rng: seed(),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.max);
        jitter(base, self.random())
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// xorshift64*: plenty for spreading reconnects; no crate needed.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A delay drawn in [0, base] from the random `r`.
pub fn jitter(base: Duration, r: u64) -> Duration {
    let span = base.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(r % span.saturating_add(1))
}

/// A random non-zero seed (xorshift needs one).
fn seed() -> u64 {
    crate::entropy::entropy_u64() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_full_jitter_capped_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let bases = [1, 2, 4, 8, 8, 8];
        for base in bases {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(base), "{d:?} over {base} s");
        }
        // At the cap the delays spread over the whole window (a fleet does
        // not come back in one burst) and never exceed it.
        let draws: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(draws.iter().any(|d| *d < Duration::from_secs(1)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(7)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        assert_eq!(jitter(Duration::from_secs(10), 0), Duration::ZERO);
        assert_eq!(
            jitter(Duration::from_secs(10), u64::MAX),
            Duration::from_nanos(u64::MAX % 10_000_000_001)
        );
        assert_eq!(jitter(Duration::ZERO, 7), Duration::ZERO);
        // Absurd settings do not overflow or panic.
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        b.next_delay();
        b.next_delay();
    }
}
