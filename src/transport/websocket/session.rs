//! A proven WebSocket connection: pings, the dead-peer timer, inbound
//! frames, and the packets it carries (with the JSON-patch status mode).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

use super::deflate::{DeflateError, Deflater, Negotiated, MIN_COMPRESS};
use super::{json_patch, WebSocketOptions, Ws};
use crate::common::js::is_falsy;
use crate::common::Packet;
use crate::transport::link::{Io, Session, UNPARSED};

/// Packets taken from the route per turn, so pings and inbound frames are
/// served between bursts.
const BATCH: usize = 256;
/// … and about this many bytes.
const BATCH_BYTES: usize = 256 << 10;

/// The wire form, `payload` first like `JSON.stringify({payload, channel})`.
#[derive(Serialize)]
struct Frame<'a, P: Serialize> {
    payload: &'a P,
    channel: &'a str,
}

pub(super) fn frame<P: Serialize>(payload: &P, channel: &str) -> Option<String> {
    /// One summary line per interval, never one per packet.
    static UNSERIALISABLE: std::sync::LazyLock<crate::logging::Throttle> =
        std::sync::LazyLock::new(Default::default);
    match serde_json::to_string(&Frame { payload, channel }) {
        Ok(s) => Some(s),
        Err(e) => {
            // Only reachable with non-string map keys, which Value cannot hold.
            if let Some(n) = UNSERIALISABLE.hit("unserialisable", 1) {
                warn!(channel, error = %e, "WebSocket transport: {n} packets that cannot be serialised dropped since the last report");
            }
            None
        }
    }
}

pub enum WsEvent {
    Frame(Option<Result<Message, tungstenite::Error>>),
    Ping,
    Dead,
}

pub struct WsSession {
    ws: Ws,
    opts: Arc<WebSocketOptions>,
    ping: Interval,
    dead: Pin<Box<Sleep>>,
    /// A close frame from the server, reported when the stream ends.
    close_reason: Option<String>,
    /// Patch-mode baseline: the last status handed to the socket.
    last_status: Option<Value>,
    /// The next status must go out in full (a new socket may reach another
    /// backend node; or the server sent `status:resend`).
    resend_status: bool,
    /// What the handshake settled about permessage-deflate.
    negotiated: Negotiated,
    /// Compresses outbound messages when permessage-deflate was agreed
    /// and our compressor may (see [`Deflater::new`]).
    deflater: Option<Deflater>,
}

impl WsSession {
    pub(super) fn new(ws: Ws, opts: Arc<WebSocketOptions>, negotiated: Negotiated) -> WsSession {
        let period = opts.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let dead = Box::pin(tokio::time::sleep(opts.dead_after));
        WsSession {
            ws,
            opts,
            ping,
            dead,
            close_reason: None,
            last_status: None,
            resend_status: true,
            negotiated,
            deflater: negotiated.params().and_then(|p| Deflater::new(&p)),
        }
    }

    /// A text message as it goes on the wire: compressed (RSV1 set) when
    /// permessage-deflate is on and it is worth it. A compressor failure
    /// loses the connection: the server's window would no longer match.
    fn wire(&mut self, text: String) -> Result<Message, String> {
        match &mut self.deflater {
            Some(d) if text.len() >= MIN_COMPRESS => {
                let payload = d.compress(text.as_bytes()).map_err(|e| e.to_string())?;
                let mut frame = WsFrame::message(payload, OpCode::Data(Data::Text), true);
                frame.header_mut().rsv1 = true;
                Ok(Message::Frame(frame))
            }
            _ => Ok(Message::text(text)),
        }
    }

    async fn write(&mut self, msg: Message) -> Result<(), String> {
        self.feed(msg).await?;
        self.flush().await
    }

    /// Queues a frame in the socket's write buffer (written when the
    /// buffer fills or at [`WsSession::flush`]): frames ready together go
    /// out in one write instead of one syscall each.
    async fn feed(&mut self, msg: Message) -> Result<(), String> {
        let timeout = self.opts.write_timeout;
        match tokio::time::timeout(timeout, self.ws.feed(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!("write timed out after {timeout:?}")),
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        let timeout = self.opts.write_timeout;
        match tokio::time::timeout(timeout, self.ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!("write timed out after {timeout:?}")),
        }
    }

    /// The frame for a packet (`None`: not serialisable), and the packet
    /// back for the bookkeeping of a failed write. In JSON-patch mode a
    /// `status` becomes a `status:patch` against the last one sent and
    /// becomes the new baseline (it is not given back on failure anyway).
    fn encode(&mut self, p: Packet) -> (Option<String>, Option<Packet>) {
        if self.opts.json_patch && p.channel == "status" {
            let text = match self.last_status.take() {
                Some(prev) if !self.resend_status => {
                    frame(&json_patch::compare(&prev, &p.payload), "status:patch")
                }
                _ => {
                    self.resend_status = false;
                    frame(&p.payload, "status")
                }
            };
            self.last_status = Some(p.payload);
            return (text, None);
        }
        (frame(&p.payload, &p.channel), Some(p))
    }

    /// A failed write: what was not confirmed goes back to the route (it
    /// may have partly reached the server: at least once), except
    /// statuses, which the next one supersedes; that one goes in full, as
    /// the server may lack the baseline.
    fn unsent(
        &mut self,
        io: &Io,
        packets: impl IntoIterator<Item = Packet>,
        reason: String,
    ) -> String {
        self.resend_status = true;
        io.give_back(packets.into_iter().collect());
        reason
    }

    async fn on_message(&mut self, msg: Message, io: &Io) -> Result<(), String> {
        match msg {
            Message::Text(t) => self.on_text(t.as_str(), io),
            // ws hands Buffers to the same JSON.parse, so JSON in a binary
            // frame counts too.
            Message::Binary(b) => match std::str::from_utf8(&b) {
                Ok(s) => self.on_text(s, io),
                Err(_) => {
                    debug!("WebSocket: ignoring non-UTF-8 binary frame");
                    io.reject_inbound(UNPARSED, "inbound: not UTF-8");
                }
            },
            Message::Ping(_) => {
                // tungstenite queued the echoing pong; flush it first, or our
                // own pong would replace it. Then the explicit empty pong the
                // JS agent sends (the backend sees two pongs today).
                let t = self.opts.write_timeout;
                match tokio::time::timeout(t, self.ws.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("write failed: {e}")),
                    Err(_) => return Err(format!("write timed out after {t:?}")),
                }
                self.write(Message::Pong(Bytes::new())).await?;
            }
            Message::Close(frame) => {
                // tungstenite answers it; the stream ends next.
                self.close_reason = Some(match frame {
                    Some(f) => format!(
                        "connection closed by the server (code {}, {:?})",
                        u16::from(f.code),
                        f.reason.as_str()
                    ),
                    None => "connection closed by the server".to_owned(),
                });
            }
            Message::Pong(_) | Message::Frame(_) => {}
        }
        Ok(())
    }

    fn on_text(&mut self, text: &str, io: &Io) {
        let Inbound {
            resend_status,
            packet,
            rejected,
        } = inbound(text);
        if let Some((channel, reason)) = rejected {
            io.reject_inbound(channel.as_deref().unwrap_or(UNPARSED), reason);
        }
        if resend_status {
            self.resend_status = true;
        }
        if let Some(p) = packet {
            io.deliver(p);
        }
    }
}

/// What one text message from the server asks for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Inbound {
    /// `status:resend`: the next status goes out in full.
    pub resend_status: bool,
    /// A packet for the consumer (a `channel` and a truthy `payload`).
    pub packet: Option<Packet>,
    /// Why the message was ignored (and its channel when it had one),
    /// for the drop counters.
    pub rejected: Option<(Option<String>, &'static str)>,
}

/// Decodes one text message from the server (`{"channel":…,"payload":…}`);
/// anything else is logged at debug level, ignored and reported in
/// [`Inbound::rejected`].
pub(crate) fn inbound(text: &str) -> Inbound {
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
        debug!("WebSocket: ignoring a frame that is not a JSON object");
        return Inbound::rejected(None, "inbound: not a JSON object");
    };
    let channel = match obj.get("channel") {
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        _ => {
            debug!("WebSocket: ignoring a message without channel");
            return Inbound::rejected(None, "inbound: no channel");
        }
    };
    // Checked before the payload test: the server sends it bare.
    let resend_status = channel == "status:resend";
    let payload = obj.remove("payload").unwrap_or(Value::Null);
    if is_falsy(&payload) {
        if resend_status {
            return Inbound {
                resend_status,
                ..Inbound::default()
            };
        }
        debug!(channel = %channel, "WebSocket: ignoring a message without payload");
        return Inbound::rejected(Some(channel), "inbound: no payload");
    }
    Inbound {
        resend_status,
        packet: Some(Packet { channel, payload }),
        rejected: None,
    }
}

impl Inbound {
    fn rejected(channel: Option<String>, reason: &'static str) -> Self {
        Inbound {
            rejected: Some((channel, reason)),
            ..Inbound::default()
        }
    }
}

/// The permessage-deflate error beneath a tungstenite error, if that is
/// what failed the read.
fn deflate_error(e: &tungstenite::Error) -> Option<&DeflateError> {
    match e {
        tungstenite::Error::Io(io) => io.get_ref()?.downcast_ref::<DeflateError>(),
        _ => None,
    }
}

impl Session for WsSession {
    type Event = WsEvent;

    fn compression(&self) -> Option<String> {
        self.negotiated.describe()
    }

    async fn next_event(&mut self) -> WsEvent {
        tokio::select! {
            biased;
            m = self.ws.next() => WsEvent::Frame(m),
            () = &mut self.dead => WsEvent::Dead,
            _ = self.ping.tick() => WsEvent::Ping,
        }
    }

    async fn handle(&mut self, event: WsEvent, io: &Io) -> Result<(), String> {
        match event {
            WsEvent::Frame(m) => {
                // Any frame proves the peer alive, not only pongs.
                let dead_after = self.opts.dead_after;
                self.dead.as_mut().reset(Instant::now() + dead_after);
                match m {
                    Some(Ok(m)) => self.on_message(m, io).await,
                    Some(Err(e)) => {
                        if let Some(DeflateError::TooLarge { .. }) = deflate_error(&e) {
                            // A message from PM2.io that will never be
                            // delivered (the link logs why the socket went).
                            io.stats
                                .inbound_dropped
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(format!("connection error: {e}"))
                    }
                    None => Err(self
                        .close_reason
                        .take()
                        .unwrap_or_else(|| "connection closed by the server".to_owned())),
                }
            }
            WsEvent::Ping => self.write(Message::Ping(Bytes::new())).await,
            WsEvent::Dead => Err(format!(
                "no answer from the peer for {} (no frame, not even a pong)",
                crate::daemon::stall::seconds(self.opts.dead_after)
            )),
        }
    }

    /// Writes a batch as one: every frame fed to the socket's buffer,
    /// then one flush (one write instead of one syscall per frame).
    async fn carry(&mut self, io: &Io) -> Result<(), String> {
        let batch = io.take(BATCH, BATCH_BYTES);
        let mut fed = Vec::with_capacity(batch.len());
        let mut frames = 0u64;
        let mut rest = batch.into_iter();
        while let Some(p) = rest.next() {
            let (Some(text), p) = self.encode(p) else {
                continue;
            };
            let msg = match self.wire(text) {
                Ok(m) => m,
                Err(reason) => {
                    let unsent = fed.into_iter().chain(p).chain(rest);
                    return Err(self.unsent(io, unsent, reason));
                }
            };
            if let Err(reason) = self.feed(msg).await {
                let unsent = fed.into_iter().chain(p).chain(rest);
                return Err(self.unsent(io, unsent, reason));
            }
            frames += 1;
            fed.extend(p);
        }
        if let Err(reason) = self.flush().await {
            return Err(self.unsent(io, fed, reason));
        }
        io.stats.sent(frames);
        Ok(())
    }

    /// Close 1000 `Disconnecting` like the JS agent, then wait (bounded) for
    /// the server's close reply so it sees a clean close rather than a reset.
    async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "Disconnecting".into(),
        };
        let timeout: Duration = self.opts.close_timeout;
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(timeout, async {
            if ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
        .await;
    }
}
