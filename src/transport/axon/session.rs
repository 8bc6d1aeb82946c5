//! A proven Axon connection: the push ticks, the reverse channel's
//! commands, and the packets it carries.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::ReadHalf;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, trace, warn};

use super::frame::{build_buffer, is_trigger};
use super::{Setup, Target};
use crate::common::js::is_falsy;
use crate::common::Packet;
use crate::protocol::amp::Arg;
use crate::protocol::nssocket::NsMessage;
use crate::socket::connection::WriteError;
use crate::socket::endpoint::{Endpoint, Stream};
use crate::socket::liveness::{self, SendWatch};
use crate::socket::nssocket::{NsReader, NsSender};
use crate::socket::publisher::{PubError, PubSocket};
use crate::transport::link::{Io, Session, UNPARSED};

/// Closes the pub socket when dropped.
pub(crate) struct PubGuard(pub PubSocket);

impl Drop for PubGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Both sockets of one connection.
pub(crate) struct Conn {
    pub push: PubGuard,
    pub reader: NsReader<ReadHalf<Stream>>,
    pub sender: NsSender,
}

impl Conn {
    pub fn send_ask_rep(&self, ask_rep: &Value) -> Result<(), String> {
        debug!("Axon: authenticating on the reverse channel (ask:rep)");
        match self.sender.send("ask:rep", Some(ask_rep)) {
            Ok(()) => Ok(()),
            Err(WriteError::Full(pending)) => {
                warn!(
                    pending,
                    "Axon reverse channel backlog full, ask:rep dropped"
                );
                Ok(())
            }
            Err(WriteError::Closed) => Err("connection closed".into()),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Not a graceful close: a reverse server that stopped reading
        // would otherwise keep the writer (and the socket) alive.
        self.sender.abort();
    }
}

/// Why the push socket went down, for `last_error`.
pub(crate) fn push_failure(push: &PubSocket, endpoint: &Endpoint) -> String {
    match (push.foreign(), push.read_error()) {
        (Some(what), _) => {
            format!("push {endpoint}: the peer is not a pm2-axon sub: it sent {what}")
        }
        (None, Some(std::io::ErrorKind::TimedOut)) => {
            format!("push {endpoint}: {}", liveness::kernel_timeout_reason())
        }
        (None, Some(kind)) => format!("push {endpoint}: connection lost ({kind})"),
        (None, None) => format!("push {endpoint}: connection closed by the peer"),
    }
}

/// Why the reverse channel failed, for `last_error`.
fn reverse_failure(e: &std::io::Error, endpoint: &Endpoint) -> String {
    if liveness::is_peer_timeout(e) {
        format!("reverse {endpoint}: {}", liveness::kernel_timeout_reason())
    } else {
        format!("reverse {endpoint}: {e}")
    }
}

pub enum AxonEvent {
    Reverse(std::io::Result<Option<NsMessage>>),
    PushDown,
    Tick,
}

pub struct AxonSession {
    setup: Arc<Setup>,
    target: Target,
    conn: Conn,
    push_up: watch::Receiver<bool>,
    tick: Interval,
    /// Commands that came before the `ask`, handled first.
    early: VecDeque<NsMessage>,
    /// Packets for the next push frame, in arrival order (the frame groups
    /// them by channel in first-seen order); at most `buffer_limit`.
    pending: VecDeque<Packet>,
    /// The latest `status` payload (with `rev_con`), and when it came.
    status: Option<(Value, Instant)>,
    /// Consecutive ticks discarded because the push backlog was too big.
    overflows: u32,
    /// The send queues of the push and reverse sockets, looked at every
    /// tick (a peer gone without a FIN).
    watches: Vec<(&'static str, SendWatch)>,
}

impl AxonSession {
    pub(crate) fn new(
        setup: Arc<Setup>,
        target: Target,
        conn: Conn,
        early: Vec<NsMessage>,
    ) -> AxonSession {
        let period = setup.opts.status_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        // After a slow write, carry on at the normal pace (no burst).
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let push_up = conn.push.0.connection();
        let limit = setup.opts.dead_peer_timeout;
        let watches = [
            ("push", conn.push.0.send_probe()),
            ("reverse", conn.sender.send_probe()),
        ]
        .into_iter()
        .filter_map(|(which, probe)| Some((which, SendWatch::new(probe?, limit))))
        .collect();
        AxonSession {
            setup,
            target,
            conn,
            push_up,
            tick,
            early: early.into(),
            pending: VecDeque::new(),
            status: None,
            overflows: 0,
            watches,
        }
    }

    /// `Err(reason)` when a socket's peer stopped taking what we write.
    fn check_peers(&mut self) -> Result<(), String> {
        for (which, watch) in &mut self.watches {
            if let Err(stuck) = watch.check() {
                let endpoint = match *which {
                    "push" => &self.target.push,
                    _ => &self.target.pull,
                };
                debug!(socket = *which, still = ?stuck.still, queued = stuck.queued, "Axon: the peer stopped taking bytes");
                return Err(format!("{which} {endpoint}: {}", stuck.reason()));
            }
        }
        Ok(())
    }

    /// Takes what the route has, up to the room left in the per-tick
    /// buffer (`buffer_limit`; the rest waits in the route, counted in its
    /// bounds): replies and profiles go at once, the rest with the next
    /// tick.
    fn pull(&mut self, io: &Io) -> Result<(), String> {
        // Only what fits the per-tick buffer (a replay must not overflow
        // it); the live status is at the front of the route anyway.
        let room = self
            .setup
            .opts
            .buffer_limit
            .saturating_sub(self.pending.len());
        if room == 0 {
            // Still the status: the next frame cannot go without it.
            if let Some(p) = io.take_volatile() {
                self.on_packet(p, io).map_err(|(_, reason)| reason)?;
            }
            return Ok(());
        }
        let mut packets = io.take(room, usize::MAX).into_iter();
        while let Some(p) = packets.next() {
            if let Err((p, reason)) = self.on_packet(p, io) {
                // Unsent: back to the route with everything after it.
                let mut back = vec![p];
                back.extend(packets);
                io.give_back(back);
                return Err(reason);
            }
        }
        Ok(())
    }

    fn on_packet(&mut self, p: Packet, io: &Io) -> Result<(), (Packet, String)> {
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
            "profiling" => self.send_profile(p, io),
            c if is_trigger(c) => self.send_trigger(p, io)?,
            _ => self.pending.push_back(p),
        }
        Ok(())
    }

    /// `trigger:*` replies go on the reverse channel, in clear.
    fn send_trigger(&self, p: Packet, io: &Io) -> Result<(), (Packet, String)> {
        match self.conn.sender.send(&p.channel, Some(&p.payload)) {
            Ok(()) => {
                io.stats.sent(1);
                Ok(())
            }
            Err(WriteError::Full(_)) => {
                io.drop_packets(&p.channel, 1, "reverse channel backlog full");
                Ok(())
            }
            Err(WriteError::Closed) => Err((p, "reverse connection closed".into())),
        }
    }

    /// `profiling` goes at once as two clear strings: the meta (the payload
    /// without `data`) as JSON, then the data (JS `_axon.send(meta, data)`).
    fn send_profile(&self, p: Packet, io: &Io) {
        let Value::Object(mut meta) = p.payload else {
            io.drop_packets(&p.channel, 1, "profiling payload is not an object");
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
        match self.conn.push.0.send(&[Arg::Str(meta), data]) {
            Ok(n) if n > 0 => io.stats.sent(1),
            Ok(_) => io.drop_packets("profiling", 1, "push socket backlog full"),
            Err(e) => {
                debug!(error = %e, "Axon: profiling not encodable");
                io.drop_packets("profiling", 1, "not encodable");
            }
        }
    }

    /// A message from the reverse server: `ask` is answered, anything else
    /// is deciphered and handed to the consumer.
    fn on_message(&mut self, m: NsMessage, io: &Io) -> Result<(), String> {
        // The JS `data('*')` listener only sees single-segment events.
        if m.path.len() != 1 {
            debug!(event = %m.event(), "Axon: ignoring a multi-segment reverse event");
            io.reject_inbound(&m.event(), "inbound: multi-segment event");
            return Ok(());
        }
        let NsMessage { mut path, data } = m;
        let channel = path.pop().unwrap_or_default();
        if channel == "ask" {
            let pull = &self.target.pull;
            return self
                .conn
                .send_ask_rep(&self.setup.ask_rep)
                .map_err(|e| format!("reverse {pull}: {e}"));
        }
        let Value::String(hex) = data else {
            debug!(channel = %channel, "Axon: reverse message without ciphered data, dropped");
            io.reject_inbound(&channel, "inbound: not ciphered");
            return Ok(());
        };
        match self.setup.cipher.decrypt_json(&hex) {
            Ok(payload) if !is_falsy(&payload) => io.deliver(Packet { channel, payload }),
            Ok(_) => {
                debug!(channel = %channel, "Axon: reverse message with empty data, dropped");
                io.reject_inbound(&channel, "inbound: no payload");
            }
            Err(e) => {
                debug!(channel = %channel, error = %e, "Axon: undecipherable reverse message, dropped");
                io.reject_inbound(&channel, "inbound: undecipherable");
            }
        }
        Ok(())
    }

    /// Counts the lines the reverse reader dropped since the last event.
    fn count_skipped(&mut self, io: &Io) {
        let s = self.conn.reader.take_skipped();
        io.reject_inbound_n(UNPARSED, s.malformed, "inbound: malformed nssocket line");
        io.reject_inbound_n(UNPARSED, s.too_long, "inbound: nssocket line too long");
    }

    /// The status-interval tick: one ciphered frame with everything gathered
    /// and the latest status. `Err` asks for a reconnect.
    async fn flush(&mut self, io: &Io) -> Result<(), String> {
        let opts = &self.setup.opts;
        let push = &self.conn.push.0;
        let backlog = push.buffered_bytes();
        if backlog > opts.max_buffered_bytes {
            // The backend does not keep up: shed this tick rather than grow.
            let n = self.pending.len();
            let discarded: Vec<Packet> = self.pending.drain(..).collect();
            self.overflows += 1;
            debug!(
                backlog,
                discarded = n,
                ticks = self.overflows,
                "Axon push backlog too big, buffer discarded"
            );
            io.drop_all(&discarded, "push backlog over its bound (tick discarded)");
            if self.overflows >= opts.max_overflows {
                self.overflows = 0;
                return Err(format!(
                    "push backlog over {} bytes for {} consecutive ticks",
                    opts.max_buffered_bytes, opts.max_overflows
                ));
            }
            return Ok(());
        }
        self.overflows = 0;
        // The status is what tells PM2.io the server is alive; a frame is
        // only sent with a recent one (JS skipped the tick when
        // getMonitorData failed). Older than 3 intervals: PM2 is not
        // answering, wait for it with the buffer kept.
        let max_age = opts.status_interval.saturating_mul(3);
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
        let buffer = build_buffer(self.pending.drain(..), status, &self.setup.machine_name);
        let frame = json!({
            "public_key": self.setup.public_key,
            "data": self.setup.cipher.encrypt_json(&buffer),
        })
        .to_string();
        let dropped_before = push.dropped();
        // sendv2 resolves once written. A stalled peer must not stall the
        // actor: after one interval, move on and let the backlog check of
        // the next tick judge (the frame stays queued in the writer).
        match tokio::time::timeout(opts.status_interval, push.send_and_wait(&[Arg::Str(frame)]))
            .await
        {
            Ok(Ok(())) if push.dropped() == dropped_before => io.stats.sent(count),
            Ok(Ok(())) | Ok(Err(PubError::NoPeer)) => drop_frame(
                io,
                &buffer,
                "push frame not written (peer gone or backlog full)",
            ),
            Ok(Err(e)) => {
                debug!(error = %e, "Axon: push frame not encodable");
                drop_frame(io, &buffer, "push frame not encodable");
            }
            Err(_) => {
                io.stats.sent(count);
                debug!("Axon: push frame still being written");
            }
        }
        Ok(())
    }
}

impl Session for AxonSession {
    type Event = AxonEvent;

    async fn next_event(&mut self) -> AxonEvent {
        if !self.early.is_empty() {
            return AxonEvent::Reverse(Ok(self.early.pop_front()));
        }
        tokio::select! {
            biased;
            _ = self.push_up.wait_for(|up| !up) => AxonEvent::PushDown,
            m = self.conn.reader.recv() => AxonEvent::Reverse(m),
            _ = self.tick.tick() => AxonEvent::Tick,
        }
    }

    async fn handle(&mut self, event: AxonEvent, io: &Io) -> Result<(), String> {
        // Also at each tick: a server sending only garbage never completes
        // a `recv`, and its lines must still show.
        self.count_skipped(io);
        match event {
            AxonEvent::Reverse(Ok(Some(m))) => self.on_message(m, io),
            AxonEvent::Reverse(Ok(None)) => Err(format!(
                "reverse {}: connection closed by the server",
                self.target.pull
            )),
            AxonEvent::Reverse(Err(e)) => Err(reverse_failure(&e, &self.target.pull)),
            AxonEvent::PushDown => Err(push_failure(&self.conn.push.0, &self.target.push)),
            AxonEvent::Tick => {
                self.check_peers()?;
                self.flush(io).await?;
                // Room again in the buffer: take what waited in the route.
                self.pull(io)
            }
        }
    }

    async fn carry(&mut self, io: &Io) -> Result<(), String> {
        self.pull(io)
    }

    fn leftovers(&mut self) -> Vec<Packet> {
        self.pending.drain(..).collect()
    }

    async fn close(self) {
        // Dropping the connection closes both sockets.
    }
}

/// Counts the packets of a push frame that was not written, per channel
/// (the frame's arrays, and its status).
fn drop_frame(io: &Io, buffer: &Value, reason: &'static str) {
    let Value::Object(m) = buffer else { return };
    for (channel, v) in m {
        match v {
            Value::Array(a) => io.drop_packets(channel, a.len() as u64, reason),
            _ if channel == "status" => io.drop_packets(channel, 1, reason),
            _ => {}
        }
    }
}
