//! An nssocket 0.6 connection (the legacy reverse channel): JSON lines over
//! TCP. No reconnect here, like the JS agent's `reconnect: false`; the
//! transporter above decides when to dial again.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::connection::{WriteError, Writer};
use super::endpoint::{Endpoint, Stream};
use super::liveness::SendProbe;
use crate::protocol::lines::LineFramer;
use crate::protocol::nssocket::{self, NsMessage};

/// Spare room guaranteed before each read.
const READ_CHUNK: usize = 64 * 1024;

/// Longest line accepted from the server.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

pub struct NsReader<R> {
    inner: R,
    buf: BytesMut,
    framer: LineFramer,
    /// A well-formed message arrived: from then on malformed lines are
    /// skipped like the JS receiver does. Before it, bytes that cannot
    /// start a JSON line mean the peer speaks another protocol.
    trusted: bool,
    /// Keeps the debug log of dropped lines bounded (a hostile peer); the
    /// owner counts them ([`NsReader::take_skipped`]) into the drop
    /// counters, whose summary is the warning.
    skip_log: crate::logging::Throttle,
    /// Untrusted: the buffered start of the front line is blank, and (once
    /// that line turned out over-long) so was all of it that was dropped.
    blank_front: bool,
    blank_tail: bool,
    /// Lines dropped since the owner last asked ([`NsReader::take_skipped`]).
    skipped: Skipped,
}

/// Lines an [`NsReader`] dropped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Not an nssocket JSON line (after the peer proved it speaks nssocket).
    pub malformed: u64,
    /// Longer than the reader's bound.
    pub too_long: u64,
}

impl<R: AsyncRead + Unpin> NsReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        NsReader {
            inner,
            buf: BytesMut::with_capacity(4096),
            framer: LineFramer::new(max_line),
            trusted: false,
            skip_log: Default::default(),
            blank_front: false,
            blank_tail: false,
            skipped: Skipped::default(),
        }
    }

    /// The lines dropped since the last call, so the owner can count them
    /// where its user sees them (the drop counters of `getInfos`).
    pub fn take_skipped(&mut self) -> Skipped {
        std::mem::take(&mut self.skipped)
    }

    /// The next well-formed message; malformed lines are logged and skipped
    /// (the JS receiver swallows them too). `None` at end of stream. Until
    /// a first message arrived, bytes that cannot begin an nssocket line
    /// (an HTTP status line, a TLS alert) are an `InvalidData` error naming
    /// them.
    pub async fn recv(&mut self) -> std::io::Result<Option<NsMessage>> {
        loop {
            // The check looks at the first non-blank byte of each line
            // until trust, whatever the read boundaries: the tail of an
            // over-long line starts mid-line and is only looked at while
            // that line's start was blank.
            if !self.trusted {
                if !self.framer.is_discarding() {
                    match first_non_blank(&self.buf) {
                        Some(b'[') => self.blank_front = false,
                        Some(_) => return Err(not_nssocket(&self.buf)),
                        None => self.blank_front = true,
                    }
                } else if self.blank_tail {
                    let end = self.buf.iter().position(|&b| b == b'\n');
                    match first_non_blank(&self.buf[..end.unwrap_or(self.buf.len())]) {
                        Some(b'[') => self.blank_tail = false,
                        Some(_) => return Err(not_nssocket(&self.buf)),
                        None if end.is_some() => self.blank_tail = false,
                        None => {}
                    }
                }
            }
            let was_discarding = self.framer.is_discarding();
            match self.framer.next_line(&mut self.buf) {
                Ok(Some(line)) => {
                    // Past the tail of an over-long line the framer hands
                    // over the next line at once: it is checked here.
                    if !self.trusted
                        && was_discarding
                        && first_non_blank(&line).is_some_and(|b| b != b'[')
                    {
                        return Err(not_nssocket(&line));
                    }
                    match nssocket::decode(&line) {
                        Ok(m) => {
                            self.trusted = true;
                            return Ok(Some(m));
                        }
                        Err(e) => {
                            self.skipped.malformed += 1;
                            if let Some(n) = self.skip_log.hit("malformed", 1) {
                                tracing::debug!(error = %e, "{n} malformed nssocket lines dropped since the last report");
                            }
                        }
                    }
                }
                // The tail just ended: check the front before reading on.
                Ok(None) if was_discarding && !self.framer.is_discarding() => {}
                Ok(None) => {
                    // A full BytesMut would only grow by 64 bytes per read: make room
                    // for a real chunk, or a big frame takes thousands of syscalls.
                    self.buf.reserve(READ_CHUNK);
                    if self.inner.read_buf(&mut self.buf).await? == 0 {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    if self.framer.is_discarding() {
                        self.blank_tail = self.blank_front;
                    }
                    self.skipped.too_long += 1;
                    if let Some(n) = self.skip_log.hit("too long", 1) {
                        tracing::debug!(error = %e, "{n} over-long nssocket lines dropped since the last report");
                    }
                }
            }
        }
    }
}

fn first_non_blank(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

fn not_nssocket(bytes: &[u8]) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "the peer does not speak nssocket: it sent {}",
            crate::protocol::sniff::describe(bytes)
        ),
    )
}

/// The writing half: `send(event, data)` as nssocket does.
#[derive(Clone)]
pub struct NsSender {
    writer: Writer,
    probe: Option<Arc<SendProbe>>,
}

impl NsSender {
    pub fn send(&self, event: &str, data: Option<&Value>) -> Result<(), WriteError> {
        self.writer.send(Bytes::from(nssocket::encode(event, data)))
    }

    pub fn is_closed(&self) -> bool {
        self.writer.is_closed()
    }

    pub fn pending_bytes(&self) -> usize {
        self.writer.pending_bytes()
    }

    /// The connection's send queue (TCP on Linux; see [`super::liveness`]).
    pub fn send_probe(&self) -> Option<Arc<SendProbe>> {
        self.probe.clone()
    }

    /// Closes the connection's writing side now, queued lines dropped (see
    /// [`Writer::abort`]).
    pub fn abort(&self) {
        self.writer.abort();
    }
}

/// Connects and splits into a reader and a sender.
pub async fn connect(
    endpoint: &Endpoint,
    max_pending: usize,
) -> std::io::Result<(NsReader<tokio::io::ReadHalf<Stream>>, NsSender)> {
    let stream = endpoint.connect().await?;
    let probe = stream.send_probe().map(Arc::new);
    let (r, w) = tokio::io::split(stream);
    Ok((
        NsReader::new(r, MAX_LINE),
        NsSender {
            writer: Writer::spawn(w, max_pending),
            probe,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events read, then how the stream ended.
    type Outcome = (Vec<String>, Option<String>);

    /// What a reader makes of `wire` delivered in pieces of `piece` bytes.
    async fn read_in_pieces(wire: &[u8], piece: usize, max: usize) -> Outcome {
        let (mut client, server) = tokio::io::duplex(piece);
        let bytes = wire.to_vec();
        let feeder = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in bytes.chunks(piece) {
                if client.write_all(chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut r = NsReader::new(server, max);
        let mut events = Vec::new();
        let end = loop {
            match r.recv().await {
                Ok(Some(m)) => events.push(m.event()),
                Ok(None) => break None,
                Err(e) => break Some(format!("{:?}", e.kind())),
            }
        };
        drop(r);
        let _ = feeder.await;
        (events, end)
    }

    /// Found by fuzzing (nssocket_line): before the first message, the
    /// tail of an over-long line that arrived in pieces was taken for the
    /// start of a line (the peer refused as "not nssocket"), and the line
    /// after such a tail was not checked at all; in one piece it was the
    /// other way round. The outcome no longer depends on the pieces.
    #[tokio::test]
    async fn over_long_lines_read_the_same_in_any_pieces() {
        let long = "x".repeat(100);
        let cases: [(String, Outcome); 4] = [
            // dropped, then the next line is read
            (
                format!("[\"{long}\",1]\n[\"ask\",null]\n"),
                (vec!["ask".into()], None),
            ),
            // dropped, then a line that is not nssocket
            (
                format!("[\"{long}\",1]\n]\n[\"ask\",null]\n"),
                (vec![], Some("InvalidData".into())),
            ),
            // dropped, then the start of a line that is not nssocket
            (
                format!("[\"{long}\",1]\nj:"),
                (vec![], Some("InvalidData".into())),
            ),
            // a blank start, then not nssocket within the over-long line
            (
                format!("{}HTTP/1.1 400\n[\"ask\",null]\n", " ".repeat(60)),
                (vec![], Some("InvalidData".into())),
            ),
        ];
        for (wire, want) in &cases {
            for piece in [1, 10, 64, wire.len()] {
                assert_eq!(
                    &read_in_pieces(wire.as_bytes(), piece, 48).await,
                    want,
                    "{wire:?} in pieces of {piece}"
                );
            }
        }
    }

    /// Each line the reader drops is counted by reason, once, and the count
    /// starts again after it was taken.
    #[tokio::test]
    async fn dropped_lines_are_counted_by_reason() {
        let long = "x".repeat(100);
        let wire =
            format!("[\"ask\",null]\nnot json\n[\"{long}\",1]\n{{}}\n[\"a\",1]\n[\"b\",2]\n");
        let (mut client, server) = tokio::io::duplex(wire.len());
        use tokio::io::AsyncWriteExt;
        client.write_all(wire.as_bytes()).await.unwrap();
        drop(client);
        let mut r = NsReader::new(server, 48);
        assert_eq!(r.recv().await.unwrap().unwrap().event(), "ask");
        assert_eq!(r.take_skipped(), Skipped::default());
        assert_eq!(r.recv().await.unwrap().unwrap().event(), "a");
        let want = Skipped {
            malformed: 2,
            too_long: 1,
        };
        assert_eq!(r.take_skipped(), want);
        assert_eq!(r.take_skipped(), Skipped::default());
        assert_eq!(r.recv().await.unwrap().unwrap().event(), "b");
        assert!(r.recv().await.unwrap().is_none());
        assert_eq!(r.take_skipped(), Skipped::default());
    }
}
