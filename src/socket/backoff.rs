//! Reconnect delays.

use std::time::Duration;

/// pm2-axon's reconnect schedule: 100 ms, then ×1.5 (rounded) up to 5 s,
/// back to 100 ms after a successful connect (docs/protocols.md §2.1).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: f64,
    max: f64,
    /// Kept unrounded, like the JS `delay` variable; rounded when used.
    next: f64,
}

impl Backoff {
    pub fn axon() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.as_millis().max(1) as f64;
        Backoff {
            initial,
            max: max.as_millis() as f64,
            next: initial,
        }
    }

    /// The delay to wait now; grows the next one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.round() as u64;
        self.next = (self.next * 1.5).min(self.max);
        Duration::from_millis(d)
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axon_schedule() {
        let mut b = Backoff::axon();
        let got: Vec<u64> = (0..13).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            got,
            [100, 150, 225, 338, 506, 759, 1139, 1709, 2563, 3844, 5000, 5000, 5000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
