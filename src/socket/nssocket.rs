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
    /// Keeps the log of malformed lines bounded (a hostile peer).
    skip_log: crate::logging::Throttle,
}

impl<R: AsyncRead + Unpin> NsReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        NsReader {
            inner,
            buf: BytesMut::with_capacity(4096),
            framer: LineFramer::new(max_line),
            trusted: false,
            skip_log: Default::default(),
        }
    }

    /// The next well-formed message; malformed lines are logged and skipped
    /// (the JS receiver swallows them too). `None` at end of stream. Until
    /// a first message arrived, bytes that cannot begin an nssocket line
    /// (an HTTP status line, a TLS alert) are an `InvalidData` error naming
    /// them.
    pub async fn recv(&mut self) -> std::io::Result<Option<NsMessage>> {
        loop {
            if !self.trusted {
                if let Some(&first) = self.buf.iter().find(|b| !b.is_ascii_whitespace()) {
                    if first != b'[' {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the peer does not speak nssocket: it sent {}",
                                crate::protocol::sniff::describe(&self.buf)
                            ),
                        ));
                    }
                }
            }
            match self.framer.next_line(&mut self.buf) {
                Ok(Some(line)) => match nssocket::decode(&line) {
                    Ok(m) => {
                        self.trusted = true;
                        return Ok(Some(m));
                    }
                    Err(e) => {
                        if let Some(n) = self.skip_log.hit("malformed", 1) {
                            tracing::warn!(error = %e, "{n} malformed nssocket lines dropped since the last report");
                        }
                    }
                },
                Ok(None) => {
                    // A full BytesMut would only grow by 64 bytes per read: make room
                    // for a real chunk, or a big frame takes thousands of syscalls.
                    self.buf.reserve(READ_CHUNK);
                    if self.inner.read_buf(&mut self.buf).await? == 0 {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    if let Some(n) = self.skip_log.hit("too long", 1) {
                        tracing::warn!(error = %e, "{n} nssocket lines dropped since the last report");
                    }
                }
            }
        }
    }
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
