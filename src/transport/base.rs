//! What every transporter shares (the JS `Transporter` base class,
//! agent-spec.md §5.2): the offline queue size, packet rules, reconnect
//! backoff, the state the handle reads, inbound delivery that never blocks
//! the socket, and how an actor waits while not connected (queueing
//! packets, interrupted by a new target).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
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

    /// Hands an outbound packet to the actor without waiting: like the JS
    /// agent, one without channel or with a falsy payload is never sent; a
    /// full buffer (or a stopped actor) drops it and counts it.
    pub fn submit(&self, packets: &mpsc::Sender<Packet>, packet: Packet, who: &str) {
        if packet.channel.is_empty() || is_falsy(&packet.payload) {
            debug!(channel = %packet.channel, "{who}: dropping packet without channel or payload");
            return;
        }
        match packets.try_send(packet) {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => {
                let n = self.drop_packets(1);
                warn!(channel = %p.channel, dropped = n, "{who}: send buffer full, packet dropped");
            }
            Err(TrySendError::Closed(p)) => {
                self.drop_packets(1);
                debug!(channel = %p.channel, "{who} stopped, packet dropped");
            }
        }
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

/// Sets the desired target for the actor. The same target as wanted already
/// changes nothing: no reconnection, never a second socket.
pub fn set_target<T: PartialEq>(target: &watch::Sender<Option<T>>, t: T) {
    target.send_if_modified(|cur| {
        if cur.as_ref() == Some(&t) {
            false
        } else {
            *cur = Some(t);
            true
        }
    });
}

/// Why a transporter's actor left its current state.
pub enum Interrupt<T> {
    /// The desired target changed (`None` = disconnect()).
    Retarget(Option<T>),
    /// The handle was dropped.
    Shutdown,
}

/// How a connection ended.
pub enum End<T> {
    /// The connection broke; reconnect after a backoff.
    Lost,
    Interrupt(Interrupt<T>),
}

/// Handles `target.changed()` having resolved with `changed`: the handle
/// is gone (shutdown) or the desired target now differs from `current`
/// (retarget); `None` when it was set to the same value again.
pub fn retarget<T: Clone + PartialEq>(
    changed: Result<(), watch::error::RecvError>,
    target: &mut watch::Receiver<Option<T>>,
    current: &Option<T>,
) -> Option<Interrupt<T>> {
    if changed.is_err() {
        return Some(Interrupt::Shutdown);
    }
    let t = target.borrow_and_update().clone();
    (t != *current).then_some(Interrupt::Retarget(t))
}

/// A transporter actor as seen while it is not connected (idle, connecting
/// or waiting to reconnect).
pub trait Offline {
    /// Where to connect (a URL, a pair of endpoints…).
    type Target: Clone + PartialEq;

    /// The desired target set by the handle, and the packets it sends.
    fn inputs(
        &mut self,
    ) -> (
        &mut watch::Receiver<Option<Self::Target>>,
        &mut mpsc::Receiver<Packet>,
    );

    /// Queues (or drops, by the transporter's rules) a packet that arrived
    /// while not connected.
    fn enqueue_offline(&mut self, p: Packet);

    fn backoff(&mut self) -> &mut Backoff;
}

/// Drives `fut` while not connected: packets go to the offline queue and
/// a change of the desired target interrupts, dropping `fut` (e.g. a
/// connection attempt, so there is never a second socket).
pub async fn offline<A: Offline, F: Future>(
    actor: &mut A,
    current: &Option<A::Target>,
    fut: F,
) -> Result<F::Output, Interrupt<A::Target>> {
    tokio::pin!(fut);
    loop {
        let (target, packets) = actor.inputs();
        tokio::select! {
            biased;
            changed = target.changed() => {
                if let Some(i) = retarget(changed, target, current) {
                    return Err(i);
                }
            }
            out = &mut fut => return Ok(out),
            p = packets.recv() => match p {
                Some(p) => actor.enqueue_offline(p),
                None => return Err(Interrupt::Shutdown),
            },
        }
    }
}

/// Waits `delay` before the next connection attempt, still queueing. A new
/// target replaces `target` and resets the backoff (a new endpoint starts
/// afresh); `false` means the handle was dropped.
pub async fn retry_after<A: Offline>(
    actor: &mut A,
    target: &mut Option<A::Target>,
    delay: Duration,
) -> bool {
    match offline(actor, target, tokio::time::sleep(delay)).await {
        Ok(()) => true,
        Err(Interrupt::Retarget(t)) => {
            *target = t;
            actor.backoff().reset();
            true
        }
        Err(Interrupt::Shutdown) => false,
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
