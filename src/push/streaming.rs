//! The log streaming gate (`global._logs` in the JS agent): turned on by the
//! backend's `startLogging` for a while, off by `stopLogging` or when the
//! deadline passes. A deadline replaces the JS timer: same observable
//! behaviour (a new start re-arms it, stop wins until the next start), no
//! task to cancel.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long `startLogging` keeps streaming on (JS: 120 000 ms).
pub const LOG_STREAMING_DURATION: Duration = Duration::from_secs(120);

/// Cheap to clone; all clones share one gate.
#[derive(Debug, Clone, Default)]
pub struct LogStreaming {
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl LogStreaming {
    pub fn new() -> Self {
        Self::default()
    }

    /// Streams logs for `duration` from now (re-arms a running window).
    pub fn start(&self, duration: Duration) {
        self.start_at(Instant::now(), duration);
    }

    pub fn stop(&self) {
        *self.lock() = None;
    }

    pub fn is_on(&self) -> bool {
        self.is_on_at(Instant::now())
    }

    /// The instant streaming turns off, if it is on.
    pub fn deadline(&self) -> Option<Instant> {
        *self.lock()
    }

    pub(crate) fn start_at(&self, now: Instant, duration: Duration) {
        // An absurd duration saturates instead of overflowing `Instant`.
        *self.lock() = Some(
            now.checked_add(duration)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        );
    }

    pub(crate) fn is_on_at(&self, now: Instant) -> bool {
        self.lock().is_some_and(|d| now < d)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // The guarded value is a plain Option: a panicking holder cannot
        // leave it inconsistent, so poisoning is ignored.
        self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_opens_expires_and_rearms() {
        let s = LogStreaming::new();
        let t0 = Instant::now();
        assert!(!s.is_on_at(t0));
        s.start_at(t0, LOG_STREAMING_DURATION);
        assert!(s.is_on_at(t0 + Duration::from_secs(119)));
        assert!(!s.is_on_at(t0 + Duration::from_secs(120)));
        // A second start 100 s later extends to 220 s, like clearTimeout + setTimeout.
        s.start_at(t0 + Duration::from_secs(100), LOG_STREAMING_DURATION);
        assert!(s.is_on_at(t0 + Duration::from_secs(219)));
        assert!(!s.is_on_at(t0 + Duration::from_secs(220)));
    }

    #[test]
    fn stop_is_shared_between_clones() {
        let s = LogStreaming::new();
        let other = s.clone();
        s.start(Duration::from_secs(60));
        assert!(other.is_on());
        other.stop();
        assert!(!s.is_on());
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn huge_duration_does_not_panic() {
        let s = LogStreaming::new();
        s.start(Duration::MAX);
        assert!(s.is_on());
    }
}
