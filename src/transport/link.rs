//! The life every transporter shares, written once: a handle ([`Link`])
//! and an actor task that owns at most one connection at a time.
//!
//! * The handle sets the *desired* endpoint through a `watch` (so control
//!   is never lost behind a full buffer; the actor converges on the latest
//!   wish, and the same endpoint twice is a no-op, never a second socket).
//! * An attempt opens the connection **and waits for the peer's proof**
//!   ([`Protocol::open`]: the WebSocket `101`, the Axon reverse server's
//!   `ask`), bounded by [`LinkOptions::proof_timeout`]. Only then is the
//!   transporter `connected` and may carry traffic.
//! * A failed attempt or a lost connection is recorded with its reason
//!   (`failed`), then retried with jittered exponential backoff.
//! * While it carries, the actor takes packets from its [`Route`] and hands
//!   back, when the connection ends, what it took but did not write.
//!
//! What differs between transporters is only the [`Protocol`] (how to open
//! and prove a connection) and its [`Session`] (what a live connection does
//! with events and packets).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::route::{LinkState, LinkStats, Role, Route};
use super::{TransportEndpoint, TransportStats, Transporter};

/// The channel an inbound message is counted under when it was dropped
/// before a channel could be read from it.
pub const UNPARSED: &str = "(unparsed)";
use crate::common::drops::Drops;
use crate::common::Packet;

/// How to reach and prove one kind of peer.
pub trait Protocol: Send + Sync + 'static {
    /// The JS class name, reported by `getInfos.transporters`.
    const NAME: &'static str;
    /// Where to connect, parsed from a [`TransportEndpoint`].
    type Target: Clone + PartialEq + Display + Send + Sync + 'static;
    type Session: Session;

    /// Checks an endpoint; `Err` is reported as the transporter's error.
    fn target(&self, endpoint: TransportEndpoint) -> Result<Self::Target, String>;

    /// Opens a connection and returns once the peer has proved itself, or
    /// why it did not (refused, closed, spoke another protocol, stayed
    /// silent for `within`).
    fn open(
        &self,
        target: &Self::Target,
        within: Duration,
    ) -> impl Future<Output = Result<Self::Session, String>> + Send;
}

/// A proven connection.
pub trait Session: Send + 'static {
    /// Something the connection must act on (a frame, a timer).
    type Event: Send;

    /// Waits for the next event. Must be cancel-safe: the actor drops it
    /// when packets or a new endpoint arrive first.
    fn next_event(&mut self) -> impl Future<Output = Self::Event> + Send;

    /// Acts on an event; `Err(reason)` means the connection is lost.
    fn handle(
        &mut self,
        event: Self::Event,
        io: &Io,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Called while this transporter carries the traffic and the route has
    /// packets: take them with [`Io::take`] and write them. `Err(reason)`
    /// means the connection is lost (unwritten packets go back with
    /// [`Io::give_back`] or [`Session::leftovers`]).
    fn carry(&mut self, io: &Io) -> impl Future<Output = Result<(), String>> + Send;

    /// Packets taken from the route and not written yet, handed back when
    /// the connection ends.
    fn leftovers(&mut self) -> Vec<Packet> {
        Vec::new()
    }

    /// The compression the connection uses, for `getInfos` (`None`: none
    /// was asked for).
    fn compression(&self) -> Option<String> {
        None
    }

    /// A voluntary close (new endpoint, disconnect, shutdown).
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// What a session may use of its transporter.
pub struct Io {
    route: Arc<Route>,
    drops: Arc<Drops>,
    member: usize,
    inbound: mpsc::Sender<Packet>,
    pub stats: Arc<LinkStats>,
}

impl Io {
    /// Up to `max` packets and about `max_bytes` to write, oldest first
    /// (none unless this transporter carries the traffic).
    pub fn take(&self, max: usize, max_bytes: usize) -> Vec<Packet> {
        self.route.take(self.member, max, max_bytes)
    }

    /// The live status waiting at the front of the route, if any.
    pub fn take_volatile(&self) -> Option<Packet> {
        self.route.take_volatile(self.member)
    }

    /// Packets taken but not written go back to the front of the route.
    pub fn give_back(&self, packets: Vec<Packet>) {
        self.route.give_back(packets);
    }

    /// Counts `n` outbound packets of `channel` that will never be sent,
    /// per channel and reason (summarised in the log, see
    /// [`crate::common::drops`]).
    pub fn drop_packets(&self, channel: &str, n: u64, reason: &'static str) {
        self.stats.dropped(n);
        self.drops.record(channel, reason, n);
    }

    /// [`Io::drop_packets`] for each of `packets`.
    pub fn drop_all<'a>(
        &self,
        packets: impl IntoIterator<Item = &'a Packet>,
        reason: &'static str,
    ) {
        for p in packets {
            self.drop_packets(&p.channel, 1, reason);
        }
    }

    /// Counts `n` messages from PM2.io that could not be used (malformed, no
    /// channel, no payload): `inbound_dropped` and the drop counters under
    /// `channel` and `reason`, so a backend speaking garbage shows in
    /// `getInfos` and a throttled `agent.log` summary.
    pub fn reject_inbound(&self, channel: &str, reason: &'static str) {
        self.reject_inbound_n(channel, 1, reason);
    }

    /// [`Io::reject_inbound`] for `n` messages at once (nothing for 0).
    pub fn reject_inbound_n(&self, channel: &str, n: u64, reason: &'static str) {
        use std::sync::atomic::Ordering;
        if n == 0 {
            return;
        }
        self.stats.inbound_dropped.fetch_add(n, Ordering::Relaxed);
        self.drops.record(channel, reason, n);
    }

    /// Hands a packet from PM2.io to the consumer without waiting: a full
    /// channel drops it (and counts it) so a slow consumer can never stall
    /// the socket that also carries our outbound traffic.
    pub fn deliver(&self, packet: Packet) {
        use std::sync::atomic::Ordering;
        use tokio::sync::mpsc::error::TrySendError;
        let (p, reason) = match self.inbound.try_send(packet) {
            Ok(()) => return,
            Err(TrySendError::Full(p)) => (p, "inbound: remote actions not keeping up"),
            Err(TrySendError::Closed(p)) => (p, "inbound: agent stopping"),
        };
        self.stats.inbound_dropped.fetch_add(1, Ordering::Relaxed);
        self.drops.record(&p.channel, reason, 1);
    }
}

/// Timers of the shared life. `Default` is the production behaviour.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// Bound on opening a connection and getting the peer's proof
    /// (`PM2_AGENT_PROOF_TIMEOUT`).
    pub proof_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max` (with jitter).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            proof_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            // Back within 8 s of PM2.io's return (full jitter in [0, 8 s]).
            backoff_max: Duration::from_secs(8),
            stable_after: Duration::from_secs(10),
        }
    }
}

impl LinkOptions {
    /// Zero durations would make timers spin; clamp instead of trusting.
    fn sanitized(mut self) -> Self {
        let min = Duration::from_millis(1);
        for d in [
            &mut self.proof_timeout,
            &mut self.backoff_initial,
            &mut self.backoff_max,
        ] {
            *d = (*d).max(min);
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no tokio runtime to run the transporter on")]
pub struct NoRuntime;

/// Handle to a transporter's actor. Dropping it closes the connection and
/// ends the task.
pub struct Link<P: Protocol> {
    protocol: Arc<P>,
    target: watch::Sender<Option<P::Target>>,
    route: Arc<Route>,
    member: usize,
    stats: Arc<LinkStats>,
}

impl<P: Protocol> Link<P> {
    /// Joins `route` (after the transporters already in it) and spawns the
    /// actor on the current tokio runtime. Packets from PM2.io go to
    /// `inbound`.
    pub fn spawn(
        protocol: P,
        options: LinkOptions,
        route: Arc<Route>,
        role: Role,
        inbound: mpsc::Sender<Packet>,
    ) -> Result<Self, NoRuntime> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NoRuntime)?;
        let protocol = Arc::new(protocol);
        let (member, wake, stats) = route.join(P::NAME, role);
        let (target_tx, target_rx) = watch::channel(None);
        let opts = options.sanitized();
        let actor = Actor {
            protocol: protocol.clone(),
            backoff: Backoff::new(opts.backoff_initial, opts.backoff_max),
            opts,
            target: target_rx,
            wake,
            io: Io {
                drops: route.shared_drops(),
                route: route.clone(),
                member,
                inbound,
                stats: stats.clone(),
            },
        };
        runtime.spawn(actor.run());
        Ok(Link {
            protocol,
            target: target_tx,
            route,
            member,
            stats,
        })
    }

    /// A transporter with a route of its own (an offline queue of
    /// `queue_size`): what tests and single-transporter uses need.
    pub fn alone(
        protocol: P,
        options: LinkOptions,
        queue_size: usize,
        inbound: mpsc::Sender<Packet>,
    ) -> Result<Self, NoRuntime> {
        let route = Arc::new(Route::new(
            queue_size,
            super::route::QUEUE_BYTES,
            Arc::default(),
        ));
        Self::spawn(protocol, options, route, Role::Configured, inbound)
    }

    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }
}

impl<P: Protocol> Transporter for Link<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn connect(&self, endpoint: TransportEndpoint) {
        match self.protocol.target(endpoint) {
            Ok(t) => {
                self.target.send_if_modified(|cur| {
                    if cur.as_ref() == Some(&t) {
                        false
                    } else {
                        *cur = Some(t);
                        true
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "{}: cannot connect", P::NAME);
                self.route.set_error(self.member, e);
            }
        }
    }

    fn disconnect(&self) {
        self.target.send_if_modified(|t| t.take().is_some());
    }

    fn send(&self, packet: Packet) {
        self.route.push(packet);
    }

    fn is_connected(&self) -> bool {
        self.route.is_proven(self.member)
    }

    fn last_error(&self) -> Option<String> {
        self.route.last_error(self.member)
    }

    fn stats(&self) -> TransportStats {
        use std::sync::atomic::Ordering::Relaxed;
        let drops = self.route.drops();
        TransportStats {
            sent: self.stats.sent.load(Relaxed),
            queued: self.route.queued() as u64,
            dropped: self.stats.dropped.load(Relaxed) + drops.queue_full + drops.superseded,
            inbound_dropped: self.stats.inbound_dropped.load(Relaxed),
            connects: self.stats.connects.load(Relaxed),
        }
    }
}

/// Why the actor left a state.
enum Interrupt<T> {
    /// The desired target changed (`None` = disconnect()).
    Retarget(Option<T>),
    /// The handle was dropped.
    Shutdown,
}

struct Actor<P: Protocol> {
    protocol: Arc<P>,
    opts: LinkOptions,
    target: watch::Receiver<Option<P::Target>>,
    wake: Arc<Notify>,
    io: Io,
    backoff: Backoff,
}

impl<P: Protocol> Actor<P> {
    fn set_state(&self, state: LinkState, endpoint: Option<String>, error: Option<String>) {
        self.io
            .route
            .set_state(self.io.member, state, endpoint, error);
    }

    /// What a change of the desired target means: `None` when it is the
    /// one being served (set again), else a retarget or a shutdown.
    fn interrupted(
        &mut self,
        changed: Result<(), watch::error::RecvError>,
        current: &Option<P::Target>,
    ) -> Option<Interrupt<P::Target>> {
        if changed.is_err() {
            return Some(Interrupt::Shutdown);
        }
        let t = self.target.borrow_and_update().clone();
        (t != *current).then_some(Interrupt::Retarget(t))
    }

    /// Runs `fut` unless the desired target changes first (`Err`).
    async fn unless_retargeted<F: Future>(
        &mut self,
        current: &Option<P::Target>,
        fut: F,
    ) -> Result<F::Output, Interrupt<P::Target>> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                changed = self.target.changed() => {
                    if let Some(i) = self.interrupted(changed, current) {
                        return Err(i);
                    }
                }
                out = &mut fut => return Ok(out),
            }
        }
    }

    async fn run(mut self) {
        let mut target = self.target.borrow_and_update().clone();
        loop {
            let step = match target.clone() {
                None => {
                    self.set_state(LinkState::Standby, None, None);
                    self.unless_retargeted(&target, std::future::pending::<()>())
                        .await
                }
                Some(t) => self.attempt(&t, &target).await,
            };
            match step {
                Ok(()) => {}
                Err(Interrupt::Retarget(next)) => {
                    // A new endpoint starts afresh.
                    target = next;
                    self.backoff.reset();
                }
                Err(Interrupt::Shutdown) => return,
            }
        }
    }

    /// One attempt at `t`: connect, prove, serve until lost, then wait the
    /// backoff delay. `Err` when the desired target changed meanwhile.
    async fn attempt(
        &mut self,
        t: &P::Target,
        current: &Option<P::Target>,
    ) -> Result<(), Interrupt<P::Target>> {
        self.set_state(LinkState::Connecting, Some(t.to_string()), None);
        let within = self.opts.proof_timeout;
        let protocol = self.protocol.clone();
        // The protocol bounds its own proof; this outer bound only guards
        // against a protocol that forgets to.
        let open = tokio::time::timeout(within * 2, protocol.open(t, within));
        let reason = match self.unless_retargeted(current, open).await? {
            Ok(Ok(session)) => {
                let opened = Instant::now();
                let lost = self.connected(session, t, current).await;
                if opened.elapsed() >= self.opts.stable_after {
                    self.backoff.reset();
                }
                lost?
            }
            Ok(Err(reason)) => reason,
            Err(_) => format!("no proof from the peer within {:?}", within * 2),
        };
        warn!(endpoint = %t, reason = %reason, "{} failed", P::NAME);
        self.set_state(LinkState::Failed, None, Some(reason));
        let delay = self.backoff.next_delay();
        debug!(endpoint = %t, ?delay, "{} retry scheduled", P::NAME);
        self.unless_retargeted(current, tokio::time::sleep(delay))
            .await
    }

    /// Serves a proven connection. `Ok(reason)`: lost; `Err`: interrupted
    /// (the connection was closed voluntarily).
    async fn connected(
        &mut self,
        mut session: P::Session,
        t: &P::Target,
        current: &Option<P::Target>,
    ) -> Result<String, Interrupt<P::Target>> {
        info!(endpoint = %t, "{} connected", P::NAME);
        self.io
            .stats
            .connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.set_state(LinkState::Connected, None, None);
        self.io
            .route
            .set_compression(self.io.member, session.compression());
        let end = loop {
            tokio::select! {
                biased;
                changed = self.target.changed() => {
                    if let Some(i) = self.interrupted(changed, current) {
                        break Err(i);
                    }
                }
                event = session.next_event() => {
                    let handled = session.handle(event, &self.io).await;
                    self.io.route.carried(self.io.member);
                    if let Err(reason) = handled {
                        break Ok(reason);
                    }
                }
                () = self.wake.notified() => {
                    let carried = session.carry(&self.io).await;
                    self.io.route.carried(self.io.member);
                    if let Err(reason) = carried {
                        break Ok(reason);
                    }
                }
            }
        };
        // What was taken and not written goes back to the route, in order;
        // the caller records the failure, which moves the traffic on.
        self.io.give_back(session.leftovers());
        self.io.route.set_compression(self.io.member, None);
        if end.is_err() {
            self.set_state(LinkState::Connecting, None, None);
            session.close().await;
            info!(endpoint = %t, "{} disconnected", P::NAME);
        }
        end
    }
}
