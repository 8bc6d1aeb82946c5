//! Fuzz entry points: one function per decoder that meets bytes from
//! outside the agent, shared by the cargo-fuzz targets in `fuzz/` and by the
//! stable smoke test at the end of this file (README.md, "Fuzzing").
//!
//! Each function takes arbitrary bytes, runs them through the production
//! decoding path (the same functions the sockets call, fed by an in-memory
//! peer that hands the bytes over in odd chunks) and asserts invariants
//! where they are cheap: re-encoding gives the input back, the result does
//! not depend on how the bytes were split by the network, declared lengths
//! are checked against their caps. Any panic is a bug in the decoder.
//!
//! Built for tests and with the `fuzzing` feature only: nothing here ships.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::{pin, Pin};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

use crate::common::js::is_falsy;
use crate::common::Packet;
use crate::daemon::verify::{self, Verdict};
use crate::net::{http, BoxStream, Url};
use crate::pm2::snapshot::{self, ProcSnapshot, SnapshotReader};
use crate::protocol::amp::{self, Arg, FrameError, Message};
use crate::protocol::cipher::{Cipher, CipherError};
use crate::protocol::lines::{LineError, LineFramer};
use crate::protocol::{ipc, nssocket, rpc};
use crate::push::context::{SourceCache, SourceReader, StackContext};
use crate::push::status::{build_status_from, build_status_with};
use crate::push::transactions::{Mulberry32, TransactionAggregator, TransactionConfig};
use crate::push::{EventPipeline, HostStats, LogStreaming, PushAction};
use crate::push::{PushConfig, StatusContext};
use crate::socket::nssocket::{NsReader, MAX_LINE};
use crate::socket::rpc::RpcServer;
use crate::transport::websocket::{self, Inbound, WebSocketOptions};

/// One fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, named as its `fuzz/fuzz_targets/<name>.rs` and its
/// `fuzz/corpus/<name>/` seed directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("amp_frame", amp_frame),
    ("rpc_message", rpc_message),
    ("nssocket_line", nssocket_line),
    ("cipher_payload", cipher_payload),
    ("ipc_line", ipc_line),
    ("verify_body", verify_body),
    ("ws_message", ws_message),
    ("monitor_data", monitor_data),
    ("bus_packet", bus_packet),
];

// ---------------------------------------------------------------------------
// An in-memory peer and a poll-once executor.

/// The far end of a socket: hands `data` out in chunks (all at once, or
/// 1 to `max_chunk` bytes at a time from a seeded generator), then end of
/// stream; accepts and drops every write.
struct Peer {
    data: Bytes,
    pos: usize,
    rng: u64,
    max_chunk: usize,
}

impl Peer {
    /// `seed: None` delivers everything in one read.
    fn new(data: &[u8], seed: Option<u64>) -> Peer {
        Peer {
            data: Bytes::copy_from_slice(data),
            pos: 0,
            rng: seed.unwrap_or(0) | 1,
            max_chunk: if seed.is_some() { 17 } else { usize::MAX },
        }
    }

    fn next_chunk(&mut self) -> usize {
        if self.max_chunk == usize::MAX {
            return usize::MAX;
        }
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        1 + (self.rng % self.max_chunk as u64) as usize
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .next_chunk()
            .min(self.data.len() - self.pos)
            .min(buf.remaining());
        let at = self.pos;
        buf.put_slice(&self.data[at..at + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Peer {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that only waits on a [`Peer`], which never makes it wait.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory read never waits"),
    }
}

/// A seed for the chunk sizes, from the input (FNV-1a).
fn seed_of(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// AMP frames (protocol/amp.rs, socket/connection.rs).

/// How a stream of AMP frames ended.
#[derive(Debug, PartialEq)]
enum AmpEnd {
    Clean,
    MidFrame,
    Protocol(String),
    Io(String),
}

/// Messages read by [`crate::socket::connection::AmpReader`], frames skipped,
/// and how the stream ended.
fn amp_read(data: &[u8], max: usize, lazy: bool, seed: Option<u64>) -> (Vec<Message>, u64, AmpEnd) {
    use crate::socket::connection::{AmpReader, ConnError};
    let mut r = AmpReader::new(Peer::new(data, seed), max).lazy_json(lazy);
    let mut out = Vec::new();
    let end = loop {
        match ready(r.read_message()) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => break AmpEnd::Clean,
            Err(ConnError::Protocol(e)) => break AmpEnd::Protocol(e.to_string()),
            Err(ConnError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                break AmpEnd::MidFrame
            }
            Err(ConnError::Io(e)) => break AmpEnd::Io(e.to_string()),
        }
    };
    (out, r.skipped, end)
}

/// The same, by the codec alone on the whole buffer.
fn amp_reference(data: &[u8], max: usize, lazy: bool) -> (Vec<Message>, u64, AmpEnd) {
    let (mut out, mut skipped, mut pos) = (Vec::new(), 0, 0);
    loop {
        match amp::check(&data[pos..], max) {
            Ok(n) => {
                let frame = &data[pos..pos + n];
                let parsed = if lazy {
                    amp::parse_lazy(frame)
                } else {
                    amp::parse(frame)
                };
                match parsed {
                    Ok(m) => out.push(m),
                    Err(_) => skipped += 1,
                }
                pos += n;
            }
            Err(FrameError::Incomplete) if pos == data.len() => {
                return (out, skipped, AmpEnd::Clean)
            }
            Err(FrameError::Incomplete) => return (out, skipped, AmpEnd::MidFrame),
            Err(e) => return (out, skipped, AmpEnd::Protocol(e.to_string())),
        }
    }
}

/// The codec's own invariants on one whole frame.
fn amp_frame_invariants(frame: &[u8]) {
    let n = frame.len();
    assert_eq!(amp::check(frame, usize::MAX).ok(), Some(n));
    match amp::check_strict(frame, usize::MAX) {
        Ok(m) => assert!(frame[0] >> 4 == 1 && m == n),
        Err(e) => assert!(matches!(e, FrameError::Version(v) if v == frame[0] >> 4 && v != 1)),
    }
    let full = amp::parse(frame);
    let lazy = amp::parse_lazy(frame);
    match (
        &lazy,
        amp::parse_lazy_shared(&Bytes::copy_from_slice(frame)),
    ) {
        (Ok(a), Ok(b)) => assert_eq!(a, &b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("copying and sharing parses disagree: {a:?} / {b:?}"),
    }
    if let Err(e) = &full {
        assert!(e.skip_len().is_none_or(|s| s == n), "{e}: skip {n}");
    }
    if let Ok(msg) = &lazy {
        // Re-encoding the text form gives the frame back (version 1).
        let again = amp::encode_to_bytes(msg).expect("1 to 15 arguments");
        assert_eq!(again[0], 0x10 | (frame[0] & 0x0f));
        assert_eq!(&again[1..], &frame[1..]);
        for a in msg {
            let _ = (a.to_value(), a.json_text(), a.as_str());
        }
    }
    match (&full, &lazy) {
        (Ok(f), Ok(l)) => {
            assert_eq!(f.len(), l.len());
            for (a, b) in f.iter().zip(l) {
                match (a, b) {
                    (Arg::Json(v), Arg::JsonText(t)) => {
                        assert_eq!(serde_json::from_slice::<Value>(t).ok().as_ref(), Some(v))
                    }
                    _ => assert_eq!(a, b),
                }
            }
            // Parsed values survive their own encoding.
            let again = amp::encode_to_bytes(f).expect("1 to 15 arguments");
            assert_eq!(&amp::parse(&again).expect("own encoding parses"), f);
        }
        (Ok(_), Err(e)) => panic!("the lazy parse refused a frame the full one accepted: {e}"),
        _ => {}
    }
}

/// AMP frames as read from any axon socket (PM2's `rpc.sock` and
/// `pub.sock`, `interactor.sock`, the legacy push socket).
pub fn amp_frame(data: &[u8]) {
    // The production cap both ways (PM2's replies are read lazily), and a
    // small cap so that `TooLarge` is reached too.
    for (max, lazy) in [
        (amp::DEFAULT_MAX_FRAME, false),
        (amp::DEFAULT_MAX_FRAME, true),
        (64, false),
    ] {
        let want = amp_reference(data, max, lazy);
        assert_eq!(amp_read(data, max, lazy, None), want, "whole, cap {max}");
        let got = amp_read(data, max, lazy, Some(seed_of(data)));
        assert_eq!(got, want, "in chunks, cap {max}");
    }
    let mut rest = data;
    while let Ok(n) = amp::check(rest, usize::MAX) {
        amp_frame_invariants(&rest[..n]);
        rest = &rest[n..];
    }
}

// ---------------------------------------------------------------------------
// pm2-axon-rpc messages (protocol/rpc.rs, socket/rpc.rs).

fn rpc_server() -> &'static RpcServer {
    static SERVER: OnceLock<RpcServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let s = RpcServer::new();
        s.expose("getInfos", &["cb"], |args| async move { Ok(args) });
        s.expose("kill", &["cb"], |_| async {
            Err(rpc::RemoteError::message("refused"))
        });
        s
    })
}

/// One rpc object, on both sides.
fn rpc_value(v: Value) {
    // Server side (interactor.sock): every request gets an object back.
    let reply = ready(rpc_server().handle(v.clone()));
    assert!(reply.is_object(), "{reply}");
    if reply.get("methods").is_some() {
        assert!(rpc::decode_methods_reply(&reply).is_ok());
    } else {
        assert!(rpc::decode_call_reply(reply).is_ok());
    }
    if let Ok(req) = rpc::decode_request(&v) {
        assert_eq!(rpc::decode_request(&rpc::encode_request(&req)), Ok(req));
    }
    // Client side (PM2's replies): decoded replies re-encode to themselves.
    match rpc::decode_call_reply(v.clone()) {
        Ok(Ok(args)) => assert_eq!(
            rpc::decode_call_reply(rpc::success_reply(args.clone())),
            Ok(Ok(args))
        ),
        Ok(Err(e)) => assert_eq!(rpc::decode_call_reply(rpc::error_reply(&e)), Ok(Err(e))),
        Err(_) => {}
    }
    if let Ok(methods) = rpc::decode_methods_reply(&v) {
        let mut names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() == methods.len() {
            assert_eq!(
                rpc::decode_methods_reply(&rpc::methods_reply(&methods)),
                Ok(methods)
            );
        }
    }
}

/// One rpc frame as the req socket (client) and the rep socket (server)
/// take it apart.
fn rpc_frame(frame: &[u8]) {
    for parsed in [amp::parse_lazy(frame), amp::parse(frame)] {
        let Ok(mut msg) = parsed else { continue };
        // req.rs: the last argument is the request id.
        let Some(Arg::Str(_id)) = msg.pop() else {
            continue;
        };
        // call_text (getMonitorData) and the method discovery.
        if let Some(text) = msg.first().and_then(Arg::json_text) {
            let _ = snapshot::parse(&text);
        }
        if let Some(v) = msg.first().and_then(Arg::to_value) {
            let _ = rpc::decode_methods_reply(&v);
        }
        let _ = crate::socket::rpc::decode_reply(msg);
    }
    // rep.rs: any last argument is the id; the first one is the request.
    if let Ok(mut msg) = amp::parse(frame) {
        if msg.pop().is_some() {
            let first = msg.into_iter().next().and_then(Arg::into_value);
            rpc_value(first.unwrap_or(Value::Null));
        }
    }
}

/// pm2-axon-rpc messages: AMP frames (PM2's replies, the CLI's requests);
/// input that holds no frame is taken as the JSON object alone.
pub fn rpc_message(data: &[u8]) {
    let mut rest = data;
    let mut frames = 0;
    while let Ok(n) = amp::check(rest, amp::DEFAULT_MAX_FRAME) {
        rpc_frame(&rest[..n]);
        rest = &rest[n..];
        frames += 1;
    }
    if frames == 0 {
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            rpc_value(v);
        }
    }
}

// ---------------------------------------------------------------------------
// nssocket lines (protocol/nssocket.rs, protocol/lines.rs, socket/nssocket.rs).

fn ns_read(
    data: &[u8],
    max: usize,
    seed: Option<u64>,
) -> (Vec<nssocket::NsMessage>, Option<io::ErrorKind>) {
    let mut r = NsReader::new(Peer::new(data, seed), max);
    let mut out = Vec::new();
    loop {
        match ready(r.recv()) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

fn ns_invariants(m: &nssocket::NsMessage) {
    assert!(!m.path.is_empty() && m.path.len() <= 32, "{m:?}");
    // Array data is flattened into the line by nssocket: not reversible.
    if !m.data.is_array() {
        let path: Vec<&str> = m.path.iter().map(String::as_str).collect();
        let line = nssocket::encode_path(&path, Some(&m.data));
        let line = line.strip_suffix('\n').expect("one line");
        assert!(!line.contains('\n'));
        assert_eq!(&nssocket::decode(line.as_bytes()).expect("own line"), m);
    }
}

/// nssocket lines from the legacy reverse server.
pub fn nssocket_line(data: &[u8]) {
    for max in [MAX_LINE, 48] {
        let whole = ns_read(data, max, None);
        let chunked = ns_read(data, max, Some(seed_of(data)));
        assert_eq!(whole, chunked, "cap {max}: depends on how the bytes arrive");
        whole.0.iter().for_each(ns_invariants);
    }
    if let Ok(m) = nssocket::decode(data) {
        ns_invariants(&m);
    }
}

// ---------------------------------------------------------------------------
// Ciphered payloads (protocol/cipher.rs).

fn cipher() -> &'static Cipher {
    static CIPHER: OnceLock<Cipher> = OnceLock::new();
    CIPHER.get_or_init(|| Cipher::new("fuzz-secret-key"))
}

/// Ciphered payloads of the legacy reverse channel: the hex text as
/// received, the raw ciphertext, a valid ciphertext of the input, and the
/// whole nssocket line as the Axon session reads it.
pub fn cipher_payload(data: &[u8]) {
    let c = cipher();
    let text = String::from_utf8_lossy(data);
    if let Ok(plain) = c.decrypt_hex(&text) {
        // The IV is fixed: what deciphers enciphers back to itself.
        assert_eq!(c.encrypt_hex(&plain), text.trim().to_ascii_lowercase());
    }
    let _ = c.decrypt_json(&text);
    if let Ok(plain) = c.decrypt_bytes(data) {
        assert_eq!(c.encrypt_bytes(&plain), data);
    }
    let sealed = hex::encode(c.encrypt_bytes(data));
    match std::str::from_utf8(data) {
        Ok(s) => {
            assert_eq!(c.decrypt_hex(&sealed).expect("own ciphertext"), s);
            let direct = serde_json::from_str::<Value>(s).ok();
            assert_eq!(c.decrypt_json(&sealed).ok(), direct);
        }
        Err(_) => assert!(matches!(c.decrypt_hex(&sealed), Err(CipherError::NotUtf8))),
    }
    // transport/axon/session.rs `on_message`.
    if let Ok(m) = nssocket::decode(data) {
        if let [_channel] = m.path.as_slice() {
            if let Value::String(hex) = &m.data {
                if let Ok(payload) = c.decrypt_json(hex) {
                    let _ = is_falsy(&payload);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// IPC lines (protocol/ipc.rs, protocol/lines.rs).

fn frame_lines(data: &[u8], max: usize, seed: Option<u64>) -> Vec<Result<Bytes, LineError>> {
    let mut peer = Peer::new(data, seed);
    let mut framer = LineFramer::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while peer.pos < data.len() {
        let n = peer.next_chunk().min(data.len() - peer.pos);
        buf.extend_from_slice(&data[peer.pos..peer.pos + n]);
        peer.pos += n;
        loop {
            match framer.next_line(&mut buf) {
                Ok(None) => break,
                Ok(Some(line)) => out.push(Ok(line)),
                Err(e) => out.push(Err(e)),
            }
        }
    }
    out
}

/// Node IPC lines (the rescued daemon's first message to its parent), and
/// the `\n` framing shared with nssocket.
pub fn ipc_line(data: &[u8]) {
    for max in [1 << 20, 32] {
        let whole = frame_lines(data, max, None);
        let chunked = frame_lines(data, max, Some(seed_of(data)));
        assert_eq!(whole, chunked, "cap {max}: depends on how the bytes arrive");
        for line in whole.iter().flatten() {
            assert!(line.len() <= max && !line.contains(&b'\n'));
        }
    }
    // host/rescue.rs `first_message`: each `\n`-terminated line.
    for line in data.split(|&b| b == b'\n') {
        let Ok(v) = ipc::decode(line) else { continue };
        if let Ok(text) = ipc::encode(&v) {
            let text = text.strip_suffix('\n').expect("one line");
            assert!(!text.contains('\n'));
            assert_eq!(ipc::decode(text.as_bytes()).expect("own line"), v);
        }
        let _ = v.pointer("/km_data/error").and_then(Value::as_bool);
    }
}

// ---------------------------------------------------------------------------
// verifyPM2 answers (net/http.rs, daemon/verify.rs).

fn http_read(data: &[u8], seed: Option<u64>) -> Result<http::HttpResponse, crate::net::NetError> {
    static URL: OnceLock<Url> = OnceLock::new();
    let url = URL.get_or_init(|| Url::parse("http://127.0.0.1:9/api/node/verifyPM2").unwrap());
    let mut io: BoxStream = Box::pin(Peer::new(data, seed));
    ready(http::read_response(&mut io, false, url))
}

fn verdict_invariants(v: &Verdict) {
    match v {
        Verdict::Active { km_data, endpoints } => {
            for (k, url) in endpoints {
                assert_eq!(km_data["endpoints"][k].as_str(), Some(url.as_str()));
            }
        }
        Verdict::Inactive { km_data, fatal } => {
            assert_eq!(km_data["active"], Value::Bool(false));
            assert_eq!(*fatal, km_data["error"] == Value::Bool(true));
        }
        Verdict::Retry { reason, .. } => assert!(!reason.is_empty()),
    }
}

/// The verifyPM2 HTTP answer, from the status line to the verdict.
pub fn verify_body(data: &[u8]) {
    let whole = http_read(data, None);
    let chunked = http_read(data, Some(seed_of(data)));
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("depends on how the bytes arrive: {a:?} / {b:?}"),
    }
    if let Ok(res) = &whole {
        assert!(res.body.len() <= http::MAX_BODY);
        verdict_invariants(&verify::judge(verify::parse_answer(res)));
    }
    let body = serde_json::from_slice(data).map_err(|e| e.to_string());
    verdict_invariants(&verify::judge(body));
}

// ---------------------------------------------------------------------------
// WebSocket messages from the backend (transport/websocket).

/// What the session makes of one message.
#[derive(Debug, PartialEq)]
enum WsSeen {
    Text(Inbound),
    NotUtf8,
    Control(&'static str),
}

fn inbound_invariants(i: &Inbound) {
    assert!(
        i.packet.is_none() || i.rejected.is_none(),
        "a packet delivered and counted as rejected: {i:?}"
    );
    if let Some(p) = &i.packet {
        assert!(!p.channel.is_empty() && !is_falsy(&p.payload), "{p:?}");
        assert_eq!(i.resend_status, p.channel == "status:resend");
    }
}

fn ws_read(data: &[u8], seed: Option<u64>) -> (Vec<WsSeen>, Option<String>) {
    let opts = WebSocketOptions::default();
    let config = websocket::ws_config(&opts);
    let mut ws = ready(WebSocketStream::from_raw_socket(
        Peer::new(data, seed),
        Role::Client,
        Some(config),
    ));
    let mut out = Vec::new();
    loop {
        let seen = match ready(ws.next()) {
            None => return (out, None),
            Some(Err(e)) => return (out, Some(e.to_string())),
            Some(Ok(WsMessage::Text(t))) => WsSeen::Text(websocket::inbound(t.as_str())),
            Some(Ok(WsMessage::Binary(b))) => match std::str::from_utf8(&b) {
                Ok(s) => WsSeen::Text(websocket::inbound(s)),
                Err(_) => WsSeen::NotUtf8,
            },
            Some(Ok(WsMessage::Ping(_))) => WsSeen::Control("ping"),
            Some(Ok(WsMessage::Pong(_))) => WsSeen::Control("pong"),
            Some(Ok(WsMessage::Close(_))) => WsSeen::Control("close"),
            Some(Ok(WsMessage::Frame(_))) => WsSeen::Control("frame"),
        };
        if let WsSeen::Text(i) = &seen {
            inbound_invariants(i);
        }
        out.push(seen);
    }
}

/// Frames from the backend's WebSocket server, read with the production
/// limits, each message decoded as the session does; the input as one
/// text message too.
pub fn ws_message(data: &[u8]) {
    let whole = ws_read(data, None);
    let chunked = ws_read(data, Some(seed_of(data)));
    assert_eq!(whole, chunked, "depends on how the bytes arrive");
    if let Ok(text) = std::str::from_utf8(data) {
        inbound_invariants(&websocket::inbound(text));
    }
}

// ---------------------------------------------------------------------------
// PM2's getMonitorData reply (pm2/snapshot.rs, push/status.rs).

fn status_context() -> StatusContext {
    StatusContext {
        rev_con: true,
        pm2_version: Some("7.0.4".into()),
        interaction: Some(true),
        ..StatusContext::sample("fuzz")
    }
}

const HOST_STATS: HostStats = HostStats {
    uptime: 1.5,
    loadavg: [0.0; 3],
    total_mem: 1,
    free_mem: 1,
};

fn same_read(
    a: &Result<Vec<ProcSnapshot>, crate::socket::rpc::RpcError>,
    b: &Result<Vec<ProcSnapshot>, crate::socket::rpc::RpcError>,
) {
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("the cache changed the outcome: {a:?} / {b:?}"),
    }
}

/// PM2's `getMonitorData` reply text, as the status tick reads it every
/// second. A NUL byte splits the input into the previous tick's reply and
/// this one; without it, the same reply comes twice.
pub fn monitor_data(data: &[u8]) {
    let (prev, cur) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let fresh = snapshot::parse(cur);
    let mut reader = SnapshotReader::new();
    let _ = reader.read(prev);
    same_read(&reader.read(cur), &fresh);
    same_read(&reader.read(cur), &fresh);
    if let Ok(procs) = fresh {
        let n = procs.len();
        let views: Vec<Value> = procs.iter().map(ProcSnapshot::pipeline_view).collect();
        let mut pipeline = EventPipeline::with_context(
            PushConfig::new("fuzz", "pk"),
            LogStreaming::new(),
            memory_context(),
        );
        pipeline.on_status_tick(&views);
        assert!(pipeline.tracked_processes() <= n);
        let status = build_status_from(procs, &status_context(), &HOST_STATS);
        let listed = status["data"]["process"]
            .as_array()
            .map_or(usize::MAX, Vec::len);
        assert!(listed <= n);
        serde_json::to_string(&status).expect("a status always serialises");
    }
    // The full-tree path (build_status_with), as the JS agent reads it.
    if let Ok(v) = serde_json::from_slice::<Value>(cur) {
        if let Some(list) = v.pointer("/args/0").and_then(Value::as_array) {
            let status = build_status_with(list, &status_context(), &HOST_STATS);
            serde_json::to_string(&status).expect("a status always serialises");
        }
    }
}

// ---------------------------------------------------------------------------
// PM2 bus packets (socket/sub_emitter.rs, push/, push/transactions).

/// Source files for exception and trace context, from memory: a fuzz input
/// must not make the harness read the disk.
struct MemorySource;

impl SourceReader for MemorySource {
    fn read(&self, path: &Path, max_bytes: u64) -> Option<Vec<u8>> {
        const APP: &str = "'use strict'\nconst express = require('express')\nconst app = express()\n\napp.get('/users/:id', async (req, res) => {\n\tconst user = await db.users.findOne({ id: req.params.id })\n  res.json(user)\n})\n\napp.listen(3000)";
        (path.extension().is_some_and(|e| e == "js") && (APP.len() as u64) <= max_bytes)
            .then(|| APP.as_bytes().to_vec())
    }
}

fn memory_context() -> StackContext {
    StackContext::new(SourceCache::new(Box::new(MemorySource)))
}

/// Bus frames from PM2's `pub.sock`, through the sub-emitter, the push
/// pipeline and the transaction aggregator (daemon/workers.rs
/// `bus_event`). The processes named by the packets are listed by a status
/// tick first, as PM2 would list them, so their logs and events go out.
pub fn bus_packet(data: &[u8]) {
    let mut events = Vec::new();
    let mut rest = data;
    while let Ok(n) = amp::check(rest, amp::DEFAULT_MAX_FRAME) {
        if let Ok(msg) = amp::parse(&rest[..n]) {
            if let Some((topic, args)) = crate::socket::sub_emitter::split_topic(msg) {
                let packet = args.into_iter().next().and_then(Arg::into_value);
                events.push((topic, packet.unwrap_or(Value::Null)));
            }
        }
        rest = &rest[n..];
    }
    if events.is_empty() {
        return;
    }
    let procs: Vec<Value> = events
        .iter()
        .filter_map(|(_, p)| p.get("process").filter(|p| p.is_object()))
        .map(|p| json!({"name": p.get("name"), "pm_id": p.get("pm_id"), "pm2_env": p}))
        .collect();
    let streaming = LogStreaming::new();
    streaming.start(Duration::from_secs(60));
    let mut pipeline =
        EventPipeline::with_context(PushConfig::new("fuzz", "pk"), streaming, memory_context());
    pipeline.on_status_tick(&procs);
    let cfg = TransactionConfig {
        learning_duration: Duration::ZERO,
        ..TransactionConfig::new("fuzz")
    };
    let limits = cfg.clone();
    let t0 = Instant::now();
    let mut agg =
        TransactionAggregator::with_parts(cfg, t0, Box::new(Mulberry32::new(7)), memory_context());
    let mut sent: Vec<Packet> = Vec::new();
    for (i, (topic, packet)) in events.into_iter().enumerate() {
        let now = t0 + Duration::from_millis(250 * i as u64);
        if topic == "process:event" {
            agg.on_process_event(&packet, now);
        }
        for action in pipeline.handle(&topic, packet) {
            match action {
                PushAction::Send(p) => {
                    assert_eq!(p.payload["process"]["server"], "fuzz", "{p:?}");
                    sent.push(p);
                }
                PushAction::Profile { meta, .. } => assert!(meta["type"].is_string(), "{meta}"),
                PushAction::Trace(trace) => {
                    assert!(trace["process"].is_object());
                    sent.extend(agg.aggregate(trace, now));
                }
            }
        }
    }
    let later = t0 + Duration::from_secs(3600);
    sent.extend(agg.learning_tick(later));
    sent.extend(agg.flush(later));
    assert!(agg.app_count() <= limits.max_apps);
    assert!(agg.histogram_count() <= limits.max_histograms);
    assert!(agg.stored_bytes() <= limits.max_stored_bytes);
    for p in &sent {
        serde_json::to_string(&p.payload).expect("a packet always serialises");
    }
}

#[cfg(test)]
mod tests {
    //! The stable-toolchain smoke of the fuzz targets: each one gets its
    //! committed corpus (`fuzz/corpus/<target>/`) and deterministic
    //! mutations of it, so `cargo test` runs the same code the fuzzer does.
    use super::*;

    /// Mutated inputs per target.
    const MUTATIONS: usize = 5000;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Bytes that make decoders take their edge paths.
    const INTERESTING: &[&[u8]] = &[
        &[0xff, 0xff, 0xff, 0xff],
        &[0x7f, 0xff, 0xff, 0xff],
        &[0x40, 0, 0, 0],
        &[0],
        &[0x80],
        b"\n",
        b"\r\n",
        b"\\u0000",
        b"\"",
        b"[",
        b"{",
        b"null",
        b"1e999",
        b"-0",
        b"s:",
        b"j:",
        b"ffffffffffffffff",
        b"Content-Length: 99999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
    ];

    /// One libFuzzer-style mutation of `input`, drawing on `other` to splice.
    fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(out.len() + 1);
            match rng.below(8) {
                0 if !out.is_empty() => {
                    let i = rng.below(out.len());
                    out[i] ^= 1 << rng.below(8);
                }
                1 if !out.is_empty() => {
                    let i = rng.below(out.len());
                    out[i] = rng.next() as u8;
                }
                2 => {
                    let end = (at + 1 + rng.below(16)).min(out.len());
                    out.drain(at.min(end)..end);
                }
                3 => {
                    let piece = INTERESTING[rng.below(INTERESTING.len())];
                    out.splice(at..at, piece.iter().copied());
                }
                4 if !other.is_empty() => {
                    let from = rng.below(other.len());
                    let len = rng.below(64).min(other.len() - from);
                    out.splice(at..at, other[from..from + len].iter().copied());
                }
                5 => out.truncate(at),
                6 if !out.is_empty() => {
                    let from = rng.below(out.len());
                    let len = rng.below(32).min(out.len() - from);
                    let piece = out[from..from + len].to_vec();
                    out.splice(at..at, piece);
                }
                _ => {
                    let piece = INTERESTING[rng.below(INTERESTING.len())];
                    let end = (at + piece.len()).min(out.len());
                    out.splice(at..end, piece.iter().copied());
                }
            }
        }
        out
    }

    fn smoke(target: &str) {
        let (_, run) = TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .expect("a target of that name");
        let seeds = corpus(target);
        assert!(!seeds.is_empty(), "{target}: empty corpus");
        for seed in &seeds {
            run(seed);
        }
        run(b"");
        let mut rng = Rng(seed_of(target.as_bytes()) | 1);
        for i in 0..MUTATIONS {
            let base = &seeds[i % seeds.len()];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, base, other);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&input)));
            if outcome.is_err() {
                panic!("{target}: mutation {i} crashed on {:?}", Bytes::from(input));
            }
        }
    }

    #[test]
    fn every_target_has_a_corpus() {
        for (name, _) in TARGETS {
            assert!(!corpus(name).is_empty(), "{name}");
        }
    }

    #[test]
    fn smoke_amp_frame() {
        smoke("amp_frame");
    }
    #[test]
    fn smoke_rpc_message() {
        smoke("rpc_message");
    }
    #[test]
    fn smoke_nssocket_line() {
        smoke("nssocket_line");
    }
    #[test]
    fn smoke_cipher_payload() {
        smoke("cipher_payload");
    }
    #[test]
    fn smoke_ipc_line() {
        smoke("ipc_line");
    }
    #[test]
    fn smoke_verify_body() {
        smoke("verify_body");
    }
    #[test]
    fn smoke_ws_message() {
        smoke("ws_message");
    }
    #[test]
    fn smoke_monitor_data() {
        smoke("monitor_data");
    }
    #[test]
    fn smoke_bus_packet() {
        smoke("bus_packet");
    }
}
