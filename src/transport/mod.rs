//! Transporters carry packets between the agent and PM2.io. Each one is an
//! actor behind a [`Transporter`] handle; the [`hub`] fans packets out to
//! every enabled transporter and merges what they receive into one inbound
//! channel for `crate::reverse`.

use std::collections::BTreeMap;

use serde_json::Value;

pub mod axon;
pub mod base;
pub mod config;
pub mod hub;
pub mod json_patch;
pub mod websocket;

/// One message for PM2.io: `{"payload":…,"channel":…}` on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub channel: String,
    pub payload: Value,
}

impl Packet {
    pub fn new(channel: impl Into<String>, payload: Value) -> Self {
        Packet {
            channel: channel.into(),
            payload,
        }
    }
}

/// The `endpoints` object of a verifyPM2 answer (`web`, `ws`, `push`,
/// `reverse`, possibly more), kept as given.
pub type Endpoints = BTreeMap<String, String>;

/// Who the agent is, as PM2.io sees it (handshake headers, payload fields).
#[derive(Clone)]
pub struct Identity {
    pub public_key: String,
    pub secret_key: String,
    pub machine_name: String,
    /// `PM2_VERSION` or `0.0.0`.
    pub pm2_version: String,
    /// This agent's version, for `User-Agent: PM2 Agent v<version>`.
    pub agent_version: String,
}

impl std::fmt::Debug for Identity {
    // The secret key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key)
            .field("machine_name", &self.machine_name)
            .field("pm2_version", &self.pm2_version)
            .finish_non_exhaustive()
    }
}

/// What every transporter offers to the hub.
pub trait Transporter: Send + Sync {
    /// The JS class name reported by `getInfos.transporters`.
    fn name(&self) -> &'static str;
    /// Connects to `endpoint` (or reconnects when it changed); returns at
    /// once, the actor keeps trying with backoff.
    fn connect(&self, endpoint: TransportEndpoint);
    fn disconnect(&self);
    /// Queues a packet (dropped/queued per the transporter's offline rules).
    fn send(&self, packet: Packet);
    fn is_connected(&self) -> bool;
    /// Most recent connection problem, for `getInfos` and logs; kept after
    /// a recovery (`is_connected` says whether it still applies).
    fn last_error(&self) -> Option<String>;
    /// Counters for `getInfos` and benchmarks.
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
}

/// Packet counters of one transporter since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Packets written to the wire (a `status:patch` counts as one).
    pub sent: u64,
    /// Packets waiting in the offline queue right now.
    pub queued: u64,
    /// Outbound packets that will never be sent: offline queue overflow,
    /// `status`/`monitoring` while offline, a full send buffer, failed
    /// status writes.
    pub dropped: u64,
    /// Inbound packets dropped because the consumer's channel was full.
    pub inbound_dropped: u64,
    /// Successful connections (handshakes), reconnects included.
    pub connects: u64,
}

/// What a transporter connects to, after resolution against `Endpoints`:
/// a single URL (WebSocket) or named URLs (Axon: `push`, `pull`).
#[derive(Debug, Clone, PartialEq)]
pub enum TransportEndpoint {
    Single(String),
    Named(BTreeMap<String, String>),
}
