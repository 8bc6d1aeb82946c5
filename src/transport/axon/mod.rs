//! The Axon transporter: the legacy PM2.io link (docs/protocols.md §2.2,
//! §4, §5).
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
//! The connection is **proven** (and may carry traffic) once the reverse
//! server's `ask` arrived and our `ask:rep` went out, with the push peer
//! still connected and silent (a `sub` never writes). A server that has not
//! asked within [`ASK_GRACE`] gets our `ask:rep` unasked: a real reverse
//! server ignores the extra authentication, while an HTTP or TLS endpoint
//! answers it at once with bytes that name it, so a wrong endpoint fails in
//! milliseconds instead of at the proof timeout.
//!
//! Differences from the JS transporter, on purpose (docs/js-agent-behaviour.md §6):
//! * the status is not fetched with `getMonitorData` at send time: the
//!   daemon sends `status` every second, and the latest one (if recent)
//!   goes into the frame with `rev_con: true`;
//! * every buffer is bounded, and packets taken but not sent go back to
//!   the route on a disconnection (JS dropped its buffer);
//! * the push backlog check resets its counter on a healthy tick, so only
//!   *consecutive* congested ticks force a reconnect;
//! * no DNS probe, bounded attempts, one connection at a time; the push
//!   socket does not reconnect on its own: losing it loses the pair;
//! * a peer gone without a FIN is noticed (neither wire has a ping): TCP
//!   keepalive and `TCP_USER_TIMEOUT` on both sockets, and at every tick a
//!   look at each socket's send queue: bytes left unacknowledged or unread
//!   for `dead_peer_timeout` reopen the pair, with the reason
//!   ([`crate::socket::liveness`]).

mod frame;
mod session;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use frame::{build_buffer, is_trigger, lowercase_keys};
use session::{AxonSession, Conn, PubGuard};

use super::link::{Link, LinkOptions, NoRuntime, Protocol};
use super::route::PACKET_QUEUE_SIZE;
use super::TransportEndpoint;
use crate::common::{Identity, Packet};
use crate::protocol::cipher::Cipher;
use crate::socket::endpoint::Endpoint;
use crate::socket::nssocket;
use crate::socket::publisher::PubSocket;

/// Above this many unsent bytes on the push socket a tick's buffer is
/// discarded (the JS transporter's `bufferSize > 290000`).
pub const MAX_BUFFERED_BYTES: usize = 290_000;
/// Consecutive congested ticks before the transporter reconnects (JS: 20).
pub const MAX_OVERFLOWS: u32 = 20;
/// How long a reverse server may take to `ask` before we authenticate
/// unasked (see the module documentation).
pub const ASK_GRACE: Duration = Duration::from_millis(500);

/// Knobs of the transporter. `Default` is the production behaviour; tests
/// shrink the timers and limits.
#[derive(Debug, Clone)]
pub struct AxonOptions {
    /// `getSystemMetadata()` of the daemon (upper-case keys, verifyPM2
    /// order); sent lower-cased and ciphered in `ask:rep`.
    pub system_metadata: Value,
    /// Packets gathered for the next push frame; beyond it they wait in the
    /// route.
    pub buffer_limit: usize,
    /// Push frame period (`STATUS_INTERVAL`).
    pub status_interval: Duration,
    /// Push socket backlog (bytes written to it but not yet to the kernel)
    /// above which a tick's buffer is discarded.
    pub max_buffered_bytes: usize,
    /// Consecutive discarded ticks that force a reconnect.
    pub max_overflows: u32,
    /// Bytes each socket's writer may hold; a write beyond it is dropped.
    pub max_pending: usize,
    /// A socket whose written bytes stay unacknowledged (or unread: a full
    /// receive window) this long has lost its peer; checked every status
    /// interval (`PM2_AGENT_DEAD_PEER_TIMEOUT`, see
    /// [`crate::socket::liveness`]).
    pub dead_peer_timeout: Duration,
    /// Proof timeout, backoff.
    pub link: LinkOptions,
    /// Offline queue of a standalone transporter (see [`AxonTransport::new`]).
    pub queue_size: usize,
}

impl Default for AxonOptions {
    fn default() -> Self {
        AxonOptions {
            system_metadata: Value::Object(Map::new()),
            buffer_limit: 1000,
            status_interval: Duration::from_secs(1),
            max_buffered_bytes: MAX_BUFFERED_BYTES,
            max_overflows: MAX_OVERFLOWS,
            max_pending: 128 << 20,
            dead_peer_timeout: Duration::from_secs(15),
            link: LinkOptions::default(),
            queue_size: PACKET_QUEUE_SIZE,
        }
    }
}

/// Why an endpoint cannot be used. The `Display` text is what `last_error`
/// reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AxonError {
    #[error("the Axon transport needs named endpoints (push, pull), got the single URL {0:?}")]
    NotNamed(String),
    #[error("the Axon transport needs a {0:?} endpoint")]
    MissingEndpoint(&'static str),
    #[error("invalid Axon {key} endpoint: {reason}")]
    BadEndpoint { key: &'static str, reason: String },
    #[error(transparent)]
    NoRuntime(#[from] NoRuntime),
}

/// The two addresses, parsed (host and port only; the scheme is ignored
/// like the JS transporter's `url.parse` use).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub(crate) push: Endpoint,
    pub(crate) pull: Endpoint,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "push={} reverse={}", self.push, self.pull)
    }
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

/// What every session of one transporter shares.
pub(crate) struct Setup {
    pub public_key: String,
    pub machine_name: String,
    pub cipher: Cipher,
    /// The `ask:rep` payload, `{"data":<hex>,"public_key":…}`.
    pub ask_rep: Value,
    pub opts: AxonOptions,
}

/// The Axon [`Protocol`].
pub struct Axon {
    setup: Arc<Setup>,
}

impl Axon {
    pub fn new(identity: Identity, options: AxonOptions) -> Axon {
        let mut opts = options;
        opts.status_interval = opts.status_interval.max(Duration::from_millis(1));
        opts.buffer_limit = opts.buffer_limit.max(1);
        opts.max_overflows = opts.max_overflows.max(1);
        let cipher = Cipher::new(&identity.secret_key);
        // Computed once: the metadata does not change while the agent runs.
        let ask_rep = json!({
            "data": cipher.encrypt_json(&lowercase_keys(&opts.system_metadata)),
            "public_key": identity.public_key,
        });
        Axon {
            setup: Arc::new(Setup {
                public_key: identity.public_key,
                machine_name: identity.machine_name,
                cipher,
                ask_rep,
                opts,
            }),
        }
    }
}

impl Protocol for Axon {
    const NAME: &'static str = "AxonTransport";
    type Target = Target;
    type Session = AxonSession;

    fn target(&self, endpoint: TransportEndpoint) -> Result<Target, String> {
        parse_target(endpoint).map_err(|e| e.to_string())
    }

    async fn open(&self, t: &Target, within: Duration) -> Result<AxonSession, String> {
        let deadline = Instant::now() + within;
        let max_pending = self.setup.opts.max_pending;
        let push = async {
            match tokio::time::timeout_at(deadline, PubSocket::connect_once(&t.push, max_pending))
                .await
            {
                Ok(Ok(s)) => Ok(PubGuard(s)),
                Ok(Err(e)) => Err(format!("push {}: {e}", t.push)),
                Err(_) => Err(format!("push {}: no connection within {within:?}", t.push)),
            }
        };
        let reverse = async {
            match tokio::time::timeout_at(deadline, nssocket::connect(&t.pull, max_pending)).await {
                Ok(Ok(pair)) => Ok(pair),
                Ok(Err(e)) => Err(format!("reverse {}: {e}", t.pull)),
                Err(_) => Err(format!(
                    "reverse {}: no connection within {within:?}",
                    t.pull
                )),
            }
        };
        let (push, (reader, sender)) = tokio::try_join!(push, reverse)?;
        let mut conn = Conn {
            push,
            reader,
            sender,
        };
        let early = self.prove(&mut conn, t, deadline, within).await?;
        Ok(AxonSession::new(self.setup.clone(), t.clone(), conn, early))
    }
}

impl Axon {
    /// Waits for the reverse server's `ask` and answers it, watching the
    /// push peer. Returns the commands that came before the `ask` (kept
    /// for the session).
    async fn prove(
        &self,
        conn: &mut Conn,
        t: &Target,
        deadline: Instant,
        within: Duration,
    ) -> Result<Vec<crate::protocol::nssocket::NsMessage>, String> {
        let mut push_up = conn.push.0.connection();
        let grace = tokio::time::sleep(ASK_GRACE);
        tokio::pin!(grace);
        let mut asked_unasked = false;
        let mut early = Vec::new();
        loop {
            tokio::select! {
                msg = conn.reader.recv() => match msg {
                    Ok(Some(m)) if m.path.len() == 1 && m.path[0] == "ask" => {
                        conn.send_ask_rep(&self.setup.ask_rep)
                            .map_err(|e| format!("reverse {}: {e}", t.pull))?;
                        return Ok(early);
                    }
                    Ok(Some(m)) => {
                        if early.len() < 64 {
                            early.push(m);
                        }
                    }
                    Ok(None) if asked_unasked => {
                        return Err(format!("reverse {}: closed by the server when sent an nssocket line, before it asked to authenticate (not an nssocket server: TLS or another protocol?)", t.pull))
                    }
                    Ok(None) => {
                        return Err(format!("reverse {}: closed by the server before it asked to authenticate", t.pull))
                    }
                    Err(e) => return Err(format!("reverse {}: {e}", t.pull)),
                },
                _ = push_up.wait_for(|up| !up) => return Err(session::push_failure(&conn.push.0, &t.push)),
                () = &mut grace, if !asked_unasked => {
                    asked_unasked = true;
                    conn.send_ask_rep(&self.setup.ask_rep)
                        .map_err(|e| format!("reverse {}: {e}", t.pull))?;
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(format!(
                        "reverse {}: the server did not ask to authenticate within {within:?} (not a PM2.io reverse server?)",
                        t.pull
                    ))
                }
            }
        }
    }
}

/// A standalone Axon transporter (its own route), or one of a route.
pub type AxonTransport = Link<Axon>;

impl Link<Axon> {
    /// A transporter with a route of its own (an offline queue of
    /// `options.queue_size`), spawned on the current runtime. Packets from
    /// PM2.io go to `inbound`; a full one drops (and counts) them.
    pub fn new(
        identity: Identity,
        options: AxonOptions,
        inbound: mpsc::Sender<Packet>,
    ) -> Result<Self, AxonError> {
        let (link, queue) = (options.link.clone(), options.queue_size);
        Ok(Link::alone(
            Axon::new(identity, options),
            link,
            queue,
            inbound,
        )?)
    }
}

#[cfg(test)]
mod tests;
