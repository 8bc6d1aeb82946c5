//! Node's IPC channel with `serialization: 'json'` (docs/protocols.md §6): each
//! message is `JSON.stringify(msg) + "\n"` on a stream socketpair whose fd the
//! child finds in `NODE_CHANNEL_FD`.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("IPC message must be a JSON object")]
    NotObject,
    #[error("IPC message uses the reserved NODE_ command prefix")]
    Reserved,
    #[error("IPC message is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
}

/// Encodes one message. Objects whose `cmd` starts with `NODE_` are eaten by
/// Node's internals and never reach `'message'`, so they are refused.
pub fn encode(msg: &Value) -> Result<String, IpcError> {
    let obj = msg.as_object().ok_or(IpcError::NotObject)?;
    if obj
        .get("cmd")
        .and_then(Value::as_str)
        .is_some_and(|c| c.starts_with("NODE_"))
    {
        return Err(IpcError::Reserved);
    }
    let mut line = msg.to_string();
    line.push('\n');
    Ok(line)
}

/// Decodes one line (without its `\n`).
pub fn decode(line: &[u8]) -> Result<Value, IpcError> {
    Ok(serde_json::from_slice(line)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn captured() {
        assert_eq!(
            hex::encode(encode(&json!({"hello":"child","n":1})).unwrap()),
            "7b2268656c6c6f223a226368696c64222c226e223a317d0a"
        );
        assert!(matches!(encode(&json!([1])), Err(IpcError::NotObject)));
        assert!(matches!(
            encode(&json!({"cmd":"NODE_HANDLE"})),
            Err(IpcError::Reserved)
        ));
        assert_eq!(
            decode(br#"{"error":false}"#).unwrap(),
            json!({"error":false})
        );
        assert!(decode(b"{").is_err());
    }
}
