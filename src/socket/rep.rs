//! pm2-axon `rep` socket (server side of request/reply), as the agent serves
//! `interactor.sock`. The last argument of every request is the peer's
//! message id; the reply carries the same id back on the same connection.

use std::sync::Arc;

use tokio::sync::{mpsc, watch, Semaphore};

use super::connection::{AmpReader, Writer};
use super::endpoint::{Endpoint, EndpointError, Listener};
use crate::protocol::amp::{self, Arg, Message};

/// Connections served at once; more are accepted and closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Bytes of replies queued per connection.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// One request and the means to answer it.
pub struct Request {
    pub args: Message,
    pub reply: Replier,
}

/// Answers one request; dropping it without replying leaves the peer's
/// request pending (as in axon), so servers should always reply.
pub struct Replier {
    id: Arg,
    writer: Writer,
}

impl Replier {
    /// Sends `args` followed by the request id. A gone peer drops it.
    pub fn reply(self, mut args: Vec<Arg>) {
        args.push(self.id);
        match amp::encode_to_bytes(&args) {
            Ok(bytes) => {
                if let Err(e) = self.writer.send(bytes) {
                    tracing::debug!(error = %e, "reply dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reply not encodable"),
        }
    }
}

pub struct RepSocket {
    endpoint: Endpoint,
    accept_task: tokio::task::JoinHandle<()>,
    /// Set on close: every connection task ends, closing its peer (as
    /// axon's `rep.close()` destroys its sockets).
    shutdown: watch::Sender<bool>,
}

impl RepSocket {
    /// Binds `endpoint` and delivers requests on the returned channel
    /// (bounded: a slow consumer slows the peers down, it does not queue).
    pub async fn bind(
        endpoint: &Endpoint,
        max_frame: usize,
    ) -> Result<(RepSocket, mpsc::Receiver<Request>), EndpointError> {
        let listener = Listener::bind(endpoint).await?;
        let bound = listener.local_endpoint();
        let (tx, rx) = mpsc::channel(256);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_task = tokio::spawn(async move {
            loop {
                let stream = listener.accept_retrying().await;
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!("too many connections, closing a new one");
                    continue;
                };
                let tx = tx.clone();
                let mut stop = shutdown_rx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let (r, w) = tokio::io::split(stream);
                    let writer = Writer::spawn(w, MAX_REPLY_BYTES);
                    let mut reader = AmpReader::new(r, max_frame);
                    loop {
                        let next = tokio::select! {
                            m = reader.read_message() => m,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        match next {
                            Ok(Some(mut args)) => {
                                let Some(id) = args.pop() else { continue };
                                let req = Request {
                                    args,
                                    reply: Replier {
                                        id,
                                        writer: writer.clone(),
                                    },
                                };
                                if tx.send(req).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => return,
                            Err(e) => {
                                tracing::debug!(error = %e, "rep connection closed");
                                return;
                            }
                        }
                    }
                });
            }
        });
        Ok((
            RepSocket {
                endpoint: bound,
                accept_task,
                shutdown,
            },
            rx,
        ))
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Stops accepting and removes the unix socket file.
    pub fn close(&self) {
        self.accept_task.abort();
        let _ = self.shutdown.send(true);
        if let Endpoint::Unix(p) = &self.endpoint {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for RepSocket {
    fn drop(&mut self) {
        self.accept_task.abort();
        let _ = self.shutdown.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::req::{ReqOptions, ReqSocket};
    use std::time::Duration;

    #[tokio::test]
    async fn close_drops_connected_peers() {
        let dir = std::env::temp_dir().join(format!("ka-rep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ep = crate::socket::endpoint::test_endpoint(&dir, "rep.sock");
        let (sock, mut requests) = RepSocket::bind(&ep, 1 << 20).await.unwrap();
        tokio::spawn(async move {
            while let Some(r) = requests.recv().await {
                r.reply.reply(vec![Arg::str("pong")]);
            }
        });
        let req = ReqSocket::connect(
            ep.clone(),
            ReqOptions {
                timeout: Duration::from_millis(500),
                ..Default::default()
            },
        );
        assert_eq!(
            req.request(vec![Arg::str("ping")]).await.unwrap(),
            vec![Arg::str("pong")]
        );
        let mut state = req.state();
        sock.close();
        tokio::time::timeout(Duration::from_secs(2), state.wait_for(|s| !s.connected))
            .await
            .expect("the peer is disconnected by close()")
            .unwrap();
        assert!(req.request(vec![Arg::str("ping")]).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
