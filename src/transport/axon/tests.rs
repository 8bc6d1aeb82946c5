//! Real sockets on 127.0.0.1: a plain TCP listener playing the backend's
//! axon `sub` (frames read with our `AmpReader`) and one playing its
//! nssocket server (JSON lines). Timers and limits are shrunk through
//! `AxonOptions`; timing assertions are generous upper bounds (`LIMIT`) and
//! short "nothing happened" windows.

use super::*;
use crate::protocol::amp::Arg;
use crate::socket::connection::AmpReader;
use crate::transport::test_support::{fast_link, identity as id, wait_until, within, LIMIT};
use crate::transport::Transporter;
use std::collections::BTreeMap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "secret-key-123";

/// The metadata of the captured handshake (docs/protocols.md §4), upper-case
/// like `DaemonConfig::system_metadata`.
fn metadata() -> Value {
    json!({
        "MACHINE_NAME": "m1",
        "PUBLIC_KEY": "pub",
        "RECYCLE": false,
        "PM2_VERSION": "5.0.0",
        "MEMORY": 1000,
        "HOSTNAME": "h",
        "CPUS": []
    })
}

/// Fast ticks and reconnects.
fn opts() -> AxonOptions {
    AxonOptions {
        system_metadata: metadata(),
        status_interval: Duration::from_millis(50),
        link: fast_link(),
        ..AxonOptions::default()
    }
}

fn transport(o: AxonOptions) -> (AxonTransport, mpsc::Receiver<Packet>) {
    let (tx, rx) = mpsc::channel(64);
    (AxonTransport::new(id(SECRET), o, tx).unwrap(), rx)
}

fn cipher() -> Cipher {
    Cipher::new(SECRET)
}

/// The backend: a push listener (axon sub) and a reverse listener
/// (nssocket server).
struct Backend {
    push: TcpListener,
    pull: TcpListener,
}

impl Backend {
    async fn start() -> Backend {
        Backend {
            push: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            pull: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn endpoint(&self) -> TransportEndpoint {
        TransportEndpoint::Named(BTreeMap::from([
            (
                "push".into(),
                format!("tcp://{}", self.push.local_addr().unwrap()),
            ),
            (
                "pull".into(),
                format!("tcp://{}", self.pull.local_addr().unwrap()),
            ),
        ]))
    }

    /// Accepts the agent's pair of connections.
    async fn accept(&self) -> (Sub, Ns) {
        let (push, pull) =
            within(async { tokio::join!(self.push.accept(), self.pull.accept()) }).await;
        let (r, mut w) = pull.unwrap().0.into_split();
        // A PM2.io reverse server asks every new connection to authenticate.
        w.write_all(b"[\"ask\",null]\n").await.unwrap();
        let mut ns = Ns {
            lines: BufReader::new(r),
            w,
        };
        let rep = ns.line().await.unwrap();
        assert!(rep.starts_with(r#"["ask:rep""#), "{rep}");
        (Sub(AmpReader::new(push.unwrap().0, 256 << 20)), ns)
    }
}

struct Sub(AmpReader<TcpStream>);

impl Sub {
    async fn frame(&mut self) -> Vec<Arg> {
        within(self.0.read_message())
            .await
            .unwrap()
            .expect("push connection closed")
    }

    /// The next ciphered push frame, deciphered: (outer JSON text, buffer).
    async fn push_frame(&mut self) -> (String, Value) {
        let args = self.frame().await;
        assert_eq!(args.len(), 1, "a push frame has one argument: {args:?}");
        let Arg::Str(text) = &args[0] else {
            panic!("push frame argument is not a string: {args:?}")
        };
        let outer: Value = serde_json::from_str(text).unwrap();
        assert_eq!(outer["public_key"], "pub");
        let buffer = cipher()
            .decrypt_json(outer["data"].as_str().unwrap())
            .unwrap();
        (text.clone(), buffer)
    }

    /// True when nothing arrives for `d`.
    async fn silent_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.0.read_message())
            .await
            .is_err()
    }

    async fn closed(&mut self) -> bool {
        matches!(within(self.0.read_message()).await, Ok(None) | Err(_))
    }
}

struct Ns {
    lines: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Ns {
    async fn send(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).await.unwrap();
        self.w.write_all(b"\n").await.unwrap();
    }

    async fn ask(&mut self) {
        self.send(r#"["ask",null]"#).await;
    }

    /// The next line, raw (without `\n`); `None` at end of stream.
    async fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        let n = within(self.lines.read_line(&mut s)).await.unwrap();
        (n > 0).then(|| s.trim_end_matches('\n').to_owned())
    }

    async fn command(&mut self, channel: &str, payload: &Value) {
        let line = json!([channel, cipher().encrypt_json(payload)]).to_string();
        self.send(&line).await;
    }
}

fn status() -> Packet {
    Packet::new(
        "status",
        json!({"data": {"process": [], "server": {"hostname": "h"}}, "server_name": "m1", "internal_ip": "127.0.0.1"}),
    )
}

fn ev(i: usize) -> Packet {
    Packet::new("process:event", json!({ "i": i }))
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

async fn connected(backend: &Backend, t: &AxonTransport) -> (Sub, Ns) {
    t.connect(backend.endpoint());
    let pair = backend.accept().await;
    wait_until("connected", || t.is_connected()).await;
    pair
}

#[test]
fn needs_a_runtime() {
    let (tx, _rx) = mpsc::channel(1);
    assert_eq!(
        AxonTransport::new(id(SECRET), opts(), tx).err(),
        Some(AxonError::NoRuntime(NoRuntime))
    );
}

#[test]
fn metadata_keys_are_lower_cased_in_order() {
    assert_eq!(
        lowercase_keys(&metadata()).to_string(),
        r#"{"machine_name":"m1","public_key":"pub","recycle":false,"pm2_version":"5.0.0","memory":1000,"hostname":"h","cpus":[]}"#
    );
    assert_eq!(lowercase_keys(&json!([1])), json!({}));
}

#[test]
fn buffer_layout() {
    let b = build_buffer(
        [
            Packet::new("logs", json!(1)),
            Packet::new("server_name", json!("spoof")),
            Packet::new("human:event", json!(2)),
            Packet::new("logs", json!(3)),
        ]
        .into_iter(),
        json!({"s": 1}),
        "m1",
    );
    assert_eq!(
        b.to_string(),
        r#"{"logs":[1,3],"human:event":[2],"status":{"s":1},"server_name":"m1"}"#
    );
}

#[tokio::test]
async fn bad_endpoints_are_reported_and_nothing_connects() {
    let (t, _rx) = transport(opts());
    t.connect(TransportEndpoint::Single("tcp://127.0.0.1:1".into()));
    assert!(t.last_error().unwrap().contains("named endpoints"));
    t.connect(TransportEndpoint::Named(BTreeMap::from([(
        "push".into(),
        "tcp://127.0.0.1:1".into(),
    )])));
    assert_eq!(
        t.last_error().unwrap(),
        r#"the Axon transport needs a "pull" endpoint"#
    );
    t.connect(TransportEndpoint::Named(BTreeMap::from([
        ("push".into(), "tcp://nohost".into()),
        ("pull".into(), "tcp://127.0.0.1:1".into()),
    ])));
    assert!(t
        .last_error()
        .unwrap()
        .starts_with("invalid Axon push endpoint"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!t.is_connected());
    assert_eq!(t.stats().connects, 0);
    assert_eq!(t.name(), "AxonTransport");
}

#[tokio::test]
async fn ask_is_answered_with_ciphered_metadata() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (_sub, mut ns) = connected(&backend, &t).await;
    ns.ask().await;
    let line = ns.line().await.unwrap();
    assert!(
        line.starts_with(r#"["ask:rep",{"data":""#),
        "event then data first: {line}"
    );
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(keys(&v[1]), ["data", "public_key"]);
    assert_eq!(v[1]["public_key"], "pub");
    let plain = cipher()
        .decrypt_hex(v[1]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        plain,
        r#"{"machine_name":"m1","public_key":"pub","recycle":false,"pm2_version":"5.0.0","memory":1000,"hostname":"h","cpus":[]}"#
    );
    // The captured ciphertext prefix (docs/protocols.md §4).
    assert!(v[1]["data"]
        .as_str()
        .unwrap()
        .starts_with("20cc88ff46886de5"));
    // Asked again (e.g. by a restarted backend process): answered again.
    ns.ask().await;
    assert_eq!(ns.line().await.unwrap(), line);
}

#[tokio::test]
async fn push_frame_is_ciphered_with_channels_then_status() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (mut sub, _ns) = connected(&backend, &t).await;
    // No status yet: nothing is pushed, whatever is buffered.
    t.send(Packet::new("human:event", json!({"name": "a"})));
    assert!(sub.silent_for(Duration::from_millis(200)).await);
    t.send(Packet::new("logs", json!({"data": "x\n"})));
    t.send(Packet::new("human:event", json!({"name": "b"})));
    t.send(Packet::new("monitoring", json!({"cpu": 1})));
    t.send(ev(0));
    t.send(status());

    let (text, buffer) = sub.push_frame().await;
    assert!(
        text.starts_with(r#"{"public_key":"pub","data":""#),
        "{text}"
    );
    assert_eq!(
        keys(&buffer),
        [
            "human:event",
            "logs",
            "process:event",
            "status",
            "server_name"
        ]
    );
    assert_eq!(buffer["human:event"], json!([{"name": "a"}, {"name": "b"}]));
    assert_eq!(buffer["process:event"], json!([{"i": 0}]));
    assert_eq!(buffer["server_name"], "m1");
    let mut want = status().payload;
    want["rev_con"] = json!(true);
    assert_eq!(buffer["status"], want);
    assert_eq!(
        keys(&buffer["status"]),
        ["data", "server_name", "internal_ip", "rev_con"]
    );

    // The buffer was reset; the recent status goes with every tick.
    let (_, next) = sub.push_frame().await;
    assert_eq!(keys(&next), ["status", "server_name"]);
    assert_eq!(t.stats().sent, 4 + 1 + 1);
    assert_eq!(t.stats().queued, 0);
}

#[tokio::test]
async fn frames_stop_when_the_status_gets_old() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (mut sub, _ns) = connected(&backend, &t).await;
    t.send(status());
    sub.push_frame().await;
    // 3 intervals (150 ms) later the status is stale: frames stop and
    // events wait, bounded, for the next status.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let deadline = Instant::now() + LIMIT;
    while !sub.silent_for(Duration::from_millis(200)).await {
        assert!(Instant::now() < deadline, "frames never stopped");
    }
    t.send(ev(1));
    assert!(sub.silent_for(Duration::from_millis(200)).await);
    t.send(status());
    let (_, b) = sub.push_frame().await;
    assert_eq!(b["process:event"], json!([{"i": 1}]));
}

#[tokio::test]
async fn commands_are_deciphered_and_junk_dropped() {
    let backend = Backend::start().await;
    let (t, mut rx) = transport(opts());
    let (_sub, mut ns) = connected(&backend, &t).await;
    // Captured from the JS agent's backend with key secret-key-123.
    ns.send(r#"["trigger:pm2:action","29c1278a35ca413a97a70966f499e037528a7b4455f58e115b0d3eea906b677fddd888f3401ad635d9fa62699ed78e3d66ecb686bece565673fb934ba6c64488"]"#).await;
    ns.send(r#"["trigger:action","not hex"]"#).await;
    ns.send(r#"["trigger:action",null]"#).await;
    ns.send(r#"["trigger:action",{"method_name":"clear"}]"#)
        .await;
    ns.send(
        &json!([
            "trigger:action",
            Cipher::new("other").encrypt_json(&json!({"a": 1}))
        ])
        .to_string(),
    )
    .await;
    ns.send(&json!(["trigger:action", cipher().encrypt_hex("null")]).to_string())
        .await;
    ns.send(&json!(["a", "b", cipher().encrypt_json(&json!({"a": 1}))]).to_string())
        .await;
    ns.send("not json at all").await;
    ns.command(
        "trigger:scoped_action",
        &json!({"action_name": "x", "process_id": 0}),
    )
    .await;

    let first = within(rx.recv()).await.unwrap();
    assert_eq!(
        first,
        Packet::new(
            "trigger:pm2:action",
            json!({"method_name": "ping", "parameters": {"name": "app"}})
        )
    );
    let second = within(rx.recv()).await.unwrap();
    assert_eq!(
        second,
        Packet::new(
            "trigger:scoped_action",
            json!({"action_name": "x", "process_id": 0})
        )
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err(), "junk must not reach the consumer");
    assert!(t.is_connected(), "junk does not break the connection");
    // Every junk message counted: two undecipherable, two not ciphered, one
    // empty payload, one multi-segment event, one line that is not JSON.
    assert_eq!(t.stats().inbound_dropped, 7);
}

#[tokio::test]
async fn a_full_inbound_channel_drops_and_counts() {
    let backend = Backend::start().await;
    let (tx, mut rx) = mpsc::channel(1);
    let t = AxonTransport::new(id(SECRET), opts(), tx).unwrap();
    let (_sub, mut ns) = connected(&backend, &t).await;
    for i in 0..3 {
        ns.command("trigger:action", &json!({ "i": i })).await;
    }
    wait_until("two inbound drops", || t.stats().inbound_dropped == 2).await;
    assert_eq!(within(rx.recv()).await.unwrap().payload, json!({"i": 0}));
    // Still serving: the next command is delivered.
    ns.command("trigger:action", &json!({"i": 3})).await;
    assert_eq!(within(rx.recv()).await.unwrap().payload, json!({"i": 3}));
}

#[tokio::test]
async fn trigger_replies_go_in_clear_on_the_reverse_channel() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (mut sub, mut ns) = connected(&backend, &t).await;
    let reply =
        json!({"ret": {"err": null, "data": {"msg": "pong"}}, "meta": {"method_name": "ping"}});
    t.send(Packet::new("trigger:pm2:result", reply.clone()));
    t.send(Packet::new(
        "trigger:action:success",
        json!({"success": true, "id": 0, "action_name": "hello"}),
    ));
    assert_eq!(
        ns.line().await.unwrap(),
        r#"["trigger:pm2:result",{"ret":{"err":null,"data":{"msg":"pong"}},"meta":{"method_name":"ping"}}]"#
    );
    assert_eq!(
        ns.line().await.unwrap(),
        r#"["trigger:action:success",{"success":true,"id":0,"action_name":"hello"}]"#
    );
    t.send(status());
    let (_, b) = sub.push_frame().await;
    assert_eq!(
        keys(&b),
        ["status", "server_name"],
        "never in the push buffer"
    );
}

#[tokio::test]
async fn profiling_goes_at_once_as_two_clear_strings() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (mut sub, _ns) = connected(&backend, &t).await;
    t.send(Packet::new(
        "profiling",
        json!({"pm_id": 0, "name": "app", "server_name": "m1", "public_key": "pub",
               "type": "cpuprofile", "cpuprofile": true, "data": "{\"nodes\":[]}"}),
    ));
    let args = sub.frame().await;
    assert_eq!(
        args,
        vec![
            Arg::str(
                r#"{"pm_id":0,"name":"app","server_name":"m1","public_key":"pub","type":"cpuprofile","cpuprofile":true}"#
            ),
            Arg::str(r#"{"nodes":[]}"#),
        ]
    );
    assert_eq!(t.stats().sent, 1);
}

#[tokio::test]
async fn offline_queue_is_capped_and_flushed_on_connect() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(AxonOptions {
        queue_size: 5,
        ..opts()
    });
    for i in 0..8 {
        t.send(ev(i));
    }
    t.send(Packet::new(
        "trigger:pm2:result",
        json!({"ret": {"err": null}}),
    ));
    // Never queued: live-only data. Profiles are kept like any event.
    t.send(status());
    t.send(Packet::new("monitoring", json!({"x": 1})));
    t.send(Packet::new(
        "profiling",
        json!({"type": "heapdump", "data": "x"}),
    ));
    // Falsy payloads are not even counted (JS drops them before anything).
    t.send(Packet::new("logs", Value::Null));
    // 10 kept-worthy packets for 5 places, and 2 superseded.
    wait_until("queue settled", || t.stats().dropped == 5 + 2).await;
    assert_eq!(t.stats().queued, 5);

    let (mut sub, mut ns) = connected(&backend, &t).await;
    // The queued reply goes first, on the reverse channel.
    assert_eq!(
        ns.line().await.unwrap(),
        r#"["trigger:pm2:result",{"ret":{"err":null}}]"#
    );
    // The profile at once, as its own frame.
    assert_eq!(sub.frame().await.len(), 2);
    t.send(status());
    let (_, b) = sub.push_frame().await;
    assert_eq!(b["process:event"], json!([{"i": 5}, {"i": 6}, {"i": 7}]));
    assert_eq!(t.stats().queued, 0);
}

#[tokio::test]
async fn per_tick_buffer_is_capped_and_the_rest_waits_in_the_route() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(AxonOptions {
        buffer_limit: 10,
        ..opts()
    });
    let (mut sub, _ns) = connected(&backend, &t).await;
    // Without a status nothing goes out: 10 packets wait for the frame,
    // the others in the route; none is lost.
    for i in 0..15 {
        t.send(ev(i));
    }
    wait_until("buffer capped", || t.stats().queued == 5).await;
    t.send(status());
    let ids = |b: &Value| -> Vec<u64> {
        b["process:event"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["i"].as_u64().unwrap())
            .collect()
    };
    let (_, b) = sub.push_frame().await;
    assert_eq!(ids(&b), (0..10).collect::<Vec<u64>>());
    t.send(status());
    let (_, b) = sub.push_frame().await;
    assert_eq!(ids(&b), (10..15).collect::<Vec<u64>>());
    assert_eq!(t.stats().dropped, 0);
}

#[tokio::test]
async fn push_backlog_discards_ticks_then_reconnects() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(AxonOptions {
        max_buffered_bytes: 1024,
        max_overflows: 3,
        ..opts()
    });
    t.connect(backend.endpoint());
    // A backend that stops reading the push socket.
    let (_stuck_sub, _ns1) = backend.accept().await;
    wait_until("connected", || t.is_connected()).await;
    // One frame far bigger than the kernel's socket buffers: it stays in
    // our writer's queue since nobody reads. (Three 3 MiB lines, each
    // within the route's 8 MiB budget, taken one after the other.)
    for _ in 0..3 {
        t.send(Packet::new("logs", json!({"data": "x".repeat(3 << 20)})));
        wait_until("taken", || t.stats().queued == 0).await;
    }
    t.send(status());
    wait_until("the big frame taken", || t.stats().sent >= 4).await;
    let dropped = t.stats().dropped;
    t.send(ev(1));
    t.send(status());
    // 3 congested ticks (the event discarded with its tick), then a fresh
    // pair of sockets.
    let (mut sub, mut ns) = backend.accept().await;
    assert!(
        t.stats().dropped > dropped,
        "the tick's buffer was discarded"
    );
    assert!(t
        .last_error()
        .unwrap()
        .contains("push backlog over 1024 bytes for 3 consecutive ticks"));
    wait_until("reconnected", || t.is_connected()).await;
    assert_eq!(t.stats().connects, 2);
    // Data flows again on the new pair.
    ns.ask().await;
    assert!(ns.line().await.unwrap().starts_with(r#"["ask:rep""#));
    t.send(ev(2));
    t.send(status());
    let (_, b) = sub.push_frame().await;
    assert_eq!(b["process:event"], json!([{"i": 2}]));
}

#[tokio::test]
async fn a_healthy_tick_resets_the_backlog_count() {
    // Reading side keeps up: never discarded, never reconnected.
    let backend = Backend::start().await;
    let (t, _rx) = transport(AxonOptions {
        max_buffered_bytes: 1024,
        max_overflows: 1,
        ..opts()
    });
    let (mut sub, _ns) = connected(&backend, &t).await;
    for i in 0..5 {
        t.send(ev(i));
        t.send(status());
        let (_, b) = sub.push_frame().await;
        assert_eq!(b["process:event"], json!([{ "i": i }]));
    }
    assert_eq!(t.stats().connects, 1);
    assert_eq!(t.stats().dropped, 0);
}

#[tokio::test]
async fn reverse_channel_closing_reconnects_both_sockets() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (mut sub1, ns1) = connected(&backend, &t).await;
    drop(ns1);
    let (mut sub2, mut ns2) = backend.accept().await;
    assert!(sub1.closed().await, "the old push socket is closed too");
    assert_eq!(
        t.last_error().as_deref(),
        Some(
            format!(
                "reverse tcp://{}: connection closed by the server",
                backend.pull.local_addr().unwrap()
            )
            .as_str()
        )
    );
    wait_until("reconnected", || t.is_connected()).await;
    assert_eq!(t.stats().connects, 2);
    ns2.ask().await;
    assert!(ns2.line().await.unwrap().starts_with(r#"["ask:rep""#));
    t.send(ev(9));
    t.send(status());
    let (_, b) = sub2.push_frame().await;
    assert_eq!(b["process:event"], json!([{"i": 9}]));
}

#[tokio::test]
async fn unreachable_backend_retries_with_backoff() {
    let backend = Backend::start().await;
    let endpoint = backend.endpoint();
    // Only the push side listens: the reverse side is refused.
    let pull_addr = backend.pull.local_addr().unwrap();
    drop(backend.pull);
    let (t, _rx) = transport(opts());
    t.connect(endpoint);
    wait_until("an error", || t.last_error().is_some()).await;
    assert!(
        t.last_error()
            .unwrap()
            .starts_with(&format!("reverse tcp://{pull_addr}: ")),
        "{:?}",
        t.last_error()
    );
    assert!(!t.is_connected());
    // The pub socket of a failed attempt is closed, not left retrying in
    // the background: whatever reached the push listener goes away again.
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut attempts = 0;
    while let Ok(Ok((mut s, _))) = tokio::time::timeout_at(deadline, backend.push.accept()).await {
        attempts += 1;
        let mut b = [0u8; 1];
        let n = within(tokio::io::AsyncReadExt::read(&mut s, &mut b))
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "push connection of a failed attempt left open");
    }
    assert!(t.stats().connects == 0 && !t.is_connected());
    // Backoff (20–100 ms): several attempts in half a second, not a storm.
    assert!(attempts <= 25, "{attempts} attempts");
}

#[tokio::test]
async fn disconnect_closes_both_and_stays_down() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (mut sub, mut ns) = connected(&backend, &t).await;
    t.disconnect();
    assert!(sub.closed().await);
    assert_eq!(ns.line().await, None);
    assert!(!t.is_connected());
    // No reconnect while disconnected; packets are queued meanwhile.
    t.send(ev(1));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), backend.pull.accept())
            .await
            .is_err()
    );
    assert_eq!(t.stats().queued, 1);
    // Same endpoints again: reconnects and delivers the queued event.
    let (mut sub, _ns) = connected(&backend, &t).await;
    t.send(status());
    let (_, b) = sub.push_frame().await;
    assert_eq!(b["process:event"], json!([{"i": 1}]));
}

#[tokio::test]
async fn dropping_the_handle_closes_the_sockets() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(opts());
    let (mut sub, mut ns) = connected(&backend, &t).await;
    drop(t);
    assert!(sub.closed().await);
    assert_eq!(ns.line().await, None);
}

/// Reads and discards what arrives on the push socket, in the background.
fn drain(mut sub: Sub) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while let Ok(Some(_)) = sub.0.read_message().await {} })
}

/// Dead-peer timers short, and the backlog rule out of the way.
fn dead_peer_opts() -> AxonOptions {
    AxonOptions {
        dead_peer_timeout: Duration::from_millis(300),
        max_buffered_bytes: usize::MAX,
        max_overflows: u32::MAX,
        ..opts()
    }
}

#[tokio::test]
async fn a_push_peer_that_stops_taking_bytes_reopens_the_pair() {
    // The push peer stays connected, its kernel acknowledges what fits,
    // then its window closes: nothing is closed, nothing errors.
    let backend = Backend::start().await;
    let (t, _rx) = transport(dead_peer_opts());
    let (_stuck_sub, _ns1) = connected(&backend, &t).await;
    let big = "x".repeat(256 << 10);
    let feeder = {
        let route = t.route().clone();
        tokio::spawn(async move {
            loop {
                route.push(Packet::new("logs", json!({ "data": big })));
                route.push(status());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (sub, mut ns) = backend.accept().await;
    feeder.abort();
    let err = t.last_error().unwrap();
    let push = backend.push.local_addr().unwrap();
    assert!(
        err.starts_with(&format!("push tcp://{push}: no answer from the peer for ")),
        "{err}"
    );
    assert!(
        err.contains("bytes written and neither acknowledged nor read"),
        "{err}"
    );
    wait_until("reconnected", || t.is_connected()).await;
    assert_eq!(t.stats().connects, 2);
    // Data flows again on the new pair.
    ns.ask().await;
    assert!(ns.line().await.unwrap().starts_with(r#"["ask:rep""#));
    let mut sub = sub;
    t.send(ev(7));
    t.send(status());
    loop {
        let (_, b) = sub.push_frame().await;
        if b["process:event"] == json!([{"i": 7}]) {
            break;
        }
    }
}

#[tokio::test]
async fn a_reverse_peer_that_stops_taking_bytes_reopens_the_pair() {
    let backend = Backend::start().await;
    let (t, _rx) = transport(dead_peer_opts());
    let (sub, _stuck_ns) = connected(&backend, &t).await;
    let draining = drain(sub);
    // Replies go on the reverse channel, which the server no longer reads.
    let big = "y".repeat(256 << 10);
    let feeder = {
        let route = t.route().clone();
        tokio::spawn(async move {
            loop {
                route.push(Packet::new("trigger:pm2:result", json!({ "ret": big })));
                route.push(status());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (_sub2, _ns2) = backend.accept().await;
    feeder.abort();
    draining.abort();
    let err = t.last_error().unwrap();
    let pull = backend.pull.local_addr().unwrap();
    assert!(
        err.starts_with(&format!(
            "reverse tcp://{pull}: no answer from the peer for "
        )),
        "{err}"
    );
}

#[tokio::test]
async fn live_peers_are_never_taken_for_dead_ones() {
    // Both peers read everything: the same traffic never trips the check.
    let backend = Backend::start().await;
    let (t, _rx) = transport(dead_peer_opts());
    let (sub, mut ns) = connected(&backend, &t).await;
    let draining = drain(sub);
    let reading = tokio::spawn(async move { while ns.line().await.is_some() {} });
    let big = "z".repeat(64 << 10);
    for _ in 0..60 {
        t.send(Packet::new("logs", json!({ "data": big })));
        t.send(Packet::new("trigger:pm2:result", json!({ "ret": big })));
        t.send(status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t.is_connected());
    assert_eq!(t.stats().connects, 1, "{:?}", t.last_error());
    draining.abort();
    reading.abort();
}
