//! The WebSocket transporter (docs/protocols.md §7): JSON frames
//! `{"payload":…,"channel":…}` both ways over one socket.
//!
//! The connection is proven by the `101 Switching Protocols` answer with
//! the right `Sec-WebSocket-Accept`; it is dead after `dead_after` without a
//! frame from the server (we ping every `ping_interval`).
//!
//! With `gzip` (env `WS_GZIP`) we offer permessage-deflate like the JS
//! agent does and use it when the server agrees ([`deflate`],
//! [`inflate_stream`]; docs/transport.md).
//!
//! Differences from the JS agent, on purpose (docs/js-agent-behaviour.md §6): no DNS probe
//! of google.com, exponential backoff with jitter instead of fixed 2 s/5 s
//! retries, a handshake timeout, one socket at a time, and a dead-peer
//! timeout on top of the 5 s pings.

pub mod deflate;
mod handshake;
pub mod inflate_stream;
pub mod json_patch;
mod session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info};

use deflate::Negotiated;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use handshake::config as ws_config;
pub use handshake::parse_ws_url;
use session::WsSession;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use session::{inbound, Inbound};

use super::link::{Link, LinkOptions, NoRuntime, Protocol};
use super::route::PACKET_QUEUE_SIZE;
use super::TransportEndpoint;
use crate::common::{Identity, Packet};
use crate::net::{BoxStream, NetError, NetOptions, Url};

type Ws = WebSocketStream<BoxStream>;

/// Knobs of the transporter. `Default` is the production behaviour; tests
/// shrink the timers.
#[derive(Debug, Clone)]
pub struct WebSocketOptions {
    /// TCP/TLS connect (and proxy) settings for `net::connect`.
    pub net: NetOptions,
    /// Send `status` as `status:patch` diffs (env `WS_JSON_PATCH` non-empty).
    pub json_patch: bool,
    /// Offer permessage-deflate (env `WS_GZIP`), see [`deflate`].
    pub gzip: bool,
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
    /// Largest inbound message/frame accepted (tungstenite limit), and
    /// largest inflated message.
    pub max_message_size: usize,
    /// Proof timeout, backoff.
    pub link: LinkOptions,
    /// Offline queue of a standalone transporter (see
    /// [`WebSocketTransport::new`]).
    pub queue_size: usize,
}

impl Default for WebSocketOptions {
    fn default() -> Self {
        WebSocketOptions {
            net: NetOptions::default(),
            json_patch: false,
            gzip: false,
            ping_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(15),
            close_timeout: Duration::from_secs(2),
            max_message_size: 16 << 20,
            link: LinkOptions::default(),
            queue_size: PACKET_QUEUE_SIZE,
        }
    }
}

impl WebSocketOptions {
    /// The dead-peer timeout (`PM2_AGENT_DEAD_PEER_TIMEOUT`): no frame for
    /// this long means the peer is gone. Pings go every 5 s as the JS
    /// agent's, or three times per timeout when that is shorter, so a live
    /// peer always has a pong to show.
    pub fn with_dead_peer_timeout(mut self, timeout: Duration) -> Self {
        self.dead_after = timeout;
        self.ping_interval = (timeout / 3).min(Duration::from_secs(5));
        self
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
    #[error("handshake: {0}")]
    Extension(#[from] deflate::ExtensionError),
    #[error(transparent)]
    NoRuntime(#[from] NoRuntime),
}

/// The WebSocket [`Protocol`].
pub struct WebSocket {
    identity: Identity,
    opts: Arc<WebSocketOptions>,
    /// The compression outcome last said in the log: said again only when
    /// it changes, not at every reconnection.
    said: Mutex<Option<String>>,
}

impl WebSocket {
    pub fn new(identity: Identity, options: WebSocketOptions) -> WebSocket {
        let mut o = options;
        let min = Duration::from_millis(1);
        for d in [
            &mut o.ping_interval,
            &mut o.dead_after,
            &mut o.handshake_timeout,
            &mut o.write_timeout,
            &mut o.close_timeout,
        ] {
            *d = (*d).max(min);
        }
        WebSocket {
            identity,
            opts: Arc::new(o),
            said: Mutex::new(None),
        }
    }

    /// Logs what the handshake settled about compression, once per
    /// outcome.
    fn say(&self, url: &Url, negotiated: &Negotiated) {
        let Some(what) = negotiated.describe() else {
            return;
        };
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if said.as_deref() == Some(what.as_str()) {
            debug!(endpoint = %url, compression = %what, "WebSocket compression");
            return;
        }
        info!(endpoint = %url, compression = %what, "WebSocket compression (WS_GZIP): {what}");
        *said = Some(what);
    }
}

impl Protocol for WebSocket {
    const NAME: &'static str = "WebsocketTransport";
    type Target = Url;
    type Session = WsSession;

    fn target(&self, endpoint: TransportEndpoint) -> Result<Url, String> {
        match endpoint {
            TransportEndpoint::Single(s) => parse_ws_url(&s),
            TransportEndpoint::Named(_) => Err(WsError::NotSingleUrl),
        }
        .map_err(|e| e.to_string())
    }

    async fn open(&self, url: &Url, within: Duration) -> Result<WsSession, String> {
        match tokio::time::timeout(within, handshake::open(url, &self.identity, &self.opts)).await {
            Ok(Ok((ws, negotiated))) => {
                self.say(url, &negotiated);
                Ok(WsSession::new(ws, self.opts.clone(), negotiated))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no WebSocket upgrade within {within:?}")),
        }
    }
}

/// A standalone WebSocket transporter (its own route), or one of a route.
pub type WebSocketTransport = Link<WebSocket>;

impl Link<WebSocket> {
    /// A transporter with a route of its own (an offline queue of
    /// `options.queue_size`), spawned on the current runtime. Packets from
    /// PM2.io go to `inbound`; a full one drops (and counts) them.
    pub fn new(
        identity: Identity,
        options: WebSocketOptions,
        inbound: mpsc::Sender<Packet>,
    ) -> Result<Self, WsError> {
        let (link, queue) = (options.link.clone(), options.queue_size);
        Ok(Link::alone(
            WebSocket::new(identity, options),
            link,
            queue,
            inbound,
        )?)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod deflate_tests;
