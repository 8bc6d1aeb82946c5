//! nssocket 0.6 messages: one JSON array per line, `event path ++ data`.
//!
//! The event string is split on `::` (not `:`, so `trigger:pm2:action` is a
//! single segment); missing data is sent as `null`; array data is flattened
//! into the line by JS `concat`. A receiver takes the last element as the
//! data and the others as the event path (docs/protocols.md §4).

use serde_json::Value;

/// Events on the legacy reverse channel are single segments; the cap keeps
/// a hostile line from producing an absurd path.
const MAX_PATH_SEGMENTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("nssocket line is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("nssocket line is not a JSON array")]
    NotArray,
    #[error("nssocket line has no event before its data")]
    NoEvent,
    #[error("nssocket event segment {0} is not a string")]
    NonStringSegment(usize),
    #[error("nssocket event has more than {MAX_PATH_SEGMENTS} segments")]
    PathTooLong,
}

/// A received message: `path` (e.g. `["trigger:pm2:action"]`) and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct NsMessage {
    pub path: Vec<String>,
    pub data: Value,
}

impl NsMessage {
    /// The event name as the sender wrote it (segments joined by `::`).
    pub fn event(&self) -> String {
        self.path.join("::")
    }
}

/// Encodes `send(event, data)` as a line, including the trailing `\n`.
pub fn encode(event: &str, data: Option<&Value>) -> String {
    let segments: Vec<&str> = event.split("::").collect();
    encode_path(&segments, data)
}

/// Encodes `send([seg, …], data)`.
pub fn encode_path(path: &[&str], data: Option<&Value>) -> String {
    let mut items: Vec<Value> = path
        .iter()
        .map(|s| Value::String((*s).to_owned()))
        .collect();
    match data {
        None => items.push(Value::Null),
        Some(Value::Array(a)) => items.extend(a.iter().cloned()),
        Some(v) => items.push(v.clone()),
    }
    let mut line = Value::Array(items).to_string();
    line.push('\n');
    line
}

/// Decodes one line (without its `\n`).
pub fn decode(line: &[u8]) -> Result<NsMessage, NsError> {
    let Value::Array(mut items) = serde_json::from_slice(line)? else {
        return Err(NsError::NotArray);
    };
    if items.len() < 2 {
        return Err(NsError::NoEvent);
    }
    if items.len() > MAX_PATH_SEGMENTS + 1 {
        return Err(NsError::PathTooLong);
    }
    let data = items.pop().unwrap_or(Value::Null);
    let path = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s),
            _ => Err(NsError::NonStringSegment(i)),
        })
        .collect::<Result<_, _>>()?;
    Ok(NsMessage { path, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn captured_lines() {
        assert_eq!(
            hex::encode(encode("ask", None)),
            "5b2261736b222c6e756c6c5d0a"
        );
        assert_eq!(
            encode("ask:rep", Some(&json!({"data":"abcd","public_key":"pk"}))),
            "[\"ask:rep\",{\"data\":\"abcd\",\"public_key\":\"pk\"}]\n"
        );
        assert_eq!(encode("a::b", Some(&json!(1))), "[\"a\",\"b\",1]\n");
        assert_eq!(
            encode_path(&["x", "y"], Some(&json!("str"))),
            "[\"x\",\"y\",\"str\"]\n"
        );
        assert_eq!(encode("arr", Some(&json!([1, 2]))), "[\"arr\",1,2]\n");
    }

    #[test]
    fn decode_paths() {
        let m = decode(br#"["trigger:pm2:action","abc"]"#).unwrap();
        assert_eq!(m.path, vec!["trigger:pm2:action"]);
        assert_eq!(m.data, json!("abc"));
        // JS would emit ['data','arr',1] here; a non-string segment names
        // no event the agent handles, so it is a typed error.
        assert!(matches!(
            decode(br#"["arr",1,2]"#),
            Err(NsError::NonStringSegment(1))
        ));
        let m = decode(br#"["a","b",null]"#).unwrap();
        assert_eq!(m.event(), "a::b");
        assert_eq!(m.data, Value::Null);
    }

    #[test]
    fn bad_lines() {
        assert!(matches!(decode(b"{"), Err(NsError::NotJson(_))));
        assert!(matches!(decode(b"{}"), Err(NsError::NotArray)));
        assert!(matches!(decode(b"[\"only\"]"), Err(NsError::NoEvent)));
        assert!(matches!(
            decode(b"[1,2]"),
            Err(NsError::NonStringSegment(0))
        ));
        let long = format!("[{}1]", "\"a\",".repeat(40));
        assert!(matches!(decode(long.as_bytes()), Err(NsError::PathTooLong)));
        assert!(matches!(
            decode(&[b'[', 0xff, b']']),
            Err(NsError::NotJson(_))
        ));
    }
}
