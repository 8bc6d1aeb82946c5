//! pm2-axon-rpc over req/rep: a client that rediscovers the server's methods
//! after every (re)connect, and a server that exposes async Rust handlers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::endpoint::{Endpoint, EndpointError};
use super::rep::RepSocket;
use super::req::{ReqError, ReqOptions, ReqSocket};
use crate::protocol::amp::{self, Arg};
use crate::protocol::rpc::{self, MethodDescription, RemoteError, Request};

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RpcError {
    #[error(transparent)]
    Req(#[from] ReqError),
    #[error("{0}")]
    Remote(RemoteError),
    #[error("malformed rpc reply: {0}")]
    Malformed(String),
}

/// A pm2-axon-rpc client on a reconnecting req socket.
#[derive(Clone)]
pub struct RpcClient {
    req: ReqSocket,
    methods: watch::Receiver<Option<Arc<Vec<MethodDescription>>>>,
    task: Arc<tokio::task::AbortHandle>,
}

impl RpcClient {
    pub fn connect(endpoint: Endpoint, opts: ReqOptions) -> RpcClient {
        let req = ReqSocket::connect(endpoint, opts);
        let (tx, methods) = watch::channel(None);
        let discover = req.clone();
        let task = tokio::spawn(async move {
            let mut state = discover.state();
            loop {
                let generation = {
                    let s = *state.borrow_and_update();
                    if !s.connected {
                        let _ = tx.send(None);
                    }
                    s
                };
                if generation.connected {
                    // Every new connection: ask for the method table again.
                    match discover
                        .request(vec![Arg::Json(rpc::encode_request(&Request::Methods))])
                        .await
                    {
                        Ok(mut reply) if !reply.is_empty() => match reply
                            .swap_remove(0)
                            .into_value()
                            .map(|v| rpc::decode_methods_reply(&v))
                        {
                            Some(Ok(m)) => {
                                tracing::debug!(count = m.len(), "rpc methods discovered");
                                let _ = tx.send(Some(Arc::new(m)));
                            }
                            _ => tracing::warn!("rpc methods reply malformed"),
                        },
                        Ok(_) => tracing::warn!("empty rpc methods reply"),
                        Err(e) => tracing::debug!(error = %e, "rpc methods discovery failed"),
                    }
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
        RpcClient {
            req,
            methods,
            task: Arc::new(task.abort_handle()),
        }
    }

    /// Calls `method` with positional `args`; the result is the server
    /// callback's arguments after `err`.
    pub async fn call(&self, method: &str, args: Vec<Value>) -> Result<Vec<Value>, RpcError> {
        self.call_with_timeout(method, args, None).await
    }

    pub async fn call_with_timeout(
        &self,
        method: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Value>, RpcError> {
        let msg = rpc::encode_request(&Request::Call {
            method: method.to_owned(),
            args,
        });
        let frame = vec![Arg::Json(msg)];
        let reply = match timeout {
            Some(t) => self.req.request_with_timeout(frame, t).await?,
            None => self.req.request(frame).await?,
        };
        decode_reply(reply)
    }

    /// Calls `method` and returns the reply object's JSON text unparsed
    /// (with a socket in `lazy_json` mode this costs no parsing at all), for
    /// callers that deserialize big replies into the few fields they need.
    pub async fn call_text(
        &self,
        method: &str,
        args: Vec<Value>,
    ) -> Result<bytes::Bytes, RpcError> {
        let msg = rpc::encode_request(&Request::Call {
            method: method.to_owned(),
            args,
        });
        let reply = self.req.request(vec![Arg::Json(msg)]).await?;
        reply
            .first()
            .and_then(Arg::json_text)
            .ok_or_else(|| RpcError::Malformed("reply is not JSON".into()))
    }

    /// The method table of the current connection, once discovered.
    pub fn methods(&self) -> Option<Arc<Vec<MethodDescription>>> {
        self.methods.borrow().clone()
    }

    pub fn has_method(&self, name: &str) -> bool {
        self.methods()
            .is_some_and(|m| m.iter().any(|d| d.name == name))
    }

    /// Waits until the methods of the current connection are known.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut m = self.methods.clone();
        tokio::time::timeout(timeout, m.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Watches readiness (Some = methods known on the current connection).
    pub fn readiness(&self) -> watch::Receiver<Option<Arc<Vec<MethodDescription>>>> {
        self.methods.clone()
    }

    pub fn socket(&self) -> &ReqSocket {
        &self.req
    }

    pub async fn close(&self) {
        self.task.abort();
        self.req.close().await;
    }
}

/// A call's reply frame (its id already taken off) → the callback's
/// arguments, or the remote error.
pub(crate) fn decode_reply(mut reply: amp::Message) -> Result<Vec<Value>, RpcError> {
    if reply.is_empty() {
        return Err(RpcError::Malformed("no arguments".into()));
    }
    let value = reply
        .swap_remove(0)
        .into_value()
        .ok_or_else(|| RpcError::Malformed("binary reply".into()))?;
    match rpc::decode_call_reply(value) {
        Ok(Ok(args)) => Ok(args),
        Ok(Err(remote)) => Err(RpcError::Remote(remote)),
        Err(e) => Err(RpcError::Malformed(e.to_string())),
    }
}

/// What a handler returns: the callback's arguments, or an error reply.
pub type HandlerResult = Result<Vec<Value>, RemoteError>;
type BoxFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
type Handler = Arc<dyn Fn(Vec<Value>) -> BoxFuture + Send + Sync>;

/// A pm2-axon-rpc server on a rep socket.
#[derive(Clone, Default)]
pub struct RpcServer {
    methods: Arc<Mutex<Vec<(MethodDescription, Handler)>>>,
}

impl RpcServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Exposes `name`; `params` are advertised in `methods` replies (the JS
    /// server derives them from the function source; clients use only names).
    pub fn expose<F, Fut>(&self, name: &str, params: &[&str], handler: F)
    where
        F: Fn(Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let desc = MethodDescription {
            name: name.to_owned(),
            params: params.iter().map(|s| s.to_string()).collect(),
        };
        let handler: Handler = Arc::new(move |args| Box::pin(handler(args)));
        let mut m = self.methods.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(d, _)| d.name != name);
        m.push((desc, handler));
    }

    /// Binds and serves until the returned socket is closed or dropped.
    pub async fn bind(&self, endpoint: &Endpoint) -> Result<RepSocket, EndpointError> {
        let (sock, mut requests) = RepSocket::bind(endpoint, amp::DEFAULT_MAX_FRAME).await?;
        let server = self.clone();
        tokio::spawn(async move {
            while let Some(req) = requests.recv().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let first = req
                        .args
                        .into_iter()
                        .next()
                        .and_then(Arg::into_value)
                        .unwrap_or(Value::Null);
                    let reply = server.handle(first).await;
                    req.reply.reply(vec![Arg::Json(reply)]);
                });
            }
        });
        Ok(sock)
    }

    /// Answers one request object (also usable without a socket).
    pub async fn handle(&self, msg: Value) -> Value {
        let call = match rpc::decode_request(&msg) {
            Ok(Request::Methods) => {
                let m = self.methods.lock().unwrap_or_else(|e| e.into_inner());
                let descs: Vec<_> = m.iter().map(|(d, _)| d.clone()).collect();
                return rpc::methods_reply(&descs);
            }
            Ok(Request::Call { method, args }) => (method, args),
            Err(rejection) => {
                // pm2-axon-rpc checks that the method exists before it looks
                // at `.args`: keep its order of errors.
                if let Some(m) = msg
                    .get("method")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                {
                    let known = self
                        .methods
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .any(|(d, _)| d.name == m);
                    if !known {
                        return rpc::unknown_method_reply(m);
                    }
                }
                return rpc::rejection_reply(&rejection);
            }
        };
        let handler = {
            let m = self.methods.lock().unwrap_or_else(|e| e.into_inner());
            m.iter()
                .find(|(d, _)| d.name == call.0)
                .map(|(_, h)| h.clone())
        };
        let Some(handler) = handler else {
            return rpc::unknown_method_reply(&call.0);
        };
        match handler(call.1).await {
            Ok(args) => rpc::success_reply(args),
            Err(e) => rpc::error_reply(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn rust_client_against_rust_server() {
        let dir = std::env::temp_dir().join(format!("ka-rpc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ep = crate::socket::endpoint::test_endpoint(&dir, "rpc.sock");
        let server = RpcServer::new();
        server.expose("add", &["a", "b", "cb"], |args| async move {
            let a = args.first().and_then(Value::as_i64).unwrap_or(0);
            let b = args.get(1).and_then(Value::as_i64).unwrap_or(0);
            Ok(vec![json!(a + b), json!("sum")])
        });
        server.expose("fail", &["cb"], |_| async {
            Err(RemoteError {
                message: "boom".into(),
                error: json!("boom"),
                stack: Some("Error: boom".into()),
            })
        });
        let sock = server.bind(&ep).await.unwrap();
        let client = RpcClient::connect(ep, ReqOptions::default());
        assert!(client.ready(Duration::from_secs(2)).await);
        assert!(client.has_method("add") && client.has_method("fail"));
        assert_eq!(
            client.call("add", vec![json!(2), json!(3)]).await.unwrap(),
            vec![json!(5), json!("sum")]
        );
        match client.call("fail", vec![]).await {
            Err(RpcError::Remote(e)) => assert_eq!(
                (e.message.as_str(), e.stack.as_deref()),
                ("boom", Some("Error: boom"))
            ),
            other => panic!("{other:?}"),
        }
        match client.call("nope", vec![]).await {
            Err(RpcError::Remote(e)) => assert_eq!(e.message, "method \"nope\" does not exist"),
            other => panic!("{other:?}"),
        }
        sock.close();
        client.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
