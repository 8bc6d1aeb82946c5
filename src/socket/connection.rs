//! One AMP connection: a buffered reader that yields whole messages, and a
//! writer task fed by a bounded queue, so a slow peer never blocks the task
//! that produces frames and never makes memory grow without limit.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::amp::{self, FrameError, Message};

/// Spare room guaranteed before each read.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The stream cannot be resynchronised (argc 0, absurd length).
    #[error("unrecoverable AMP stream: {0}")]
    Protocol(FrameError),
}

/// Reads AMP messages from a byte stream.
pub struct AmpReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame: usize,
    /// Keep `j:` arguments as text ([`amp::parse_lazy`]).
    lazy_json: bool,
    /// Frames skipped because their body was bad (counted, logged).
    pub skipped: u64,
    skip_log: crate::logging::Throttle,
}

impl<R: AsyncRead + Unpin> AmpReader<R> {
    pub fn new(inner: R, max_frame: usize) -> Self {
        AmpReader {
            inner,
            buf: BytesMut::with_capacity(4096),
            max_frame,
            lazy_json: false,
            skipped: 0,
            skip_log: Default::default(),
        }
    }

    /// Leaves `j:` arguments unparsed ([`crate::protocol::amp::Arg::JsonText`]).
    pub fn lazy_json(mut self, lazy: bool) -> Self {
        self.lazy_json = lazy;
        self
    }

    /// The next message, `Ok(None)` at a clean end of stream. Frames with a
    /// bad body are logged and skipped; the stream stays usable. Cancel-safe:
    /// partial input stays in the buffer.
    pub async fn read_message(&mut self) -> Result<Option<Message>, ConnError> {
        loop {
            match amp::check(&self.buf, self.max_frame) {
                Ok(len) => {
                    let frame = self.buf.split_to(len);
                    let parsed = if self.lazy_json {
                        amp::parse_lazy_shared(&frame.freeze())
                    } else {
                        amp::parse(&frame)
                    };
                    match parsed {
                        Ok(msg) => return Ok(Some(msg)),
                        Err(e) => {
                            self.skipped += 1;
                            if let Some(n) = self.skip_log.hit("malformed", 1) {
                                tracing::warn!(error = %e, skipped = self.skipped, "{n} malformed AMP frames dropped since the last report");
                            }
                        }
                    }
                    continue;
                }
                Err(FrameError::Incomplete) => {}
                Err(e) => return Err(ConnError::Protocol(e)),
            }
            // A full BytesMut would only grow by 64 bytes per read: make room
            // for a real chunk, or a big frame takes thousands of syscalls.
            self.buf.reserve(READ_CHUNK);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-frame",
                )));
            }
        }
    }
}

/// One queued write; `done` fires once the bytes were handed to the kernel.
struct Outgoing {
    bytes: Bytes,
    done: Option<oneshot::Sender<io::Result<()>>>,
}

/// Why a write was not queued.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WriteError {
    #[error("connection closed")]
    Closed,
    #[error("write queue full ({0} bytes pending)")]
    Full(usize),
}

/// Handle to a connection's writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Outgoing>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    pub written: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
}

impl Writer {
    /// Spawns the task that writes queued buffers to `sink` in order. At most
    /// `max_pending` bytes wait in the queue; the task ends when every
    /// `Writer` is dropped or the sink fails.
    pub fn spawn<W: AsyncWrite + Unpin + Send + 'static>(
        mut sink: W,
        max_pending: usize,
    ) -> Writer {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(1024);
        let pending = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (p, w) = (pending.clone(), written.clone());
        let task = tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let n = out.bytes.len();
                let res = sink.write_all(&out.bytes).await;
                p.fetch_sub(n, Ordering::Relaxed);
                let failed = res.is_err();
                if !failed {
                    w.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(done) = out.done {
                    let _ = done.send(res);
                }
                if failed {
                    break;
                }
            }
            // Release what is still queued so `pending` stays truthful.
            rx.close();
            while let Ok(out) = rx.try_recv() {
                p.fetch_sub(out.bytes.len(), Ordering::Relaxed);
            }
            let _ = sink.shutdown().await;
        });
        Writer {
            tx,
            pending,
            max_pending,
            written,
            task: task.abort_handle(),
        }
    }

    /// Stops the writer task now, dropping what is queued and the sink. A
    /// peer that stopped reading keeps `write_all` pending forever; without
    /// this, closing such a connection would leave the task, its queue and
    /// the socket alive until the peer reads again.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Queues bytes without waiting.
    pub fn send(&self, bytes: Bytes) -> Result<(), WriteError> {
        self.enqueue(bytes, None)
    }

    /// Queues bytes and waits until they were written (pm2-axon `sendv2`).
    pub async fn send_and_wait(&self, bytes: Bytes) -> Result<(), WriteError> {
        let (done, rx) = oneshot::channel();
        self.enqueue(bytes, Some(done))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(WriteError::Closed),
        }
    }

    fn enqueue(
        &self,
        bytes: Bytes,
        done: Option<oneshot::Sender<io::Result<()>>>,
    ) -> Result<(), WriteError> {
        let n = bytes.len();
        let now = self.pending.load(Ordering::Relaxed);
        if now > 0 && now + n > self.max_pending {
            return Err(WriteError::Full(now));
        }
        self.pending.fetch_add(n, Ordering::Relaxed);
        self.tx.try_send(Outgoing { bytes, done }).map_err(|e| {
            self.pending.fetch_sub(n, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    WriteError::Full(self.pending.load(Ordering::Relaxed))
                }
                mpsc::error::TrySendError::Closed(_) => WriteError::Closed,
            }
        })
    }

    /// Bytes queued and not yet written (axon's `bufferSize`).
    pub fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::amp::Arg;
    use serde_json::json;

    #[tokio::test]
    async fn reads_frames_split_anyhow_and_skips_bad_ones() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&amp::encode_to_bytes(&[Arg::str("a")]).unwrap());
        wire.extend_from_slice(&[0x11, 0, 0, 0, 3, b'j', b':', b'{']); // bad JSON
        wire.extend_from_slice(&amp::encode_to_bytes(&[Arg::str("b"), json!([1]).into()]).unwrap());
        let (mut client, server) = tokio::io::duplex(7);
        let feeder = tokio::spawn(async move {
            for chunk in wire.chunks(3) {
                client.write_all(chunk).await.unwrap();
            }
        });
        let mut r = AmpReader::new(server, 1024);
        assert_eq!(
            r.read_message().await.unwrap().unwrap(),
            vec![Arg::str("a")]
        );
        assert_eq!(
            r.read_message().await.unwrap().unwrap(),
            vec![Arg::str("b"), Arg::Json(json!([1]))]
        );
        assert_eq!(r.skipped, 1);
        feeder.await.unwrap();
        assert!(r.read_message().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_length_closes_instead_of_buffering() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(&[0x11, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        let mut r = AmpReader::new(server, 1024);
        assert!(matches!(
            r.read_message().await,
            Err(ConnError::Protocol(FrameError::TooLarge { .. }))
        ));
    }

    #[tokio::test]
    async fn writer_is_bounded() {
        // A peer that never reads: the duplex buffer fills, then our queue.
        let (client, _server) = tokio::io::duplex(16);
        let w = Writer::spawn(client, 100);
        let mut accepted = 0;
        let mut refused = 0;
        for _ in 0..50 {
            match w.send(Bytes::from_static(&[0u8; 10])) {
                Ok(()) => accepted += 1,
                Err(WriteError::Full(_)) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            tokio::task::yield_now().await;
        }
        assert!(refused > 0, "queue must refuse past its limit");
        assert!(w.pending_bytes() <= 100);
        assert!(accepted >= 10);
    }

    #[tokio::test]
    async fn abort_releases_a_writer_stuck_on_a_silent_peer() {
        let (client, mut server) = tokio::io::duplex(16);
        let w = Writer::spawn(client, 1 << 20);
        w.send(Bytes::from(vec![0u8; 1024])).unwrap();
        tokio::task::yield_now().await;
        assert!(w.pending_bytes() > 0, "stuck: the peer never reads");
        w.abort();
        w.closed().await;
        assert!(w.is_closed());
        assert!(w.send(Bytes::from_static(b"x")).is_err());
        // The sink was dropped: the peer sees the end of the stream after
        // the bytes that made it through.
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut rest)
            .await
            .unwrap();
        assert!(rest.len() <= 16);
    }
}
