//! Noticing a peer that is gone without a FIN, on the connections to
//! PM2.io.
//!
//! Two mechanisms, because neither covers everything:
//! * **TCP options** on every outbound TCP socket ([`tune`]): keepalive
//!   after [`KEEPALIVE_IDLE`] of silence, a probe every
//!   [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_COUNT`] probes, and
//!   `TCP_USER_TIMEOUT` ([`USER_TIMEOUT`]) for data left unacknowledged. The
//!   kernel then fails the socket (`ETIMEDOUT`) when the peer's host
//!   vanished, even on a connection we only read from (the Axon reverse
//!   channel, which nothing else could check: the wire has no ping).
//! * **The send queue** ([`SendProbe`], [`Progress`]): a peer whose kernel
//!   still acknowledges (a hung process, a proxy that stopped forwarding)
//!   passes every keepalive probe, but stops taking bytes: its receive
//!   window fills, then ours. A socket with bytes queued whose count of
//!   acknowledged bytes has not moved for the dead-peer timeout is dead.
//!   This needs traffic (the Axon push channel sends a frame every status
//!   interval); a peer that acknowledges and absorbs is only seen once its
//!   buffers are full, which is the physics of TCP, not a choice.
//!
//! The WebSocket has its own application check (pings, and no frame for
//! the timeout means dead: `transport::websocket`).

use std::time::{Duration, Instant};

/// Silence before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the kernel gives up.
pub const KEEPALIVE_COUNT: u32 = 3;
/// Longest time sent data may stay unacknowledged (and, with keepalive,
/// the bound of an unanswered probe sequence): idle + count × interval.
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets keepalive and the user timeout on an outbound TCP socket. A
/// refusal (an unusual platform) is logged at debug and ignored: the
/// connection works without them.
pub fn tune(stream: &tokio::net::TcpStream) {
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    // Interval and retry count: the platforms socket2 supports them on.
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "windows"
    ))]
    let ka = ka
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_COUNT);
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = sock.set_tcp_user_timeout(Some(USER_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}

/// Whether an I/O error is the kernel giving up on a silent peer
/// (keepalive or user timeout).
pub fn is_peer_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
}

/// The `last_error` of a connection the kernel gave up on.
pub fn kernel_timeout_reason() -> String {
    format!(
        "no answer from the peer for {} (TCP keepalive / user timeout: connection timed out)",
        crate::daemon::stall::seconds(USER_TIMEOUT)
    )
}

/// The send side of a TCP socket as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendSample {
    /// Bytes written and not yet acknowledged, or not yet sent (`SIOCOUTQ`).
    pub queued: u64,
    /// Bytes the peer acknowledged since the connection opened
    /// (`tcpi_bytes_acked`).
    pub acked: u64,
}

/// Reads a TCP socket's send queue. Holds its own descriptor of the socket
/// (a `dup`), so it stays valid whoever owns the stream; drop it with the
/// connection.
#[derive(Debug)]
pub struct SendProbe {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
}

impl SendProbe {
    /// A probe of `stream`; `None` where the kernel cannot tell (not Linux).
    pub fn of(stream: &tokio::net::TcpStream) -> Option<SendProbe> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsFd;
            match stream.as_fd().try_clone_to_owned() {
                Ok(fd) => Some(SendProbe { fd }),
                Err(e) => {
                    tracing::debug!(error = %e, "no send-queue probe");
                    None
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = stream;
            None
        }
    }

    /// The current sample; `None` when the kernel does not say (a closed
    /// socket, a kernel before 4.2 without `tcpi_bytes_acked`).
    pub fn sample(&self) -> Option<SendSample> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = self.fd.as_raw_fd();
            let mut queued: libc::c_int = 0;
            // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int.
            if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) } < 0 {
                return None;
            }
            // SAFETY: an all-zero tcp_info is valid; the kernel fills up to
            // `len` bytes and says how many.
            let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            // SAFETY: `info` is writable for `len` bytes.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    (&mut info as *mut libc::tcp_info).cast(),
                    &mut len,
                )
            };
            let needed =
                std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
            if rc < 0 || (len as usize) < needed {
                return None;
            }
            Some(SendSample {
                queued: queued.max(0) as u64,
                acked: info.tcpi_bytes_acked,
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }
}

/// A send queue that stopped draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The dead-peer timeout that was exceeded.
    pub limit: Duration,
    /// How long nothing was acknowledged while bytes waited (at least
    /// `limit`; how much more depends on how often the socket is checked).
    pub still: Duration,
    /// Bytes waiting at the last sample.
    pub queued: u64,
}

impl Stuck {
    /// The `last_error` text: `no answer from the peer for 15 s (…)`.
    pub fn reason(&self) -> String {
        format!(
            "no answer from the peer for {} ({} bytes written and neither acknowledged nor read)",
            crate::daemon::stall::seconds(self.limit),
            self.queued
        )
    }
}

/// The dead-peer rule over successive [`SendSample`]s: bytes queued and
/// the acknowledged count unchanged for `limit` means the peer is gone. An
/// empty queue, or any acknowledgement, clears the suspicion.
#[derive(Debug)]
pub struct Progress {
    limit: Duration,
    acked: u64,
    /// Since when bytes have waited without any being acknowledged.
    stalled_since: Option<Instant>,
}

impl Progress {
    pub fn new(limit: Duration) -> Progress {
        Progress {
            limit,
            acked: 0,
            stalled_since: None,
        }
    }

    pub fn observe(&mut self, s: SendSample, now: Instant) -> Result<(), Stuck> {
        let moved = s.acked != self.acked;
        self.acked = s.acked;
        if s.queued == 0 {
            self.stalled_since = None;
            return Ok(());
        }
        if moved {
            // Bytes still wait, but the peer is taking them: the clock
            // restarts from this sample.
            self.stalled_since = Some(now);
            return Ok(());
        }
        let since = *self.stalled_since.get_or_insert(now);
        let still = now.saturating_duration_since(since);
        if still >= self.limit {
            return Err(Stuck {
                limit: self.limit,
                still,
                queued: s.queued,
            });
        }
        Ok(())
    }
}

/// A [`SendProbe`] and its [`Progress`]: what a session keeps per socket.
#[derive(Debug)]
pub struct SendWatch {
    probe: std::sync::Arc<SendProbe>,
    progress: Progress,
}

impl SendWatch {
    pub fn new(probe: std::sync::Arc<SendProbe>, limit: Duration) -> SendWatch {
        SendWatch {
            probe,
            progress: Progress::new(limit),
        }
    }

    /// Samples the socket now; `Err` once its peer counts as dead.
    pub fn check(&mut self) -> Result<(), Stuck> {
        match self.probe.sample() {
            Some(s) => self.progress.observe(s, Instant::now()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(queued: u64, acked: u64) -> SendSample {
        SendSample { queued, acked }
    }

    #[test]
    fn an_empty_queue_is_always_fine() {
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(3));
        for i in 0..100 {
            assert_eq!(p.observe(s(0, 10), t0 + Duration::from_secs(i)), Ok(()));
        }
    }

    #[test]
    fn a_queue_that_drains_slowly_is_fine() {
        // A slow link: bytes always wait, but some are acknowledged each time.
        let t0 = Instant::now();
        let mut p = Progress::new(Duration::from_secs(3));
        for i in 0..100u64 {
            assert_eq!(
                p.observe(s(50_000, i * 1000), t0 + Duration::from_secs(i)),
                Ok(())
            );
        }
    }

    #[test]
    fn a_queue_that_stops_draining_is_a_dead_peer_after_the_limit() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Progress::new(Duration::from_secs(3));
        assert_eq!(p.observe(s(0, 1000), at(0)), Ok(()));
        assert_eq!(p.observe(s(4000, 1000), at(1000)), Ok(()));
        assert_eq!(p.observe(s(8000, 1000), at(2000)), Ok(()));
        assert_eq!(p.observe(s(12000, 1000), at(3000)), Ok(()));
        let stuck = p.observe(s(16000, 1000), at(4000)).unwrap_err();
        assert_eq!(stuck.still, Duration::from_secs(3));
        assert_eq!(stuck.limit, Duration::from_secs(3));
        assert_eq!(stuck.queued, 16000);
        assert_eq!(
            stuck.reason(),
            "no answer from the peer for 3 s (16000 bytes written and neither acknowledged nor read)"
        );
    }

    #[test]
    fn an_acknowledgement_or_an_empty_queue_clears_the_suspicion() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Progress::new(Duration::from_secs(3));
        assert_eq!(p.observe(s(100, 0), at(0)), Ok(()));
        assert_eq!(p.observe(s(100, 0), at(2500)), Ok(()));
        // Acknowledged a little: the clock restarts.
        assert_eq!(p.observe(s(100, 50), at(2900)), Ok(()));
        assert_eq!(p.observe(s(100, 50), at(5000)), Ok(()));
        // Drained: forgotten.
        assert_eq!(p.observe(s(0, 150), at(5800)), Ok(()));
        assert_eq!(p.observe(s(100, 150), at(6000)), Ok(()));
        assert_eq!(p.observe(s(100, 150), at(8999)), Ok(()));
        assert!(p.observe(s(100, 150), at(9000)).is_err());
    }

    /// A real loopback peer that accepts, reads nothing and never closes:
    /// its kernel acknowledges what fits in its receive buffer, then the
    /// window closes and our queue stops draining.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_peer_that_stops_reading_is_seen_on_the_socket() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_peer, _) = listener.accept().await.unwrap();
        tune(&client);
        let probe = SendProbe::of(&client).expect("a probe on Linux");
        let first = probe.sample().expect("tcp_info with bytes_acked");
        assert_eq!(first.queued, 0);

        let mut watch = SendWatch::new(std::sync::Arc::new(probe), Duration::from_millis(300));
        let (_r, mut w) = client.into_split();
        let writer = tokio::spawn(async move {
            let chunk = vec![0u8; 64 * 1024];
            loop {
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let t0 = Instant::now();
        let stuck = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(stuck) = watch.check() {
                break stuck;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "never stuck");
        };
        assert!(stuck.queued > 0);
        assert!(stuck.still >= Duration::from_millis(300));
        writer.abort();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_reading_peer_keeps_the_socket_alive() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = peer.read(&mut buf).await {
                let _ = n;
            }
        });
        let mut watch = SendWatch::new(
            std::sync::Arc::new(SendProbe::of(&client).unwrap()),
            Duration::from_millis(200),
        );
        let (_r, mut w) = client.into_split();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(800) {
            w.write_all(&[1u8; 16 * 1024]).await.unwrap();
            assert_eq!(watch.check(), Ok(()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reader.abort();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn outbound_sockets_get_short_keepalive_and_a_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tune(&client);
        let sock = socket2::SockRef::from(&client);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_COUNT);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
    }
}
