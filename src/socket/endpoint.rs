//! Where a socket connects or binds, parsed the way pm2-axon reads it, and
//! the byte streams behind it (unix socket or TCP).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl Endpoint {
    /// Parses `tcp://host:port`, `unix:/path`, a bare port number or a
    /// filesystem path. Other URL schemes (`http://`, `axon://`, …) are read
    /// for their host and port only, as the JS transporter does.
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EndpointError::Empty);
        }
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port,
            });
        }
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some((_, rest)) = s.split_once("://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            return parse_host_port(authority).ok_or_else(|| EndpointError::Invalid(s.to_owned()));
        }
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        parse_host_port(s).ok_or_else(|| EndpointError::Invalid(s.to_owned()))
    }

    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Endpoint::Unix(path.into())
    }

    pub async fn connect(&self) -> io::Result<Stream> {
        match self {
            Endpoint::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p).await?)),
            Endpoint::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                super::liveness::tune(&s);
                Ok(Stream::Tcp(s))
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

fn parse_host_port(s: &str) -> Option<Endpoint> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    let port = port.parse().ok()?;
    let host = if host.is_empty() || host == "0.0.0.0" {
        "127.0.0.1"
    } else {
        host
    };
    Some(Endpoint::Tcp {
        host: host.to_owned(),
        port,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("empty endpoint")]
    Empty,
    #[error("cannot read a host and port or a socket path from {0:?}")]
    Invalid(String),
    #[error("Process already listening on socket {0}")]
    AlreadyListening(String),
    #[error("cannot bind {0}: {1}")]
    Bind(String, #[source] io::Error),
}

/// A connected byte stream of either kind.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// A probe of the send queue (TCP on Linux only; see
    /// [`super::liveness`]).
    pub fn send_probe(&self) -> Option<super::liveness::SendProbe> {
        match self {
            Stream::Tcp(s) => super::liveness::SendProbe::of(s),
            Stream::Unix(_) => None,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A bound server socket of either kind.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Binds like axon: on a unix path already in use, probe it with a
    /// connect; nobody answering means a stale file, which is unlinked before
    /// binding again; an answer means another process owns it.
    pub async fn bind(endpoint: &Endpoint) -> Result<Listener, EndpointError> {
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let l = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(|e| EndpointError::Bind(endpoint.to_string(), e))?;
                Ok(Listener::Tcp(l))
            }
            Endpoint::Unix(path) => match UnixListener::bind(path) {
                Ok(l) => Ok(Listener::Unix(l, path.clone())),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    if UnixStream::connect(path).await.is_ok() {
                        return Err(EndpointError::AlreadyListening(path.display().to_string()));
                    }
                    tracing::debug!(path = %path.display(), "removing stale socket file");
                    let _ = std::fs::remove_file(path);
                    UnixListener::bind(path)
                        .map(|l| Listener::Unix(l, path.clone()))
                        .map_err(|e| EndpointError::Bind(endpoint.to_string(), e))
                }
                Err(e) => Err(EndpointError::Bind(endpoint.to_string(), e)),
            },
        }
    }

    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l, _) => Ok(Stream::Unix(l.accept().await?.0)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
        }
    }

    pub fn local_endpoint(&self) -> Endpoint {
        match self {
            Listener::Unix(_, p) => Endpoint::Unix(p.clone()),
            Listener::Tcp(l) => {
                let a = l.local_addr().expect("bound socket has an address");
                Endpoint::Tcp {
                    host: a.ip().to_string(),
                    port: a.port(),
                }
            }
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, p) => Some(p),
            Listener::Tcp(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert_eq!(
            Endpoint::parse("/home/u/.pm2/rpc.sock").unwrap(),
            Endpoint::unix("/home/u/.pm2/rpc.sock")
        );
        assert_eq!(
            Endpoint::parse("unix:/tmp/x.sock").unwrap(),
            Endpoint::unix("/tmp/x.sock")
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:4321").unwrap(),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 4321
            }
        );
        assert_eq!(
            Endpoint::parse("3900").unwrap(),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 3900
            }
        );
        assert_eq!(
            Endpoint::parse("https://push.example.io:43554/path").unwrap(),
            Endpoint::Tcp {
                host: "push.example.io".into(),
                port: 43554
            }
        );
        assert_eq!(
            Endpoint::parse("[::1]:80").unwrap(),
            Endpoint::Tcp {
                host: "::1".into(),
                port: 80
            }
        );
        assert!(matches!(Endpoint::parse(""), Err(EndpointError::Empty)));
        assert!(matches!(
            Endpoint::parse("nohost"),
            Err(EndpointError::Invalid(_))
        ));
        assert!(matches!(
            Endpoint::parse("http://host"),
            Err(EndpointError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn stale_unix_socket_is_replaced_and_live_one_refused() {
        let dir = std::env::temp_dir().join(format!("ka-ep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // A stale file: bound then dropped without unlink.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let ep = Endpoint::unix(&path);
        let live = Listener::bind(&ep).await.expect("stale file replaced");
        match Listener::bind(&ep).await {
            Err(EndpointError::AlreadyListening(p)) => assert!(p.ends_with("s.sock")),
            other => panic!("{:?}", other.err()),
        }
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
