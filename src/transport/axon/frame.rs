//! What the Axon transporter puts on the wire, as pure functions: the
//! `ask:rep` metadata and the per-tick push buffer (docs/protocols.md §4).

use serde_json::{Map, Value};

use crate::common::Packet;

/// `{"MACHINE_NAME":…}` → `{"machine_name":…}`, order kept (the JS loop
/// re-inserts every key lower-cased in iteration order). Anything but an
/// object becomes `{}`.
pub fn lowercase_keys(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return Value::Object(Map::new());
    };
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect(),
    )
}

/// JS: `channel.indexOf('trigger:') !== -1`: replies to PM2.io's commands,
/// which go back on the reverse channel.
pub fn is_trigger(channel: &str) -> bool {
    channel.contains("trigger:")
}

/// `{"<channel>":[payload,…],…,"status":…,"server_name":…}`: channels in
/// first-seen order, then the status and the server name, like the JS
/// buffer object.
pub fn build_buffer(
    packets: impl Iterator<Item = Packet>,
    status: Value,
    server_name: &str,
) -> Value {
    let mut buf = Map::new();
    for p in packets {
        match buf.get_mut(&p.channel) {
            Some(Value::Array(list)) => list.push(p.payload),
            _ => {
                buf.insert(p.channel, Value::Array(vec![p.payload]));
            }
        }
    }
    // A packet on a channel named like the trailing keys would otherwise
    // keep its position; these two always come last.
    buf.shift_remove("status");
    buf.shift_remove("server_name");
    buf.insert("status".into(), status);
    buf.insert("server_name".into(), Value::String(server_name.to_owned()));
    Value::Object(buf)
}
