//! What a transporter is and has done, as the route decides with it and
//! `getInfos` reports it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

/// Where a transporter is in its life, as `getInfos` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not in use: no endpoint wanted (a fallback while the configured
    /// transporter carries, or after `disconnect`).
    Standby,
    /// An attempt is running: sockets opening, waiting for the peer's proof.
    Connecting,
    /// The peer proved it is the peer we wanted; able to carry traffic.
    Connected,
    /// The last attempt failed or the connection was lost; retrying with
    /// backoff (`last_error` says why).
    Failed,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Standby => "standby",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Failed => "failed",
        }
    }
}

/// Whether a transporter was asked for (config.json, `AGENT_*`) or is the
/// fallback the agent chose on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Configured,
    Fallback,
}

/// Counters a transporter keeps itself (the route counts the queue).
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Packets written to the wire (a `status:patch` counts as one).
    pub sent: AtomicU64,
    /// Proven connections, reconnections included.
    pub connects: AtomicU64,
    /// Packets from PM2.io dropped because the consumer was full.
    pub inbound_dropped: AtomicU64,
    /// Packets taken from the route that will never be sent (a full
    /// socket backlog, a failed status write).
    pub dropped: AtomicU64,
}

impl LinkStats {
    pub fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` dropped packets and returns the new total.
    pub fn dropped(&self, n: u64) -> u64 {
        self.dropped.fetch_add(n, Ordering::Relaxed) + n
    }
}

/// One member's view for `getInfos`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfo {
    pub name: &'static str,
    pub role: Role,
    pub state: LinkState,
    pub endpoint: Option<String>,
    /// Milliseconds since the epoch at which `state` began.
    pub since_ms: u64,
    pub last_error: Option<String>,
    /// The live connection's compression (WebSocket: the permessage-deflate
    /// parameters agreed, or why there is none); `None` when not asked for.
    pub compression: Option<String>,
    pub carrying: bool,
    pub sent: u64,
    pub connects: u64,
    pub dropped: u64,
    pub inbound_dropped: u64,
}

impl MemberInfo {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "role": match self.role { Role::Configured => "configured", Role::Fallback => "fallback" },
            "state": self.state.as_str(),
            "endpoint": self.endpoint,
            "since": self.since_ms,
            "last_error": self.last_error,
            "compression": self.compression,
            "carrying": self.carrying,
            "sent": self.sent,
            "connects": self.connects,
            "dropped": self.dropped,
            "inbound_dropped": self.inbound_dropped,
        })
    }
}
