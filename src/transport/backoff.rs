//! Reconnect delays of the transporters: exponential with jitter, so agents
//! cut off together (a backend restart) do not all come back in the same
//! second.

use std::time::Duration;

/// Reconnect delays: `initial` doubling up to `max`; each delay is drawn in
/// [d/2, d] ("equal jitter") so agents cut off together (backend restart)
/// do not all come back in the same second.
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

pub fn jitter(base: Duration, r: u64) -> Duration {
    let half = base / 2;
    let span = (base - half).as_nanos().min(u64::MAX as u128) as u64;
    half + Duration::from_nanos(r % span.saturating_add(1))
}

/// A random non-zero seed (xorshift needs one).
fn seed() -> u64 {
    crate::entropy::entropy_u64() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let bases = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for base in bases {
            let d = b.next_delay();
            let base = Duration::from_secs(base);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        assert_eq!(jitter(Duration::from_secs(10), 0), Duration::from_secs(5));
        assert_eq!(
            jitter(Duration::from_secs(10), u64::MAX),
            Duration::from_secs(5) + Duration::from_nanos(u64::MAX % 5_000_000_001)
        );
        assert_eq!(jitter(Duration::ZERO, 7), Duration::ZERO);
        // Absurd settings do not overflow or panic.
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        b.next_delay();
        b.next_delay();
    }
}
