//! pm2-axon `req` socket (client side of request/reply), as the agent uses it
//! on `rpc.sock` and `interactor.sock`.
//!
//! Each request gets a string id `"<pid>:<n>"` appended as its last AMP
//! argument; the `rep` peer echoes it. Unlike axon, every request has a
//! deadline, the pending table and the offline queue are bounded, and
//! requests still pending when a connection drops fail at once instead of
//! leaking. The socket reconnects on axon's schedule and publishes each new
//! connection on a `watch` channel, so layers above (rpc) can redo their
//! discovery after every reconnect.
//!
//! Deadlines cost no wakeups: the caller's own future times out at the
//! request's deadline (one timer per request, cancelled when the reply
//! comes), and the socket's task only forgets requests whose deadline has
//! passed when it is awake anyway (a new request, a full table). An idle
//! socket never wakes up.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::connection::{AmpReader, Writer};
use super::endpoint::Endpoint;
use crate::protocol::amp::{self, Arg, Message};

#[derive(Debug, Clone)]
pub struct ReqOptions {
    /// Default deadline of a request.
    pub timeout: Duration,
    /// Requests waiting for a connection.
    pub max_queued: usize,
    /// Requests sent and awaiting a reply.
    pub max_pending: usize,
    pub max_frame: usize,
    /// Message-id prefix; axon uses the pid.
    pub identity: String,
    /// Keep `j:` reply arguments as unparsed text (`Arg::JsonText`).
    pub lazy_json: bool,
}

impl Default for ReqOptions {
    fn default() -> Self {
        ReqOptions {
            timeout: Duration::from_secs(10),
            max_queued: 1024,
            max_pending: 1024,
            max_frame: amp::DEFAULT_MAX_FRAME,
            identity: std::process::id().to_string(),
            lazy_json: false,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ReqError {
    #[error("request timed out")]
    Timeout,
    #[error("connection lost before the reply")]
    Disconnected,
    #[error("too many requests waiting ({0})")]
    Busy(usize),
    #[error("socket closed")]
    Closed,
    #[error("cannot encode request: {0}")]
    Encode(String),
}

/// Connection state, with a generation that grows on every new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnState {
    pub connected: bool,
    pub generation: u64,
}

impl ConnState {
    /// Waits until `state` reports a connection, or for `timeout`.
    pub async fn wait_connected(state: &watch::Receiver<ConnState>, timeout: Duration) -> bool {
        let mut st = state.clone();
        tokio::time::timeout(timeout, st.wait_for(|s| s.connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

type ReplyTx = oneshot::Sender<Result<Message, ReqError>>;

enum Command {
    Send {
        args: Vec<Arg>,
        deadline: Instant,
        reply: ReplyTx,
    },
    Close,
}

/// Handle to a req socket; cheap to clone. The socket's task ends when
/// [`ReqSocket::close`] is called or every handle is dropped.
#[derive(Clone)]
pub struct ReqSocket {
    tx: mpsc::Sender<Command>,
    state: watch::Receiver<ConnState>,
    timeout: Duration,
}

impl ReqSocket {
    pub fn connect(endpoint: Endpoint, opts: ReqOptions) -> ReqSocket {
        let (tx, rx) = mpsc::channel(256);
        let (state_tx, state) = watch::channel(ConnState::default());
        let timeout = opts.timeout;
        tokio::spawn(Actor::new(endpoint, opts, rx, state_tx).run());
        ReqSocket { tx, state, timeout }
    }

    /// Sends `args` and waits for the reply's arguments (id removed).
    pub async fn request(&self, args: Vec<Arg>) -> Result<Message, ReqError> {
        self.request_with_timeout(args, self.timeout).await
    }

    pub async fn request_with_timeout(
        &self,
        args: Vec<Arg>,
        timeout: Duration,
    ) -> Result<Message, ReqError> {
        let (reply, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        self.tx
            .send(Command::Send {
                args,
                deadline,
                reply,
            })
            .await
            .map_err(|_| ReqError::Closed)?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ReqError::Closed),
            Err(_) => Err(ReqError::Timeout),
        }
    }

    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.state.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.state.borrow().connected
    }

    /// Waits until connected, or for `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        ConnState::wait_connected(&self.state, timeout).await
    }

    pub async fn close(&self) {
        let _ = self.tx.send(Command::Close).await;
    }
}

struct Pending {
    reply: ReplyTx,
    deadline: Instant,
}

struct Actor {
    endpoint: Endpoint,
    opts: ReqOptions,
    rx: mpsc::Receiver<Command>,
    state: watch::Sender<ConnState>,
    queued: VecDeque<(Vec<Arg>, Instant, ReplyTx)>,
    pending: HashMap<String, Pending>,
    /// Earliest deadline in `queued` / `pending` (or earlier: an answered
    /// request is not looked for), so the tables are swept only when
    /// something in them may have expired.
    earliest_queued: Earliest,
    earliest_pending: Earliest,
    counter: u64,
}

/// A lower bound on the deadlines of a table: `None` when the table is
/// empty. Sweeping when it has passed keeps stale entries from lingering
/// while traffic goes on, without a timer of its own.
#[derive(Debug, Clone, Copy, Default)]
struct Earliest(Option<Instant>);

impl Earliest {
    fn of(deadlines: impl Iterator<Item = Instant>) -> Earliest {
        Earliest(deadlines.min())
    }

    fn note(&mut self, deadline: Instant) {
        self.0 = Some(self.0.map_or(deadline, |d| d.min(deadline)));
    }

    fn is_due(&self) -> bool {
        self.0.is_some_and(|d| d <= Instant::now())
    }
}

enum Phase {
    Closed,
    Disconnected,
}

impl Actor {
    fn new(
        endpoint: Endpoint,
        opts: ReqOptions,
        rx: mpsc::Receiver<Command>,
        state: watch::Sender<ConnState>,
    ) -> Self {
        Actor {
            endpoint,
            opts,
            rx,
            state,
            queued: VecDeque::new(),
            pending: HashMap::new(),
            earliest_queued: Earliest::default(),
            earliest_pending: Earliest::default(),
            counter: 0,
        }
    }

    async fn run(mut self) {
        let mut backoff = Backoff::axon();
        let mut generation = 0;
        let mut delay = Duration::ZERO;
        loop {
            // Connecting: keep accepting (queueing) requests meanwhile.
            let stream = {
                let endpoint = self.endpoint.clone();
                let attempt = async {
                    tokio::time::sleep(delay).await;
                    endpoint.connect().await
                };
                tokio::pin!(attempt);
                loop {
                    tokio::select! {
                        res = &mut attempt => break res,
                        cmd = self.rx.recv() => match cmd {
                            Some(Command::Send { args, deadline, reply }) => self.enqueue(args, deadline, reply),
                            Some(Command::Close) | None => return self.shutdown(),
                        },
                    }
                }
            };
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    delay = backoff.next_delay();
                    tracing::trace!(endpoint = %self.endpoint, error = %e, ?delay, "req connect failed");
                    continue;
                }
            };
            backoff.reset();
            generation += 1;
            tracing::debug!(endpoint = %self.endpoint, generation, "req connected");
            let (read, write) = tokio::io::split(stream);
            let writer = Writer::spawn(write, 64 * 1024 * 1024);
            let mut reader =
                AmpReader::new(read, self.opts.max_frame).lazy_json(self.opts.lazy_json);
            let _ = self.state.send(ConnState {
                connected: true,
                generation,
            });
            // Flush what waited for a connection (axon's queue plugin).
            self.earliest_queued = Earliest::default();
            while let Some((args, deadline, reply)) = self.queued.pop_front() {
                if deadline > Instant::now() {
                    self.transmit(&writer, args, deadline, reply);
                }
            }
            let phase = self.connected(&writer, &mut reader).await;
            let _ = self.state.send(ConnState {
                connected: false,
                generation,
            });
            for (_, p) in self.pending.drain() {
                let _ = p.reply.send(Err(ReqError::Disconnected));
            }
            self.earliest_pending = Earliest::default();
            if let Phase::Closed = phase {
                return self.shutdown();
            }
            delay = backoff.next_delay();
        }
    }

    async fn connected<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        writer: &Writer,
        reader: &mut AmpReader<R>,
    ) -> Phase {
        loop {
            tokio::select! {
                msg = reader.read_message() => match msg {
                    Ok(Some(mut msg)) => {
                        let Some(Arg::Str(id)) = msg.pop() else {
                            tracing::debug!("reply without a string id ignored");
                            continue;
                        };
                        match self.pending.remove(&id) {
                            Some(p) => {
                                let _ = p.reply.send(Ok(msg));
                                if self.pending.is_empty() {
                                    self.earliest_pending = Earliest::default();
                                }
                            }
                            None => tracing::debug!(%id, "reply for an unknown or expired request"),
                        }
                    }
                    Ok(None) => return Phase::Disconnected,
                    Err(e) => {
                        tracing::debug!(endpoint = %self.endpoint, error = %e, "req connection lost");
                        return Phase::Disconnected;
                    }
                },
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Send { args, deadline, reply }) => self.transmit(writer, args, deadline, reply),
                    Some(Command::Close) | None => return Phase::Closed,
                },
                _ = writer.closed() => return Phase::Disconnected,
            }
        }
    }

    fn enqueue(&mut self, args: Vec<Arg>, deadline: Instant, reply: ReplyTx) {
        if self.queued.len() >= self.opts.max_queued || self.earliest_queued.is_due() {
            self.expire_queued();
        }
        if self.queued.len() >= self.opts.max_queued {
            let _ = reply.send(Err(ReqError::Busy(self.queued.len())));
            return;
        }
        self.earliest_queued.note(deadline);
        self.queued.push_back((args, deadline, reply));
    }

    fn transmit(&mut self, writer: &Writer, mut args: Vec<Arg>, deadline: Instant, reply: ReplyTx) {
        if self.pending.len() >= self.opts.max_pending || self.earliest_pending.is_due() {
            self.expire_pending();
        }
        if self.pending.len() >= self.opts.max_pending {
            let _ = reply.send(Err(ReqError::Busy(self.pending.len())));
            return;
        }
        let id = format!("{}:{}", self.opts.identity, self.counter);
        self.counter += 1;
        args.push(Arg::Str(id.clone()));
        let mut buf = BytesMut::new();
        if let Err(e) = amp::encode(&args, &mut buf) {
            let _ = reply.send(Err(ReqError::Encode(e.to_string())));
            return;
        }
        if writer.send(buf.freeze()).is_err() {
            let _ = reply.send(Err(ReqError::Disconnected));
            return;
        }
        self.earliest_pending.note(deadline);
        self.pending.insert(id, Pending { reply, deadline });
    }

    /// Forgets queued requests past their deadline (their callers already
    /// got [`ReqError::Timeout`]) or given up by their caller.
    fn expire_queued(&mut self) {
        let now = Instant::now();
        self.queued.retain(|(_, d, r)| *d > now && !r.is_closed());
        self.earliest_queued = Earliest::of(self.queued.iter().map(|(_, d, _)| *d));
    }

    /// Same for requests sent and still unanswered.
    fn expire_pending(&mut self) {
        let now = Instant::now();
        self.pending
            .retain(|_, p| p.deadline > now && !p.reply.is_closed());
        self.earliest_pending = Earliest::of(self.pending.values().map(|p| p.deadline));
    }

    fn shutdown(mut self) {
        for (_, _, reply) in self.queued.drain(..) {
            let _ = reply.send(Err(ReqError::Closed));
        }
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(ReqError::Closed));
        }
        let gen = self.state.borrow().generation;
        let _ = self.state.send(ConnState {
            connected: false,
            generation: gen,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::endpoint::Listener;
    use serde_json::json;

    fn tmp_sock(name: &str) -> Endpoint {
        let dir = std::env::temp_dir().join(format!("ka-req-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        crate::socket::endpoint::test_endpoint(&dir, "s.sock")
    }

    /// A minimal rep peer that answers `[x, id]` with `[x, id]`, one
    /// connection at a time; aborting it closes the connection.
    async fn echo_server(ep: Endpoint) -> tokio::task::JoinHandle<()> {
        let l = Listener::bind(&ep).await.unwrap();
        tokio::spawn(async move {
            loop {
                let s = l.accept().await.unwrap();
                let (r, w) = tokio::io::split(s);
                let w = Writer::spawn(w, 1 << 20);
                let mut r = AmpReader::new(r, 1 << 20);
                while let Ok(Some(msg)) = r.read_message().await {
                    if msg[0] == Arg::str("silence") {
                        continue;
                    }
                    w.send(amp::encode_to_bytes(&msg).unwrap()).unwrap();
                }
            }
        })
    }

    async fn all<T: Send + 'static>(
        futs: Vec<impl std::future::Future<Output = T> + Send + 'static>,
    ) -> Vec<T> {
        let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn queues_until_connected_then_correlates() {
        let ep = tmp_sock("q");
        let req = ReqSocket::connect(
            ep.clone(),
            ReqOptions {
                identity: "rust".into(),
                ..Default::default()
            },
        );
        let early = {
            let req = req.clone();
            tokio::spawn(async move { req.request(vec![json!({"n":1}).into()]).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        let server = echo_server(ep).await;
        assert_eq!(
            early.await.unwrap().unwrap(),
            vec![Arg::Json(json!({"n":1}))]
        );
        let (a, b) = tokio::join!(
            req.request(vec![Arg::str("a")]),
            req.request(vec![Arg::str("b")])
        );
        assert_eq!(a.unwrap(), vec![Arg::str("a")]);
        assert_eq!(b.unwrap(), vec![Arg::str("b")]);
        server.abort();
    }

    #[tokio::test]
    async fn timeout_and_busy() {
        let ep = tmp_sock("t");
        let server = echo_server(ep.clone()).await;
        let req = ReqSocket::connect(
            ep,
            ReqOptions {
                timeout: Duration::from_millis(100),
                max_pending: 2,
                ..Default::default()
            },
        );
        assert!(req.wait_connected(Duration::from_secs(2)).await);
        assert_eq!(
            req.request(vec![Arg::str("silence")]).await,
            Err(ReqError::Timeout)
        );
        // The expired entry is forgotten at the next request, so the table
        // does not fill up for good.
        let r = tokio::join!(
            req.request(vec![Arg::str("silence")]),
            req.request(vec![Arg::str("silence")]),
            req.request(vec![Arg::str("silence")])
        );
        let busy = [&r.0, &r.1, &r.2]
            .iter()
            .filter(|x| matches!(x, Err(ReqError::Busy(_))))
            .count();
        assert_eq!(busy, 1);
        assert_eq!(
            req.request_with_timeout(vec![Arg::str("ok")], Duration::from_secs(1))
                .await
                .unwrap(),
            vec![Arg::str("ok")]
        );
        server.abort();
    }

    #[tokio::test]
    async fn offline_queue_is_bounded() {
        let ep = tmp_sock("b");
        let req = ReqSocket::connect(
            ep,
            ReqOptions {
                max_queued: 3,
                timeout: Duration::from_millis(300),
                ..Default::default()
            },
        );
        let results = all((0..5)
            .map(|i| {
                let req = req.clone();
                async move { req.request(vec![Arg::Json(json!(i))]).await }
            })
            .collect())
        .await;
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(ReqError::Busy(_))))
                .count(),
            2
        );
        assert_eq!(
            results
                .iter()
                .filter(|r| matches!(r, Err(ReqError::Timeout)))
                .count(),
            3
        );
    }

    /// An offline request that timed out frees its queue slot for the next
    /// one, which then goes out once connected.
    #[tokio::test]
    async fn expired_offline_requests_free_their_slot() {
        let ep = tmp_sock("e");
        let req = ReqSocket::connect(
            ep.clone(),
            ReqOptions {
                max_queued: 1,
                ..Default::default()
            },
        );
        assert_eq!(
            req.request_with_timeout(vec![Arg::str("a")], Duration::from_millis(50))
                .await,
            Err(ReqError::Timeout)
        );
        let next = {
            let req = req.clone();
            tokio::spawn(async move {
                req.request_with_timeout(vec![Arg::str("b")], Duration::from_secs(10))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let server = echo_server(ep).await;
        assert_eq!(next.await.unwrap(), Ok(vec![Arg::str("b")]));
        server.abort();
    }

    #[tokio::test]
    async fn pending_fail_fast_on_disconnect_then_reconnect() {
        let ep = tmp_sock("d");
        let server = echo_server(ep.clone()).await;
        let req = ReqSocket::connect(
            ep.clone(),
            ReqOptions {
                timeout: Duration::from_secs(30),
                ..Default::default()
            },
        );
        let mut st = req.state();
        assert!(req.wait_connected(Duration::from_secs(2)).await);
        let g1 = st.borrow_and_update().generation;
        let waiting = {
            let req = req.clone();
            tokio::spawn(async move { req.request(vec![Arg::str("silence")]).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.abort();
        let _ = server.await;
        // Fails now, not after its 30 s deadline.
        let r = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("failed fast")
            .unwrap();
        assert_eq!(r, Err(ReqError::Disconnected));
        let _server2 = echo_server(ep.clone()).await;
        tokio::time::timeout(
            Duration::from_secs(5),
            st.wait_for(|s| s.connected && s.generation > g1),
        )
        .await
        .expect("reconnected")
        .unwrap();
        assert_eq!(
            req.request(vec![Arg::str("again")]).await.unwrap(),
            vec![Arg::str("again")]
        );
        req.close().await;
        assert_eq!(
            req.request(vec![Arg::str("x")]).await,
            Err(ReqError::Closed)
        );
    }
}
