//! Transporters carry packets between the agent and PM2.io.
//!
//! ```text
//! Hub ─► Route (one queue, one carrier at a time) ─► Link<Axon>       ─► push/reverse sockets
//!                                                 └► Link<WebSocket>  ─► one WebSocket
//! ```
//!
//! * [`link`]: the life every transporter shares (endpoint wanted, attempt
//!   bounded by a proof, backoff, state, counters), written once;
//! * [`axon`] and [`websocket`]: only what is their own (how to open and
//!   prove a connection, what a live one does);
//! * [`route`]: the stream's only queue, which proven transporter carries
//!   it, and the fallback rule; [`state`]: a transporter's state and counters;
//! * [`plan`]: which transporters run for a verifyPM2 answer;
//! * [`hub`]: the routes of the running daemon, and what `getInfos` shows.
//!
//! Packets from PM2.io go the other way through one inbound channel that
//! every transporter is given, to `crate::reverse`.

use std::collections::BTreeMap;

pub mod axon;
pub mod backlog;
pub mod backoff;
pub mod hub;
pub mod link;
pub mod plan;
pub mod queue;
pub mod route;
pub mod spool;
pub mod state;
pub mod websocket;

#[cfg(test)]
pub(crate) mod test_support;

use crate::common::Packet;

/// What every transporter offers to the hub.
pub trait Transporter: Send + Sync {
    /// The JS class name reported by `getInfos.transporters`.
    fn name(&self) -> &'static str;
    /// Connects to `endpoint` (or reconnects when it changed); returns at
    /// once, the actor keeps trying with backoff.
    fn connect(&self, endpoint: TransportEndpoint);
    fn disconnect(&self);
    /// Queues a packet on the transporter's route.
    fn send(&self, packet: Packet);
    /// Proven: the peer showed it is the peer we wanted.
    fn is_connected(&self) -> bool;
    /// Most recent connection problem, for `getInfos` and logs; kept after
    /// a recovery (`is_connected` says whether it still applies).
    fn last_error(&self) -> Option<String>;
    /// Counters for `getInfos` and benchmarks.
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
}

/// Packet counters of one transporter (and its route) since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Packets written to the wire (a `status:patch` counts as one).
    pub sent: u64,
    /// Packets waiting in the route right now.
    pub queued: u64,
    /// Outbound packets that will never be sent: queue overflow,
    /// `status`/`monitoring` while nothing carries, a full send buffer,
    /// failed status writes.
    pub dropped: u64,
    /// Inbound messages dropped: unusable (malformed, no channel, no
    /// payload, undecipherable) or the consumer's channel was full.
    pub inbound_dropped: u64,
    /// Proven connections, reconnects included.
    pub connects: u64,
}

/// What a transporter connects to, after resolution against `Endpoints`:
/// a single URL (WebSocket) or named URLs (Axon: `push`, `pull`).
#[derive(Debug, Clone, PartialEq)]
pub enum TransportEndpoint {
    Single(String),
    Named(BTreeMap<String, String>),
}
