//! The Axon transporter: the legacy PM2.io link (protocols.md §2.2, §4, §5;
//! agent-spec.md §5.4).
//!
//! Two sockets make one connection:
//! * push: a pm2-axon `pub` connected to `endpoints.push`. Every status
//!   interval one `sendv2` frame carries everything gathered since the last
//!   one, ciphered with the secret key: `{"public_key":…,"data":<hex>}`.
//!   Profiles go at once as a clear 2-argument frame;
//! * reverse: an nssocket connected to `endpoints.pull`. The server asks
//!   (`ask`), we authenticate (`ask:rep`, ciphered system metadata); it then
//!   sends ciphered commands, and our `trigger:*` replies go back in clear.
//!
//! [`AxonTransport`] is a handle to an actor task built like the WebSocket
//! one: a `watch` holds the desired endpoints, a bounded `mpsc` carries
//! packets (a full one drops and counts), reconnects back off with jitter.
//!
//! Differences from the JS transporter, on purpose:
//! * the status is not fetched with `getMonitorData` at send time: the
//!   daemon already sends `status` every second to every transporter, and
//!   the latest one (if recent) goes into the frame with `rev_con: true`;
//! * every buffer is bounded: the per-tick buffer (JS: unbounded while the
//!   sockets were down) and the offline queue (as the WebSocket one);
//! * `trigger:*` replies and the offline queue survive a disconnection
//!   (JS dropped them), profiles are still dropped while offline (they can
//!   be tens of megabytes);
//! * the push backlog check resets its counter on a healthy tick, so only
//!   *consecutive* congested ticks force a reconnect;
//! * no DNS probe, connect timeouts, one connection at a time.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::ReadHalf;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, trace, warn};

use super::base::{self, is_falsy, is_volatile, Backoff, Shared, PACKET_QUEUE_SIZE};
use super::{Identity, Packet, TransportEndpoint, TransportStats, Transporter};
use crate::protocol::amp::Arg;
use crate::protocol::cipher::Cipher;
use crate::protocol::nssocket::NsMessage;
use crate::socket::connection::WriteError;
use crate::socket::endpoint::{Endpoint, Stream};
use crate::socket::nssocket::{self, NsReader, NsSender};
use crate::socket::publisher::{PubError, PubSocket};

/// Above this many unsent bytes on the push socket a tick's buffer is
/// discarded (the JS transporter's `bufferSize > 290000`).
pub const MAX_BUFFERED_BYTES: usize = 290_000;
/// Consecutive congested ticks before the transporter reconnects (JS: 20).
pub const MAX_OVERFLOWS: u32 = 20;

/// Knobs of the transporter. `Default` is the production behaviour; tests
/// shrink the timers and limits.
#[derive(Debug, Clone)]
pub struct AxonOptions {
    /// `getSystemMetadata()` of the daemon (upper-case keys, verifyPM2
    /// order); sent lower-cased and ciphered in `ask:rep`.
    pub system_metadata: Value,
    /// Offline queue capacity (`PACKET_QUEUE_SIZE`); oldest dropped.
    pub queue_size: usize,
    /// Packets gathered for the next push frame while connected; oldest
    /// dropped beyond it (a tick without a fresh status keeps them).
    pub buffer_limit: usize,
    /// Push frame period (`STATUS_INTERVAL`).
    pub status_interval: Duration,
    /// Push socket backlog (bytes written to it but not yet to the kernel)
    /// above which a tick's buffer is discarded.
    pub max_buffered_bytes: usize,
    /// Consecutive discarded ticks that force a reconnect.
    pub max_overflows: u32,
    /// Capacity of the handle → actor packet buffer.
    pub send_buffer: usize,
    /// Bound on establishing both sockets.
    pub connect_timeout: Duration,
    /// Bytes each socket's writer may hold; a write beyond it is dropped.
    pub max_pending: usize,
    /// First reconnect delay; doubles up to `backoff_max` (with jitter).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff.
    pub stable_after: Duration,
}

impl Default for AxonOptions {
    fn default() -> Self {
        AxonOptions {
            system_metadata: Value::Object(Map::new()),
            queue_size: PACKET_QUEUE_SIZE,
            buffer_limit: 1000,
            status_interval: Duration::from_secs(1),
            max_buffered_bytes: MAX_BUFFERED_BYTES,
            max_overflows: MAX_OVERFLOWS,
            send_buffer: 1024,
            connect_timeout: Duration::from_secs(10),
            max_pending: 128 << 20,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        }
    }
}

/// Why `connect` or a connection attempt failed. The `Display` text is
/// what `last_error` reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AxonError {
    #[error("the Axon transport needs named endpoints (push, pull), got the single URL {0:?}")]
    NotNamed(String),
    #[error("the Axon transport needs a {0:?} endpoint")]
    MissingEndpoint(&'static str),
    #[error("invalid Axon {key} endpoint: {reason}")]
    BadEndpoint { key: &'static str, reason: String },
    #[error("{which} connection to {endpoint} failed: {reason}")]
    Connect {
        which: &'static str,
        endpoint: String,
        reason: String,
    },
    #[error("{which} connection to {endpoint}: timed out after {timeout:?}")]
    ConnectTimeout {
        which: &'static str,
        endpoint: String,
        timeout: Duration,
    },
    #[error("no tokio runtime to run the Axon transport on")]
    NoRuntime,
}

/// The two addresses, parsed (host and port only; the scheme is ignored
/// like the JS transporter's `url.parse` use).
#[derive(Debug, Clone, PartialEq)]
struct Target {
    push: Endpoint,
    pull: Endpoint,
}

fn parse_target(endpoint: TransportEndpoint) -> Result<Target, AxonError> {
    let named = match endpoint {
        TransportEndpoint::Single(s) => return Err(AxonError::NotNamed(s)),
        TransportEndpoint::Named(m) => m,
    };
    let get = |key: &'static str| -> Result<Endpoint, AxonError> {
        let raw = named
            .get(key)
            .filter(|s| !s.trim().is_empty())
            .ok_or(AxonError::MissingEndpoint(key))?;
        Endpoint::parse(raw).map_err(|e| AxonError::BadEndpoint {
            key,
            reason: e.to_string(),
        })
    };
    Ok(Target {
        push: get("push")?,
        pull: get("pull")?,
    })
}

/// Handle to the Axon actor. Dropping it closes both sockets and ends the
/// task.
pub struct AxonTransport {
    packets: mpsc::Sender<Packet>,
    target: watch::Sender<Option<Target>>,
    shared: Arc<Shared>,
}

impl AxonTransport {
    /// Spawns the actor on the current tokio runtime. Deciphered commands
    /// from PM2.io go to `inbound`; when it is full they are dropped and
    /// counted, the socket is never held up.
    pub fn new(
        identity: Identity,
        options: AxonOptions,
        inbound: mpsc::Sender<Packet>,
    ) -> Result<Self, AxonError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AxonError::NoRuntime)?;
        let options = sanitize(options);
        let cipher = Cipher::new(&identity.secret_key);
        // Computed once: the metadata does not change while the agent runs.
        let ask_rep = json!({
            "data": cipher.encrypt_json(&lowercase_keys(&options.system_metadata)),
            "public_key": identity.public_key,
        });
        let (packets_tx, packets_rx) = mpsc::channel(options.send_buffer);
        let (target_tx, target_rx) = watch::channel(None);
        let shared = Arc::new(Shared::default());
        let actor = Actor {
            backoff: Backoff::new(options.backoff_initial, options.backoff_max),
            public_key: identity.public_key,
            machine_name: identity.machine_name,
            cipher,
            ask_rep,
            opts: options,
            packets: packets_rx,
            target: target_rx,
            inbound,
            shared: shared.clone(),
            pending: VecDeque::new(),
            status: None,
            overflows: 0,
        };
        runtime.spawn(actor.run());
        Ok(AxonTransport {
            packets: packets_tx,
            target: target_tx,
            shared,
        })
    }
}

/// Zero durations would make tokio's `interval` panic and zero capacities
/// make `mpsc::channel` panic; clamp instead of trusting the caller.
fn sanitize(mut o: AxonOptions) -> AxonOptions {
    let min = Duration::from_millis(1);
    for d in [
        &mut o.status_interval,
        &mut o.connect_timeout,
        &mut o.backoff_initial,
        &mut o.backoff_max,
    ] {
        *d = (*d).max(min);
    }
    o.send_buffer = o.send_buffer.max(1);
    o.buffer_limit = o.buffer_limit.max(1);
    o.max_overflows = o.max_overflows.max(1);
    o
}

/// `{"MACHINE_NAME":…}` → `{"machine_name":…}`, order kept (the JS loop
/// re-inserts every key lower-cased in iteration order). Anything but an
/// object becomes `{}`.
pub fn lowercase_keys(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return Value::Object(Map::new());
    };
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect(),
    )
}

/// JS: `channel.indexOf('trigger:') !== -1`.
fn is_trigger(channel: &str) -> bool {
    channel.contains("trigger:")
}

impl Transporter for AxonTransport {
    fn name(&self) -> &'static str {
        "AxonTransport"
    }

    fn connect(&self, endpoint: TransportEndpoint) {
        match parse_target(endpoint) {
            Ok(t) => {
                base::set_target(&self.target, t);
            }
            Err(e) => {
                warn!(error = %e, "Axon transport: cannot connect");
                self.shared.set_error(Some(e.to_string()));
            }
        }
    }

    fn disconnect(&self) {
        self.target.send_if_modified(|t| t.take().is_some());
    }

    fn send(&self, packet: Packet) {
        self.shared.submit(&self.packets, packet, "Axon transport");
    }

    fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    fn last_error(&self) -> Option<String> {
        self.shared.last_error()
    }

    fn stats(&self) -> TransportStats {
        self.shared.stats()
    }
}

/// Closes the pub socket when dropped: its reconnect task is detached, so a
/// connection attempt abandoned half-way must not leave it running.
struct PubGuard(PubSocket);

impl Drop for PubGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Both sockets of one connection.
struct Conn {
    push: PubGuard,
    reader: NsReader<ReadHalf<Stream>>,
    sender: NsSender,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Not a graceful close: a reverse server that stopped reading
        // would otherwise keep the writer (and the socket) alive.
        self.sender.abort();
    }
}

/// Opens both sockets at once (the JS `async.parallel`), each bounded by
/// `timeout`; the first failure ends the attempt. The pub socket retries on
/// axon's schedule within that time.
async fn open(t: Target, timeout: Duration, max_pending: usize) -> Result<Conn, AxonError> {
    let push = PubGuard(PubSocket::connect(t.push.clone(), max_pending));
    let mut up = push.0.connection();
    let push_ready = async {
        match tokio::time::timeout(timeout, up.wait_for(|c| *c)).await {
            Ok(Ok(_)) => Ok(()),
            // The watch sender only goes with the socket's task.
            Ok(Err(_)) => Err(AxonError::Connect {
                which: "push",
                endpoint: t.push.to_string(),
                reason: "socket closed".into(),
            }),
            Err(_) => Err(AxonError::ConnectTimeout {
                which: "push",
                endpoint: t.push.to_string(),
                timeout,
            }),
        }
    };
    let reverse = async {
        match tokio::time::timeout(timeout, nssocket::connect(&t.pull, max_pending)).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(AxonError::Connect {
                which: "reverse",
                endpoint: t.pull.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => Err(AxonError::ConnectTimeout {
                which: "reverse",
                endpoint: t.pull.to_string(),
                timeout,
            }),
        }
    };
    let ((), (reader, sender)) = tokio::try_join!(push_ready, reverse)?;
    Ok(Conn {
        push,
        reader,
        sender,
    })
}

type Interrupt = base::Interrupt<Target>;
type End = base::End<Target>;

struct Actor {
    public_key: String,
    machine_name: String,
    cipher: Cipher,
    /// The `ask:rep` payload, `{"data":<hex>,"public_key":…}`.
    ask_rep: Value,
    opts: AxonOptions,
    packets: mpsc::Receiver<Packet>,
    target: watch::Receiver<Option<Target>>,
    inbound: mpsc::Sender<Packet>,
    shared: Arc<Shared>,
    /// Packets for the next push frame, in arrival order (the frame groups
    /// them by channel in first-seen order). While offline this is the
    /// offline queue: at most `queue_size`, `trigger:*` replies included;
    /// while connected at most `buffer_limit`, push channels only.
    pending: VecDeque<Packet>,
    /// The latest `status` payload (with `rev_con`), and when it came.
    status: Option<(Value, Instant)>,
    /// Consecutive ticks discarded because the push backlog was too big.
    overflows: u32,
    backoff: Backoff,
}

impl base::Offline for Actor {
    type Target = Target;

    fn inputs(
        &mut self,
    ) -> (
        &mut watch::Receiver<Option<Target>>,
        &mut mpsc::Receiver<Packet>,
    ) {
        (&mut self.target, &mut self.packets)
    }

    fn enqueue_offline(&mut self, p: Packet) {
        if is_volatile(&p.channel) || p.channel == "profiling" || self.opts.queue_size == 0 {
            // A stale status is useless once reconnected, and profiles can
            // be tens of megabytes: neither is queued.
            self.shared.drop_packets(1);
            trace!(channel = %p.channel, "Axon offline: packet not queued");
            return;
        }
        self.push_pending(p, self.opts.queue_size);
    }

    fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }
}

impl Actor {
    async fn run(mut self) {
        let mut target = self.target.borrow_and_update().clone();
        loop {
            let Some(t) = target.clone() else {
                // Idle (never connected or disconnect()ed): keep queueing.
                match base::offline(&mut self, &target, std::future::pending::<()>()).await {
                    Err(Interrupt::Retarget(t)) => target = t,
                    Err(Interrupt::Shutdown) => return,
                    Ok(()) => {}
                }
                continue;
            };
            let attempt = open(t.clone(), self.opts.connect_timeout, self.opts.max_pending);
            match base::offline(&mut self, &target, attempt).await {
                Ok(Ok(conn)) => {
                    let opened = Instant::now();
                    let end = self.connected(conn, &t, &target).await;
                    if opened.elapsed() >= self.opts.stable_after {
                        self.backoff.reset();
                    }
                    match end {
                        End::Lost => {}
                        End::Interrupt(Interrupt::Retarget(t)) => {
                            target = t;
                            self.backoff.reset();
                            continue;
                        }
                        End::Interrupt(Interrupt::Shutdown) => return,
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Axon connection failed");
                    self.shared.set_error(Some(e.to_string()));
                }
                Err(Interrupt::Retarget(t)) => {
                    target = t;
                    self.backoff.reset();
                    continue;
                }
                Err(Interrupt::Shutdown) => return,
            }
            let delay = self.backoff.next_delay();
            debug!(push = %t.push, reverse = %t.pull, ?delay, "Axon reconnect scheduled");
            if !base::retry_after(&mut self, &mut target, delay).await {
                return;
            }
        }
    }

    /// Appends to `pending`, dropping the oldest beyond `cap`.
    fn push_pending(&mut self, p: Packet, cap: usize) {
        while self.pending.len() >= cap {
            self.pending.pop_front();
            let n = self.shared.drop_packets(1);
            debug!(dropped = n, "Axon queue full, oldest packet dropped");
        }
        self.pending.push_back(p);
        self.set_queued();
    }

    fn set_queued(&self) {
        self.shared
            .queued
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    async fn connected(&mut self, mut conn: Conn, t: &Target, target: &Option<Target>) -> End {
        info!(push = %t.push, reverse = %t.pull, "Axon transport connected");
        self.shared.connects.fetch_add(1, Ordering::Relaxed);
        self.overflows = 0;
        let end = self.serve(&mut conn, t, target).await;
        self.shared.connected.store(false, Ordering::Relaxed);
        // Dropping `conn` closes both sockets (pub via its guard, nssocket
        // when its reader and sender go).
        drop(conn);
        // Back to the offline bound; the oldest packets give way.
        let over = self.pending.len().saturating_sub(self.opts.queue_size);
        if over > 0 {
            self.pending.drain(..over);
            self.shared.drop_packets(over as u64);
            self.set_queued();
        }
        if let End::Interrupt(_) = end {
            info!(push = %t.push, reverse = %t.pull, "Axon transport disconnected");
        }
        end
    }

    async fn serve(&mut self, conn: &mut Conn, t: &Target, target: &Option<Target>) -> End {
        // Replies queued while offline go out first on the reverse channel;
        // the rest stays for the next push frame.
        let queued = std::mem::take(&mut self.pending);
        let mut lost = None;
        for p in queued {
            if lost.is_none() && is_trigger(&p.channel) {
                if let Err((p, reason)) = self.send_trigger(conn, p) {
                    lost = Some(reason);
                    self.pending.push_back(p);
                }
            } else {
                self.pending.push_back(p);
            }
        }
        self.set_queued();
        if let Some(reason) = lost {
            return self.lost(t, reason);
        }

        let mut push_up = conn.push.0.connection();
        let up = *push_up.borrow_and_update();
        self.shared.connected.store(up, Ordering::Relaxed);
        let period = self.opts.status_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        // After a slow write, carry on at the normal pace (no burst).
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = self.target.changed() => {
                    if let Some(i) = base::retarget(changed, &mut self.target, target) {
                        return End::Interrupt(i);
                    }
                }
                changed = push_up.changed() => {
                    if changed.is_err() {
                        return self.lost(t, "push socket stopped".into());
                    }
                    // pm2-axon reconnects the push socket on its own; only
                    // the reverse channel closing resets the pair.
                    let up = *push_up.borrow_and_update();
                    self.shared.connected.store(up, Ordering::Relaxed);
                    if up {
                        info!(push = %t.push, "Axon push socket reconnected");
                    } else {
                        warn!(push = %t.push, "Axon push socket disconnected; reconnecting it");
                    }
                }
                msg = conn.reader.recv() => match msg {
                    Ok(Some(m)) => {
                        if let Err(reason) = self.on_message(conn, m) {
                            return self.lost(t, reason);
                        }
                    }
                    Ok(None) => return self.lost(t, "reverse connection closed by the server".into()),
                    Err(e) => return self.lost(t, format!("reverse connection error: {e}")),
                },
                _ = tick.tick() => {
                    if let Err(reason) = self.flush(conn).await {
                        return self.lost(t, reason);
                    }
                }
                p = self.packets.recv() => match p {
                    Some(p) => {
                        if let Err(reason) = self.on_packet(conn, p) {
                            return self.lost(t, reason);
                        }
                    }
                    None => return End::Interrupt(Interrupt::Shutdown),
                },
            }
        }
    }

    fn lost(&self, t: &Target, reason: String) -> End {
        warn!(push = %t.push, reverse = %t.pull, reason = %reason, "Axon connection lost");
        self.shared.set_error(Some(reason));
        End::Lost
    }

    /// A packet from the hub while connected.
    fn on_packet(&mut self, conn: &mut Conn, p: Packet) -> Result<(), String> {
        match p.channel.as_str() {
            "status" => {
                let Value::Object(mut status) = p.payload else {
                    debug!("Axon: status payload is not an object, ignored");
                    return Ok(());
                };
                status.insert("rev_con".into(), Value::Bool(true));
                self.status = Some((Value::Object(status), Instant::now()));
            }
            // The status carries the monitoring data already (JS ignored it).
            "monitoring" => trace!("Axon: monitoring packet ignored"),
            "profiling" => self.send_profile(conn, p),
            c if is_trigger(c) => {
                if let Err((p, reason)) = self.send_trigger(conn, p) {
                    self.push_pending(p, self.opts.buffer_limit);
                    return Err(reason);
                }
            }
            _ => self.push_pending(p, self.opts.buffer_limit),
        }
        Ok(())
    }

    /// `trigger:*` replies go on the reverse channel, in clear. A closed
    /// channel gives the packet back (to be re-queued) with the reason.
    fn send_trigger(&self, conn: &Conn, p: Packet) -> Result<(), (Packet, String)> {
        match conn.sender.send(&p.channel, Some(&p.payload)) {
            Ok(()) => {
                self.shared.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(WriteError::Full(pending)) => {
                let n = self.shared.drop_packets(1);
                warn!(channel = %p.channel, pending, dropped = n, "Axon reverse channel backlog full, reply dropped");
                Ok(())
            }
            Err(WriteError::Closed) => Err((p, "reverse connection closed".into())),
        }
    }

    /// `profiling` goes at once as two clear strings: the meta (the payload
    /// without `data`) as JSON, then the data (JS `_axon.send(meta, data)`).
    fn send_profile(&self, conn: &Conn, p: Packet) {
        if !conn.push.0.is_connected() {
            self.shared.drop_packets(1);
            debug!("Axon: profiling dropped, push socket not connected");
            return;
        }
        let Value::Object(mut meta) = p.payload else {
            self.shared.drop_packets(1);
            debug!("Axon: profiling payload is not an object, dropped");
            return;
        };
        let data = match meta.shift_remove("data") {
            Some(Value::String(s)) => Arg::Str(s),
            // JS hands anything else to amp-message, which JSON-encodes it
            // (`undefined` as null).
            Some(v) => Arg::Json(v),
            None => Arg::Json(Value::Null),
        };
        let meta = Value::Object(meta).to_string();
        match conn.push.0.send(&[Arg::Str(meta), data]) {
            Ok(n) if n > 0 => {
                self.shared.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                let n = self.shared.drop_packets(1);
                warn!(
                    dropped = n,
                    "Axon: profiling dropped, push socket refused it (backlog)"
                );
            }
            Err(e) => {
                self.shared.drop_packets(1);
                warn!(error = %e, "Axon: profiling dropped");
            }
        }
    }

    /// A message from the reverse server: `ask` is answered, anything else
    /// is deciphered and handed to the consumer.
    fn on_message(&mut self, conn: &Conn, m: NsMessage) -> Result<(), String> {
        // The JS `data('*')` listener only sees single-segment events.
        if m.path.len() != 1 {
            debug!(event = %m.event(), "Axon: ignoring a multi-segment reverse event");
            return Ok(());
        }
        let NsMessage { mut path, data } = m;
        let channel = path.pop().unwrap_or_default();
        if channel == "ask" {
            debug!("Axon: authenticating on the reverse channel (ask:rep)");
            return match conn.sender.send("ask:rep", Some(&self.ask_rep)) {
                Ok(()) => Ok(()),
                Err(WriteError::Full(pending)) => {
                    warn!(
                        pending,
                        "Axon reverse channel backlog full, ask:rep dropped"
                    );
                    Ok(())
                }
                Err(WriteError::Closed) => Err("reverse connection closed".into()),
            };
        }
        let Value::String(hex) = data else {
            debug!(channel = %channel, "Axon: reverse message without ciphered data, dropped");
            return Ok(());
        };
        match self.cipher.decrypt_json(&hex) {
            Ok(payload) if !is_falsy(&payload) => {
                self.shared
                    .deliver(&self.inbound, Packet { channel, payload }, "Axon");
            }
            Ok(_) => debug!(channel = %channel, "Axon: reverse message with empty data, dropped"),
            Err(e) => {
                debug!(channel = %channel, error = %e, "Axon: undecipherable reverse message, dropped")
            }
        }
        Ok(())
    }

    /// The status-interval tick: one ciphered frame with everything gathered
    /// and the latest status. `Err` asks for a reconnect.
    async fn flush(&mut self, conn: &Conn) -> Result<(), String> {
        let push = &conn.push.0;
        if !push.is_connected() {
            // pm2-axon is reconnecting it; keep the buffer (bounded).
            return Ok(());
        }
        let backlog = push.buffered_bytes();
        if backlog > self.opts.max_buffered_bytes {
            // The backend does not keep up: shed this tick rather than grow.
            let n = self.pending.len();
            self.pending.clear();
            self.set_queued();
            self.shared.drop_packets(n as u64);
            self.overflows += 1;
            warn!(
                backlog,
                discarded = n,
                ticks = self.overflows,
                "Axon push backlog over {} bytes, buffer discarded",
                self.opts.max_buffered_bytes
            );
            if self.overflows >= self.opts.max_overflows {
                self.overflows = 0;
                return Err(format!(
                    "push backlog over {} bytes for {} consecutive ticks",
                    self.opts.max_buffered_bytes, self.opts.max_overflows
                ));
            }
            return Ok(());
        }
        self.overflows = 0;
        // The status is what tells PM2.io the server is alive; a frame is
        // only sent with a recent one (JS skipped the tick when
        // getMonitorData failed). Older than 3 intervals: PM2 is not
        // answering, wait for it with the buffer kept.
        let max_age = self.opts.status_interval.saturating_mul(3);
        let status = match &self.status {
            Some((s, at)) if at.elapsed() <= max_age => s.clone(),
            _ => {
                trace!(
                    buffered = self.pending.len(),
                    "Axon: no recent status, frame postponed"
                );
                return Ok(());
            }
        };
        let count = self.pending.len() as u64 + 1;
        let buffer = build_buffer(self.pending.drain(..), status, &self.machine_name);
        self.set_queued();
        let frame = json!({
            "public_key": self.public_key,
            "data": self.cipher.encrypt_json(&buffer),
        })
        .to_string();
        let dropped_before = push.dropped();
        // sendv2 resolves once written. A stalled peer must not stall the
        // actor: after one interval, move on and let the backlog check of
        // the next tick judge (the frame stays queued in the writer).
        match tokio::time::timeout(
            self.opts.status_interval,
            push.send_and_wait(&[Arg::Str(frame)]),
        )
        .await
        {
            Ok(Ok(())) if push.dropped() == dropped_before => {
                self.shared.sent.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Ok(())) | Ok(Err(PubError::NoPeer)) => {
                let n = self.shared.drop_packets(count);
                debug!(
                    dropped = n,
                    "Axon: push frame not written (peer gone or backlog full)"
                );
            }
            Ok(Err(e)) => {
                let n = self.shared.drop_packets(count);
                warn!(error = %e, dropped = n, "Axon: push frame dropped");
            }
            Err(_) => {
                self.shared.sent.fetch_add(count, Ordering::Relaxed);
                debug!("Axon: push frame still being written");
            }
        }
        Ok(())
    }
}

/// `{"<channel>":[payload,…],…,"status":…,"server_name":…}`: channels in
/// first-seen order, then the status and the server name, like the JS
/// buffer object.
fn build_buffer(packets: impl Iterator<Item = Packet>, status: Value, server_name: &str) -> Value {
    let mut buf = Map::new();
    for p in packets {
        match buf.get_mut(&p.channel) {
            Some(Value::Array(list)) => list.push(p.payload),
            _ => {
                buf.insert(p.channel, Value::Array(vec![p.payload]));
            }
        }
    }
    // A packet on a channel named like the trailing keys would otherwise
    // keep its position; these two always come last.
    buf.shift_remove("status");
    buf.shift_remove("server_name");
    buf.insert("status".into(), status);
    buf.insert("server_name".into(), Value::String(server_name.to_owned()));
    Value::Object(buf)
}

#[cfg(test)]
#[path = "axon_tests.rs"]
mod tests;
