//! The unit that flows from PM2 to PM2.io and back.

use serde_json::Value;

/// One message for (or from) PM2.io: `{"payload":…,"channel":…}` on the
/// WebSocket wire; a channel of the ciphered buffer on the Axon one.
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

    /// Channels only worth sending live: the next one supersedes them, so
    /// they are never kept while nothing carries the traffic.
    pub fn is_volatile(&self) -> bool {
        matches!(
            self.channel.as_str(),
            "status" | "monitoring" | "status:patch"
        )
    }
}
