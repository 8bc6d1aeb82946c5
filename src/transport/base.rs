//! What every transporter shares (the JS `Transporter` base class,
//! agent-spec.md §5.2): the offline queue size, packet rules, reconnect
//! backoff, the state the handle reads, and inbound delivery that never
//! blocks the socket.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, warn};

use super::{Packet, TransportStats};

/// The JS agent's offline queue length (`PACKET_QUEUE_SIZE`).
pub const PACKET_QUEUE_SIZE: usize = 200;

/// JS truthiness of a JSON value (`!payload`).
pub fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Channels that are only worth sending live: the next one supersedes them,
/// so they are never queued while offline.
pub fn is_volatile(channel: &str) -> bool {
    matches!(channel, "status" | "monitoring" | "status:patch")
}

/// State shared between a transporter's handle (readers) and its actor
/// (writer).
#[derive(Default)]
pub struct Shared {
    pub connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    pub sent: AtomicU64,
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub inbound_dropped: AtomicU64,
    pub connects: AtomicU64,
}

impl Shared {
    pub fn set_error(&self, e: Option<String>) {
        // A poisoned lock only means another thread panicked mid-assignment
        // of an Option<String>; the value is still usable.
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> TransportStats {
        TransportStats {
            sent: self.sent.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            inbound_dropped: self.inbound_dropped.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
        }
    }

    /// Adds `n` to the dropped counter and returns the new total.
    pub fn drop_packets(&self, n: u64) -> u64 {
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Hands a packet from PM2.io to the consumer without waiting: a full
    /// channel drops it (and counts it) so a slow consumer can never stall
    /// the socket that also carries our outbound traffic.
    pub fn deliver(&self, inbound: &mpsc::Sender<Packet>, packet: Packet, who: &str) {
        match inbound.try_send(packet) {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => {
                let n = self.inbound_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Powers of two: visible without flooding the log.
                if n.is_power_of_two() {
                    warn!(channel = %p.channel, dropped = n, "{who}: inbound channel full, message dropped");
                }
            }
            Err(TrySendError::Closed(p)) => {
                self.inbound_dropped.fetch_add(1, Ordering::Relaxed);
                debug!(channel = %p.channel, "{who}: no inbound consumer, message dropped");
            }
        }
    }
}

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
    use serde_json::json;

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

    #[test]
    fn js_truthiness_and_volatile_channels() {
        for v in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(is_falsy(&v), "{v}");
        }
        for v in [json!(true), json!(1), json!("0"), json!([]), json!({})] {
            assert!(!is_falsy(&v), "{v}");
        }
        assert!(is_volatile("status") && is_volatile("monitoring"));
        assert!(!is_volatile("human:event"));
    }

    #[tokio::test]
    async fn delivery_never_blocks_and_counts_drops() {
        let s = Shared::default();
        let (tx, mut rx) = mpsc::channel(1);
        s.deliver(&tx, Packet::new("a", json!(1)), "T");
        s.deliver(&tx, Packet::new("b", json!(2)), "T");
        assert_eq!(rx.recv().await.unwrap().channel, "a");
        assert_eq!(s.stats().inbound_dropped, 1);
        drop(rx);
        s.deliver(&tx, Packet::new("c", json!(3)), "T");
        assert_eq!(s.stats().inbound_dropped, 2);
        s.set_error(Some("boom".into()));
        assert_eq!(s.last_error().as_deref(), Some("boom"));
    }
}
