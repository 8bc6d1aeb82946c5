//! permessage-deflate: negotiation, the compressor and inflater, the
//! inbound frame adapter (RFC 7692's own examples, fragments, bombs,
//! arbitrary chunking), and the transporter end to end against a
//! hand-written server that speaks RFC 7692 with flate2 directly.
//! (The black-box test against the `ws` library is
//! `__test__/agent-ws-deflate.test.js`.)

use std::pin::Pin;
use std::task::{Context, Poll};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::deflate::*;
use super::inflate_stream::{InflateStream, FRAGMENT};
use super::*;
use crate::transport::test_support::{fast_link, identity as id, wait_until, within};
use crate::transport::Transporter;

// ------------------------------------------------------------ negotiation

fn params(s: &str) -> DeflateParams {
    match negotiate(Some(s), true) {
        Ok(Negotiated::Deflate(p)) => p,
        other => panic!("{s:?}: {other:?}"),
    }
}

#[test]
fn negotiation_outcomes() {
    assert_eq!(negotiate(None, false), Ok(Negotiated::NotOffered));
    assert_eq!(negotiate(None, true), Ok(Negotiated::Declined));
    // An empty list is no extension (what `ws` does too).
    assert_eq!(negotiate(Some(""), true), Ok(Negotiated::Declined));
    assert_eq!(negotiate(Some(" , "), true), Ok(Negotiated::Declined));
    assert_eq!(
        negotiate(Some("permessage-deflate"), false),
        Err(ExtensionError::NotRequested)
    );
    assert_eq!(params("permessage-deflate"), DeflateParams::default());
    assert_eq!(
        params(
            "permessage-deflate;server_no_context_takeover ; client_no_context_takeover;\t\
             server_max_window_bits=9; client_max_window_bits=\"15\""
        ),
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(9),
            client_max_window_bits: Some(15),
        }
    );
    // Tokens are case-insensitive.
    assert!(params("PerMessage-Deflate; Server_No_Context_Takeover").server_no_context_takeover);
}

#[test]
fn negotiation_refusals() {
    let err = |s: &str| negotiate(Some(s), true).unwrap_err();
    assert_eq!(
        err("x-webkit-deflate-frame"),
        ExtensionError::Unknown("x-webkit-deflate-frame".into())
    );
    assert_eq!(
        err("permessage-deflate, x-other"),
        ExtensionError::Unknown("x-other".into())
    );
    assert_eq!(
        err("permessage-deflate, permessage-deflate"),
        ExtensionError::Twice
    );
    assert_eq!(
        err("permessage-deflate; foo"),
        ExtensionError::UnknownParam("foo".into())
    );
    assert_eq!(
        err("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
        ExtensionError::RepeatedParam("server_no_context_takeover".into())
    );
    for bad in [
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
    ] {
        assert!(
            matches!(err(bad), ExtensionError::BadValue { .. }),
            "{bad}: {:?}",
            err(bad)
        );
    }
    for bad in [
        "permessage-deflate;",
        "permessage-deflate x",
        "; permessage-deflate",
        "permessage-deflate; a=\"b",
        "permessage-deflate; a=\"b c\"",
        "permessage-deflate; a=",
    ] {
        assert!(
            matches!(err(bad), ExtensionError::Syntax(_)),
            "{bad}: {:?}",
            err(bad)
        );
    }
}

#[test]
fn describe_says_what_was_agreed() {
    assert_eq!(Negotiated::NotOffered.describe(), None);
    assert_eq!(
        Negotiated::Declined.describe().unwrap(),
        "none (the server declined permessage-deflate)"
    );
    let p = params("permessage-deflate; server_no_context_takeover");
    assert_eq!(
        Negotiated::Deflate(p).describe().unwrap(),
        "permessage-deflate; server_no_context_takeover"
    );
    let small = params("permessage-deflate; client_max_window_bits=10");
    assert!(!small.can_compress());
    assert!(Deflater::new(&small).is_none());
    assert!(Negotiated::Deflate(small)
        .describe()
        .unwrap()
        .contains("outbound messages go uncompressed"));
    assert!(params("permessage-deflate; client_max_window_bits=15").can_compress());
}

// ------------------------------------------------------------ deflate

/// An inflater written against flate2 directly (not ours): what a server
/// does with our messages.
struct PeerInflater(Decompress);

impl PeerInflater {
    fn new() -> Self {
        PeerInflater(Decompress::new(false))
    }
    fn inflate(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TRAILER);
        let d = &mut self.0;
        let start = d.total_in();
        pump(&input, input.len() * 8 + 1024, |rest, out| {
            d.decompress_vec(rest, out, FlushDecompress::Sync).unwrap();
            d.total_in() - start
        })
    }
}

/// Feeds `input` to a flate2 stream with a sync flush until it has taken
/// all of it and left room in `out` (so nothing is pending): `step` runs
/// the stream on the rest and returns how many input bytes it has taken.
fn pump(
    input: &[u8],
    capacity: usize,
    mut step: impl FnMut(&[u8], &mut Vec<u8>) -> u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    let mut used = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        used = step(&input[used..], &mut out) as usize;
        if used == input.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

/// A compressor written against flate2 directly: what a server sends.
struct PeerDeflater(Compress);

impl PeerDeflater {
    fn new() -> Self {
        PeerDeflater(Compress::new(Compression::default(), false))
    }
    fn compress(&mut self, msg: &[u8]) -> Vec<u8> {
        let c = &mut self.0;
        let start = c.total_in();
        let mut out = pump(msg, msg.len() + 1024, |rest, out| {
            c.compress_vec(rest, out, FlushCompress::Sync).unwrap();
            c.total_in() - start
        });
        assert!(out.ends_with(&TRAILER));
        out.truncate(out.len() - 4);
        out
    }
}

/// A status-like JSON document of about `n` processes.
fn status_json(n: usize, tick: usize) -> String {
    let procs: Vec<Value> = (0..n)
        .map(|i| {
            json!({"pid": 1000 + i, "name": format!("app-{i}"), "pm_id": i,
                   "monit": {"memory": 30_000_000 + i * 7 + tick, "cpu": (i + tick) % 7},
                   "pm2_env": {"status": "online", "restart_time": 0, "exec_mode": "fork_mode",
                               "pm_uptime": 1_700_000_000_000u64 + i as u64, "versioning": null,
                               "node_version": "22.1.0", "axm_monitor": {"Heap Size": {"value": 12.5}}}})
        })
        .collect();
    json!({"payload": {"data": {"process": procs, "server": {"loadavg": [0.1, 0.2, 0.3], "uptime": tick}},
                       "server_name": "m1", "internal_ip": "10.0.0.1", "rev_con": true},
           "channel": "status"})
    .to_string()
}

#[test]
fn deflater_round_trips_and_keeps_its_window() {
    let p = DeflateParams::default();
    let mut d = Deflater::new(&p).unwrap();
    let mut peer = PeerInflater::new();
    let msg = status_json(10, 1);
    let first = d.compress(msg.as_bytes()).unwrap();
    assert!(
        first.len() * 4 < msg.len(),
        "{} → {}",
        msg.len(),
        first.len()
    );
    assert_eq!(peer.inflate(&first), msg.as_bytes());
    // Context takeover: the same message again is mostly back-references.
    let second = d.compress(msg.as_bytes()).unwrap();
    assert!(
        second.len() * 10 < first.len(),
        "{} then {}",
        first.len(),
        second.len()
    );
    assert_eq!(peer.inflate(&second), msg.as_bytes());
    // Empty, binary-ish and large messages.
    for m in [
        Vec::new(),
        (0..=255u8).cycle().take(70_000).collect::<Vec<u8>>(),
        status_json(300, 2).into_bytes(),
    ] {
        let c = d.compress(&m).unwrap();
        assert_eq!(peer.inflate(&c), m);
    }
}

#[test]
fn client_no_context_takeover_compresses_each_message_alone() {
    let p = params("permessage-deflate; client_no_context_takeover");
    let mut d = Deflater::new(&p).unwrap();
    let msg = status_json(5, 1);
    let first = d.compress(msg.as_bytes()).unwrap();
    let second = d.compress(msg.as_bytes()).unwrap();
    assert_eq!(first, second);
    // Each decodes with a fresh inflater.
    assert_eq!(PeerInflater::new().inflate(&second), msg.as_bytes());
}

#[test]
fn inflater_context_and_limits() {
    let p = DeflateParams::default();
    let mut peer = PeerDeflater::new();
    let msg = status_json(10, 3);
    let a = peer.compress(msg.as_bytes());
    let b = peer.compress(msg.as_bytes());
    let mut i = Inflater::new(&p, 1 << 20);
    for payload in [&a, &b] {
        let mut out = Vec::new();
        assert_eq!(
            i.inflate(payload, &mut out, usize::MAX).unwrap(),
            payload.len()
        );
        let mut t = 0;
        assert!(i.finish(&mut t, &mut out, usize::MAX).unwrap());
        assert_eq!(out, msg.as_bytes());
    }
    // Without the first message's window, the second is not the message
    // (miniz_oxide reads the missing window as zeros rather than failing).
    assert_ne!(
        inflate_all(&p, 1 << 20, &b).ok(),
        Some(msg.clone().into_bytes())
    );

    // The bound: exactly `max` inflates, one byte more does not.
    let zeros = vec![0u8; 100_000];
    let bomb = PeerDeflater::new().compress(&zeros);
    assert!(bomb.len() < 1000);
    assert_eq!(inflate_all(&p, 100_000, &bomb).unwrap(), zeros);
    assert_eq!(
        inflate_all(&p, 99_999, &bomb),
        Err(DeflateError::TooLarge { max: 99_999 })
    );
}

#[test]
fn server_no_context_takeover_resets_the_inflater() {
    let p = params("permessage-deflate; server_no_context_takeover");
    let mut i = Inflater::new(&p, 1 << 20);
    let msg = b"{\"channel\":\"trigger:pm2:action\",\"payload\":{\"method_name\":\"restart\"}}";
    for _ in 0..3 {
        // A server without context takeover: a fresh compressor each time.
        let c = PeerDeflater::new().compress(msg);
        let mut out = Vec::new();
        i.inflate(&c, &mut out, usize::MAX).unwrap();
        let mut t = 0;
        assert!(i.finish(&mut t, &mut out, usize::MAX).unwrap());
        assert_eq!(out, msg);
    }
}

/// Why [`LEVEL`]: bytes and time of twenty 50-process statuses in a row at
/// levels 1, 3 and 6 (printed with `--nocapture`). Measured: level 6 is
/// ~20 % smaller than 3 for about the same time, level 1 ~3× bigger for
/// half of it. Asserts the shared window's effect at [`LEVEL`].
#[test]
fn level_choice() {
    let msgs: Vec<String> = (0..20).map(|t| status_json(50, t)).collect();
    let mut sizes = Vec::new();
    for level in [1, 3, LEVEL] {
        let mut c = Compress::new(Compression::new(level), false);
        let start = std::time::Instant::now();
        let mut total = 0;
        for m in &msgs {
            let before = c.total_out();
            let mut out = Vec::with_capacity(m.len() + 1024);
            c.compress_vec(m.as_bytes(), &mut out, FlushCompress::Sync)
                .unwrap();
            total += c.total_out() - before;
        }
        println!(
            "level {level}: {} bytes of {} in {:?}",
            total,
            msgs.iter().map(|m| m.len()).sum::<usize>(),
            start.elapsed()
        );
        sizes.push(total);
    }
    let raw: usize = msgs.iter().map(|m| m.len()).sum();
    assert!(sizes[2] as usize * 20 < raw, "{sizes:?} of {raw}");
}

// ------------------------------------------------------------ frame adapter

/// A reader that hands out at most `max` bytes per read.
struct Trickle<S> {
    inner: S,
    max: usize,
}

impl<S: AsyncRead + Unpin> AsyncRead for Trickle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.max.min(buf.remaining());
        let mut tmp = vec![0u8; n];
        let mut rb = ReadBuf::new(&mut tmp);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                buf.put_slice(rb.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Trickle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A server frame (unmasked). `rsv1`: compressed.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// What tungstenite (client) reads from `server` bytes through the adapter,
/// `chunk` bytes per read: messages, then the error that ended it, if any.
async fn through(
    server: Vec<u8>,
    p: DeflateParams,
    max: usize,
    chunk: usize,
) -> (Vec<Message>, Option<String>) {
    let (mut srv, cli) = tokio::io::duplex(1 << 20);
    let writer = tokio::spawn(async move {
        srv.write_all(&server).await.unwrap();
        srv.shutdown().await.unwrap();
        // Keep our end (pongs land here) until the client is done.
        let mut sink = Vec::new();
        let _ = srv.read_to_end(&mut sink).await;
    });
    let adapter = InflateStream::new(
        Trickle {
            inner: cli,
            max: chunk,
        },
        Vec::new(),
        &p,
        max,
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut ws = WebSocketStream::from_raw_socket(adapter, Role::Client, Some(config)).await;
    let mut got = Vec::new();
    let mut err = None;
    while let Some(m) = within(ws.next()).await {
        match m {
            Ok(m) => got.push(m),
            Err(e) => {
                err = Some(e.to_string());
                break;
            }
        }
    }
    drop(ws);
    writer.await.unwrap();
    (got, err)
}

fn text(s: &str) -> Message {
    Message::text(s.to_owned())
}

/// RFC 7692 §7.2.3's examples, plus a ping between the fragments of a
/// compressed message and a plain message among compressed ones.
fn rfc_examples() -> (Vec<u8>, Vec<Message>) {
    let hello_c: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let mut s = Vec::new();
    let mut want = Vec::new();
    // 7.2.3.1: a message compressed in one frame (its own stream start).
    s.extend(frame(true, true, 1, hello_c));
    want.push(text("Hello"));
    // 7.2.3.2: sharing the window: the same message again, by reference.
    s.extend(frame(true, true, 1, &[0xf2, 0x00, 0x11, 0x00, 0x00]));
    want.push(text("Hello"));
    // 7.2.3.1: the compressed message split over two frames, a ping between.
    s.extend(frame(false, true, 1, &[0xf2, 0x48, 0xcd]));
    s.extend(frame(true, false, 9, b"hi"));
    s.extend(frame(true, false, 0, &[0xc9, 0xc9, 0x07, 0x00]));
    want.push(Message::Ping("hi".into()));
    want.push(text("Hello"));
    // 7.2.3.3: a stored (uncompressed) block.
    s.extend(frame(
        true,
        true,
        1,
        &[
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ],
    ));
    want.push(text("Hello"));
    // A plain message on a deflate connection (RSV1 clear), fragmented.
    s.extend(frame(false, false, 1, b"Hel"));
    s.extend(frame(true, false, 0, b"lo"));
    want.push(text("Hello"));
    // 7.2.3.5: two blocks in one message.
    s.extend(frame(
        true,
        true,
        2,
        &[
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ],
    ));
    want.push(Message::binary(b"Hello".to_vec()));
    // 7.2.3.4: BFINAL set (the stream ends; the next message starts anew).
    s.extend(frame(
        true,
        true,
        1,
        &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
    ));
    want.push(text("Hello"));
    s.extend(frame(true, true, 1, hello_c));
    want.push(text("Hello"));
    // An empty compressed message.
    s.extend(frame(true, true, 1, &[0x00]));
    want.push(text(""));
    (s, want)
}

#[tokio::test]
async fn rfc_7692_examples_whatever_the_chunking() {
    let (server, want) = rfc_examples();
    for chunk in [1, 2, 3, 7, 64, 1 << 16] {
        let (got, err) = through(server.clone(), DeflateParams::default(), 1 << 20, chunk).await;
        assert_eq!(got, want, "chunk {chunk}");
        // The stream ends without a close handshake: tungstenite says so.
        assert!(err.unwrap().contains("closing handshake"), "chunk {chunk}");
    }
}

#[tokio::test]
async fn large_compressed_messages_are_refragmented() {
    let mut peer = PeerDeflater::new();
    let big = status_json(2000, 1);
    assert!(big.len() > 4 * FRAGMENT);
    let big_bin: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut s = frame(true, true, 1, &peer.compress(big.as_bytes()));
    // Compressed, split in three frames.
    let c = peer.compress(&big_bin);
    let third = c.len() / 3;
    s.extend(frame(false, true, 2, &c[..third]));
    s.extend(frame(false, false, 0, &c[third..2 * third]));
    s.extend(frame(true, false, 0, &c[2 * third..]));
    let (got, _) = through(s, DeflateParams::default(), 1 << 20, 1 << 16).await;
    assert_eq!(got, vec![text(&big), Message::binary(big_bin)]);
}

#[tokio::test]
async fn a_decompression_bomb_fails_the_connection() {
    let zeros = vec![b' '; 200_000];
    let mut s = frame(true, true, 1, &PeerDeflater::new().compress(b"before"));
    s.extend(frame(true, true, 1, &PeerDeflater::new().compress(&zeros)));
    // The bomb is compressed alone: no window to share.
    let p = params("permessage-deflate; server_no_context_takeover");
    let (got, err) = through(s.clone(), p, 100_000, 4096).await;
    assert_eq!(got, vec![text("before")]);
    let err = err.unwrap();
    assert!(
        err.contains("permessage-deflate: inflated message larger than 100000 bytes"),
        "{err}"
    );
    // Within the limit it is fine.
    let (got, err) = through(s, p, 200_000, 4096).await;
    assert_eq!(got.len(), 2);
    assert!(err.unwrap().contains("closing handshake"));
}

#[tokio::test]
async fn extension_protocol_errors() {
    let hello: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let p = DeflateParams::default();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A compressed ping.
        (frame(true, true, 9, b""), "compressed control frame"),
        // RSV1 on a continuation frame.
        (
            [
                frame(false, true, 1, &hello[..3]),
                frame(true, true, 0, &hello[3..]),
            ]
            .concat(),
            "RSV1 set on a continuation frame",
        ),
        // A new message in the middle of a compressed one.
        (
            [
                frame(false, true, 1, &hello[..3]),
                frame(true, true, 1, hello),
            ]
            .concat(),
            "new message while a fragmented one is incomplete",
        ),
        // Masked.
        (
            {
                let mut f = frame(true, true, 1, hello);
                f[1] |= 0x80;
                f.splice(2..2, [0, 0, 0, 0]);
                f
            },
            "masked frame from the server",
        ),
        // Not deflate data.
        (
            frame(true, true, 1, &[0xff, 0xff, 0xff]),
            "invalid compressed data",
        ),
        // A compressed frame over the frame limit (only its header sent).
        (
            frame(true, true, 1, &[0u8; 2000])[..4].to_vec(),
            "compressed frame of 2000 bytes, larger than 1000",
        ),
    ];
    for (bytes, want) in cases {
        let (_, err) = through(bytes, p, 1000, 5).await;
        let err = err.unwrap();
        assert!(err.contains(want), "{want}: {err}");
    }
    // What is not the extension's business is still tungstenite's.
    let (_, err) = through(frame(true, false, 0, b"x"), p, 1000, 5).await;
    assert!(err
        .unwrap()
        .contains("Continue frame but nothing to continue"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any messages, compressed or not, cut in any fragments with pings
    /// between them, read in any chunks: tungstenite gets them all back.
    #[test]
    fn any_fragmentation_and_chunking(
        msgs in prop::collection::vec(
            (prop::collection::vec(prop::sample::select(b"ab {}\"xyz:,0123456789".to_vec()), 0..3000),
             any::<bool>(), 1usize..5, any::<bool>()),
            1..12),
        chunk in 1usize..300,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut peer = PeerDeflater::new();
        let mut s = Vec::new();
        let mut want = Vec::new();
        for (body, compressed, parts, ping) in &msgs {
            let payload = if *compressed { peer.compress(body) } else { body.clone() };
            let step = payload.len().div_ceil(*parts).max(1);
            let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(step).collect() };
            for (k, piece) in pieces.iter().enumerate() {
                let last = k + 1 == pieces.len();
                let opcode = if k == 0 { 2 } else { 0 };
                s.extend(frame(last, *compressed && k == 0, opcode, piece));
                if *ping && !last {
                    s.extend(frame(true, false, 9, b"p"));
                    want.push(Message::Ping("p".into()));
                }
            }
            want.push(Message::binary(body.clone()));
        }
        let (got, _) = rt.block_on(through(s, DeflateParams::default(), 1 << 20, chunk));
        prop_assert_eq!(got, want);
    }
}

// ------------------------------------------------------------ end to end

/// A server speaking RFC 7692 by hand: our own handshake answer, frames
/// read and written raw, flate2 directly for (de)compression.
struct RawServer {
    tcp: TcpStream,
    inflater: PeerInflater,
    deflater: PeerDeflater,
    /// Every data frame's RSV1, in order.
    rsv1: Vec<bool>,
}

impl RawServer {
    /// Accepts one connection; answers the upgrade with `extensions` (if
    /// any). Returns the server and the raw request head.
    async fn accept(l: &TcpListener, extensions: Option<&str>) -> (RawServer, String) {
        let (mut tcp, _) = within(l.accept()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(within(tcp.read(&mut b)).await.unwrap(), 1);
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let mut resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n",
            derive_accept_key(key.as_bytes())
        );
        if let Some(e) = extensions {
            resp.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
        }
        resp.push_str("\r\n");
        tcp.write_all(resp.as_bytes()).await.unwrap();
        let server = RawServer {
            tcp,
            inflater: PeerInflater::new(),
            deflater: PeerDeflater::new(),
            rsv1: Vec::new(),
        };
        (server, head)
    }

    /// The next frame: (fin, rsv1, opcode, unmasked payload).
    async fn frame(&mut self) -> (bool, bool, u8, Vec<u8>) {
        let mut h = [0u8; 2];
        within(self.tcp.read_exact(&mut h)).await.unwrap();
        assert!(h[1] & 0x80 != 0, "client frames are masked");
        let len = match h[1] & 0x7f {
            126 => self.tcp.read_u16().await.unwrap() as usize,
            127 => self.tcp.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut mask = [0u8; 4];
        self.tcp.read_exact(&mut mask).await.unwrap();
        let mut payload = vec![0u8; len];
        within(self.tcp.read_exact(&mut payload)).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (h[0] & 0x80 != 0, h[0] & 0x40 != 0, h[0] & 0x0f, payload)
    }

    /// The next data message (text), inflated if compressed; control
    /// frames skipped.
    async fn message(&mut self, context_takeover: bool) -> String {
        loop {
            let (fin, rsv1, opcode, payload) = self.frame().await;
            if opcode & 0x08 != 0 {
                continue;
            }
            assert!(fin && opcode == 1, "one text frame per message");
            self.rsv1.push(rsv1);
            let data = if rsv1 {
                if !context_takeover {
                    self.inflater = PeerInflater::new();
                }
                self.inflater.inflate(&payload)
            } else {
                payload
            };
            return String::from_utf8(data).unwrap();
        }
    }

    async fn send_compressed(&mut self, text: &str) {
        let c = self.deflater.compress(text.as_bytes());
        self.tcp.write_all(&frame(true, true, 1, &c)).await.unwrap();
    }
}

fn gzip_opts() -> WebSocketOptions {
    WebSocketOptions {
        gzip: true,
        ping_interval: Duration::from_secs(60),
        dead_after: Duration::from_secs(120),
        handshake_timeout: Duration::from_secs(5),
        link: fast_link(),
        ..WebSocketOptions::default()
    }
}

fn transport(o: WebSocketOptions) -> (WebSocketTransport, mpsc::Receiver<Packet>) {
    let (tx, rx) = mpsc::channel(64);
    (WebSocketTransport::new(id("sec"), o, tx).unwrap(), rx)
}

async fn listen() -> (TcpListener, TransportEndpoint) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/interaction", l.local_addr().unwrap());
    (l, TransportEndpoint::Single(url))
}

fn compression(t: &WebSocketTransport) -> Option<String> {
    t.route().members()[0].compression.clone()
}

fn status_packet(tick: usize) -> Packet {
    let v: Value = serde_json::from_str(&status_json(10, tick)).unwrap();
    Packet::new("status", v["payload"].clone())
}

#[tokio::test]
async fn negotiated_both_ways() {
    let (l, ep) = listen().await;
    let (t, mut rx) = transport(gzip_opts());
    t.connect(ep);
    let (mut srv, head) = RawServer::accept(&l, Some("permessage-deflate")).await;
    // `ws`'s offer, where `ws` puts it: after User-Agent, before Host.
    assert!(
        head.contains(
            "User-Agent: PM2 Agent v1.0.8\r\nSec-WebSocket-Extensions: permessage-deflate; \
             client_max_window_bits\r\nHost: "
        ),
        "{head}"
    );
    wait_until("connected", || t.is_connected()).await;
    assert_eq!(compression(&t).as_deref(), Some("permessage-deflate"));

    // Statuses go compressed, the window shared between them.
    for tick in 0..3 {
        t.send(status_packet(tick));
        let m = srv.message(true).await;
        let v: Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["channel"], "status");
        assert_eq!(v["payload"], status_packet(tick).payload);
    }
    // A message too small to be worth it goes plain.
    t.send(Packet::new("x", json!(1)));
    assert_eq!(srv.message(true).await, r#"{"payload":1,"channel":"x"}"#);
    assert_eq!(srv.rsv1, [true, true, true, false]);

    // The server's compressed messages are inflated and delivered.
    for i in 0..3 {
        srv.send_compressed(&format!(
            r#"{{"channel":"trigger:pm2:action","payload":{{"method_name":"restart","i":{i}}}}}"#
        ))
        .await;
        assert_eq!(
            within(rx.recv()).await.unwrap(),
            Packet::new(
                "trigger:pm2:action",
                json!({"method_name": "restart", "i": i})
            )
        );
    }
    assert!(t.is_connected());
}

#[tokio::test]
async fn client_no_context_takeover_is_honoured() {
    let (l, ep) = listen().await;
    let (t, _rx) = transport(gzip_opts());
    t.connect(ep);
    let (mut srv, _) =
        RawServer::accept(&l, Some("permessage-deflate; client_no_context_takeover")).await;
    // (Statuses sent before the socket carries supersede each other.)
    wait_until("connected", || t.is_connected()).await;
    for tick in 0..3 {
        t.send(status_packet(tick));
        // Each decodes with a fresh inflater.
        let v: Value = serde_json::from_str(&srv.message(false).await).unwrap();
        assert_eq!(v["payload"], status_packet(tick).payload);
    }
    assert_eq!(srv.rsv1, [true, true, true]);
}

#[tokio::test]
async fn a_small_client_window_means_plain_outbound_inflated_inbound() {
    let (l, ep) = listen().await;
    let (t, mut rx) = transport(gzip_opts());
    t.connect(ep);
    let (mut srv, _) =
        RawServer::accept(&l, Some("permessage-deflate; client_max_window_bits=10")).await;
    wait_until("connected", || t.is_connected()).await;
    assert!(compression(&t).unwrap().contains("inbound only"));
    t.send(status_packet(1));
    let v: Value = serde_json::from_str(&srv.message(true).await).unwrap();
    assert_eq!(v["payload"], status_packet(1).payload);
    assert_eq!(srv.rsv1, [false]);
    srv.send_compressed(r#"{"channel":"a","payload":{"b":1}}"#)
        .await;
    assert_eq!(
        within(rx.recv()).await.unwrap(),
        Packet::new("a", json!({"b": 1}))
    );
}

#[tokio::test]
async fn declined_means_plain_frames() {
    let (l, ep) = listen().await;
    let (t, _rx) = transport(gzip_opts());
    t.connect(ep);
    let (mut srv, head) = RawServer::accept(&l, None).await;
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    );
    wait_until("connected", || t.is_connected()).await;
    assert_eq!(
        compression(&t).as_deref(),
        Some("none (the server declined permessage-deflate)")
    );
    t.send(status_packet(1));
    srv.message(true).await;
    assert_eq!(srv.rsv1, [false]);
}

#[tokio::test]
async fn bad_answers_fail_the_handshake_and_are_retried() {
    for (gzip, answer, want) in [
        (
            true,
            "permessage-deflate; foo",
            "handshake: permessage-deflate: unknown parameter \"foo\"",
        ),
        (
            true,
            "x-webkit-deflate-frame",
            "handshake: server indicated an extension that was not requested: \"x-webkit-deflate-frame\"",
        ),
        (
            false,
            "permessage-deflate",
            "handshake: server sent an extension that was not requested",
        ),
    ] {
        let (l, ep) = listen().await;
        let (t, _rx) = transport(WebSocketOptions {
            gzip,
            ..gzip_opts()
        });
        t.connect(ep);
        let (_srv, head) = RawServer::accept(&l, Some(answer)).await;
        assert_eq!(head.contains("Sec-WebSocket-Extensions"), gzip);
        wait_until("the error", || t.last_error().as_deref() == Some(want)).await;
        assert!(!t.is_connected());
        // Retried.
        let _again = RawServer::accept(&l, None).await;
    }
}

#[tokio::test]
async fn a_bomb_from_the_server_drops_the_connection_and_is_counted() {
    let (l, ep) = listen().await;
    let (t, mut rx) = transport(WebSocketOptions {
        max_message_size: 64 << 10,
        ..gzip_opts()
    });
    t.connect(ep);
    let (mut srv, _) = RawServer::accept(&l, Some("permessage-deflate")).await;
    wait_until("connected", || t.is_connected()).await;
    // 1 MiB of spaces in a JSON string: ~1 KiB compressed.
    let bomb = format!(r#"{{"channel":"a","payload":"{}"}}"#, " ".repeat(1 << 20));
    srv.send_compressed(&bomb).await;
    wait_until("the error", || {
        t.last_error().is_some_and(|e| {
            e.contains("permessage-deflate: inflated message larger than 65536 bytes")
        })
    })
    .await;
    assert_eq!(t.stats().inbound_dropped, 1);
    // A fresh connection, fresh windows: works again.
    let (mut srv, _) = RawServer::accept(&l, Some("permessage-deflate")).await;
    wait_until("reconnected", || t.is_connected()).await;
    srv.send_compressed(r#"{"channel":"a","payload":{"ok":true}}"#)
        .await;
    assert_eq!(
        within(rx.recv()).await.unwrap(),
        Packet::new("a", json!({"ok": true}))
    );
    assert!(rx.try_recv().is_err(), "the bomb was never delivered");
}
