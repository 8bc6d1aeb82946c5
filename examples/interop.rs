//! A command-line driver of the protocol layer, used by the interop tests in
//! `__test__` to put the Rust sockets face to face with the real JS
//! libraries (pm2-axon, pm2-axon-rpc, nssocket, Node's IPC, a real PM2).
//! Every line it prints on stdout is one JSON object.
//!
//! ```text
//! interop rpc-call  <endpoint> <method> <args-json> [timeout-ms]
//! interop rpc-session <endpoint>              one client kept alive: stdin {"id":…,"method":…,"args":[…],"timeout":ms}
//!                                              lines → one {"id":…,…} reply line each (same shape as rpc-call);
//!                                              prints {"event":"ready","methods":[…]} on every (re)discovery and
//!                                              {"event":"disconnected"} when the connection is lost
//! interop rpc-serve <endpoint>                 serves ping/add/fail/failValue until stdin closes
//! interop sub       <endpoint> <pattern> <n>   prints n events, then exits
//! interop pub       <endpoint> <frames-json>   connects, sends each frame (array of args), exits
//! interop pub-bind  <endpoint>                 binds; sends each stdin line (JSON array of args)
//! interop nssocket  <endpoint>                 stdin {"event":…,"data":…} lines → sends; prints received
//! interop cipher    encrypt|decrypt <secret> <text>
//! interop ipc-send  <json>                     one message on NODE_CHANNEL_FD
//! ```
//! In frames, JSON strings become `s:` arguments, `{"$raw":"<hex>"}` a raw
//! buffer, anything else a `j:` argument.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use interactor::protocol::amp::Arg;
use interactor::protocol::cipher::Cipher;
use interactor::protocol::rpc::RemoteError;
use interactor::socket::endpoint::Endpoint;
use interactor::socket::ipc::IpcChannel;
use interactor::socket::nssocket;
use interactor::socket::publisher::PubSocket;
use interactor::socket::req::ReqOptions;
use interactor::socket::rpc::{RpcClient, RpcError, RpcServer};
use interactor::socket::sub_emitter::SubEmitter;

fn out(v: Value) {
    println!("{v}");
}

fn to_arg(v: Value) -> Arg {
    match v {
        Value::String(s) => Arg::Str(s),
        Value::Object(ref o) if o.len() == 1 && o.get("$raw").is_some_and(Value::is_string) => {
            Arg::Raw(
                hex::decode(o["$raw"].as_str().unwrap())
                    .unwrap_or_default()
                    .into(),
            )
        }
        other => Arg::Json(other),
    }
}

fn from_arg(a: &Arg) -> Value {
    match a {
        Arg::Str(s) => json!(s),
        Arg::Json(v) => v.clone(),
        Arg::Raw(b) => json!({ "$raw": hex::encode(b) }),
        Arg::JsonText(_) => a.to_value().unwrap_or(Value::Null),
    }
}

fn endpoint(s: &str) -> Endpoint {
    Endpoint::parse(s).unwrap_or_else(|e| {
        eprintln!("bad endpoint: {e}");
        std::process::exit(2)
    })
}

async fn stdin_lines() -> tokio::io::Lines<BufReader<tokio::io::Stdin>> {
    BufReader::new(tokio::io::stdin()).lines()
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    match a(0).as_str() {
        "rpc-call" => {
            let client = RpcClient::connect(endpoint(&a(1)), ReqOptions::default());
            let timeout = a(4)
                .parse()
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_secs(5));
            if !client.ready(timeout).await {
                out(json!({"error": "not ready"}));
                std::process::exit(1);
            }
            let methods: Vec<String> = client
                .methods()
                .unwrap()
                .iter()
                .map(|m| m.name.clone())
                .collect();
            let call_args: Vec<Value> =
                serde_json::from_str(&a(3)).expect("args must be a JSON array");
            match client
                .call_with_timeout(&a(2), call_args, Some(timeout))
                .await
            {
                Ok(r) => out(json!({"methods": methods, "args": r})),
                Err(RpcError::Remote(e)) => out(
                    json!({"methods": methods, "error": e.error, "message": e.message, "stack": e.stack}),
                ),
                Err(e) => out(json!({"methods": methods, "failure": e.to_string()})),
            }
        }
        "rpc-session" => {
            let client = RpcClient::connect(endpoint(&a(1)), ReqOptions::default());
            let mut readiness = client.readiness();
            let watcher = tokio::spawn(async move {
                let mut was_ready = false;
                loop {
                    let current = readiness.borrow_and_update().clone();
                    match current {
                        Some(m) => {
                            let names: Vec<String> = m.iter().map(|d| d.name.clone()).collect();
                            out(json!({"event": "ready", "methods": names}));
                            was_ready = true;
                        }
                        None if was_ready => {
                            out(json!({"event": "disconnected"}));
                            was_ready = false;
                        }
                        None => {}
                    }
                    if readiness.changed().await.is_err() {
                        break;
                    }
                }
            });
            let mut lines = stdin_lines().await;
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(cmd) = serde_json::from_str::<Value>(&line) else {
                    out(json!({"error": "bad command", "line": line}));
                    continue;
                };
                let id = cmd.get("id").cloned().unwrap_or(Value::Null);
                let method = cmd["method"].as_str().unwrap_or_default().to_owned();
                let call_args = cmd["args"].as_array().cloned().unwrap_or_default();
                let timeout = cmd["timeout"]
                    .as_u64()
                    .map(Duration::from_millis)
                    .unwrap_or(Duration::from_secs(5));
                let c = client.clone();
                tokio::spawn(async move {
                    let methods: Option<Vec<String>> = c
                        .methods()
                        .map(|m| m.iter().map(|d| d.name.clone()).collect());
                    match c.call_with_timeout(&method, call_args, Some(timeout)).await {
                        Ok(r) => out(json!({"id": id, "methods": methods, "args": r})),
                        Err(RpcError::Remote(e)) => out(
                            json!({"id": id, "methods": methods, "error": e.error, "message": e.message, "stack": e.stack}),
                        ),
                        Err(e) => {
                            out(json!({"id": id, "methods": methods, "failure": e.to_string()}))
                        }
                    }
                });
            }
            client.close().await;
            watcher.abort();
        }
        "rpc-serve" => {
            let server = RpcServer::new();
            server.expose("ping", &["data", "cb"], |args| async move {
                Ok(vec![
                    json!({"msg": "pong", "got": args.first().cloned().unwrap_or(Value::Null)}),
                ])
            });
            server.expose("add", &["a", "b", "cb"], |args| async move {
                let n = |i: usize| args.get(i).and_then(Value::as_f64).unwrap_or(0.0);
                Ok(vec![json!(n(0) + n(1)), json!("sum")])
            });
            server.expose("fail", &["cb"], |_| async {
                Err(RemoteError {
                    message: "boom".into(),
                    error: json!("boom"),
                    stack: Some("Error: boom\n    at rust".into()),
                })
            });
            server.expose("failValue", &["cb"], |_| async {
                Err(RemoteError {
                    message: "[object Object]".into(),
                    error: json!({"code": 42}),
                    stack: None,
                })
            });
            let sock = server.bind(&endpoint(&a(1))).await.unwrap_or_else(|e| {
                out(json!({"error": e.to_string()}));
                std::process::exit(1)
            });
            out(json!({"event": "bound", "endpoint": sock.endpoint().to_string()}));
            let mut lines = stdin_lines().await;
            while let Ok(Some(_)) = lines.next_line().await {}
            sock.close();
        }
        "sub" => {
            let sub = SubEmitter::connect(
                endpoint(&a(1)),
                interactor::protocol::amp::DEFAULT_MAX_FRAME,
            );
            let mut s = sub.subscribe(&a(2), 1024);
            let n: usize = a(3).parse().unwrap_or(1);
            if sub.wait_connected(Duration::from_secs(10)).await {
                out(json!({"event": "connected"}));
            }
            for _ in 0..n {
                let Some(ev) = s.recv().await else { break };
                out(
                    json!({"topic": ev.topic, "captures": ev.captures, "args": ev.args.iter().map(from_arg).collect::<Vec<_>>()}),
                );
            }
        }
        "pub" => {
            let pubs = PubSocket::connect(endpoint(&a(1)), 1 << 20);
            let frames: Vec<Vec<Value>> =
                serde_json::from_str(&a(2)).expect("frames must be [[args…]…]");
            let mut conn = pubs.connection();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn.wait_for(|c| *c)).await;
            for f in frames {
                let args: Vec<Arg> = f.into_iter().map(to_arg).collect();
                let r = pubs.send_and_wait(&args).await;
                out(json!({"sent": r.is_ok()}));
            }
        }
        "pub-bind" => {
            let pubs = PubSocket::bind(&endpoint(&a(1)), 1 << 20)
                .await
                .expect("bind");
            out(json!({"event": "bound"}));
            let mut lines = stdin_lines().await;
            while let Ok(Some(line)) = lines.next_line().await {
                let args: Vec<Value> = serde_json::from_str(&line).unwrap_or_default();
                let args: Vec<Arg> = args.into_iter().map(to_arg).collect();
                let peers = pubs.send(&args).map_err(|e| e.to_string());
                out(json!({"peers": peers.unwrap_or(0)}));
            }
        }
        "nssocket" => {
            let (mut reader, sender) = match nssocket::connect(&endpoint(&a(1)), 1 << 20).await {
                Ok(x) => x,
                Err(e) => {
                    out(json!({"error": e.to_string()}));
                    std::process::exit(1)
                }
            };
            out(json!({"event": "connected"}));
            let writer = tokio::spawn(async move {
                let mut lines = stdin_lines().await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let Ok(cmd) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    let event = cmd["event"].as_str().unwrap_or_default().to_owned();
                    let _ = sender.send(&event, cmd.get("data"));
                }
            });
            while let Ok(Some(m)) = reader.recv().await {
                out(json!({"path": m.path, "data": m.data}));
            }
            out(json!({"event": "closed"}));
            writer.abort();
            // The stdin reader sits in a blocking read that the runtime would
            // wait for at shutdown: exit now that the connection is gone.
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        }
        "cipher" => {
            let c = Cipher::new(&a(2));
            match a(1).as_str() {
                "encrypt" => out(json!({"hex": c.encrypt_hex(&a(3))})),
                _ => match c.decrypt_hex(&a(3)) {
                    Ok(t) => out(json!({"text": t})),
                    Err(e) => out(json!({"error": e.to_string()})),
                },
            }
        }
        "ipc-send" => {
            let msg: Value = serde_json::from_str(&a(1)).expect("json");
            match IpcChannel::from_env().and_then(|mut c| c.send(&msg)) {
                Ok(()) => {}
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1)
                }
            }
            // Like the agent, keep running a moment so the parent reads it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2);
        }
    }
}
