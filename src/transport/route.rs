//! A route: one stream of outbound packets and the transporters able to
//! carry it, in order of preference. Exactly one of them carries the
//! traffic at a time: the first that has *proved* its connection (see
//! [`super::link`]); the others stand by.
//!
//! The route owns the only queue of the stream. Transporters take packets
//! from it while they carry and give back what they could not write, so a
//! switch from one transporter to another neither loses nor duplicates a
//! packet, and order is kept (packets given back go to the front).
//!
//! The route also holds the fallback rule: when none of its configured
//! transporters is proven and one of them has failed, the fallback (the
//! WebSocket endpoint PM2.io offers) is connected; once a configured one
//! proves itself again it takes the traffic back and the fallback is
//! disconnected. See docs/transport.md.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::backlog::Backlog;
use super::queue::{Queue, MAX_PROFILES};
use super::spool::SpoolConfig;
pub use super::state::{LinkState, LinkStats, MemberInfo, Role};
use crate::common::drops::Drops;
use crate::common::js::is_falsy;
use crate::common::Packet;

/// The JS agent's offline queue length (`PACKET_QUEUE_SIZE`).
pub const PACKET_QUEUE_SIZE: usize = 200;
/// Bytes a route may hold (`PM2_AGENT_QUEUE_BYTES`): room for a burst of
/// logs while the carrier writes, whatever the packet sizes.
pub const QUEUE_BYTES: usize = 8 << 20;

/// Why a route drops packets (the reasons `getInfos` and `agent.log` show).
pub const FULL_LIVE: &str = "send queue full";
pub const FULL_OFFLINE: &str = "offline queue full";
pub const SUPERSEDED: &str = "superseded by a newer one (only the latest status matters)";

/// Why the route itself dropped packets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteDrops {
    /// The queue was at its bound: the oldest packet gave way.
    pub queue_full: u64,
    /// A `status`/`monitoring` packet while nothing carried the traffic
    /// (the next one supersedes it).
    pub superseded: u64,
}

/// Turns the fallback transporter on (`true`) or off.
pub type FallbackSwitch = Arc<dyn Fn(bool) + Send + Sync>;

struct Member {
    name: &'static str,
    role: Role,
    state: LinkState,
    endpoint: Option<String>,
    since: SystemTime,
    last_error: Option<String>,
    /// The live connection's compression (WebSocket permessage-deflate).
    compression: Option<String>,
    wake: Arc<Notify>,
    stats: Arc<LinkStats>,
}

struct Fallback {
    switch: FallbackSwitch,
    /// Where the fallback goes, for the log line.
    endpoint: String,
}

struct Inner {
    queue: Queue,
    /// The disk spool: what nobody carries, and the backlog being replayed.
    backlog: Backlog,
    /// Shared with everything else that drops (per channel and reason).
    shared_drops: Arc<Drops>,
    members: Vec<Member>,
    carrier: Option<usize>,
    offline_cap: usize,
    max_bytes: usize,
    drops: RouteDrops,
    fallback: Option<Fallback>,
    /// Why there is no fallback (explicit configuration), for the log.
    no_fallback: Option<String>,
    fallback_on: bool,
    /// A configured transporter failed since one was last proven.
    failed: bool,
    /// The "no fallback" line was written for the current outage.
    told_no_fallback: bool,
    /// Told whenever a transporter starts carrying (see
    /// [`Route::signal_carrier`]).
    carrier_signal: Option<Arc<Notify>>,
}

/// See the module documentation.
pub struct Route {
    inner: Mutex<Inner>,
}

/// Side effects decided under the lock, run after it is released (a
/// fallback switch calls back into the route).
#[derive(Default)]
#[must_use]
struct After {
    fallback: Option<bool>,
    wake: Option<Arc<Notify>>,
    carrier_up: Option<Arc<Notify>>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Route {
    /// `offline_cap`: packets kept while nothing carries; `max_bytes`: what
    /// the queue may weigh at any time (the oldest packets give way).
    /// Drops are counted in `drops`, shared with the rest of the agent.
    pub fn new(offline_cap: usize, max_bytes: usize, drops: Arc<Drops>) -> Route {
        Route::with_spool(offline_cap, max_bytes, drops, None)
    }

    /// A route whose packets go to a disk spool while nothing carries them
    /// (and, replayed, ahead of newer ones once something does).
    pub fn with_spool(
        offline_cap: usize,
        max_bytes: usize,
        drops: Arc<Drops>,
        spool: Option<SpoolConfig>,
    ) -> Route {
        Route {
            inner: Mutex::new(Inner {
                queue: Queue::default(),
                backlog: Backlog::open(spool),
                shared_drops: drops,
                members: Vec::new(),
                carrier: None,
                offline_cap,
                max_bytes: max_bytes.max(1),
                drops: RouteDrops::default(),
                fallback: None,
                no_fallback: None,
                fallback_on: false,
                failed: false,
                told_no_fallback: false,
                carrier_signal: None,
            }),
        }
    }

    /// `signal` is notified each time a proven transporter starts carrying
    /// this route (after an outage, a switch, or at start): the status loop
    /// sends a fresh status at once instead of waiting for its next tick.
    pub fn signal_carrier(&self, signal: Arc<Notify>) {
        lock(&self.inner).carrier_signal = Some(signal);
    }

    /// Adds a transporter (after those already there: lower preference).
    /// Returns its index, its wake-up and its counters.
    pub fn join(&self, name: &'static str, role: Role) -> (usize, Arc<Notify>, Arc<LinkStats>) {
        let mut g = lock(&self.inner);
        let wake = Arc::new(Notify::new());
        let stats = Arc::new(LinkStats::default());
        g.members.push(Member {
            name,
            role,
            state: LinkState::Standby,
            endpoint: None,
            since: SystemTime::now(),
            last_error: None,
            compression: None,
            wake: wake.clone(),
            stats: stats.clone(),
        });
        (g.members.len() - 1, wake, stats)
    }

    /// Installs the fallback rule: `switch(true)` connects the fallback
    /// member (at `endpoint`), `switch(false)` disconnects it.
    pub fn set_fallback(&self, endpoint: String, switch: FallbackSwitch) {
        let after = {
            let mut g = lock(&self.inner);
            g.fallback = Some(Fallback { switch, endpoint });
            g.no_fallback = None;
            g.fallback_on = false;
            g.decide_fallback()
        };
        self.run(after);
    }

    /// No fallback, and why (said once per outage in the log).
    pub fn forbid_fallback(&self, why: String) {
        let switch = {
            let mut g = lock(&self.inner);
            let was_on = std::mem::take(&mut g.fallback_on);
            g.no_fallback = Some(why);
            g.fallback.take().filter(|_| was_on).map(|f| f.switch)
        };
        if let Some(switch) = switch {
            switch(false);
        }
    }

    /// Queues an outbound packet; never blocks. Like the JS agent, one
    /// without channel or with a falsy payload is never sent.
    pub fn push(&self, packet: Packet) {
        if packet.channel.is_empty() || is_falsy(&packet.payload) {
            debug!(channel = %packet.channel, "dropping packet without channel or payload");
            return;
        }
        let wake = {
            let mut g = lock(&self.inner);
            match g.carrier {
                None if packet.is_volatile() => {
                    g.count_drop(&packet, SUPERSEDED);
                    return;
                }
                None => {
                    if !g.spool(&packet) {
                        g.queue.push_back(packet);
                        g.trim();
                    }
                    None
                }
                Some(c) if packet.is_volatile() => {
                    // The live status jumps the queue (a flood or a replay
                    // never delays it) and replaces one still waiting.
                    let channel = packet.channel.clone();
                    for old in g.queue.remove_where(|p| p.channel == channel) {
                        g.count_drop(&old, SUPERSEDED);
                    }
                    g.queue.push_front(packet);
                    g.trim();
                    Some(g.members[c].wake.clone())
                }
                Some(c) => {
                    // Behind a backlog being replayed: to the spool too, so
                    // the order is kept.
                    if !(g.backlog.has_pending() && g.spool(&packet)) {
                        g.queue.push_back(packet);
                        g.trim();
                    }
                    Some(g.members[c].wake.clone())
                }
            }
        };
        if let Some(w) = wake {
            w.notify_one();
        }
    }

    /// Up to `max` packets and about `max_bytes` for `member`, oldest
    /// first; nothing unless it is the carrier. Wakes it again when more
    /// are left.
    pub fn take(&self, member: usize, max: usize, max_bytes: usize) -> Vec<Packet> {
        let mut g = lock(&self.inner);
        if g.carrier != Some(member) {
            return Vec::new();
        }
        let mut out = g.queue.take(max, max_bytes);
        if out.is_empty() {
            let drops = g.shared_drops.clone();
            out = g.backlog.take(max, max_bytes, &drops);
        }
        if !g.queue.is_empty() {
            g.members[member].wake.notify_one();
        }
        out
    }

    /// The live status waiting at the front, if any (for a carrier whose
    /// own buffer is full: the status must not wait behind it).
    pub fn take_volatile(&self, member: usize) -> Option<Packet> {
        let mut g = lock(&self.inner);
        if g.carrier != Some(member) || !g.queue.front_is(Packet::is_volatile) {
            return None;
        }
        g.queue.pop_front()
    }

    /// `member` is done with what it took (written, or given back): the
    /// replayed records it had leave the spool, and the replay goes on.
    pub fn carried(&self, member: usize) {
        let mut g = lock(&self.inner);
        if g.carrier != Some(member) {
            return;
        }
        let drops = g.shared_drops.clone();
        if g.backlog.ack(&drops) && g.backlog.has_pending() {
            g.members[member].wake.notify_one();
        }
    }

    /// Packets taken but not written go back to the front, in order.
    /// Stale statuses are not kept.
    pub fn give_back(&self, packets: Vec<Packet>) {
        if packets.is_empty() {
            return;
        }
        let wake = {
            let mut g = lock(&self.inner);
            for p in packets.into_iter().rev() {
                if p.is_volatile() {
                    g.count_drop(&p, SUPERSEDED);
                } else {
                    g.queue.push_front(p);
                }
            }
            g.trim();
            g.carrier.map(|c| g.members[c].wake.clone())
        };
        if let Some(w) = wake {
            w.notify_one();
        }
    }

    /// Records a member's new state (and endpoint/reason), then re-decides
    /// the carrier and the fallback.
    pub fn set_state(
        &self,
        member: usize,
        state: LinkState,
        endpoint: Option<String>,
        error: Option<String>,
    ) {
        let after = {
            let mut g = lock(&self.inner);
            let Some(m) = g.members.get_mut(member) else {
                return;
            };
            if m.state != state {
                m.state = state;
                m.since = SystemTime::now();
            }
            if endpoint.is_some() {
                m.endpoint = endpoint;
            }
            if error.is_some() {
                m.last_error = error;
            }
            if state == LinkState::Failed && m.role == Role::Configured {
                g.failed = true;
            }
            let mut after = g.decide_carrier();
            after.fallback = g.decide_fallback().fallback;
            after
        };
        self.run(after);
    }

    /// Records the compression of the member's live connection (`None`
    /// when it ends).
    pub fn set_compression(&self, member: usize, compression: Option<String>) {
        if let Some(m) = lock(&self.inner).members.get_mut(member) {
            m.compression = compression;
        }
    }

    /// Records an error without changing the state (a bad endpoint given to
    /// `connect`).
    pub fn set_error(&self, member: usize, error: String) {
        if let Some(m) = lock(&self.inner).members.get_mut(member) {
            m.last_error = Some(error);
        }
    }

    fn run(&self, after: After) {
        if let Some(w) = after.wake {
            w.notify_one();
        }
        if let Some(up) = after.carrier_up {
            up.notify_one();
        }
        if let Some(on) = after.fallback {
            // Called without the lock: the switch may call back into the
            // route (the fallback member's state). It only sets a wanted
            // endpoint; it never waits.
            let switch = lock(&self.inner)
                .fallback
                .as_ref()
                .map(|f| f.switch.clone());
            if let Some(switch) = switch {
                switch(on);
            }
        }
    }

    pub fn is_carried(&self) -> bool {
        lock(&self.inner).carrier.is_some()
    }

    pub fn carrier_name(&self) -> Option<&'static str> {
        let g = lock(&self.inner);
        g.carrier.map(|c| g.members[c].name)
    }

    pub fn is_proven(&self, member: usize) -> bool {
        lock(&self.inner)
            .members
            .get(member)
            .is_some_and(|m| m.state == LinkState::Connected)
    }

    pub fn last_error(&self, member: usize) -> Option<String> {
        lock(&self.inner)
            .members
            .get(member)
            .and_then(|m| m.last_error.clone())
    }

    /// Everything queued, oldest first (the route is being replaced).
    pub fn drain(&self) -> Vec<Packet> {
        lock(&self.inner).queue.drain()
    }

    pub fn queued(&self) -> usize {
        lock(&self.inner).queue.len()
    }

    /// The spool's state, for `getInfos`.
    pub fn spool_info(&self) -> Value {
        lock(&self.inner).backlog.info()
    }

    /// About the bytes queued.
    pub fn queued_bytes(&self) -> usize {
        lock(&self.inner).queue.bytes()
    }

    /// The agent-wide drop counters this route reports to.
    pub fn shared_drops(&self) -> Arc<Drops> {
        lock(&self.inner).shared_drops.clone()
    }

    pub fn drops(&self) -> RouteDrops {
        lock(&self.inner).drops
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        let g = lock(&self.inner);
        g.members
            .iter()
            .enumerate()
            .map(|(i, m)| MemberInfo {
                name: m.name,
                role: m.role,
                state: m.state,
                endpoint: m.endpoint.clone(),
                since_ms: m
                    .since
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_millis() as u64,
                last_error: m.last_error.clone(),
                compression: m.compression.clone(),
                carrying: g.carrier == Some(i),
                sent: m.stats.sent.load(Ordering::Relaxed),
                connects: m.stats.connects.load(Ordering::Relaxed),
                dropped: m.stats.dropped.load(Ordering::Relaxed),
                inbound_dropped: m.stats.inbound_dropped.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Inner {
    /// Spools `p` when the spool works (`false`: keep it in memory).
    fn spool(&mut self, p: &Packet) -> bool {
        let drops = self.shared_drops.clone();
        self.backlog.append(p, &drops)
    }

    fn count_drop(&mut self, p: &Packet, reason: &'static str) {
        if reason == SUPERSEDED {
            self.drops.superseded += 1;
        } else {
            self.drops.queue_full += 1;
        }
        self.shared_drops.record(&p.channel, reason, 1);
    }

    /// Back within the bounds of the current mode; the oldest give way.
    /// While nothing carries, stale statuses go and at most `offline_cap`
    /// packets stay (the JS agent's offline queue).
    fn trim(&mut self) {
        let offline = self.carrier.is_none();
        if offline {
            for p in self.queue.remove_where(Packet::is_volatile) {
                self.count_drop(&p, SUPERSEDED);
            }
        }
        let reason = if offline { FULL_OFFLINE } else { FULL_LIVE };
        while self.queue.bytes() > self.max_bytes
            || (offline && self.queue.len() > self.offline_cap)
        {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            self.count_drop(&p, reason);
        }
        while self.queue.profiles() > MAX_PROFILES {
            let Some(p) = self.queue.pop_oldest_profile() else {
                break;
            };
            self.count_drop(&p, reason);
        }
    }

    fn decide_carrier(&mut self) -> After {
        let carrier = self
            .members
            .iter()
            .position(|m| m.state == LinkState::Connected);
        if carrier == self.carrier {
            return After::default();
        }
        let old = self.carrier.map(|c| self.members[c].name);
        self.carrier = carrier;
        match carrier {
            Some(c) => {
                let m = &self.members[c];
                info!(
                    transporter = m.name,
                    endpoint = m.endpoint.as_deref().unwrap_or(""),
                    queued = self.queue.len(),
                    previous = old.unwrap_or("none"),
                    "traffic now carried by {}",
                    m.name
                );
                After {
                    wake: Some(m.wake.clone()),
                    fallback: None,
                    carrier_up: self.carrier_signal.clone(),
                }
            }
            None => {
                self.trim();
                warn!(
                    previous = old.unwrap_or("none"),
                    queued = self.queue.len(),
                    "no transporter carries the traffic; packets are queued (at most {})",
                    self.offline_cap
                );
                After::default()
            }
        }
    }

    /// The fallback rule; returns the switch to apply, if it changes.
    fn decide_fallback(&mut self) -> After {
        let configured_proven = self
            .members
            .iter()
            .any(|m| m.role == Role::Configured && m.state == LinkState::Connected);
        if configured_proven {
            self.failed = false;
            self.told_no_fallback = false;
        }
        let want = !configured_proven && self.failed;
        if self.fallback.is_none() {
            if want && !self.told_no_fallback {
                if let Some(why) = &self.no_fallback {
                    self.told_no_fallback = true;
                    warn!("{}; no fallback: {why}", self.failures().join("; "));
                }
            }
            return After::default();
        }
        if want == self.fallback_on {
            return After::default();
        }
        self.fallback_on = want;
        let to = self
            .fallback
            .as_ref()
            .map(|f| f.endpoint.clone())
            .unwrap_or_default();
        if want {
            warn!(
                "{}; carrying the traffic over the WebSocket fallback {to} meanwhile, retrying in the background",
                self.failures().join("; ")
            );
        } else {
            info!("configured transporter proven again; WebSocket fallback {to} back to standby");
        }
        After {
            fallback: Some(want),
            ..After::default()
        }
    }

    /// "AxonTransport push=…, pull=… failed: <reason>" for each configured
    /// member that is not proven.
    fn failures(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.role == Role::Configured && m.state != LinkState::Connected)
            .map(|m| {
                format!(
                    "{} {} unavailable: {}",
                    m.name,
                    m.endpoint.as_deref().unwrap_or("(no endpoint)"),
                    m.last_error.as_deref().unwrap_or("not proven yet")
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    fn ev(i: u64) -> Packet {
        Packet::new("human:event", json!({ "i": i }))
    }
    fn ids(v: &[Packet]) -> Vec<u64> {
        v.iter().map(|p| p.payload["i"].as_u64().unwrap()).collect()
    }

    #[test]
    fn offline_queue_is_bounded_and_counts_what_it_drops() {
        let r = Route::new(3, QUEUE_BYTES, Arc::default());
        let (a, _, _) = r.join("A", Role::Configured);
        for i in 0..5 {
            r.push(ev(i));
        }
        r.push(Packet::new("status", json!({"s": 1})));
        r.push(Packet::new("logs", serde_json::Value::Null));
        assert_eq!(r.queued(), 3);
        assert_eq!(
            r.drops(),
            RouteDrops {
                queue_full: 2,
                superseded: 1
            }
        );
        // Nobody carries: nothing can be taken.
        assert!(r.take(a, 10, usize::MAX).is_empty());
        r.set_state(a, LinkState::Connected, Some("a".into()), None);
        assert_eq!(ids(&r.take(a, 10, usize::MAX)), [2, 3, 4]);
    }

    #[tokio::test]
    async fn a_transporter_starting_to_carry_is_signalled() {
        let r = Route::new(100, QUEUE_BYTES, Arc::default());
        let up = Arc::new(Notify::new());
        r.signal_carrier(up.clone());
        let (a, _, _) = r.join("A", Role::Configured);
        r.set_state(a, LinkState::Connecting, None, None);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), up.notified());
        assert!(waited.await.is_err(), "connecting is not carrying");
        r.set_state(a, LinkState::Connected, None, None);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), up.notified());
        assert!(waited.await.is_ok(), "a proven carrier is signalled");
    }

    #[test]
    fn the_first_proven_member_carries_and_given_back_packets_keep_their_order() {
        let r = Route::new(100, QUEUE_BYTES, Arc::default());
        let (a, _, _) = r.join("A", Role::Configured);
        let (b, _, _) = r.join("B", Role::Fallback);
        r.set_state(b, LinkState::Connected, None, None);
        assert_eq!(r.carrier_name(), Some("B"));
        for i in 0..6 {
            r.push(ev(i));
        }
        let took = r.take(b, 4, usize::MAX);
        assert_eq!(ids(&took), [0, 1, 2, 3]);
        // A proves itself: it carries from now on; B gives back what it
        // did not write (2, 3), in front of what waited.
        r.set_state(a, LinkState::Connected, None, None);
        assert_eq!(r.carrier_name(), Some("A"));
        assert!(
            r.take(b, 10, usize::MAX).is_empty(),
            "only the carrier takes"
        );
        r.give_back(took[2..].to_vec());
        assert_eq!(ids(&r.take(a, 10, usize::MAX)), [2, 3, 4, 5]);
        // Losing the carrier moves the traffic to the next proven member.
        r.push(ev(6));
        r.set_state(a, LinkState::Failed, None, Some("gone".into()));
        assert_eq!(r.carrier_name(), Some("B"));
        assert_eq!(ids(&r.take(b, 10, usize::MAX)), [6]);
        assert_eq!(r.last_error(a).as_deref(), Some("gone"));
    }

    #[test]
    fn the_fallback_is_switched_on_by_a_failure_and_off_by_a_proof() {
        let r = Route::new(10, QUEUE_BYTES, Arc::default());
        let (a, _, _) = r.join("A", Role::Configured);
        let (_b, _, _) = r.join("B", Role::Fallback);
        let on = Arc::new(AtomicUsize::new(0));
        let off = Arc::new(AtomicUsize::new(0));
        let (on2, off2) = (on.clone(), off.clone());
        r.set_fallback(
            "ws://w".into(),
            Arc::new(move |up| {
                if up {
                    on2.fetch_add(1, Ordering::SeqCst);
                } else {
                    off2.fetch_add(1, Ordering::SeqCst);
                }
            }),
        );
        r.set_state(a, LinkState::Connecting, Some("push=x".into()), None);
        assert_eq!(on.load(Ordering::SeqCst), 0, "connecting is not a failure");
        r.set_state(a, LinkState::Failed, None, Some("refused".into()));
        assert_eq!(on.load(Ordering::SeqCst), 1);
        // Retrying in the background does not flap the fallback.
        r.set_state(a, LinkState::Connecting, None, None);
        r.set_state(a, LinkState::Failed, None, Some("refused".into()));
        assert_eq!(
            (on.load(Ordering::SeqCst), off.load(Ordering::SeqCst)),
            (1, 0)
        );
        r.set_state(a, LinkState::Connected, None, None);
        assert_eq!(off.load(Ordering::SeqCst), 1);
        let info = r.members();
        assert_eq!(info[0].state, LinkState::Connected);
        assert!(info[0].carrying);
        assert_eq!(info[0].to_json()["state"], "connected");
        // Forbidden: never switched on again.
        r.forbid_fallback("AGENT_TRANSPORT_WEBSOCKET=false".into());
        r.set_state(a, LinkState::Failed, None, Some("x".into()));
        assert_eq!(on.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_drops_are_counted_per_channel() {
        let drops = Arc::new(Drops::default());
        let one = ev(0).approx_bytes();
        let r = Route::new(1000, 10 * one, drops.clone());
        let (a, _, _) = r.join("A", Role::Configured);
        r.set_state(a, LinkState::Connected, None, None);
        for i in 0..25 {
            r.push(ev(i));
        }
        assert_eq!(r.queued(), 10);
        assert!(r.queued_bytes() <= 10 * one);
        assert_eq!(
            ids(&r.take(a, 100, usize::MAX)),
            (15..25).collect::<Vec<_>>()
        );
        assert_eq!(
            drops.counts(),
            vec![crate::common::drops::DropCount {
                channel: "human:event".into(),
                reason: FULL_LIVE,
                count: 15
            }]
        );
        // Offline, statuses are not kept, and said so per channel.
        r.set_state(a, LinkState::Failed, None, None);
        r.push(Packet::new("status", json!({"s": 1})));
        assert!(drops
            .counts()
            .iter()
            .any(|c| c.channel == "status" && c.reason == SUPERSEDED && c.count == 1));
    }

    #[test]
    fn a_status_jumps_the_queue_and_replaces_a_waiting_one() {
        let r = Route::new(1000, QUEUE_BYTES, Arc::default());
        let (a, _, _) = r.join("A", Role::Configured);
        r.set_state(a, LinkState::Connected, None, None);
        for i in 0..3 {
            r.push(ev(i));
        }
        r.push(Packet::new("status", json!({"s": 1})));
        r.push(Packet::new("status", json!({"s": 2})));
        let got = r.take(a, 10, usize::MAX);
        assert_eq!(got[0], Packet::new("status", json!({"s": 2})));
        assert_eq!(ids(&got[1..]), [0, 1, 2]);
        assert_eq!(r.drops().superseded, 1);
    }

    #[test]
    fn while_nothing_carries_packets_are_spooled_and_replayed_in_order_even_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("ka-route-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = || Some(SpoolConfig::new(dir.clone()));
        let drops = Arc::new(Drops::default());
        {
            // 300 packets offline: more than the 200 of the memory queue.
            let r = Route::with_spool(200, QUEUE_BYTES, drops.clone(), cfg());
            let (a, _, _) = r.join("A", Role::Configured);
            r.set_state(a, LinkState::Connected, None, None);
            r.push(ev(0));
            assert_eq!(ids(&r.take(a, 10, usize::MAX)), [0]);
            r.set_state(a, LinkState::Failed, None, None);
            for i in 1..301 {
                r.push(ev(i));
            }
            assert_eq!(r.queued(), 0, "on disk, not in memory");
            assert_eq!(r.spool_info()["records"], 300);
            // The agent stops here (crash or restart): the route is gone.
        }
        let r = Route::with_spool(200, QUEUE_BYTES, drops.clone(), cfg());
        let (a, _, _) = r.join("A", Role::Configured);
        r.set_state(a, LinkState::Connected, None, None);
        // New traffic waits behind the replay; the status jumps it.
        r.push(ev(301));
        r.push(Packet::new("status", json!({"s": 1})));
        let mut got = Vec::new();
        loop {
            let batch = r.take(a, 100, usize::MAX);
            r.carried(a);
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        assert_eq!(got[0].channel, "status");
        assert_eq!(ids(&got[1..]), (1..302).collect::<Vec<_>>());
        assert_eq!(r.spool_info()["records"], 0);
        assert_eq!(drops.total(), 0);
        // Given back (a failed write) after the acknowledgement: in memory,
        // ahead of what follows, never replayed twice from disk.
        r.set_state(a, LinkState::Failed, None, None);
        r.push(ev(400));
        r.set_state(a, LinkState::Connected, None, None);
        let batch = r.take(a, 100, usize::MAX);
        r.give_back(batch);
        r.carried(a);
        assert_eq!(ids(&r.take(a, 100, usize::MAX)), [400]);
        r.carried(a);
        assert!(r.take(a, 100, usize::MAX).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
