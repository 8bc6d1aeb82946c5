//! Where a socket connects or binds, parsed the way pm2-axon reads it, and
//! the byte streams behind it: a unix socket (Unix), a named pipe (Windows,
//! where PM2 puts `rpc.sock`, `pub.sock` and `interactor.sock` at
//! `\\.\pipe\<name>`) or TCP (everywhere).
//!
//! Every OS-specific type of the crate's sockets lives in this file, behind
//! `cfg(unix)` / `cfg(windows)`; an address of a kind the OS lacks is still
//! parsed, and fails to connect or bind with `ErrorKind::Unsupported`.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
#[cfg(windows)]
use tokio::net::windows::named_pipe::{
    ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
};
use tokio::net::{TcpListener, TcpStream};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};

/// The socket address kinds PM2 and its clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix domain socket file (Unix only).
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
    },
    /// A Windows named pipe, `\\.\pipe\<name>` as given (Windows only).
    Pipe(String),
}

/// `\\.\pipe\name` or `\\?\pipe\name` (the prefixes libuv and Windows
/// accept for a local pipe; `pipe` in any case).
fn is_pipe_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 9
        && b[0] == b'\\'
        && b[1] == b'\\'
        && (b[2] == b'.' || b[2] == b'?')
        && b[3] == b'\\'
        && b[4..8].eq_ignore_ascii_case(b"pipe")
        && b[8] == b'\\'
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} are not available on {}", std::env::consts::OS),
    )
}

impl Endpoint {
    /// Parses `tcp://host:port`, `unix:/path`, a named pipe
    /// (`\\.\pipe\name`), a bare port number or a filesystem path. Other
    /// URL schemes (`http://`, `axon://`, …) are read for their host and port
    /// only, as the JS transporter does.
    pub fn parse(s: &str) -> Result<Self, EndpointError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EndpointError::Empty);
        }
        if is_pipe_name(s) {
            return Ok(Endpoint::Pipe(s.to_owned()));
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

    /// A local socket as PM2's paths name it (`DAEMON_RPC_PORT`, …): a
    /// named pipe when the path is one (PM2 on Windows), else a unix socket.
    pub fn local(path: &Path) -> Self {
        match path.to_str() {
            Some(s) if is_pipe_name(s) => Endpoint::Pipe(s.to_owned()),
            _ => Endpoint::Unix(path.to_path_buf()),
        }
    }

    pub async fn connect(&self) -> io::Result<Stream> {
        match self {
            #[cfg(unix)]
            Endpoint::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p).await?)),
            #[cfg(not(unix))]
            Endpoint::Unix(_) => Err(unsupported("unix sockets")),
            #[cfg(windows)]
            Endpoint::Pipe(name) => Ok(Stream::PipeClient(pipe::connect(name).await?)),
            #[cfg(not(windows))]
            Endpoint::Pipe(_) => Err(unsupported("named pipes")),
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
            Endpoint::Pipe(name) => f.write_str(name),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// Named pipes: the client's connect and the server's instances.
#[cfg(windows)]
mod pipe {
    use std::io;
    use std::time::Duration;

    use super::{ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions};

    /// `ERROR_PIPE_BUSY`: every instance of the pipe is serving a client.
    const ERROR_PIPE_BUSY: i32 = 231;
    /// How long a connect waits for a free instance (libuv waits up to 30 s;
    /// a server that creates its next instance at once frees one in µs).
    const BUSY_RETRIES: u32 = 40;
    const BUSY_PAUSE: Duration = Duration::from_millis(50);

    pub async fn connect(name: &str) -> io::Result<NamedPipeClient> {
        let mut tries = 0;
        loop {
            match ClientOptions::new().open(name) {
                Ok(c) => return Ok(c),
                Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) && tries < BUSY_RETRIES => {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(BUSY_PAUSE).await;
        }
    }

    /// A new instance of `name`; `first` refuses a name another server
    /// already holds (`PermissionDenied`). Remote clients are refused (the
    /// default), and the default security descriptor lets only the creator,
    /// SYSTEM and administrators write, as 0660 does for the unix socket.
    pub fn instance(name: &str, first: bool) -> io::Result<NamedPipeServer> {
        ServerOptions::new()
            .first_pipe_instance(first)
            .reject_remote_clients(true)
            .create(name)
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

/// A connected byte stream of any kind.
pub enum Stream {
    #[cfg(unix)]
    Unix(UnixStream),
    Tcp(TcpStream),
    #[cfg(windows)]
    PipeClient(NamedPipeClient),
    #[cfg(windows)]
    PipeServer(NamedPipeServer),
}

impl Stream {
    /// A probe of the send queue (TCP on Linux only; see
    /// [`super::liveness`]).
    pub fn send_probe(&self) -> Option<super::liveness::SendProbe> {
        match self {
            Stream::Tcp(s) => super::liveness::SendProbe::of(s),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// `$body` with `$s` bound to the inner stream, whatever its kind.
macro_rules! each_stream {
    ($stream:expr, $s:ident => $body:expr) => {
        match $stream {
            #[cfg(unix)]
            Stream::Unix($s) => $body,
            Stream::Tcp($s) => $body,
            #[cfg(windows)]
            Stream::PipeClient($s) => $body,
            #[cfg(windows)]
            Stream::PipeServer($s) => $body,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each_stream!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_stream!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A bound server socket of any kind.
pub enum Listener {
    #[cfg(unix)]
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
    /// The pipe's name, and the instance waiting for the next client (a
    /// named pipe serves one client per instance: each accept hands the
    /// connected instance over and creates the next one at once, so a
    /// client never finds the name without a listening instance).
    #[cfg(windows)]
    Pipe(String, tokio::sync::Mutex<NamedPipeServer>),
}

impl Listener {
    /// Binds like axon: on a unix path already in use, probe it with a
    /// connect; nobody answering means a stale file, which is unlinked before
    /// binding again; an answer means another process owns it. A named pipe
    /// has no file to go stale: a name another server holds is refused.
    pub async fn bind(endpoint: &Endpoint) -> Result<Listener, EndpointError> {
        let bind_err = |e| EndpointError::Bind(endpoint.to_string(), e);
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let l = TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(bind_err)?;
                Ok(Listener::Tcp(l))
            }
            #[cfg(unix)]
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
                        .map_err(bind_err)
                }
                Err(e) => Err(bind_err(e)),
            },
            #[cfg(not(unix))]
            Endpoint::Unix(_) => Err(bind_err(unsupported("unix sockets"))),
            #[cfg(windows)]
            Endpoint::Pipe(name) => match pipe::instance(name, true) {
                Ok(first) => Ok(Listener::Pipe(name.clone(), tokio::sync::Mutex::new(first))),
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    Err(EndpointError::AlreadyListening(name.clone()))
                }
                Err(e) => Err(bind_err(e)),
            },
            #[cfg(not(windows))]
            Endpoint::Pipe(_) => Err(bind_err(unsupported("named pipes"))),
        }
    }

    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            #[cfg(unix)]
            Listener::Unix(l, _) => Ok(Stream::Unix(l.accept().await?.0)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            #[cfg(windows)]
            Listener::Pipe(name, waiting) => {
                let mut waiting = waiting.lock().await;
                // Cancel safe: a dropped accept leaves the instance waiting.
                if let Err(e) = waiting.connect().await {
                    // Not left to fail again: the next accept waits on a
                    // fresh instance.
                    if let Ok(fresh) = pipe::instance(name, false) {
                        *waiting = fresh;
                    }
                    return Err(e);
                }
                let next = pipe::instance(name, false)?;
                Ok(Stream::PipeServer(std::mem::replace(&mut *waiting, next)))
            }
        }
    }

    /// The next connection, whatever it takes: a failed accept (EMFILE,
    /// ENFILE, ENOBUFS, an aborted connection: usually transient) is
    /// retried after a pause that grows from 10 ms to 1 s
    /// ([`AcceptBackoff`]), and logged once per run of failures, so a
    /// persistent error neither spins a core nor floods agent.log.
    pub async fn accept_retrying(&self) -> Stream {
        let mut backoff = AcceptBackoff::default();
        loop {
            match self.accept().await {
                Ok(s) => {
                    if backoff.failures > 0 {
                        tracing::info!(endpoint = %self.local_endpoint(), failures = backoff.failures, "accepting again");
                    }
                    return s;
                }
                Err(e) => {
                    let pause = backoff.failed();
                    if backoff.failures == 1 {
                        tracing::warn!(endpoint = %self.local_endpoint(), error = %e, "accept failed, retrying with backoff");
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    pub fn local_endpoint(&self) -> Endpoint {
        match self {
            #[cfg(unix)]
            Listener::Unix(_, p) => Endpoint::Unix(p.clone()),
            Listener::Tcp(l) => {
                let a = l.local_addr().expect("bound socket has an address");
                Endpoint::Tcp {
                    host: a.ip().to_string(),
                    port: a.port(),
                }
            }
            #[cfg(windows)]
            Listener::Pipe(name, _) => Endpoint::Pipe(name.clone()),
        }
    }

    /// The socket file to remove when done (unix sockets only).
    pub fn path(&self) -> Option<&Path> {
        match self {
            #[cfg(unix)]
            Listener::Unix(_, p) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// The pauses between failed accepts: 10 ms, doubling, at most 1 s.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Failures in this run (reset by a new `AcceptBackoff`).
    pub failures: u32,
}

impl AcceptBackoff {
    pub const FIRST: std::time::Duration = std::time::Duration::from_millis(10);
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    /// Records a failure; the pause before the next attempt.
    pub fn failed(&mut self) -> std::time::Duration {
        self.failures = self.failures.saturating_add(1);
        Self::FIRST
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(Self::MAX)
    }
}

/// An endpoint for a test's own server: a unix socket in `dir` on Unix, a
/// named pipe unique to this process and `dir` on Windows.
#[cfg(test)]
pub(crate) fn test_endpoint(dir: &Path, name: &str) -> Endpoint {
    if cfg!(windows) {
        let tag: String = dir
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Endpoint::Pipe(format!(
            r"\\.\pipe\ka-test-{}-{}-{name}",
            std::process::id(),
            tag.trim_matches('-')
        ))
    } else {
        Endpoint::Unix(dir.join(name))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_backoff_grows_to_its_bound() {
        let mut b = super::AcceptBackoff::default();
        let pauses: Vec<u128> = (0..12).map(|_| b.failed().as_millis()).collect();
        assert_eq!(
            pauses,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
        assert_eq!(b.failures, 12);
        for _ in 0..100 {
            assert_eq!(b.failed(), super::AcceptBackoff::MAX);
        }
    }

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

    #[test]
    fn pipe_names_and_local_paths() {
        // PM2's Windows paths (constants.js): `\\.\pipe\rpc.sock`, …
        for name in [r"\\.\pipe\rpc.sock", r"\\?\PIPE\interactor.sock"] {
            assert_eq!(Endpoint::parse(name).unwrap(), Endpoint::Pipe(name.into()));
            assert_eq!(
                Endpoint::local(Path::new(name)),
                Endpoint::Pipe(name.into())
            );
            assert_eq!(Endpoint::Pipe(name.into()).to_string(), name);
        }
        // Not pipes: no name, another share, forward slashes.
        for other in [r"\\.\pipe\", r"\\server\pipe\x", "//./pipe/x", r"\\.\pip\x"] {
            assert!(!is_pipe_name(other), "{other}");
        }
        assert_eq!(
            Endpoint::local(Path::new("/home/u/.pm2/pub.sock")),
            Endpoint::unix("/home/u/.pm2/pub.sock")
        );
    }

    /// The kind this OS lacks fails with `Unsupported`, not a panic.
    #[tokio::test]
    async fn a_kind_the_os_lacks_is_unsupported() {
        let lacking = if cfg!(windows) {
            Endpoint::unix("/tmp/ka-none.sock")
        } else {
            Endpoint::Pipe(r"\\.\pipe\ka-none".into())
        };
        let e = lacking.connect().await.err().expect("connect must fail");
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        match Listener::bind(&lacking).await {
            Err(EndpointError::Bind(_, e)) => assert_eq!(e.kind(), io::ErrorKind::Unsupported),
            other => panic!("{:?}", other.err()),
        }
    }

    /// Two clients at once, each served by its own instance, then a second
    /// server on the same name refused: the contract `interactor.sock`
    /// relies on, over this OS's local socket kind.
    #[tokio::test]
    async fn local_socket_serves_concurrent_clients_and_refuses_a_second_owner() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = std::env::temp_dir().join(format!("ka-ep-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ep = test_endpoint(&dir, "l.sock");
        let l = std::sync::Arc::new(Listener::bind(&ep).await.unwrap());
        assert_eq!(l.local_endpoint(), ep);
        let server = {
            let l = l.clone();
            tokio::spawn(async move {
                for _ in 0..2 {
                    let mut s = l.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut b = [0u8; 4];
                        s.read_exact(&mut b).await.unwrap();
                        b.reverse();
                        s.write_all(&b).await.unwrap();
                    });
                }
            })
        };
        let (mut a, mut b) = (ep.connect().await.unwrap(), ep.connect().await.unwrap());
        b.write_all(b"wxyz").await.unwrap();
        a.write_all(b"abcd").await.unwrap();
        let (mut ra, mut rb) = ([0u8; 4], [0u8; 4]);
        a.read_exact(&mut ra).await.unwrap();
        b.read_exact(&mut rb).await.unwrap();
        assert_eq!((&ra, &rb), (b"dcba", b"zyxw"));
        server.await.unwrap();
        assert!(matches!(
            Listener::bind(&ep).await,
            Err(EndpointError::AlreadyListening(_))
        ));
        drop(l);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
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
