//! pm2-axon-rpc messages (docs/protocols.md §3). Every RPC frame carries
//! exactly two AMP arguments: this JSON object and the req/rep message id;
//! the id is handled by the socket layer, this module only deals with the
//! object.

use serde_json::{json, Map, Value};

/// What a client asks of a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `{"type":"methods"}`: list the exposed methods.
    Methods,
    /// `{"type":"call","method":…,"args":[…]}`. Arguments are positional:
    /// the server appends its callback, so the arity must match exactly.
    Call { method: String, args: Vec<Value> },
}

/// A server's error reply, in the two shapes pm2-axon-rpc produces.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// `String(error)` as the JS client builds `new Error(msg.error)`.
    pub message: String,
    /// The raw `error` value (a string for `Error`s, any JSON otherwise).
    pub error: Value,
    /// `stack`, present when the server-side error was an `Error`.
    pub stack: Option<String>,
}

impl RemoteError {
    /// An error reply built from an `Error`-like message (`{error, stack}`).
    pub fn message(message: impl Into<String>) -> Self {
        let message = message.into();
        RemoteError {
            error: Value::String(message.clone()),
            message,
            stack: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RpcDecodeError {
    #[error("rpc message is not an object")]
    NotObject,
    #[error("rpc reply has neither args, error nor methods")]
    NoResult,
    #[error("rpc reply args is not an array")]
    ArgsNotArray,
}

/// The server-side rejections pm2-axon-rpc sends verbatim.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CallRejection {
    #[error(".method required")]
    MethodRequired,
    #[error(".args required")]
    ArgsRequired,
    #[error(".args must be an array")]
    ArgsNotArray,
}

/// One entry of a `methods` reply.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodDescription {
    pub name: String,
    pub params: Vec<String>,
}

pub fn encode_request(req: &Request) -> Value {
    match req {
        Request::Methods => json!({"type": "methods"}),
        Request::Call { method, args } => json!({"type": "call", "method": method, "args": args}),
    }
}

/// Server side: classifies an incoming object the way pm2-axon-rpc does
/// (anything that is not `type: "methods"` is a call).
pub fn decode_request(msg: &Value) -> Result<Request, CallRejection> {
    let obj = msg.as_object();
    let field = |k: &str| obj.and_then(|o| o.get(k));
    if field("type").and_then(Value::as_str) == Some("methods") {
        return Ok(Request::Methods);
    }
    let method = match field("method") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(v) if truthy(v) => v.to_string(),
        _ => return Err(CallRejection::MethodRequired),
    };
    let args = match field("args") {
        Some(Value::Array(a)) => a.clone(),
        Some(v) if truthy(v) => return Err(CallRejection::ArgsNotArray),
        _ => return Err(CallRejection::ArgsRequired),
    };
    Ok(Request::Call { method, args })
}

pub use crate::common::js::truthy;

/// `{"args":[…]}`: the callback's arguments after a falsy `err`.
pub fn success_reply(args: Vec<Value>) -> Value {
    json!({ "args": args })
}

/// The reply for a failed call, in the `Error` shape when a stack is given.
pub fn error_reply(err: &RemoteError) -> Value {
    let mut m = Map::new();
    m.insert("error".into(), err.error.clone());
    if let Some(stack) = &err.stack {
        m.insert("stack".into(), Value::String(stack.clone()));
    }
    Value::Object(m)
}

pub fn rejection_reply(r: &CallRejection) -> Value {
    json!({ "error": r.to_string() })
}

/// `{"error":"method \"X\" does not exist"}`.
pub fn unknown_method_reply(method: &str) -> Value {
    json!({ "error": format!("method \"{method}\" does not exist") })
}

pub fn methods_reply(methods: &[MethodDescription]) -> Value {
    let mut m = Map::new();
    for d in methods {
        m.insert(d.name.clone(), json!({"name": d.name, "params": d.params}));
    }
    json!({ "methods": m })
}

/// Client side: a call's reply → its arguments, or the remote error.
pub fn decode_call_reply(msg: Value) -> Result<Result<Vec<Value>, RemoteError>, RpcDecodeError> {
    let Value::Object(mut o) = msg else {
        return Err(RpcDecodeError::NotObject);
    };
    if let Some(error) = o.remove("error") {
        let message = match &error {
            Value::String(s) => s.clone(),
            other => js_string(other),
        };
        let stack = o
            .remove("stack")
            .and_then(|s| s.as_str().map(str::to_owned));
        return Ok(Err(RemoteError {
            message,
            error,
            stack,
        }));
    }
    match o.remove("args") {
        Some(Value::Array(a)) => Ok(Ok(a)),
        Some(_) => Err(RpcDecodeError::ArgsNotArray),
        None => Err(RpcDecodeError::NoResult),
    }
}

/// Client side: a `methods` reply → the method names and parameters.
pub fn decode_methods_reply(msg: &Value) -> Result<Vec<MethodDescription>, RpcDecodeError> {
    let methods = msg
        .get("methods")
        .and_then(Value::as_object)
        .ok_or(RpcDecodeError::NoResult)?;
    Ok(methods
        .iter()
        .map(|(name, d)| MethodDescription {
            name: d
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            params: d
                .get("params")
                .and_then(Value::as_array)
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// `String(value)` for the JSON values an error field can hold.
fn js_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(_) => "[object Object]".into(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                if x.is_null() {
                    String::new()
                } else {
                    js_string(x)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            encode_request(&Request::Methods).to_string(),
            r#"{"type":"methods"}"#
        );
        let call = Request::Call {
            method: "ping".into(),
            args: vec![json!({})],
        };
        assert_eq!(
            encode_request(&call).to_string(),
            r#"{"type":"call","method":"ping","args":[{}]}"#
        );
        assert_eq!(decode_request(&encode_request(&call)).unwrap(), call);
        assert_eq!(
            decode_request(&json!({"type":"methods"})).unwrap(),
            Request::Methods
        );
        assert_eq!(
            decode_request(&json!({"type":"call"})),
            Err(CallRejection::MethodRequired)
        );
        assert_eq!(
            decode_request(&json!("garbage")),
            Err(CallRejection::MethodRequired)
        );
        assert_eq!(
            decode_request(&json!({"method":"x"})),
            Err(CallRejection::ArgsRequired)
        );
        assert_eq!(
            decode_request(&json!({"method":"x","args":{"a":1}})),
            Err(CallRejection::ArgsNotArray)
        );
        assert_eq!(
            rejection_reply(&CallRejection::MethodRequired).to_string(),
            r#"{"error":".method required"}"#
        );
        assert_eq!(
            unknown_method_reply("X").to_string(),
            r#"{"error":"method \"X\" does not exist"}"#
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            decode_call_reply(json!({"args":[3,"two"]}))
                .unwrap()
                .unwrap(),
            vec![json!(3), json!("two")]
        );
        let e = decode_call_reply(json!({"error":"boom","stack":"Error: boom\n    at x"}))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.message, "boom");
        assert_eq!(e.stack.as_deref(), Some("Error: boom\n    at x"));
        assert_eq!(
            error_reply(&e),
            json!({"error":"boom","stack":"Error: boom\n    at x"})
        );
        let e = decode_call_reply(json!({"error":{"code":1}}))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.message, "[object Object]");
        assert_eq!(error_reply(&e), json!({"error":{"code":1}}));
        assert_eq!(decode_call_reply(json!([])), Err(RpcDecodeError::NotObject));
        assert_eq!(decode_call_reply(json!({})), Err(RpcDecodeError::NoResult));
        assert_eq!(
            decode_call_reply(json!({"args":1})),
            Err(RpcDecodeError::ArgsNotArray)
        );
    }

    #[test]
    fn methods() {
        let d = vec![
            MethodDescription {
                name: "kill".into(),
                params: vec!["cb".into()],
            },
            MethodDescription {
                name: "getInfos".into(),
                params: vec!["cb".into()],
            },
        ];
        let reply = methods_reply(&d);
        assert_eq!(
            reply.to_string(),
            r#"{"methods":{"kill":{"name":"kill","params":["cb"]},"getInfos":{"name":"getInfos","params":["cb"]}}}"#
        );
        assert_eq!(decode_methods_reply(&reply).unwrap(), d);
        assert_eq!(
            decode_methods_reply(&json!({})),
            Err(RpcDecodeError::NoResult)
        );
    }
}
