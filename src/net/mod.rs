//! Outbound connections to PM2.io.
//!
//! One path serves every transporter and `verifyPM2`:
//! 1. [`url`]: parse the endpoint;
//! 2. [`proxy`]: pick a proxy for it ([`NetOptions::proxy`], usually from
//!    `PM2_PROXY` / `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` minus
//!    `NO_PROXY`) and open a tunnel through it (HTTP CONNECT over plain TCP
//!    or TLS, SOCKS5 with local or remote name resolution);
//! 3. [`tls`]: TLS to the target for `https`/`wss` (rustls + ring, OS trust
//!    store plus `PM2_AGENT_CA_FILE` / `NODE_EXTRA_CA_CERTS`);
//! 4. [`http`]: a minimal HTTP/1.1 client for `verifyPM2`, on top of
//!    [`connect`].
//!
//! The WebSocket transporter runs tungstenite over the stream [`connect`]
//! returns, so it gets the same proxy and TLS handling.

pub mod http;
pub mod proxy;
pub mod tls;
pub mod url;

#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub use self::proxy::ProxyConfig;
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

/// How to reach the network.
///
/// `Default` reads no environment (handy for tests); the agent builds its
/// options with [`NetOptions::from_env`] so proxies and extra CAs apply.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Deadline for [`connect`]: DNS, TCP, proxy handshake and TLS together.
    pub connect_timeout: Duration,
    /// Deadline for a whole [`http::request`], connection included. The JS
    /// agent had none, so a silent backend stalled verification forever.
    pub request_timeout: Duration,
    /// Proxy settings; `None` connects directly.
    pub proxy: Option<ProxyConfig>,
    /// TLS client config to use instead of the process-wide
    /// [`tls::client_config`] (tests inject a private CA this way).
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            proxy: None,
            tls_config: None,
        }
    }
}

impl NetOptions {
    /// Defaults plus the proxy settings of the process environment
    /// ([`ProxyConfig::from_env`]). Extra CAs come from the environment
    /// through [`tls::client_config`] whatever the options.
    pub fn from_env() -> Self {
        let proxy = ProxyConfig::from_env();
        NetOptions {
            proxy: (!proxy.is_empty()).then_some(proxy),
            ..NetOptions::default()
        }
    }

    pub(crate) fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls_config.clone().unwrap_or_else(tls::client_config)
    }
}

/// Opens a stream to `url`'s host and port: through the proxy that applies
/// to it (if any), then TLS for `https`/`wss`. Everything happens under
/// `opts.connect_timeout`.
pub async fn connect(url: &Url, opts: &NetOptions) -> Result<BoxStream, NetError> {
    if !matches!(url.scheme.as_str(), "http" | "https" | "ws" | "wss") {
        // Refuse rather than silently speaking plaintext to e.g. `ftp://`.
        return Err(NetError::InvalidUrl(url.to_string()));
    }
    tokio::time::timeout(opts.connect_timeout, connect_inner(url, opts))
        .await
        .map_err(|_| NetError::Timeout(opts.connect_timeout))?
}

async fn connect_inner(url: &Url, opts: &NetOptions) -> Result<BoxStream, NetError> {
    let proxy = match &opts.proxy {
        Some(p) => p.proxy_for(url)?,
        None => None,
    };
    let stream: BoxStream = match proxy {
        Some(p) => {
            tracing::debug!(target = %url, proxy = %proxy::label(p), "connecting through proxy");
            proxy::tunnel(p, &url.host, url.port, opts).await?
        }
        None => Box::pin(tcp_connect(&url.host, url.port).await?),
    };
    if url.is_tls() {
        Ok(Box::pin(tls::wrap(stream, &url.host, opts.tls()).await?))
    } else {
        Ok(stream)
    }
}

/// Resolves `host` and connects to its addresses in order, so that a DNS
/// failure is reported as [`NetError::Dns`] rather than a generic I/O error.
pub(crate) async fn tcp_connect(host: &str, port: u16) -> Result<TcpStream, NetError> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| NetError::Dns(host.to_owned()))?;
    let mut last = NetError::Dns(host.to_owned());
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Small writes (WS frames, handshakes) must not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                crate::socket::liveness::tune(&tcp);
                return Ok(tcp);
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "connect attempt failed");
                last = NetError::from_io(&e, &target);
            }
        }
    }
    Err(last)
}
