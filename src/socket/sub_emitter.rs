//! pm2-axon `sub-emitter`: connects to a `pub`/`pub-emitter` (PM2's
//! `pub.sock`) and hands each frame to the subscriptions whose topic pattern
//! matches its first argument, with the pattern's captures (docs/protocols.md
//! §2.3). Each subscription is a bounded queue: when its consumer falls
//! behind, new events for it are dropped and counted, never buffered
//! without limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::backoff::Backoff;
use super::connection::AmpReader;
use super::endpoint::Endpoint;
use super::req::ConnState;
use crate::protocol::amp::Arg;
use crate::protocol::topic::Pattern;

/// One delivered event: the topic, the pattern's captures, the other args.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: String,
    pub captures: Vec<String>,
    pub args: Vec<Arg>,
}

struct Subscription {
    pattern: Pattern,
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

/// The receiving end of one subscription.
pub struct Subscriber {
    pub rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
}

impl Subscriber {
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// Waits for at least one event, then takes every event queued, up to
    /// `limit`, into `buf`; 0 once the socket is gone. Handling a burst in
    /// one go lets the consumers downstream batch their writes too.
    pub async fn recv_many(&mut self, buf: &mut Vec<Event>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }

    /// Events dropped because this subscriber's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
pub struct SubEmitter {
    subs: Arc<Mutex<Vec<Subscription>>>,
    state: watch::Receiver<ConnState>,
    task: Arc<tokio::task::AbortHandle>,
}

impl SubEmitter {
    pub fn connect(endpoint: Endpoint, max_frame: usize) -> SubEmitter {
        let subs: Arc<Mutex<Vec<Subscription>>> = Arc::default();
        let (state_tx, state) = watch::channel(ConnState::default());
        let s = subs.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Backoff::axon();
            let mut generation = 0;
            loop {
                match endpoint.connect().await {
                    Ok(stream) => {
                        backoff.reset();
                        generation += 1;
                        let _ = state_tx.send(ConnState {
                            connected: true,
                            generation,
                        });
                        tracing::debug!(%endpoint, "sub-emitter connected");
                        let mut reader = AmpReader::new(stream, max_frame);
                        loop {
                            match reader.read_message().await {
                                Ok(Some(msg)) => dispatch(&s, msg),
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::debug!(%endpoint, error = %e, "sub-emitter connection lost");
                                    break;
                                }
                            }
                        }
                        let _ = state_tx.send(ConnState {
                            connected: false,
                            generation,
                        });
                    }
                    Err(e) => tracing::trace!(%endpoint, error = %e, "sub-emitter connect failed"),
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
        SubEmitter {
            subs,
            state,
            task: Arc::new(task.abort_handle()),
        }
    }

    /// Subscribes to `pattern` (`*` wildcards) with a queue of `capacity`.
    pub fn subscribe(&self, pattern: &str, capacity: usize) -> Subscriber {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscription {
                pattern: Pattern::new(pattern),
                tx,
                dropped: dropped.clone(),
            });
        Subscriber { rx, dropped }
    }

    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.state.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.state.borrow().connected
    }

    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        ConnState::wait_connected(&self.state, timeout).await
    }

    pub fn close(&self) {
        self.task.abort();
    }
}

/// A bus frame → its topic (the first argument) and the other arguments;
/// `None` for an empty frame or a raw-buffer topic.
pub(crate) fn split_topic(mut msg: Vec<Arg>) -> Option<(String, Vec<Arg>)> {
    if msg.is_empty() {
        return None;
    }
    let topic = match msg.remove(0) {
        Arg::Str(s) => s,
        // JS would String() it; PM2 always sends string topics.
        other => other.into_value()?.to_string(),
    };
    Some((topic, msg))
}

fn dispatch(subs: &Mutex<Vec<Subscription>>, msg: Vec<Arg>) {
    let Some((topic, msg)) = split_topic(msg) else {
        return;
    };
    let mut subs = subs.lock().unwrap_or_else(|e| e.into_inner());
    subs.retain(|s| !s.tx.is_closed());
    let matching: Vec<(&Subscription, Vec<String>)> = subs
        .iter()
        .filter_map(|s| s.pattern.captures(&topic).map(|c| (s, c)))
        .collect();
    // The last subscriber gets the message itself: no copy of its
    // arguments in the usual case of a single subscription.
    let mut msg = Some(msg);
    let last = matching.len().saturating_sub(1);
    for (i, (sub, captures)) in matching.into_iter().enumerate() {
        let args = if i == last {
            msg.take().unwrap_or_default()
        } else {
            msg.clone().unwrap_or_default()
        };
        let ev = Event {
            topic: topic.clone(),
            captures,
            args,
        };
        if sub.tx.try_send(ev).is_err() {
            sub.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
