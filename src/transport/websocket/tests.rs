//! Real sockets on 127.0.0.1 against a tokio-tungstenite server. Timers are
//! shrunk through `WebSocketOptions`; the only timing assertions are
//! generous upper bounds (`LIMIT`) and short "nothing happened" windows.

use super::*;
use crate::transport::test_support::{fast_link, free_port, identity as id, wait_until, within};
use crate::transport::Transporter;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type ServerWs = WebSocketStream<TcpStream>;

/// Fast reconnects, no background pings unless a test asks for them.
fn opts() -> WebSocketOptions {
    WebSocketOptions {
        ping_interval: Duration::from_secs(60),
        dead_after: Duration::from_secs(120),
        handshake_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_secs(2),
        link: fast_link(),
        ..WebSocketOptions::default()
    }
}

fn transport(o: WebSocketOptions) -> (WebSocketTransport, mpsc::Receiver<Packet>) {
    let (tx, rx) = mpsc::channel(64);
    (WebSocketTransport::new(id("sec"), o, tx).unwrap(), rx)
}

async fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/interaction", l.local_addr().unwrap());
    (l, url)
}

// tungstenite's callback type returns its (large) ErrorResponse by value.
#[allow(clippy::result_large_err)]
async fn accept(l: &TcpListener) -> (ServerWs, HeaderMap) {
    let (tcp, _) = within(l.accept()).await.unwrap();
    let mut headers = HeaderMap::new();
    // No size limits: one test sends a 24 MiB frame.
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        tcp,
        |req: &Request, resp: Response| {
            headers = req.headers().clone();
            Ok(resp)
        },
        Some(config),
    )
    .await
    .unwrap();
    (ws, headers)
}

/// Next text frame, skipping pings/pongs.
async fn next_text(ws: &mut ServerWs) -> String {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn next_packet(ws: &mut ServerWs) -> (String, Value) {
    let v: Value = serde_json::from_str(&next_text(ws).await).unwrap();
    (
        v["channel"].as_str().unwrap().to_owned(),
        v["payload"].clone(),
    )
}

async fn server_send(ws: &mut ServerWs, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

fn single(url: &str) -> TransportEndpoint {
    TransportEndpoint::Single(url.to_owned())
}

fn ev(i: usize) -> Packet {
    Packet::new("process:event", json!({ "i": i }))
}

#[test]
fn urls() {
    assert_eq!(parse_ws_url("http://h:3900").unwrap().scheme, "ws");
    assert_eq!(parse_ws_url("HTTPS://h/x").unwrap().scheme, "wss");
    assert_eq!(parse_ws_url("wss://h").unwrap().port, 443);
    assert_eq!(parse_ws_url(""), Err(WsError::NoUrl));
    assert_eq!(parse_ws_url("ftp://h"), Err(WsError::Scheme("ftp".into())));
    assert!(matches!(parse_ws_url("ws://h/a b"), Err(WsError::Path(_))));
    assert!(matches!(
        parse_ws_url("ws://h/a\r\nX: y"),
        Err(WsError::Path(_))
    ));
    assert!(matches!(
        parse_ws_url("nope"),
        Err(WsError::Net(NetError::InvalidUrl(_)))
    ));
}

#[test]
fn request_rejects_header_injection() {
    let url = parse_ws_url("ws://h/").unwrap();
    let mut id = id("sec");
    id.machine_name = "m1\r\nX-Evil: 1".into();
    assert_eq!(
        handshake::upgrade_request(&url, &id, "k", false),
        Err(WsError::HeaderValue("X-KM-SERVER"))
    );
}

#[test]
fn needs_a_runtime() {
    let (tx, _rx) = mpsc::channel(1);
    assert_eq!(
        WebSocketTransport::new(id("sec"), opts(), tx).err(),
        Some(WsError::NoRuntime(NoRuntime))
    );
}

#[tokio::test]
async fn bad_endpoints_are_reported() {
    let (t, _rx) = transport(opts());
    t.connect(TransportEndpoint::Named(Default::default()));
    assert_eq!(
        t.last_error().as_deref(),
        Some("the WebSocket transport needs a single URL")
    );
    t.connect(single("ftp://x"));
    assert!(t
        .last_error()
        .unwrap()
        .contains("unsupported WebSocket URL scheme"));
    assert!(!t.is_connected());
}

/// The raw upgrade request, byte for byte (docs/protocols.md §7.1), over an
/// `http://` URL; a 401 answer becomes `last_error` and is retried.
#[tokio::test]
async fn handshake_bytes_and_http_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (t, _rx) = transport(opts());
    t.connect(single(&format!("http://{addr}/interaction?x=1")));

    async fn read_request(l: &TcpListener) -> (TcpStream, String) {
        let (mut tcp, _) = within(l.accept()).await.unwrap();
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(within(tcp.read(&mut b)).await.unwrap(), 1);
            buf.push(b[0]);
        }
        (tcp, String::from_utf8(buf).unwrap())
    }
    let (mut tcp, req) = read_request(&l).await;
    let key = req
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
        .to_owned();
    assert_eq!(key.len(), 24, "16 random bytes in base64");
    let expected = format!(
        "GET /interaction?x=1 HTTP/1.1\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: websocket\r\n\
         X-KM-PUBLIC: pub\r\n\
         X-KM-SECRET: sec\r\n\
         X-KM-SERVER: m1\r\n\
         X-PM2-VERSION: 5.0.0\r\n\
         X-PROTOCOL-VERSION: 1\r\n\
         User-Agent: PM2 Agent v1.0.8\r\n\
         Host: {addr}\r\n\
         \r\n"
    );
    assert_eq!(req, expected);
    tcp.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    drop(tcp);
    // A failed handshake is retried (backoff), with a fresh key.
    let (_tcp, again) = read_request(&l).await;
    assert!(!again.contains(&key));
    assert_eq!(t.last_error().as_deref(), Some("handshake: HTTP 401"));
    assert!(!t.is_connected());
}

#[tokio::test]
async fn handshake_timeout_and_refused_are_reported() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let (t, _rx) = transport(WebSocketOptions {
        handshake_timeout: Duration::from_millis(100),
        ..opts()
    });
    t.connect(single(&url));
    // Accept the TCP connections but never answer the upgrade.
    let _held = within(l.accept()).await.unwrap();
    wait_until("handshake timeout", || {
        t.last_error().as_deref() == Some("handshake: timed out after 100ms")
    })
    .await;

    let port = free_port().await;
    t.connect(single(&format!("ws://127.0.0.1:{port}")));
    let want = format!("connection refused by 127.0.0.1:{port}");
    wait_until("refused", || {
        t.last_error().as_deref() == Some(want.as_str())
    })
    .await;
}

#[tokio::test]
async fn headers_and_every_status_arrives() {
    let (l, url) = listen().await;
    let (t, _rx) = transport(opts());
    t.connect(single(&url));
    let (mut ws, headers) = accept(&l).await;
    for (name, value) in [
        ("X-KM-PUBLIC", "pub"),
        ("X-KM-SECRET", "sec"),
        ("X-KM-SERVER", "m1"),
        ("X-PM2-VERSION", "5.0.0"),
        ("X-PROTOCOL-VERSION", "1"),
        ("User-Agent", "PM2 Agent v1.0.8"),
    ] {
        assert_eq!(headers.get(name).unwrap(), value, "{name}");
    }
    assert!(
        headers.get("Sec-WebSocket-Extensions").is_none(),
        "no permessage-deflate offer"
    );
    wait_until("connected", || t.is_connected()).await;

    // Statuses sent one after the other each arrive.
    for cpu in 0..3 {
        t.send(Packet::new("status", json!({"data": {"cpu": cpu}})));
        assert_eq!(
            next_text(&mut ws).await,
            format!(r#"{{"payload":{{"data":{{"cpu":{cpu}}}}},"channel":"status"}}"#)
        );
    }
    // Several waiting at once: only the newest goes, ahead of the logs.
    t.send(Packet::new("logs", json!({"data": "x\n"})));
    t.send(Packet::new("status", json!({"data": {"cpu": 8}})));
    t.send(Packet::new("status", json!({"data": {"cpu": 9}})));
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"payload":{"data":{"cpu":9}},"channel":"status"}"#
    );
    assert_eq!(
        next_packet(&mut ws).await,
        ("logs".to_owned(), json!({"data": "x\n"}))
    );
    assert_eq!(t.stats().dropped, 1, "the superseded status is counted");
    // Falsy payloads are not sent (JS `!data`).
    t.send(Packet::new("logs", Value::Null));
    t.send(Packet::new("", json!(1)));
    t.send(Packet::new("human:event", json!({"name": "after"})));
    assert_eq!(next_packet(&mut ws).await.0, "human:event");
    wait_until("6 sent", || t.stats().sent == 6).await;
}

/// docs/protocols.md §7.3: full → patch → [] → patch, `status:resend` → full,
/// and full again after every reopen; patches rebuild the statuses.
#[tokio::test]
async fn json_patch_mode() {
    let (l, url) = listen().await;
    let (t, mut rx) = transport(WebSocketOptions {
        json_patch: true,
        ..opts()
    });
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    wait_until("connected", || t.is_connected()).await;

    let status = |cpu: u64, ip: Option<&str>| {
        let mut s = json!({"data": {"process": [{"pm_id": 0, "cpu": cpu}], "server": {}}, "server_name": "m1"});
        if let Some(ip) = ip {
            s["internal_ip"] = json!(ip);
        }
        s
    };
    let statuses = [
        status(1, None),
        status(2, None),
        status(2, None),
        status(3, Some("10.0.0.2")),
    ];
    // One at a time, as the daemon sends them (one a second).
    for (i, s) in statuses.iter().enumerate() {
        t.send(Packet::new("status", s.clone()));
        wait_until("sent", || t.stats().sent == i as u64 + 1).await;
    }
    let (ch, full) = next_packet(&mut ws).await;
    assert_eq!((ch.as_str(), &full), ("status", &statuses[0]));
    let mut doc = full;
    let expected = [
        r#"{"payload":[{"op":"replace","path":"/data/process/0/cpu","value":2}],"channel":"status:patch"}"#,
        r#"{"payload":[],"channel":"status:patch"}"#,
        r#"{"payload":[{"op":"replace","path":"/data/process/0/cpu","value":3},{"op":"add","path":"/internal_ip","value":"10.0.0.2"}],"channel":"status:patch"}"#,
    ];
    for (i, want) in expected.iter().enumerate() {
        let text = next_text(&mut ws).await;
        assert_eq!(&text, want);
        let v: Value = serde_json::from_str(&text).unwrap();
        let ops: Vec<json_patch::Op> = serde_json::from_value(v["payload"].clone()).unwrap();
        json_patch::apply(&mut doc, &ops).unwrap();
        assert_eq!(doc, statuses[i + 1]);
    }

    // status:resend (no payload) forces the next status in full. The "sync"
    // message after it tells us the actor has read the resend.
    server_send(&mut ws, r#"{"channel":"status:resend"}"#).await;
    server_send(&mut ws, r#"{"channel":"sync","payload":1}"#).await;
    assert_eq!(
        within(rx.recv()).await.unwrap(),
        Packet::new("sync", json!(1))
    );
    t.send(Packet::new("status", status(4, None)));
    wait_until("sent", || t.stats().sent == 5).await;
    t.send(Packet::new("status", status(5, None)));
    assert_eq!(
        next_packet(&mut ws).await,
        ("status".to_owned(), status(4, None))
    );
    let (ch, ops) = next_packet(&mut ws).await;
    assert_eq!(ch, "status:patch");
    assert_eq!(
        ops,
        json!([{"op": "replace", "path": "/data/process/0/cpu", "value": 5}])
    );

    // A new socket starts with a full status again.
    drop(ws);
    let (mut ws, _) = accept(&l).await;
    wait_until("reconnected", || {
        t.stats().connects == 2 && t.is_connected()
    })
    .await;
    t.send(Packet::new("status", status(6, None)));
    wait_until("sent", || t.stats().sent == 7).await;
    t.send(Packet::new("status", status(7, None)));
    assert_eq!(
        next_packet(&mut ws).await,
        ("status".to_owned(), status(6, None))
    );
    assert_eq!(next_packet(&mut ws).await.0, "status:patch");
}

/// Offline: at most `queue_size` packets kept (oldest dropped), status and
/// monitoring never queued; flushed in order once the server is up.
#[tokio::test]
async fn offline_queue_is_bounded_and_flushed_in_order() {
    let port = free_port().await;
    let (t, _rx) = transport(WebSocketOptions {
        queue_size: 10,
        ..opts()
    });
    t.connect(single(&format!("ws://127.0.0.1:{port}/")));
    let want = format!("connection refused by 127.0.0.1:{port}");
    wait_until("refused", || {
        t.last_error().as_deref() == Some(want.as_str())
    })
    .await;
    for i in 0..25 {
        t.send(ev(i));
        t.send(Packet::new("status", json!({"i": i})));
        t.send(Packet::new("monitoring", json!({"i": i})));
    }
    wait_until("all 75 packets handled", || {
        let s = t.stats();
        s.queued == 10 && s.dropped == 15 + 50
    })
    .await;

    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (mut ws, _) = accept(&l).await;
    for i in 15..25 {
        assert_eq!(
            next_packet(&mut ws).await,
            ("process:event".to_owned(), json!({ "i": i }))
        );
    }
    wait_until("queue drained", || t.stats().queued == 0).await;
    t.send(Packet::new("status", json!({"live": true})));
    assert_eq!(
        next_packet(&mut ws).await,
        ("status".to_owned(), json!({"live": true}))
    );
    wait_until("11 sent", || t.stats().sent == 11).await;
}

#[tokio::test]
async fn default_queue_cap_is_200() {
    assert_eq!(WebSocketOptions::default().queue_size, PACKET_QUEUE_SIZE);
    assert_eq!(PACKET_QUEUE_SIZE, 200);
    let (t, _rx) = transport(opts());
    // Never connected: the actor is idle and still queues (bounded).
    for i in 0..250 {
        t.send(ev(i));
    }
    wait_until("queue full", || {
        t.stats().queued == 200 && t.stats().dropped == 50
    })
    .await;
}

#[tokio::test]
async fn server_restart_reconnects_and_delivers_queued_events() {
    let (l, url) = listen().await;
    let addr = l.local_addr().unwrap();
    let (t, _rx) = transport(opts());
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    wait_until("connected", || t.is_connected()).await;
    t.send(ev(0));
    assert_eq!(next_packet(&mut ws).await.1, json!({"i": 0}));

    // Kill the server: listener and connection.
    drop(ws);
    drop(l);
    wait_until("disconnected", || !t.is_connected()).await;
    for i in 1..6 {
        t.send(ev(i));
    }
    wait_until("queued", || t.stats().queued == 5).await;

    let l = TcpListener::bind(addr).await.unwrap();
    let (mut ws, _) = accept(&l).await;
    for i in 1..6 {
        assert_eq!(next_packet(&mut ws).await.1, json!({ "i": i }));
    }
    wait_until("reconnected", || {
        t.is_connected() && t.stats().connects == 2
    })
    .await;
}

/// A server that stops reading (so never pongs) is declared dead after
/// `dead_after` and the transport reconnects.
#[tokio::test]
async fn dead_peer_is_detected_and_replaced() {
    let (l, url) = listen().await;
    let o = WebSocketOptions {
        ping_interval: Duration::from_millis(50),
        dead_after: Duration::from_millis(300),
        ..opts()
    };
    let (t, _rx) = transport(o);
    t.connect(single(&url));
    let (mut silent, _) = accept(&l).await;
    // Not reading `silent` from here on.
    let (mut ws, _) = accept(&l).await;
    assert!(
        t.last_error()
            .unwrap()
            .starts_with("no answer from the peer for 0.3 s"),
        "{:?}",
        t.last_error()
    );
    // The dead socket did get the 5 s-style empty pings meanwhile.
    match within(silent.next()).await {
        Some(Ok(Message::Ping(p))) => assert!(p.is_empty()),
        other => panic!("expected a ping, got {other:?}"),
    }
    // The new socket is alive: it answers our pings, so it is kept.
    let mut pings = 0;
    while pings < 10 {
        match within(ws.next()).await {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(t.stats().connects, 2);
}

/// A write that cannot complete (peer not reading, buffers full) times out;
/// the packet is re-queued and delivered, in order, on the next socket.
#[tokio::test]
async fn failed_write_is_requeued() {
    let (l, url) = listen().await;
    let (t, _rx) = transport(WebSocketOptions {
        write_timeout: Duration::from_millis(300),
        ..opts()
    });
    t.connect(single(&url));
    let (_silent, _) = accept(&l).await;
    wait_until("connected", || t.is_connected()).await;
    // Far more than loopback socket buffers hold.
    let big = "x".repeat(24 << 20);
    t.send(Packet::new("profiling", json!({ "data": big })));
    t.send(ev(1));
    let (mut ws, _) = accept(&l).await;
    assert!(
        t.last_error()
            .unwrap()
            .starts_with("write timed out after 300ms"),
        "{:?}",
        t.last_error()
    );
    let (ch, payload) = next_packet(&mut ws).await;
    assert_eq!(
        (ch.as_str(), payload["data"].as_str().map(str::len)),
        ("profiling", Some(24 << 20))
    );
    assert_eq!(next_packet(&mut ws).await.1, json!({"i": 1}));
}

#[tokio::test]
async fn ping_gets_echo_pong_then_empty_pong() {
    let (l, url) = listen().await;
    let (t, _rx) = transport(opts());
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    ws.send(Message::Ping(Bytes::from_static(b"abc")))
        .await
        .unwrap();
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"abc"))
    );
    assert_eq!(
        within(ws.next()).await.unwrap().unwrap(),
        Message::Pong(Bytes::new())
    );
    drop(t);
}

async fn expect_close_1000(ws: &mut ServerWs) {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(
                    (f.code, f.reason.as_str()),
                    (CloseCode::Normal, "Disconnecting")
                );
                return;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected close 1000, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn disconnect_closes_1000_and_stops_reconnecting() {
    let (l, url) = listen().await;
    let (t, _rx) = transport(opts());
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    wait_until("connected", || t.is_connected()).await;
    t.disconnect();
    expect_close_1000(&mut ws).await;
    wait_until("disconnected", || !t.is_connected()).await;
    // Backoff is 20–100 ms: a reconnect would show up well within this.
    assert!(tokio::time::timeout(Duration::from_millis(400), l.accept())
        .await
        .is_err());
    // Packets sent meanwhile wait in the queue for the next connect().
    t.send(ev(1));
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    assert_eq!(next_packet(&mut ws).await.1, json!({"i": 1}));
}

#[tokio::test]
async fn dropping_the_handle_closes_1000() {
    let (l, url) = listen().await;
    let (t, _rx) = transport(opts());
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    wait_until("connected", || t.is_connected()).await;
    drop(t);
    expect_close_1000(&mut ws).await;
}

/// A new URL closes the current socket before opening the next one; the
/// same URL again is a no-op.
#[tokio::test]
async fn new_url_moves_the_socket_same_url_is_noop() {
    let (la, url_a) = listen().await;
    let (lb, url_b) = listen().await;
    let (t, _rx) = transport(opts());
    t.connect(single(&url_a));
    let (mut a, _) = accept(&la).await;
    wait_until("connected", || t.is_connected()).await;
    t.connect(single(&url_a));
    t.connect(single(&url_b));
    expect_close_1000(&mut a).await;
    let (mut b, _) = accept(&lb).await;
    wait_until("connected to b", || {
        t.is_connected() && t.stats().connects == 2
    })
    .await;
    t.connect(single(&url_b));
    t.connect(single(&url_b.replace("ws://", "http://")));
    t.send(ev(7));
    assert_eq!(next_packet(&mut b).await.1, json!({"i": 7}));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), lb.accept())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), la.accept())
            .await
            .is_err()
    );
    assert_eq!(t.stats().connects, 2);
}

#[tokio::test]
async fn inbound_packets_delivered_garbage_ignored() {
    let (l, url) = listen().await;
    let (t, mut rx) = transport(opts());
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    for garbage in [
        "not json",
        "null",
        "[1,2]",
        "42",
        r#"{"payload":{"a":1}}"#,
        r#"{"channel":"","payload":{"a":1}}"#,
        r#"{"channel":7,"payload":{"a":1}}"#,
        r#"{"channel":"x","payload":null}"#,
        r#"{"channel":"x","payload":0}"#,
        r#"{"channel":"x","payload":""}"#,
        r#"{"channel":"x","payload":false}"#,
        r#"{"channel":"status:resend"}"#,
    ] {
        server_send(&mut ws, garbage).await;
    }
    ws.send(Message::Binary(Bytes::from_static(b"\xff\xfe")))
        .await
        .unwrap();
    server_send(
        &mut ws,
        r#"{"channel":"trigger:action","payload":{"action_name":"hello","process_id":0}}"#,
    )
    .await;
    ws.send(Message::binary(
        br#"{"payload":{"method_name":"ping"},"channel":"trigger:pm2:action"}"#.to_vec(),
    ))
    .await
    .unwrap();
    server_send(&mut ws, r#"{"channel":"status:resend","payload":true}"#).await;
    assert_eq!(
        within(rx.recv()).await.unwrap(),
        Packet::new(
            "trigger:action",
            json!({"action_name": "hello", "process_id": 0})
        )
    );
    assert_eq!(
        within(rx.recv()).await.unwrap(),
        Packet::new("trigger:pm2:action", json!({"method_name": "ping"}))
    );
    assert_eq!(
        within(rx.recv()).await.unwrap(),
        Packet::new("status:resend", json!(true))
    );
    // Every unusable message counted (the bare status:resend is not one).
    assert_eq!(t.stats().inbound_dropped, 12);
    // Still connected and working after all that.
    t.send(ev(1));
    assert_eq!(next_packet(&mut ws).await.1, json!({"i": 1}));
    assert!(rx.try_recv().is_err());
    assert!(t.is_connected());
}

#[tokio::test]
async fn full_inbound_channel_drops_without_blocking() {
    let (l, url) = listen().await;
    let (tx, mut rx) = mpsc::channel(1);
    let t = WebSocketTransport::new(id("sec"), opts(), tx).unwrap();
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    for i in 0..50 {
        server_send(
            &mut ws,
            &format!(r#"{{"channel":"trigger:action","payload":{{"i":{i}}}}}"#),
        )
        .await;
    }
    // The socket keeps flowing both ways although nobody reads `rx`.
    server_send(&mut ws, r#"{"channel":"sync","payload":1}"#).await;
    wait_until("49 dropped", || t.stats().inbound_dropped == 50).await;
    t.send(ev(1));
    assert_eq!(next_packet(&mut ws).await.1, json!({"i": 1}));
    assert_eq!(
        rx.try_recv().unwrap(),
        Packet::new("trigger:action", json!({"i": 0}))
    );
    assert!(rx.try_recv().is_err());
}

/// `send` never waits: with nothing carrying, the route keeps the newest
/// `queue_size` packets and counts the rest.
#[tokio::test]
async fn full_queue_drops_the_oldest_without_blocking() {
    let (t, _rx) = transport(WebSocketOptions {
        queue_size: 2,
        ..opts()
    });
    for i in 0..5 {
        t.send(ev(i));
    }
    assert_eq!(t.stats().dropped, 3);
    assert_eq!(t.stats().queued, 2);
}

#[tokio::test]
async fn zero_options_do_not_panic() {
    let (l, url) = listen().await;
    let o = WebSocketOptions {
        queue_size: 0,
        ping_interval: Duration::ZERO,
        dead_after: Duration::from_secs(5),
        link: crate::transport::link::LinkOptions {
            proof_timeout: Duration::ZERO,
            backoff_initial: Duration::ZERO,
            backoff_max: Duration::ZERO,
            stable_after: Duration::ZERO,
        },
        ..opts()
    };
    let (t, _rx) = transport(o);
    t.send(ev(0));
    t.connect(single(&url));
    let (mut ws, _) = accept(&l).await;
    // 1 ms pings, answered by the server's reads.
    for _ in 0..3 {
        assert!(matches!(
            within(ws.next()).await,
            Some(Ok(Message::Ping(_)))
        ));
    }
    assert_eq!(t.stats().queued, 0);
}
