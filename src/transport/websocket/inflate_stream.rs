//! Inbound permessage-deflate beneath tungstenite, which rejects any frame
//! with RSV1 set: this stream sits between the socket (TCP/TLS) and
//! tungstenite, reads the server's frames, inflates the compressed
//! messages and hands tungstenite plain frames.
//!
//! * Frames without RSV1 (plain messages, control frames) go through
//!   untouched, byte for byte, without being buffered whole.
//! * A compressed message (RSV1 on its first frame; its continuation frames
//!   have RSV1 clear, RFC 7692 §6.1) is inflated as its bytes arrive and
//!   re-emitted as a fragmented plain message of at most [`FRAGMENT`]-byte
//!   frames: memory stays bounded whatever the message size, and control
//!   frames the server interleaves keep their place.
//! * The inflated size of a message is bounded by the transport's largest
//!   message: a decompression bomb fails the connection with
//!   [`DeflateError::TooLarge`] before it is inflated further.
//! * Protocol errors of the extension (RSV1 on a control or continuation
//!   frame, a masked compressed frame) fail it too; everything else that is
//!   wrong with a frame is left to tungstenite.
//!
//! Writes go straight to the socket: outbound compression is done on whole
//! messages by the session (`Deflater`), which hands tungstenite frames with
//! RSV1 set.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::deflate::{DeflateError, DeflateParams, Inflater};

/// Largest frame re-emitted for an inflated message, and about the most
/// inflated bytes buffered here at once.
pub const FRAGMENT: usize = 64 << 10;
/// Bytes read from the socket per read.
const READ_CHUNK: usize = 16 << 10;
/// Largest frame header: 2 + 8 (length) + 4 (mask).
const MAX_HEADER: usize = 14;

/// Where the parser is in the server's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Expecting a frame header.
    Header,
    /// Copying `left` payload bytes of a frame that goes through as is.
    Pass { left: u64 },
    /// Inflating `left` payload bytes of a compressed message's frame.
    Inflate { left: u64, fin: bool },
    /// The message's last frame is consumed; the trailer goes in and the
    /// final fragment out.
    Finish,
}

/// The data message in progress, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    None,
    /// A plain fragmented message: its continuation frames go through.
    Plain,
    /// A compressed one: `opcode` until its first fragment is out, then 0.
    Compressed {
        opcode: u8,
    },
}

/// A server frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    masked: bool,
    len: u64,
    /// Bytes the header takes.
    size: usize,
}

/// `None`: not all of the header is there yet.
fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (len, mut size) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as u64, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (n as u64, 2),
    };
    if masked {
        size += 4;
    }
    (b.len() >= size).then_some(Header {
        fin: b[0] & 0x80 != 0,
        rsv1: b[0] & 0x40 != 0,
        opcode: b[0] & 0x0f,
        masked,
        len,
        size,
    })
}

/// Appends an unmasked server frame header.
fn put_header(out: &mut BytesMut, fin: bool, opcode: u8, len: usize) {
    out.extend_from_slice(&[(u8::from(fin) << 7) | opcode]);
    if len < 126 {
        out.extend_from_slice(&[len as u8]);
    } else if len <= u16::MAX as usize {
        out.extend_from_slice(&[126]);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.extend_from_slice(&[127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The socket seen through permessage-deflate (see the module doc).
pub struct InflateStream<S> {
    inner: S,
    inflater: Inflater,
    /// Largest compressed frame accepted (tungstenite's frame limit).
    max_frame: usize,
    /// Read from `inner`, not parsed yet.
    raw: BytesMut,
    /// Ready for tungstenite.
    out: BytesMut,
    /// Inflated bytes of the current message not yet framed.
    inflated: Vec<u8>,
    /// Trailer bytes fed for the message being finished.
    trailer: usize,
    read: Read,
    message: Message,
    eof: bool,
    /// The first error, returned to every later read.
    failed: Option<DeflateError>,
}

impl<S> InflateStream<S> {
    /// `leftover`: bytes read past the HTTP upgrade (already frames).
    /// `max_message`: largest inflated message (and compressed frame).
    pub fn new(
        inner: S,
        leftover: Vec<u8>,
        params: &DeflateParams,
        max_message: usize,
    ) -> InflateStream<S> {
        InflateStream {
            inner,
            inflater: Inflater::new(params, max_message),
            max_frame: max_message,
            raw: BytesMut::from(&leftover[..]),
            out: BytesMut::new(),
            inflated: Vec::new(),
            trailer: 0,
            read: Read::Header,
            message: Message::None,
            eof: false,
            failed: None,
        }
    }

    /// Frames what was inflated: a fragment (never empty unless `fin`).
    fn emit(&mut self, fin: bool) {
        if self.inflated.is_empty() && !fin {
            return;
        }
        let Message::Compressed { opcode } = self.message else {
            return;
        };
        put_header(&mut self.out, fin, opcode, self.inflated.len());
        self.out.extend_from_slice(&self.inflated);
        self.inflated.clear();
        self.message = if fin {
            Message::None
        } else {
            Message::Compressed { opcode: 0 }
        };
    }

    /// Parses and inflates what `raw` holds into `out`, until `out` has a
    /// fragment's worth or more input is needed.
    fn process(&mut self) -> Result<(), DeflateError> {
        while self.out.len() < FRAGMENT {
            match self.read {
                Read::Header => {
                    let Some(h) = parse_header(&self.raw) else {
                        return Ok(());
                    };
                    self.header(h)?;
                }
                Read::Pass { left } => {
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let n =
                        (left.min(self.raw.len() as u64) as usize).min(FRAGMENT - self.out.len());
                    self.out.extend_from_slice(&self.raw[..n]);
                    self.raw.advance(n);
                    let left = left - n as u64;
                    self.read = if left == 0 {
                        Read::Header
                    } else {
                        Read::Pass { left }
                    };
                }
                Read::Inflate { left, fin } => {
                    if left > 0 && self.raw.is_empty() {
                        return Ok(());
                    }
                    let n = left.min(self.raw.len() as u64) as usize;
                    let used =
                        self.inflater
                            .inflate(&self.raw[..n], &mut self.inflated, FRAGMENT)?;
                    self.raw.advance(used);
                    let left = left - used as u64;
                    if self.inflated.len() >= FRAGMENT {
                        self.emit(false);
                    } else if used < n {
                        // Input left and room for output, yet not taken:
                        // never spin on it.
                        return Err(DeflateError::Corrupt("inflater made no progress".into()));
                    }
                    self.read = match (left, fin) {
                        (0, true) => Read::Finish,
                        (0, false) => {
                            // Wait for the continuation with what is left
                            // framed, so tungstenite sees progress.
                            self.drain_inflater()?;
                            self.emit(false);
                            Read::Header
                        }
                        _ => Read::Inflate { left, fin },
                    };
                }
                Read::Finish => {
                    if self
                        .inflater
                        .finish(&mut self.trailer, &mut self.inflated, FRAGMENT)?
                    {
                        self.emit(true);
                        self.read = Read::Header;
                    } else {
                        self.emit(false);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whatever the inflater still holds for the current frame's input.
    fn drain_inflater(&mut self) -> Result<(), DeflateError> {
        loop {
            let before = self.inflated.len();
            self.inflater.inflate(&[], &mut self.inflated, FRAGMENT)?;
            if self.inflated.len() < FRAGMENT {
                return Ok(());
            }
            if self.inflated.len() == before {
                return Ok(());
            }
            self.emit(false);
        }
    }

    /// Decides what a frame header means.
    fn header(&mut self, h: Header) -> Result<(), DeflateError> {
        let control = h.opcode & 0x08 != 0;
        let data = h.opcode == 1 || h.opcode == 2;
        if h.rsv1 {
            if control {
                return Err(DeflateError::CompressedControl);
            }
            if h.opcode == 0 {
                return Err(DeflateError::CompressedContinuation);
            }
        }
        let compressed = match (h.opcode, self.message) {
            (0, Message::Compressed { .. }) => true,
            (1 | 2, Message::Plain | Message::Compressed { .. }) => {
                return Err(DeflateError::ExpectedContinuation)
            }
            (1 | 2, Message::None) if h.rsv1 => {
                self.message = Message::Compressed { opcode: h.opcode };
                true
            }
            _ => false,
        };
        if compressed {
            if h.masked {
                return Err(DeflateError::Masked);
            }
            if h.len > self.max_frame as u64 {
                return Err(DeflateError::FrameTooLarge {
                    len: h.len,
                    max: self.max_frame,
                });
            }
            self.raw.advance(h.size);
            self.read = Read::Inflate {
                left: h.len,
                fin: h.fin,
            };
            return Ok(());
        }
        // Goes through as is; only data frames change the message state.
        if data && !h.fin {
            self.message = Message::Plain;
        } else if (data || h.opcode == 0) && h.fin && self.message == Message::Plain {
            self.message = Message::None;
        }
        self.out.extend_from_slice(&self.raw[..h.size]);
        self.raw.advance(h.size);
        self.read = if h.len == 0 {
            Read::Header
        } else {
            Read::Pass { left: h.len }
        };
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for InflateStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())));
            }
            if let Err(e) = this.process() {
                this.failed = Some(e);
                continue;
            }
            if !this.out.is_empty() {
                continue;
            }
            if this.eof {
                // Whatever partial frame is left, tungstenite sees the end.
                return Poll::Ready(Ok(()));
            }
            // More input needed (a header or payload is incomplete).
            if this.raw.len() >= MAX_HEADER.max(READ_CHUNK) {
                // Cannot happen: a full header is at most 14 bytes and
                // payloads are consumed as they come.
                this.failed = Some(DeflateError::Corrupt("parser stalled".into()));
                continue;
            }
            this.raw.reserve(READ_CHUNK);
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.raw.extend_from_slice(rb.filled());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InflateStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
