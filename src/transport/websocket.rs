//! The WebSocket transporter (protocols.md §7, agent-spec.md §5.3).
//!
//! [`WebSocketTransport`] is a handle to an actor task that owns at most one
//! socket at a time. The handle talks to it through two bounded pipes:
//! * a `watch` holding the *desired* endpoint (`connect` sets it, `disconnect`
//!   clears it). Control can therefore never be lost behind a full packet
//!   buffer, and the actor always converges on the latest wish;
//! * an `mpsc` of outbound packets (`send` never blocks: when the buffer is
//!   full the packet is dropped and counted).
//!
//! Differences from the JS agent, on purpose (agent-spec.md §6): no DNS probe
//! of google.com, exponential backoff with jitter instead of fixed 2 s/5 s
//! retries, a handshake timeout, a capped re-queue, one socket at a time, and
//! a dead-peer timeout on top of the 5 s pings.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

pub use super::base::PACKET_QUEUE_SIZE;
use super::base::{self, is_falsy, is_volatile, Backoff, Shared};
use super::json_patch;
use super::{Identity, Packet, TransportEndpoint, TransportStats, Transporter};
use crate::net::{self, BoxStream, NetError, NetOptions, Url};

/// Upper bound on the HTTP response head of the upgrade: a real 101 is a few
/// hundred bytes; anything bigger is not a WebSocket server.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Knobs of the transporter. `Default` is the production behaviour; tests
/// shrink the timers.
#[derive(Debug, Clone)]
pub struct WebSocketOptions {
    /// TCP/TLS connect (and, later, proxy) settings for `net::connect`.
    pub net: NetOptions,
    /// Send `status` as `status:patch` diffs (env `WS_JSON_PATCH` non-empty).
    pub json_patch: bool,
    /// permessage-deflate requested (env `WS_GZIP`); not supported, see `new`.
    pub gzip: bool,
    /// Offline queue capacity; the oldest packet goes when it is full.
    pub queue_size: usize,
    /// Capacity of the handle → actor packet buffer (packets in flight while
    /// the socket is busy writing); a `send` finding it full drops the packet.
    pub send_buffer: usize,
    /// Empty ping period while open (JS: 5 s).
    pub ping_interval: Duration,
    /// Nothing received for this long → the peer is dead, reconnect.
    pub dead_after: Duration,
    /// Bound on the HTTP upgrade exchange (after TCP/TLS connect, which
    /// `net` bounds with its own `connect_timeout`).
    pub handshake_timeout: Duration,
    /// Bound on writing one frame; a peer that stops reading cannot stall
    /// the actor longer than this.
    pub write_timeout: Duration,
    /// How long a voluntary close waits for the server's close reply.
    pub close_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max` (with jitter).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A connection that stayed open this long resets the backoff.
    pub stable_after: Duration,
    /// Largest inbound message/frame accepted (tungstenite limit).
    pub max_message_size: usize,
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            net: NetOptions::default(),
            json_patch: false,
            gzip: false,
            queue_size: PACKET_QUEUE_SIZE,
            send_buffer: 1024,
            ping_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(15),
            close_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
            max_message_size: 16 << 20,
        }
    }
}

/// Why a connection attempt (or a `connect` call) failed. The `Display`
/// text is what `last_error` reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket URL is not defined")]
    NoUrl,
    #[error("the WebSocket transport needs a single URL")]
    NotSingleUrl,
    #[error("unsupported WebSocket URL scheme {0:?} (expected ws, wss, http or https)")]
    Scheme(String),
    #[error("invalid WebSocket URL path {0:?}")]
    Path(String),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("handshake: timed out after {0:?}")]
    HandshakeTimeout(Duration),
    #[error("handshake: HTTP {0}")]
    HttpStatus(u16),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("handshake: header {0} holds a character not allowed in HTTP")]
    HeaderValue(&'static str),
    #[error("no tokio runtime to run the WebSocket transport on")]
    NoRuntime,
}

/// Handle to the WebSocket actor. Dropping it closes the socket (code 1000)
/// and ends the task.
pub struct WebSocketTransport {
    packets: mpsc::Sender<Packet>,
    target: watch::Sender<Option<Url>>,
    shared: Arc<Shared>,
}

impl WebSocketTransport {
    /// Spawns the actor on the current tokio runtime. Inbound packets
    /// (`{channel, payload}` from PM2.io) go to `inbound`; when it is full they
    /// are dropped and counted, the socket is never held up.
    pub fn new(
        identity: Identity,
        options: WebSocketOptions,
        inbound: mpsc::Sender<Packet>,
    ) -> Result<Self, WsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WsError::NoRuntime)?;
        let options = sanitize(options);
        if options.gzip {
            // TODO(WS_GZIP): permessage-deflate. tokio-tungstenite 0.30 has
            // no deflate extension, so we never offer it; the JS agent only
            // enables it when WS_GZIP is set, and servers accept plain frames.
            debug!("WS_GZIP requested but permessage-deflate is not supported; connecting without compression");
        }
        let (packets_tx, packets_rx) = mpsc::channel(options.send_buffer);
        let (target_tx, target_rx) = watch::channel(None);
        let shared = Arc::new(Shared::default());
        let actor = Actor {
            backoff: Backoff::new(options.backoff_initial, options.backoff_max),
            identity,
            opts: options,
            packets: packets_rx,
            target: target_rx,
            inbound,
            shared: shared.clone(),
            queue: VecDeque::new(),
            last_status: None,
            resend_status: false,
        };
        runtime.spawn(actor.run());
        Ok(WebSocketTransport {
            packets: packets_tx,
            target: target_tx,
            shared,
        })
    }
}

/// Zero durations would make tokio's `interval` panic and zero capacities
/// make `mpsc::channel` panic; clamp instead of trusting the caller.
fn sanitize(mut o: WebSocketOptions) -> WebSocketOptions {
    let min = Duration::from_millis(1);
    for d in [
        &mut o.ping_interval,
        &mut o.dead_after,
        &mut o.handshake_timeout,
        &mut o.write_timeout,
        &mut o.close_timeout,
        &mut o.backoff_initial,
        &mut o.backoff_max,
    ] {
        *d = (*d).max(min);
    }
    o.send_buffer = o.send_buffer.max(1);
    o
}

/// `ws:`/`wss:` as given, `http:`/`https:` mapped to them like the `ws`
/// library does (old configs and tests use `http://localhost:3900`).
pub fn parse_ws_url(s: &str) -> Result<Url, WsError> {
    if s.trim().is_empty() {
        return Err(WsError::NoUrl);
    }
    // Scheme first: `Url::parse` rejects schemes without a default port
    // with a less helpful message.
    if let Some((scheme, _)) = s.trim().split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "ws" | "wss" | "http" | "https") {
            return Err(WsError::Scheme(scheme));
        }
    }
    let mut url = Url::parse(s)?;
    if url.scheme == "http" {
        url.scheme = "ws".to_owned();
    } else if url.scheme == "https" {
        url.scheme = "wss".to_owned();
    }
    // The path goes verbatim into the request line: no spaces or controls
    // (request splitting).
    if url.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(WsError::Path(url.path));
    }
    Ok(url)
}

impl Transporter for WebSocketTransport {
    fn name(&self) -> &'static str {
        "WebsocketTransport"
    }

    fn connect(&self, endpoint: TransportEndpoint) {
        let url = match endpoint {
            TransportEndpoint::Single(s) => parse_ws_url(&s),
            TransportEndpoint::Named(_) => Err(WsError::NotSingleUrl),
        };
        match url {
            Ok(url) => {
                base::set_target(&self.target, url);
            }
            Err(e) => {
                warn!(error = %e, "WebSocket transport: cannot connect");
                self.shared.set_error(Some(e.to_string()));
            }
        }
    }

    fn disconnect(&self) {
        self.target.send_if_modified(|t| t.take().is_some());
    }

    fn send(&self, packet: Packet) {
        self.shared
            .submit(&self.packets, packet, "WebSocket transport");
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

/// The wire form, `payload` first like `JSON.stringify({payload, channel})`.
#[derive(Serialize)]
struct Frame<'a, P: Serialize> {
    payload: &'a P,
    channel: &'a str,
}

fn frame<P: Serialize>(payload: &P, channel: &str) -> Option<String> {
    match serde_json::to_string(&Frame { payload, channel }) {
        Ok(s) => Some(s),
        Err(e) => {
            // Only reachable with non-string map keys, which Value cannot hold.
            warn!(channel, error = %e, "WebSocket transport: cannot serialise packet, dropped");
            None
        }
    }
}

type Ws = WebSocketStream<BoxStream>;

type Interrupt = base::Interrupt<Url>;
type End = base::End<Url>;

struct Actor {
    identity: Identity,
    opts: WebSocketOptions,
    packets: mpsc::Receiver<Packet>,
    target: watch::Receiver<Option<Url>>,
    inbound: mpsc::Sender<Packet>,
    shared: Arc<Shared>,
    /// Offline queue, at most `opts.queue_size` packets.
    queue: VecDeque<Packet>,
    /// Patch-mode baseline: the last status handed to the socket.
    last_status: Option<Value>,
    /// The next status must go out in full (after open / `status:resend`).
    resend_status: bool,
    backoff: Backoff,
}

impl base::Offline for Actor {
    type Target = Url;

    fn inputs(
        &mut self,
    ) -> (
        &mut watch::Receiver<Option<Url>>,
        &mut mpsc::Receiver<Packet>,
    ) {
        (&mut self.target, &mut self.packets)
    }

    fn enqueue_offline(&mut self, p: Packet) {
        self.enqueue(p);
    }

    fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }
}

impl Actor {
    async fn run(mut self) {
        let mut target = self.target.borrow_and_update().clone();
        loop {
            let Some(url) = target.clone() else {
                // Idle (never connected or disconnect()ed): keep queueing.
                match base::offline(&mut self, &target, std::future::pending::<()>()).await {
                    Err(Interrupt::Retarget(t)) => target = t,
                    Err(Interrupt::Shutdown) => return,
                    Ok(()) => {}
                }
                continue;
            };
            let attempt = open(url.clone(), self.identity.clone(), self.opts.clone());
            match base::offline(&mut self, &target, attempt).await {
                Ok(Ok(ws)) => {
                    let opened = Instant::now();
                    let end = self.connected(ws, &url, &target).await;
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
                    warn!(url = %url, error = %e, "WebSocket connection failed");
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
            debug!(url = %url, ?delay, "WebSocket reconnect scheduled");
            if !base::retry_after(&mut self, &mut target, delay).await {
                return;
            }
        }
    }

    fn enqueue(&mut self, p: Packet) {
        if is_volatile(&p.channel) || self.opts.queue_size == 0 {
            // A stale status is useless once reconnected: never queued.
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.queue.len() >= self.opts.queue_size {
            self.queue.pop_front();
            let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            debug!(
                dropped = n,
                "WebSocket offline queue full, oldest packet dropped"
            );
        }
        self.queue.push_back(p);
        self.shared
            .queued
            .store(self.queue.len() as u64, Ordering::Relaxed);
    }

    async fn connected(&mut self, mut ws: Ws, url: &Url, target: &Option<Url>) -> End {
        info!(url = %url, "WebSocket connected");
        self.shared.connected.store(true, Ordering::Relaxed);
        self.shared.connects.fetch_add(1, Ordering::Relaxed);
        // last_error is kept: it is the most recent problem, and
        // is_connected() tells whether it still applies.
        // A new socket may reach another backend node: start with a full status.
        self.resend_status = true;
        let end = self.serve(&mut ws, url, target).await;
        self.shared.connected.store(false, Ordering::Relaxed);
        if let End::Interrupt(_) = end {
            close(&mut ws, self.opts.close_timeout).await;
            info!(url = %url, "WebSocket disconnected");
        }
        end
    }

    async fn serve(&mut self, ws: &mut Ws, url: &Url, target: &Option<Url>) -> End {
        // Flush the offline queue first so that its packets keep their order
        // relative to the ones still in the send buffer.
        while let Some(p) = self.queue.front() {
            if let Some(text) = frame(&p.payload, &p.channel) {
                if let Err(reason) = write(ws, Message::text(text), self.opts.write_timeout).await {
                    // The packet stays at the head of the queue.
                    return self.lost(url, reason);
                }
                self.shared.sent.fetch_add(1, Ordering::Relaxed);
            }
            self.queue.pop_front();
            self.shared
                .queued
                .store(self.queue.len() as u64, Ordering::Relaxed);
        }

        let period = self.opts.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + period, period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let dead_after = self.opts.dead_after;
        let dead = tokio::time::sleep(dead_after);
        tokio::pin!(dead);
        let mut close_reason = None;
        loop {
            tokio::select! {
                biased;
                changed = self.target.changed() => {
                    if let Some(i) = base::retarget(changed, &mut self.target, target) {
                        return End::Interrupt(i);
                    }
                }
                msg = ws.next() => {
                    // Any frame proves the peer alive, not only pongs.
                    dead.as_mut().reset(Instant::now() + dead_after);
                    match msg {
                        Some(Ok(Message::Close(frame))) => {
                            // tungstenite answers it; the stream ends next.
                            close_reason = Some(match frame {
                                Some(f) => format!("connection closed by the server (code {}, {:?})", u16::from(f.code), f.reason.as_str()),
                                None => "connection closed by the server".to_owned(),
                            });
                        }
                        Some(Ok(m)) => {
                            if let Err(reason) = self.on_message(ws, m).await {
                                return self.lost(url, reason);
                            }
                        }
                        Some(Err(e)) => return self.lost(url, format!("connection error: {e}")),
                        None => {
                            let reason = close_reason.take().unwrap_or_else(|| "connection closed by the server".to_owned());
                            return self.lost(url, reason);
                        }
                    }
                }
                () = &mut dead => {
                    return self.lost(url, format!("no data from the server for {dead_after:?}"));
                }
                _ = ping.tick() => {
                    if let Err(reason) = write(ws, Message::Ping(Bytes::new()), self.opts.write_timeout).await {
                        return self.lost(url, reason);
                    }
                }
                p = self.packets.recv() => match p {
                    Some(p) => {
                        if let Err(reason) = self.send_live(ws, p).await {
                            return self.lost(url, reason);
                        }
                    }
                    None => return End::Interrupt(Interrupt::Shutdown),
                },
            }
        }
    }

    fn lost(&self, url: &Url, reason: String) -> End {
        warn!(url = %url, reason = %reason, "WebSocket connection lost");
        self.shared.set_error(Some(reason));
        End::Lost
    }

    async fn send_live(&mut self, ws: &mut Ws, p: Packet) -> Result<(), String> {
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
            let Some(text) = text else { return Ok(()) };
            return match write(ws, Message::text(text), self.opts.write_timeout).await {
                Ok(()) => {
                    self.shared.sent.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(reason) => {
                    // The server may not have the new baseline: the next
                    // status goes in full (reopening forces that anyway).
                    self.resend_status = true;
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    Err(reason)
                }
            };
        }
        let Some(text) = frame(&p.payload, &p.channel) else {
            return Ok(());
        };
        match write(ws, Message::text(text), self.opts.write_timeout).await {
            Ok(()) => {
                self.shared.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(reason) => {
                // Re-queued within the same cap (the JS agent bypasses it).
                self.enqueue(p);
                Err(reason)
            }
        }
    }

    async fn on_message(&mut self, ws: &mut Ws, msg: Message) -> Result<(), String> {
        match msg {
            Message::Text(t) => self.on_text(t.as_str()),
            // ws hands Buffers to the same JSON.parse, so JSON in a binary
            // frame counts too.
            Message::Binary(b) => match std::str::from_utf8(&b) {
                Ok(s) => self.on_text(s),
                Err(_) => debug!("WebSocket: ignoring non-UTF-8 binary frame"),
            },
            Message::Ping(_) => {
                // tungstenite queued the echoing pong; flush it first, or our
                // own pong would replace it. Then the explicit empty pong the
                // JS agent sends (the backend sees two pongs today).
                let t = self.opts.write_timeout;
                match tokio::time::timeout(t, ws.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("write failed: {e}")),
                    Err(_) => return Err(format!("write timed out after {t:?}")),
                }
                write(ws, Message::Pong(Bytes::new()), t).await?;
            }
            Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {}
        }
        Ok(())
    }

    fn on_text(&mut self, text: &str) {
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
            debug!("WebSocket: ignoring a frame that is not a JSON object");
            return;
        };
        let channel = match obj.get("channel") {
            Some(Value::String(c)) if !c.is_empty() => c.clone(),
            _ => {
                debug!("WebSocket: ignoring a message without channel");
                return;
            }
        };
        // Checked before the payload test: the server sends it bare.
        if channel == "status:resend" {
            self.resend_status = true;
        }
        let payload = obj.remove("payload").unwrap_or(Value::Null);
        if is_falsy(&payload) {
            if channel != "status:resend" {
                debug!(channel = %channel, "WebSocket: ignoring a message without payload");
            }
            return;
        }
        self.shared
            .deliver(&self.inbound, Packet { channel, payload }, "WebSocket");
    }
}

async fn write(ws: &mut Ws, msg: Message, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!("write timed out after {timeout:?}")),
    }
}

/// Close 1000 `Disconnecting` like the JS agent, then wait (bounded) for the
/// server's close reply so it sees a clean close rather than a reset.
async fn close(ws: &mut Ws, timeout: Duration) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "Disconnecting".into(),
    };
    let _ = tokio::time::timeout(timeout, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// One connection attempt: TCP/TLS via `net`, then the HTTP upgrade.
async fn open(url: Url, identity: Identity, opts: WebSocketOptions) -> Result<Ws, WsError> {
    let key = generate_key();
    // Built first: a bad header value fails without touching the network.
    let request = upgrade_request(&url, &identity, &key)?;
    let mut stream = net::connect(&url, &opts.net).await?;
    let leftover =
        tokio::time::timeout(opts.handshake_timeout, upgrade(&mut stream, &request, &key))
            .await
            .map_err(|_| WsError::HandshakeTimeout(opts.handshake_timeout))??;
    let config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_message_size))
        .max_frame_size(Some(opts.max_message_size));
    Ok(WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config)).await)
}

/// The upgrade request, byte for byte in the order and case `ws` 7 writes
/// it (protocols.md §7.1). Written by hand because tungstenite's client
/// handshake lowercases header names and reorders them.
fn upgrade_request(url: &Url, id: &Identity, key: &str) -> Result<String, WsError> {
    let user_agent = format!("PM2 Agent v{}", id.agent_version);
    let host = url.host_header();
    let headers: [(&'static str, &str); 11] = [
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", key),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("X-KM-PUBLIC", &id.public_key),
        ("X-KM-SECRET", &id.secret_key),
        ("X-KM-SERVER", &id.machine_name),
        ("X-PM2-VERSION", &id.pm2_version),
        ("X-PROTOCOL-VERSION", "1"),
        ("User-Agent", &user_agent),
        ("Host", &host),
    ];
    let mut req = format!("GET {} HTTP/1.1\r\n", url.path);
    for (name, value) in headers {
        // Node's rule (checkInvalidHeaderChar): no control characters, so a
        // key or machine name cannot inject headers.
        if value.chars().any(|c| (c < ' ' && c != '\t') || c == '\x7f') {
            return Err(WsError::HeaderValue(name));
        }
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    Ok(req)
}

/// Sends the request and reads the `101` response head; returns the bytes
/// read past it (frames the server may already have sent).
async fn upgrade(stream: &mut BoxStream, request: &str, key: &str) -> Result<Vec<u8>, WsError> {
    let io = |e: std::io::Error| WsError::Handshake(e.to_string());
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(WsError::Handshake(
                "connection closed before the HTTP response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(len) = check_response(&buf, key)? {
            return Ok(buf.split_off(len));
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(WsError::Handshake(format!(
                "HTTP response head larger than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
    }
}

/// `Ok(None)` while the head is incomplete; `Ok(Some(head_len))` for a valid
/// `101` (the checks `ws` makes: status, Upgrade, Sec-WebSocket-Accept, no
/// extension or subprotocol we did not ask for).
fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WsError::Handshake(format!("invalid HTTP response: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(WsError::HttpStatus(code));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(WsError::Handshake("invalid Upgrade header".into()));
    }
    if header("Sec-WebSocket-Accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str())
    {
        return Err(WsError::Handshake(
            "invalid Sec-WebSocket-Accept header".into(),
        ));
    }
    if header("Sec-WebSocket-Extensions").is_some() {
        return Err(WsError::Handshake(
            "server sent an extension that was not requested".into(),
        ));
    }
    if header("Sec-WebSocket-Protocol").is_some() {
        return Err(WsError::Handshake(
            "server sent a subprotocol that was not requested".into(),
        ));
    }
    Ok(Some(len))
}

#[cfg(test)]
#[path = "websocket_tests.rs"]
mod tests;
