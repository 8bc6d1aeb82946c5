//! permessage-deflate (RFC 7692), asked for with `WS_GZIP` like the JS
//! agent (docs/transport.md §permessage-deflate).
//!
//! * Negotiation: we offer what `ws` offers ([`OFFER`]) and check the
//!   server's answer the way RFC 7692 §5–7 and `ws` do ([`negotiate`]).
//! * Outbound: [`Deflater`] compresses one message at a time (raw deflate,
//!   sync flush, the trailing `00 00 ff ff` removed), keeping its window
//!   across messages unless `client_no_context_takeover`. miniz_oxide only
//!   writes 15-bit windows: a server asking for a smaller client window gets
//!   our messages uncompressed (RSV1 clear), which RFC 7692 allows.
//! * Inbound: [`Inflater`] undoes the server's compression with a bound on
//!   each message's inflated size, so a decompression bomb cannot exceed the
//!   transport's largest message; the frame work is in `inflate_stream`.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's registered name.
pub const EXTENSION: &str = "permessage-deflate";

/// Our `Sec-WebSocket-Extensions` offer, byte for byte what `ws` writes with
/// `perMessageDeflate` on: no parameter of ours, and the server may limit
/// the window we compress with.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The 4 octets a sync flush ends with, removed by the sender and put
/// back by the receiver (RFC 7692 §7.2.1, §7.2.2).
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Outbound messages shorter than this go uncompressed: deflate's block
/// headers would outweigh the saving. (`ws` uses 1024 by default because
/// each compression is a round trip to its zlib thread pool; ours is an
/// inline call, and small `logs` packets shrink well with the shared
/// window.)
pub const MIN_COMPRESS: usize = 64;

/// Deflate level of outbound messages: zlib's default, as `ws` uses. On
/// status JSON it costs about what level 3 does and is ~20 % smaller;
/// level 1 is twice as fast and ~3× bigger (`deflate_tests::level_choice`).
pub const LEVEL: u32 = 6;

/// Inflated bytes produced per step (the output buffer grows by this).
const STEP: usize = 16 << 10;

/// The window a 15-bit `*_max_window_bits` stands for: what miniz_oxide
/// writes and reads.
pub const FULL_WINDOW_BITS: u8 = 15;

/// The parameters the server agreed to (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server compresses each message with a fresh window.
    pub server_no_context_takeover: bool,
    /// We must compress each message with a fresh window.
    pub client_no_context_takeover: bool,
    /// The server's window (we inflate any window up to 15 bits).
    pub server_max_window_bits: Option<u8>,
    /// The largest window we may compress with.
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// Whether we can compress what we send: only with the full 15-bit
    /// window miniz_oxide writes.
    pub fn can_compress(&self) -> bool {
        self.client_max_window_bits
            .is_none_or(|b| b >= FULL_WINDOW_BITS)
    }
}

impl fmt::Display for DeflateParams {
    /// As a `Sec-WebSocket-Extensions` element.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXTENSION)?;
        if self.server_no_context_takeover {
            f.write_str("; server_no_context_takeover")?;
        }
        if self.client_no_context_takeover {
            f.write_str("; client_no_context_takeover")?;
        }
        if let Some(b) = self.server_max_window_bits {
            write!(f, "; server_max_window_bits={b}")?;
        }
        if let Some(b) = self.client_max_window_bits {
            write!(f, "; client_max_window_bits={b}")?;
        }
        Ok(())
    }
}

/// What the handshake settled about compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// `WS_GZIP` off: nothing offered.
    NotOffered,
    /// Offered, and the server answered without the extension.
    Declined,
    /// Both sides use permessage-deflate with these parameters.
    Deflate(DeflateParams),
}

impl Negotiated {
    pub fn params(&self) -> Option<DeflateParams> {
        match self {
            Negotiated::Deflate(p) => Some(*p),
            _ => None,
        }
    }

    /// For `getInfos` (`compression`) and `agent.log`; `None` when nothing
    /// was offered.
    pub fn describe(&self) -> Option<String> {
        match self {
            Negotiated::NotOffered => None,
            Negotiated::Declined => {
                Some("none (the server declined permessage-deflate)".to_owned())
            }
            Negotiated::Deflate(p) if p.can_compress() => Some(p.to_string()),
            Negotiated::Deflate(p) => Some(format!(
                "{p} (inbound only: a window under {FULL_WINDOW_BITS} bits is not supported, \
                 outbound messages go uncompressed)"
            )),
        }
    }
}

/// A `Sec-WebSocket-Extensions` answer we cannot accept: the connection
/// fails (RFC 6455 §9.1, RFC 7692 §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error("server sent an extension that was not requested")]
    NotRequested,
    #[error("invalid Sec-WebSocket-Extensions header: {0}")]
    Syntax(String),
    #[error("server indicated an extension that was not requested: {0:?}")]
    Unknown(String),
    #[error("permessage-deflate accepted more than once")]
    Twice,
    #[error("permessage-deflate: unknown parameter {0:?}")]
    UnknownParam(String),
    #[error("permessage-deflate: parameter {0} given twice")]
    RepeatedParam(String),
    #[error("permessage-deflate: invalid value {value:?} for {param}")]
    BadValue { param: String, value: String },
}

/// Why compressing or inflating a message failed; the connection is
/// dropped and a fresh one starts with fresh windows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeflateError {
    #[error("permessage-deflate: inflated message larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("permessage-deflate: compressed frame of {len} bytes, larger than {max}")]
    FrameTooLarge { len: u64, max: usize },
    #[error("permessage-deflate: invalid compressed data: {0}")]
    Corrupt(String),
    #[error("permessage-deflate: compressed control frame")]
    CompressedControl,
    #[error("permessage-deflate: RSV1 set on a continuation frame")]
    CompressedContinuation,
    #[error("permessage-deflate: new message while a fragmented one is incomplete")]
    ExpectedContinuation,
    #[error("permessage-deflate: masked frame from the server")]
    Masked,
    #[error("permessage-deflate: compressor failed: {0}")]
    Compress(String),
}

/// One `Sec-WebSocket-Extensions` element: a name and its parameters.
type Element = (String, Vec<(String, Option<String>)>);

/// Checks the server's `Sec-WebSocket-Extensions` (every such header, in
/// order; `None`: absent). `offered`: whether we sent [`OFFER`].
pub fn negotiate(header: Option<&str>, offered: bool) -> Result<Negotiated, ExtensionError> {
    let Some(header) = header else {
        return Ok(if offered {
            Negotiated::Declined
        } else {
            Negotiated::NotOffered
        });
    };
    if !offered {
        return Err(ExtensionError::NotRequested);
    }
    let elements = parse(header)?;
    let mut agreed = None;
    for (name, params) in elements {
        if !name.eq_ignore_ascii_case(EXTENSION) {
            return Err(ExtensionError::Unknown(name));
        }
        if agreed.is_some() {
            return Err(ExtensionError::Twice);
        }
        agreed = Some(accept(params)?);
    }
    Ok(agreed.map_or(Negotiated::Declined, Negotiated::Deflate))
}

/// The parameters of the server's permessage-deflate answer (RFC 7692
/// §7.1: each at most once; the window sizes 8–15, required in an answer).
fn accept(params: Vec<(String, Option<String>)>) -> Result<DeflateParams, ExtensionError> {
    let mut p = DeflateParams::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in params {
        let key = name.to_ascii_lowercase();
        if seen.contains(&key) {
            return Err(ExtensionError::RepeatedParam(key));
        }
        let bad = |v: &Option<String>| ExtensionError::BadValue {
            param: key.clone(),
            value: v.clone().unwrap_or_default(),
        };
        match key.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if value.is_some() {
                    return Err(bad(&value));
                }
                if key.starts_with("server") {
                    p.server_no_context_takeover = true;
                } else {
                    p.client_no_context_takeover = true;
                }
            }
            "server_max_window_bits" | "client_max_window_bits" => {
                let bits = value
                    .as_deref()
                    .filter(|v| {
                        !v.is_empty()
                            && !v.starts_with('0')
                            && v.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or_else(|| bad(&value))?;
                if key.starts_with("server") {
                    p.server_max_window_bits = Some(bits);
                } else {
                    p.client_max_window_bits = Some(bits);
                }
            }
            _ => return Err(ExtensionError::UnknownParam(name)),
        }
        seen.push(key);
    }
    Ok(p)
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `extension-list` of RFC 6455 §9.1: `name *(";" param ["=" (token |
/// quoted-string)])`, comma-separated; empty list elements are skipped
/// (RFC 7230 §7). A quoted value must unescape to a token.
fn parse(header: &str) -> Result<Vec<Element>, ExtensionError> {
    let s = header.as_bytes();
    let mut i = 0;
    let syntax = |what: &str, at: usize| {
        ExtensionError::Syntax(format!("{what} at offset {at} of {header:?}"))
    };
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && (s[*i] == b' ' || s[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < s.len() && is_tchar(s[*i]) {
            *i += 1;
        }
        (*i > start).then(|| header[start..*i].to_owned())
    };
    let mut out = Vec::new();
    loop {
        skip_ws(&mut i);
        if i == s.len() {
            return Ok(out);
        }
        if s[i] == b',' {
            i += 1;
            continue;
        }
        let name = token(&mut i).ok_or_else(|| syntax("expected an extension name", i))?;
        let mut params = Vec::new();
        loop {
            skip_ws(&mut i);
            if i == s.len() || s[i] == b',' {
                break;
            }
            if s[i] != b';' {
                return Err(syntax("expected ';' or ','", i));
            }
            i += 1;
            skip_ws(&mut i);
            let pname = token(&mut i).ok_or_else(|| syntax("expected a parameter name", i))?;
            skip_ws(&mut i);
            let mut value = None;
            if i < s.len() && s[i] == b'=' {
                i += 1;
                skip_ws(&mut i);
                let v = if i < s.len() && s[i] == b'"' {
                    i += 1;
                    let mut v = Vec::new();
                    loop {
                        match s.get(i) {
                            None => return Err(syntax("unterminated quoted string", i)),
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(b'\\') if i + 1 < s.len() => {
                                v.push(s[i + 1]);
                                i += 2;
                            }
                            Some(&b) => {
                                v.push(b);
                                i += 1;
                            }
                        }
                    }
                    if v.is_empty() || !v.iter().all(|&b| is_tchar(b)) {
                        return Err(syntax("quoted value that is not a token", i));
                    }
                    String::from_utf8(v).map_err(|_| syntax("non-ASCII value", i))?
                } else {
                    token(&mut i).ok_or_else(|| syntax("expected a parameter value", i))?
                };
                value = Some(v);
            }
            params.push((pname, value));
        }
        out.push((name, params));
    }
}

/// Compresses outbound messages (RFC 7692 §7.2.1).
pub struct Deflater {
    c: Compress,
    no_context_takeover: bool,
}

impl Deflater {
    /// `None` when the server's parameters forbid our compressor (a window
    /// under 15 bits): send uncompressed.
    pub fn new(params: &DeflateParams) -> Option<Deflater> {
        params.can_compress().then(|| Deflater {
            c: Compress::new(Compression::new(LEVEL), false),
            no_context_takeover: params.client_no_context_takeover,
        })
    }

    /// The payload of one compressed message: raw deflate up to a sync
    /// flush, its trailing `00 00 ff ff` removed.
    pub fn compress(&mut self, msg: &[u8]) -> Result<Vec<u8>, DeflateError> {
        let fail = |e: &dyn fmt::Display| DeflateError::Compress(e.to_string());
        let start = self.c.total_in();
        let mut out = Vec::with_capacity(msg.len() / 2 + 64);
        loop {
            let consumed = (self.c.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let status = self
                .c
                .compress_vec(&msg[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| fail(&e))?;
            let done = (self.c.total_in() - start) as usize == msg.len();
            // Flushed once everything was taken and there was room left
            // (`BufError`: nothing left to do).
            if done && (out.len() < out.capacity() || status == Status::BufError) {
                break;
            }
        }
        if !out.ends_with(&TRAILER) {
            return Err(fail(&"sync flush did not end with 00 00 ff ff"));
        }
        out.truncate(out.len() - TRAILER.len());
        if self.no_context_takeover {
            self.c.reset();
        }
        Ok(out)
    }
}

/// Inflates inbound messages (RFC 7692 §7.2.2), a message at most `max`
/// bytes once inflated.
pub struct Inflater {
    d: Decompress,
    no_context_takeover: bool,
    max: usize,
    /// Bytes of the current message inflated so far.
    len: usize,
    /// The server ended the deflate stream (BFINAL): the rest of the
    /// message is ignored, the next one starts a new stream.
    ended: bool,
}

impl Inflater {
    pub fn new(params: &DeflateParams, max: usize) -> Inflater {
        Inflater {
            d: Decompress::new(false),
            no_context_takeover: params.server_no_context_takeover,
            max,
            len: 0,
            ended: false,
        }
    }

    /// Inflates from `input` into `out` until `out` holds `cap` bytes or the
    /// input is used up and nothing more comes out. Returns the input bytes
    /// consumed.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        cap: usize,
    ) -> Result<usize, DeflateError> {
        let mut used = 0;
        while !self.ended && out.len() < cap {
            let (in0, out0) = (self.d.total_in(), self.d.total_out());
            // Room for one more byte than allowed, to tell "exactly max"
            // from "more"; in steps of STEP so the buffer grows with what
            // comes out, not with what is allowed.
            let room = (cap - out.len()).min(self.max - self.len + 1).min(STEP);
            let at = out.len();
            out.resize(at + room, 0);
            let status = self
                .d
                .decompress(&input[used..], &mut out[at..], FlushDecompress::None);
            let produced = (self.d.total_out() - out0) as usize;
            let consumed = (self.d.total_in() - in0) as usize;
            out.truncate(at + produced);
            let status = status.map_err(|e| DeflateError::Corrupt(e.to_string()))?;
            used += consumed;
            self.len += produced;
            if self.len > self.max {
                return Err(DeflateError::TooLarge { max: self.max });
            }
            if status == Status::StreamEnd {
                self.ended = true;
            }
            if produced == 0 && consumed == 0 {
                break;
            }
        }
        if self.ended {
            // After BFINAL nothing is inflated: the rest is dropped.
            used = input.len();
        }
        Ok(used)
    }

    /// Ends the current message: the trailer goes in (its output into `out`
    /// up to `cap`, like [`Inflater::inflate`]). `Ok(false)`: `out` is full
    /// with more to come, call again once drained.
    pub fn finish(
        &mut self,
        trailer_used: &mut usize,
        out: &mut Vec<u8>,
        cap: usize,
    ) -> Result<bool, DeflateError> {
        let used = self.inflate(&TRAILER[*trailer_used..], out, cap)?;
        *trailer_used += used;
        if out.len() >= cap && !self.ended {
            return Ok(false);
        }
        if *trailer_used < TRAILER.len() && !self.ended {
            return Err(DeflateError::Corrupt(
                "message does not end on a block boundary".into(),
            ));
        }
        self.len = 0;
        *trailer_used = 0;
        if self.no_context_takeover || self.ended {
            self.d.reset(false);
            self.ended = false;
        }
        Ok(true)
    }
}

#[cfg(test)]
pub(super) fn inflate_all(
    params: &DeflateParams,
    max: usize,
    payload: &[u8],
) -> Result<Vec<u8>, DeflateError> {
    let mut i = Inflater::new(params, max);
    let mut out = Vec::new();
    let used = i.inflate(payload, &mut out, usize::MAX)?;
    assert_eq!(used, payload.len());
    let mut t = 0;
    assert!(i.finish(&mut t, &mut out, usize::MAX)?);
    Ok(out)
}
