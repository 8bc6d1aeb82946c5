//! Outbound connections to PM2.io: URL parsing, optional proxy tunnel,
//! optional TLS (rustls + ring, OS trust store), and a minimal HTTP/1.1
//! client for `verifyPM2`. The WebSocket transporter runs tungstenite over
//! the stream [`connect`] returns, so both share one proxy and TLS path.

pub mod http;
pub mod tls;
pub mod url;

use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use self::url::Url;

/// Any bidirectional byte stream (plain TCP, TLS, through a proxy).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub type BoxStream = Pin<Box<dyn Io>>;

/// Why a connection to PM2.io failed, with what a user needs to fix it.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum NetError {
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    #[error("cannot resolve {0}")]
    Dns(String),
    #[error("connection refused by {0}")]
    Refused(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("network error: {0}")]
    Io(String),
    #[error("TLS error: {0}")]
    Tls(String),
    #[error("proxy {proxy}: {reason}")]
    Proxy { proxy: String, reason: String },
    #[error("proxy authentication required (407) by {0}")]
    ProxyAuth(String),
    #[error("HTTP error: {0}")]
    Http(String),
}

impl NetError {
    pub fn from_io(e: &io::Error, target: &str) -> NetError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => NetError::Refused(target.to_owned()),
            io::ErrorKind::TimedOut => NetError::Timeout(Duration::ZERO),
            _ => NetError::Io(format!("{target}: {e}")),
        }
    }
}

/// How to reach the network: connect timeout and (later) proxy settings.
#[derive(Debug, Clone)]
pub struct NetOptions {
    pub connect_timeout: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions { connect_timeout: Duration::from_secs(10) }
    }
}

/// Opens a stream to `url`'s host and port, with TLS for `https`/`wss`.
pub async fn connect(url: &Url, opts: &NetOptions) -> Result<BoxStream, NetError> {
    let target = format!("{}:{}", url.host, url.port);
    let tcp = tokio::time::timeout(opts.connect_timeout, TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| NetError::Timeout(opts.connect_timeout))?
        .map_err(|e| NetError::from_io(&e, &target))?;
    let _ = tcp.set_nodelay(true);
    if url.is_tls() {
        let tls = tokio::time::timeout(opts.connect_timeout, tls::wrap(tcp, &url.host))
            .await
            .map_err(|_| NetError::Timeout(opts.connect_timeout))??;
        Ok(Box::pin(tls))
    } else {
        Ok(Box::pin(tcp))
    }
}
