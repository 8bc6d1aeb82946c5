//! AMP framing as spoken by `amp` 0.3 / `amp-message` 0.1, the layer under
//! every pm2-axon socket (`rpc.sock`, `pub.sock`, `interactor.sock`, the
//! legacy push socket).
//!
//! A frame is one header byte (high nibble: version 1, low nibble: argc
//! 0–15) followed by `argc` arguments, each a big-endian `u32` length and
//! that many bytes. amp-message types the bodies: `s:` + UTF-8 is a string,
//! `j:` + JSON is any other JS value, anything else is a raw buffer.
//!
//! The JS parser is a byte-at-a-time state machine that trusts argc; it
//! desynchronises on argc 0 and on 16+ arguments. This module is a
//! length-driven parser instead, in the style of mini-redis' `frame`:
//! [`check`] finds out, without allocating, whether a whole frame is in the
//! buffer and how long it is; only then does [`parse`] build the
//! [`Message`]. A frame whose body is bad (invalid UTF-8 or JSON) still has
//! a known length, so a connection can skip it and carry on.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// The largest argc the header's low nibble can hold.
pub const MAX_ARGS: usize = 15;
/// Default cap on one frame's total size. Profiling dumps travel as file
/// paths over PM2's bus, so no legitimate frame comes near this; a length
/// field above it is treated as garbage rather than as a reason to buffer.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;

const VERSION: u8 = 1;

/// One argument of a frame, typed the way amp-message types it.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `s:` prefix: a JS string.
    Str(String),
    /// `j:` prefix: any other JS value (numbers, objects, null, …).
    Json(Value),
    /// No prefix: a Node `Buffer`.
    Raw(Bytes),
    /// `j:` prefix, body kept as unparsed JSON text (see [`parse_lazy`]):
    /// for big replies the consumer parses straight into the few fields it
    /// needs instead of building a whole `Value` tree.
    JsonText(Bytes),
}

impl Arg {
    pub fn str(s: impl Into<String>) -> Self {
        Arg::Str(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The argument as a JSON value, the way a JS receiver would see it
    /// (strings become JSON strings; raw buffers are not representable).
    pub fn to_value(&self) -> Option<Value> {
        match self {
            Arg::Str(s) => Some(Value::String(s.clone())),
            Arg::Json(v) => Some(v.clone()),
            Arg::Raw(_) => None,
            Arg::JsonText(t) => serde_json::from_slice(t).ok(),
        }
    }

    /// The argument as a JSON value; `None` for a raw buffer or JSON text
    /// that does not parse.
    pub fn into_value(self) -> Option<Value> {
        match self {
            Arg::Str(s) => Some(Value::String(s)),
            Arg::Json(v) => Some(v),
            Arg::Raw(_) => None,
            Arg::JsonText(t) => serde_json::from_slice(&t).ok(),
        }
    }

    /// The JSON text of a `j:` argument (serialising a parsed one).
    pub fn json_text(&self) -> Option<Bytes> {
        match self {
            Arg::JsonText(t) => Some(t.clone()),
            Arg::Json(v) => serde_json::to_vec(v).ok().map(Bytes::from),
            _ => None,
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Arg::Str(s) => 2 + s.len(),
            // serde_json has no cheap "length of"; encode() measures it for real.
            Arg::Json(_) => 0,
            Arg::Raw(b) => b.len(),
            Arg::JsonText(t) => 2 + t.len(),
        }
    }
}

impl From<Value> for Arg {
    fn from(v: Value) -> Self {
        Arg::Json(v)
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Str(s.to_owned())
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Str(s)
    }
}

/// A decoded frame: its arguments in order.
pub type Message = Vec<Arg>;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Not enough bytes buffered yet; read more and try again.
    #[error("incomplete frame")]
    Incomplete,
    /// A frame with no arguments: amp would desynchronise on it.
    #[error("frame with no arguments")]
    NoArgs,
    /// The version nibble is not 1. amp ignores it, so this is only reported
    /// by [`check_strict`]; [`check`] accepts any version.
    #[error("unsupported AMP version {0}")]
    Version(u8),
    /// The frame's declared size exceeds the configured cap.
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    TooLarge { len: u64, max: usize },
    /// A complete frame of `len` bytes whose `s:` argument is not UTF-8.
    #[error("argument {index} is not valid UTF-8")]
    InvalidUtf8 { index: usize, len: usize },
    /// A complete frame of `len` bytes whose `j:` argument is not JSON.
    #[error("argument {index} is not valid JSON: {source}")]
    InvalidJson {
        index: usize,
        len: usize,
        #[source]
        source: serde_json::Error,
    },
}

impl FrameError {
    /// For errors about a frame that was completely received, the number of
    /// bytes to skip to reach the next frame.
    pub fn skip_len(&self) -> Option<usize> {
        match self {
            FrameError::InvalidUtf8 { len, .. } | FrameError::InvalidJson { len, .. } => Some(*len),
            _ => None,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("a frame needs 1 to {MAX_ARGS} arguments, got {0}")]
    ArgCount(usize),
    #[error("argument {0} is longer than 4 GiB")]
    ArgTooLarge(usize),
}

/// Checks whether `buf` starts with a whole frame no larger than `max`, and
/// returns its length in bytes. Allocates nothing and reads no body bytes.
pub fn check(buf: &[u8], max: usize) -> Result<usize, FrameError> {
    let header = *buf.first().ok_or(FrameError::Incomplete)?;
    let argc = (header & 0x0f) as usize;
    if argc == 0 {
        return Err(FrameError::NoArgs);
    }
    let mut pos: u64 = 1;
    for _ in 0..argc {
        let at = pos as usize;
        if buf.len() < at + 4 {
            return Err(FrameError::Incomplete);
        }
        let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        pos += 4 + len as u64;
        if pos > max as u64 {
            return Err(FrameError::TooLarge { len: pos, max });
        }
        if (buf.len() as u64) < pos {
            return Err(FrameError::Incomplete);
        }
    }
    Ok(pos as usize)
}

/// Like [`check`], and also rejects a version nibble other than 1.
pub fn check_strict(buf: &[u8], max: usize) -> Result<usize, FrameError> {
    if let Some(&h) = buf.first() {
        if h >> 4 != VERSION {
            return Err(FrameError::Version(h >> 4));
        }
    }
    check(buf, max)
}

/// Decodes the frame at the start of `buf`. Call [`check`] first: this
/// assumes the whole frame is there and returns `Incomplete` otherwise.
pub fn parse(buf: &[u8]) -> Result<Message, FrameError> {
    parse_with(buf, false, None)
}

/// Like [`parse`], but `j:` arguments are returned as [`Arg::JsonText`],
/// unchecked: parsing (and rejecting bad text) is left to the consumer.
pub fn parse_lazy(buf: &[u8]) -> Result<Message, FrameError> {
    parse_with(buf, true, None)
}

/// Like [`parse_lazy`] on a frame already split off the read buffer: the
/// `j:` text and raw bodies are slices of `frame`, not copies (a PM2
/// `getMonitorData` reply is tens to hundreds of KB every second).
pub fn parse_lazy_shared(frame: &Bytes) -> Result<Message, FrameError> {
    parse_with(frame, true, Some(frame))
}

fn parse_with(buf: &[u8], lazy_json: bool, owner: Option<&Bytes>) -> Result<Message, FrameError> {
    let total = check(buf, usize::MAX)?;
    let argc = (buf[0] & 0x0f) as usize;
    let mut args = Vec::with_capacity(argc);
    let mut pos = 1;
    for index in 0..argc {
        let len = u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        pos += 4;
        let body = &buf[pos..pos + len];
        pos += len;
        args.push(decode_arg(body, index, total, lazy_json, owner)?);
    }
    Ok(args)
}

fn decode_arg(
    body: &[u8],
    index: usize,
    frame_len: usize,
    lazy_json: bool,
    owner: Option<&Bytes>,
) -> Result<Arg, FrameError> {
    // `body` lies inside `owner` when there is one: share, don't copy.
    let keep = |part: &[u8]| match owner {
        Some(o) => o.slice_ref(part),
        None => Bytes::copy_from_slice(part),
    };
    match body {
        [b'j', b':', rest @ ..] if lazy_json => {
            std::str::from_utf8(rest).map_err(|_| FrameError::InvalidUtf8 {
                index,
                len: frame_len,
            })?;
            Ok(Arg::JsonText(keep(rest)))
        }
        [b's', b':', rest @ ..] => std::str::from_utf8(rest)
            .map(|s| Arg::Str(s.to_owned()))
            .map_err(|_| FrameError::InvalidUtf8 {
                index,
                len: frame_len,
            }),
        [b'j', b':', rest @ ..] => serde_json::from_slice(rest)
            .map(Arg::Json)
            .map_err(|source| FrameError::InvalidJson {
                index,
                len: frame_len,
                source,
            }),
        _ => Ok(Arg::Raw(keep(body))),
    }
}

/// Appends the frame for `args` to `out`. Refuses argc 0 and argc > 15,
/// which the JS parser cannot read back.
pub fn encode(args: &[Arg], out: &mut BytesMut) -> Result<(), EncodeError> {
    if args.is_empty() || args.len() > MAX_ARGS {
        return Err(EncodeError::ArgCount(args.len()));
    }
    let estimate: usize = args.iter().map(|a| 4 + a.encoded_len()).sum();
    out.reserve(1 + estimate);
    out.put_u8((VERSION << 4) | args.len() as u8);
    for (i, arg) in args.iter().enumerate() {
        let len_at = out.len();
        out.put_u32(0);
        match arg {
            Arg::Str(s) => {
                out.put_slice(b"s:");
                out.put_slice(s.as_bytes());
            }
            Arg::Json(v) => {
                out.put_slice(b"j:");
                // Writing a Value into memory cannot fail.
                serde_json::to_writer((&mut *out).writer(), v).expect("serialising a Value");
            }
            Arg::Raw(b) => out.put_slice(b),
            Arg::JsonText(t) => {
                out.put_slice(b"j:");
                out.put_slice(t);
            }
        }
        let len = out.len() - len_at - 4;
        let len = u32::try_from(len).map_err(|_| EncodeError::ArgTooLarge(i))?;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
}

/// Convenience: the frame for `args` as a new buffer.
pub fn encode_to_bytes(args: &[Arg]) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    encode(args, &mut out)?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn hex(b: &[u8]) -> String {
        ::hex::encode(b)
    }

    #[test]
    fn matches_captured_frames() {
        // docs/protocols.md §1, captured from pm2-axon.
        assert_eq!(
            hex(&encode_to_bytes(&[Arg::str("hi")]).unwrap()),
            "1100000004733a6869"
        );
        assert_eq!(
            hex(&encode_to_bytes(&[Arg::str("log:out"), json!({"a":1}).into()]).unwrap()),
            "1200000009733a6c6f673a6f7574000000096a3a7b2261223a317d"
        );
        assert_eq!(
            hex(&encode_to_bytes(&[Arg::str("é")]).unwrap()),
            "1100000004733ac3a9"
        );
        let six = [
            Arg::str("x"),
            Arg::Raw(Bytes::from_static(&[0xde, 0xad])),
            json!(42).into(),
            Value::Null.into(),
            Value::Null.into(),
            json!(true).into(),
        ];
        assert_eq!(
            hex(&encode_to_bytes(&six).unwrap()),
            "1600000003733a7800000002dead000000046a3a3432000000066a3a6e756c6c000000066a3a6e756c6c000000066a3a74727565"
        );
    }

    #[test]
    fn decodes_captured_rpc_reply() {
        let frame = ::hex::decode("120000001b6a3a7b2261726773223a5b7b226d7367223a22706f6e67227d5d7d00000008733a363730313a31").unwrap();
        assert_eq!(check(&frame, DEFAULT_MAX_FRAME).unwrap(), frame.len());
        let msg = parse(&frame).unwrap();
        assert_eq!(
            msg,
            vec![
                Arg::Json(json!({"args":[{"msg":"pong"}]})),
                Arg::str("6701:1")
            ]
        );
    }

    #[test]
    fn incomplete_at_every_cut() {
        let frame = encode_to_bytes(&[Arg::str("topic"), json!({"k":[1,2,3]}).into()]).unwrap();
        for cut in 0..frame.len() {
            assert!(
                matches!(
                    check(&frame[..cut], DEFAULT_MAX_FRAME),
                    Err(FrameError::Incomplete)
                ),
                "cut {cut}"
            );
            assert!(matches!(parse(&frame[..cut]), Err(FrameError::Incomplete)));
        }
        assert_eq!(check(&frame, DEFAULT_MAX_FRAME).unwrap(), frame.len());
    }

    #[test]
    fn empty_last_argument_is_a_whole_frame() {
        let frame = encode_to_bytes(&[Arg::Raw(Bytes::new())]).unwrap();
        assert_eq!(hex(&frame), "1100000000");
        assert_eq!(parse(&frame).unwrap(), vec![Arg::Raw(Bytes::new())]);
    }

    #[test]
    fn four_gib_length_is_refused_without_buffering() {
        let buf = [0x11, 0xff, 0xff, 0xff, 0xff, b's'];
        match check(&buf, DEFAULT_MAX_FRAME) {
            Err(FrameError::TooLarge { len, .. }) => assert_eq!(len, 1 + 4 + 0xffff_ffff),
            other => panic!("{other:?}"),
        }
        // Even with no cap, the sum of 15 such lengths does not overflow.
        let mut many = vec![0x1f];
        for _ in 0..15 {
            many.extend_from_slice(&[0xff; 4]);
        }
        assert!(matches!(
            check(&many, usize::MAX),
            Err(FrameError::Incomplete)
        ));
    }

    #[test]
    fn argc_zero_and_sixteen() {
        assert!(matches!(
            check(&[0x10, 0, 0, 0, 1], DEFAULT_MAX_FRAME),
            Err(FrameError::NoArgs)
        ));
        let sixteen: Vec<Arg> = (0..16).map(|i| Arg::Json(json!(i))).collect();
        assert!(matches!(
            encode_to_bytes(&sixteen),
            Err(EncodeError::ArgCount(16))
        ));
        assert!(matches!(
            encode_to_bytes(&[]),
            Err(EncodeError::ArgCount(0))
        ));
        let fifteen: Vec<Arg> = (0..15).map(|i| Arg::Json(json!(i))).collect();
        let frame = encode_to_bytes(&fifteen).unwrap();
        assert_eq!(frame[0], 0x1f);
        assert_eq!(parse(&frame).unwrap(), fifteen);
    }

    #[test]
    fn bad_bodies_are_typed_and_skippable() {
        let mut buf = BytesMut::new();
        buf.put_u8(0x11);
        buf.put_u32(4);
        buf.put_slice(&[b's', b':', 0xff, 0xfe]);
        let bad_len = buf.len();
        match parse(&buf) {
            Err(e @ FrameError::InvalidUtf8 { .. }) => assert_eq!(e.skip_len(), Some(bad_len)),
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::new();
        buf.put_u8(0x11);
        buf.put_u32(5);
        buf.put_slice(b"j:{x}");
        assert!(matches!(
            parse(&buf),
            Err(FrameError::InvalidJson {
                index: 0,
                len: 10,
                ..
            })
        ));
    }

    #[test]
    fn lazy_json_keeps_the_text() {
        let frame =
            encode_to_bytes(&[json!({"args":[[{"pm_id":0}]]}).into(), Arg::str("id")]).unwrap();
        let msg = parse_lazy(&frame).unwrap();
        assert_eq!(
            msg[0],
            Arg::JsonText(Bytes::from_static(br#"{"args":[[{"pm_id":0}]]}"#))
        );
        assert_eq!(msg[0].to_value(), Some(json!({"args":[[{"pm_id":0}]]})));
        assert_eq!(msg[1], Arg::str("id"));
        // Re-encoding the text gives the same bytes.
        assert_eq!(encode_to_bytes(&msg).unwrap(), frame);
        let mut bad = BytesMut::new();
        bad.put_u8(0x11);
        bad.put_u32(4);
        bad.put_slice(&[b'j', b':', 0xff, 0xfe]);
        assert!(matches!(
            parse_lazy(&bad),
            Err(FrameError::InvalidUtf8 { .. })
        ));
    }

    #[test]
    fn shared_parse_slices_the_frame_and_matches_the_copying_one() {
        let args = vec![
            Arg::Json(serde_json::json!({"a": [1, 2, 3]})),
            Arg::Raw(Bytes::from_static(b"\x00\x01raw")),
            Arg::str("hello"),
        ];
        let frame = encode_to_bytes(&args).unwrap();
        let shared = parse_lazy_shared(&frame).unwrap();
        assert_eq!(shared, parse_lazy(&frame).unwrap());
        let Arg::JsonText(text) = &shared[0] else {
            panic!("j: stays text")
        };
        let inside = frame.as_ptr_range();
        assert!(
            inside.contains(&text.as_ptr()),
            "the text is a slice of the frame"
        );
    }

    #[test]
    fn version_nibble() {
        let frame = [0x21, 0, 0, 0, 1, b'x'];
        assert_eq!(check(&frame, 100).unwrap(), 6);
        assert!(matches!(
            check_strict(&frame, 100),
            Err(FrameError::Version(2))
        ));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{1,4}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_arg() -> impl Strategy<Value = Arg> {
        prop_oneof![
            ".*".prop_map(Arg::Str),
            arb_json().prop_map(Arg::Json),
            // Raw buffers that start with "s:"/"j:" are mis-typed by amp too;
            // keep generated raw bodies clear of those prefixes.
            prop::collection::vec(any::<u8>(), 0..64)
                .prop_filter("typed prefix", |b| !(b.len() >= 2
                    && (b[..2] == *b"s:" || b[..2] == *b"j:")))
                .prop_map(|b| Arg::Raw(Bytes::from(b))),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(args in prop::collection::vec(arb_arg(), 1..=15)) {
            let frame = encode_to_bytes(&args).unwrap();
            prop_assert_eq!(check(&frame, DEFAULT_MAX_FRAME).unwrap(), frame.len());
            prop_assert_eq!(parse(&frame).unwrap(), args);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(n) = check(&bytes, 1024) {
                prop_assert!(n <= bytes.len());
                let _ = parse(&bytes[..n]);
            }
        }
    }
}
