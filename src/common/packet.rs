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

    /// About the bytes this packet takes on the wire, computed by walking
    /// the payload (no serialization): what the queues are bounded by.
    pub fn approx_bytes(&self) -> usize {
        // {"payload":…,"channel":"…"}
        24 + self.channel.len() + json_len(&self.payload)
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

/// The length of `v` as compact JSON, close enough for bounds (strings are
/// counted without their escapes).
fn json_len(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(b) => 4 + usize::from(!*b),
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_len(x) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, x)| k.len() + 4 + json_len(x))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn approx_bytes_is_close_to_the_serialized_size() {
        let p = Packet::new(
            "logs",
            json!({"data": "x".repeat(1000), "at": 1733234567890u64, "process": {"name": "app", "pm_id": 3}}),
        );
        let real = serde_json::to_string(&json!({"payload": p.payload, "channel": p.channel}))
            .unwrap()
            .len();
        let est = p.approx_bytes();
        assert!(est.abs_diff(real) * 10 < real, "{est} vs {real}");
    }
}
