//! pm2-axon `pub` socket: every message goes to every connected peer, and
//! nothing is queued for absent peers (axon drops those messages too).
//!
//! The agent's legacy push channel *connects* a pub socket to the backend,
//! so this socket can connect (one peer, reconnecting on axon's schedule) as
//! well as bind (any number of peers). Each peer has a bounded write queue;
//! [`PubSocket::buffered_bytes`] is axon's `bufferSize`, which the Axon
//! transporter watches to shed load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::connection::{WriteError, Writer};
use super::endpoint::{Endpoint, EndpointError, Listener};
use super::liveness::SendProbe;
use crate::protocol::amp::{self, Arg, EncodeError};

#[derive(Debug, thiserror::Error)]
pub enum PubError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("no connected peer")]
    NoPeer,
}

#[derive(Default)]
struct Shared {
    peers: Mutex<Vec<Writer>>,
    dropped: AtomicU64,
    /// What a peer sent, described: a pm2-axon `sub` never writes, so any
    /// byte means the endpoint is something else (an HTTP server, TLS…).
    foreign: Mutex<Option<String>>,
    /// Why reading the peer failed (e.g. the kernel's keepalive gave up).
    read_error: Mutex<Option<std::io::ErrorKind>>,
}

#[derive(Clone)]
pub struct PubSocket {
    shared: Arc<Shared>,
    connected: watch::Receiver<bool>,
    task: Arc<tokio::task::AbortHandle>,
    max_pending: usize,
    /// The connection's send queue (`connect_once` over TCP, on Linux).
    probe: Option<Arc<SendProbe>>,
}

impl PubSocket {
    /// Connects to a subscriber (axon `pub.connect`), reconnecting forever.
    pub fn connect(endpoint: Endpoint, max_pending: usize) -> PubSocket {
        let shared = Arc::new(Shared::default());
        let (tx, connected) = watch::channel(false);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::axon();
            loop {
                match endpoint.connect().await {
                    Ok(stream) => {
                        backoff.reset();
                        let (mut r, w) = tokio::io::split(stream);
                        let writer = Writer::spawn(w, max_pending);
                        s.peers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(writer.clone());
                        let _ = tx.send(true);
                        tracing::debug!(%endpoint, "pub connected");
                        // A sub never writes; reading only detects the close.
                        let mut sink = [0u8; 512];
                        loop {
                            tokio::select! {
                                n = tokio::io::AsyncReadExt::read(&mut r, &mut sink) => {
                                    if !matches!(n, Ok(n) if n > 0) { break; }
                                }
                                _ = writer.closed() => break,
                            }
                        }
                        s.peers.lock().unwrap_or_else(|e| e.into_inner()).clear();
                        let _ = tx.send(false);
                        tracing::debug!(%endpoint, "pub disconnected");
                    }
                    Err(e) => tracing::trace!(%endpoint, error = %e, "pub connect failed"),
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
        PubSocket {
            shared,
            connected,
            task: Arc::new(task.abort_handle()),
            max_pending,
            probe: None,
        }
    }

    /// Connects once to a subscriber, without reconnecting: the connection
    /// is up until the peer closes it or sends anything (a `sub` never
    /// does; [`PubSocket::foreign`] then says what it sent). The caller
    /// decides when to dial again.
    pub async fn connect_once(
        endpoint: &Endpoint,
        max_pending: usize,
    ) -> std::io::Result<PubSocket> {
        let stream = endpoint.connect().await?;
        let probe = stream.send_probe().map(Arc::new);
        let shared = Arc::new(Shared::default());
        let (tx, connected) = watch::channel(true);
        let (mut r, w) = tokio::io::split(stream);
        let writer = Writer::spawn(w, max_pending);
        shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(writer.clone());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            tokio::select! {
                n = tokio::io::AsyncReadExt::read(&mut r, &mut buf) => {
                    match n {
                        Ok(n @ 1..) => {
                            *s.foreign.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(crate::protocol::sniff::describe(&buf[..n]));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            *s.read_error.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(e.kind());
                        }
                    }
                }
                _ = writer.closed() => {}
            }
            s.peers.lock().unwrap_or_else(|e| e.into_inner()).clear();
            writer.abort();
            let _ = tx.send(false);
        });
        Ok(PubSocket {
            shared,
            connected,
            task: Arc::new(task.abort_handle()),
            max_pending,
            probe,
        })
    }

    /// What the peer sent, if it sent anything (see `connect_once`).
    pub fn foreign(&self) -> Option<String> {
        self.shared
            .foreign
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why reading the peer failed, if it did (see `connect_once`).
    pub fn read_error(&self) -> Option<std::io::ErrorKind> {
        *self
            .shared
            .read_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The send queue of a `connect_once` TCP connection (Linux).
    pub fn send_probe(&self) -> Option<Arc<SendProbe>> {
        self.probe.clone()
    }

    /// Binds and accepts any number of subscribers.
    pub async fn bind(endpoint: &Endpoint, max_pending: usize) -> Result<PubSocket, EndpointError> {
        let listener = Listener::bind(endpoint).await?;
        let shared = Arc::new(Shared::default());
        let (tx, connected) = watch::channel(false);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let stream = listener.accept_retrying().await;
                let (mut r, w) = tokio::io::split(stream);
                let writer = Writer::spawn(w, max_pending);
                s.peers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(writer.clone());
                let _ = tx.send(true);
                let s2 = s.clone();
                let tx2 = tx.clone();
                tokio::spawn(async move {
                    let mut sink = [0u8; 512];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut r, &mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let mut peers = s2.peers.lock().unwrap_or_else(|e| e.into_inner());
                    peers.retain(|p| !p.is_closed() && !Arc::ptr_eq(&p.written, &writer.written));
                    let _ = tx2.send(!peers.is_empty());
                });
            }
        });
        Ok(PubSocket {
            shared,
            connected,
            task: Arc::new(task.abort_handle()),
            max_pending,
            probe: None,
        })
    }

    fn peers(&self) -> Vec<Writer> {
        self.shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends one frame to every peer. Messages with no peer, or refused by a
    /// full peer queue, are dropped and counted (like axon, but bounded).
    pub fn send(&self, args: &[Arg]) -> Result<usize, PubError> {
        let bytes = amp::encode_to_bytes(args)?;
        Ok(self.send_bytes(bytes))
    }

    fn send_bytes(&self, bytes: Bytes) -> usize {
        let peers = self.peers();
        if peers.is_empty() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        let mut sent = 0;
        for p in peers {
            match p.send(bytes.clone()) {
                Ok(()) => sent += 1,
                Err(WriteError::Full(_)) | Err(WriteError::Closed) => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        sent
    }

    /// axon `sendv2`: one argument, resolved once every peer wrote it.
    pub async fn send_and_wait(&self, args: &[Arg]) -> Result<(), PubError> {
        let bytes = amp::encode_to_bytes(args)?;
        let peers = self.peers();
        if peers.is_empty() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(PubError::NoPeer);
        }
        for p in peers {
            if p.send_and_wait(bytes.clone()).await.is_err() {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Bytes queued for peers and not yet written (axon's `bufferSize`).
    pub fn buffered_bytes(&self) -> usize {
        self.peers().iter().map(Writer::pending_bytes).sum()
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Stops reconnecting and drops every peer at once, queued frames
    /// included (axon's `close()` destroys its sockets the same way).
    pub fn close(&self) {
        self.task.abort();
        let peers =
            std::mem::take(&mut *self.shared.peers.lock().unwrap_or_else(|e| e.into_inner()));
        for p in peers {
            p.abort();
        }
    }
}
