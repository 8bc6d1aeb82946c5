//! The inspector's HTTP server: HTTP/1.1, GET only, one request per
//! connection (`Connection: close`), on 127.0.0.1 only. Requests are read
//! with bounds: the request line and headers at most [`MAX_HEAD`] bytes and
//! [`MAX_HEADERS`] headers, within [`READ_TIMEOUT`]; at most
//! [`MAX_CONNECTIONS`] served at once (more are closed at once). Every
//! request needs the token (`?token=`), compared in constant time.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::traffic::Traffic;

/// Bytes of request line and headers read at most.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
pub const MAX_HEADERS: usize = 32;
/// Time a client has to send its request line and headers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Bytes of an unread request body drained before closing (closing with
/// unread bytes would reset the connection before the answer is read).
const MAX_DRAIN: usize = 64 * 1024;

/// The page, served at `/` and `/inspector`.
pub const PAGE: &str = include_str!("../../web/inspector.html");

/// Only the page's own inline script and style; its API calls go back to
/// this origin; nothing else is loaded.
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Listens on 127.0.0.1:`port` (`0`: a port the system picks).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// Serves `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, token: String, traffic: Arc<Traffic>) -> JoinHandle<()> {
    serve_with(listener, token, traffic, READ_TIMEOUT)
}

/// [`serve`] with another read timeout (tests).
fn serve_with(
    listener: TcpListener,
    token: String,
    traffic: Arc<Traffic>,
    read_timeout: Duration,
) -> JoinHandle<()> {
    let token: Arc<str> = token.into();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::debug!(error = %e, "inspector: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "inspector: too many connections; closed");
                drop(stream);
                continue;
            };
            let (token, traffic) = (token.clone(), traffic.clone());
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = handle(stream, &token, &traffic, read_timeout).await {
                    tracing::debug!(%peer, error = %e, "inspector: connection ended");
                }
            });
        }
    })
}

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Page,
    Traffic,
    /// Missing or bad token.
    Forbidden,
    /// Not GET (with the token).
    MethodNotAllowed,
    NotFound,
    BadRequest,
    HeadTooLarge,
    Timeout,
}

/// The answer to `method target`: the token first (nothing is told to a
/// client without it, not even which paths exist), then the method, then
/// the path.
pub fn route(method: &str, target: &str, token: &str) -> Answer {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let given = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or("");
    if !same_token(given.as_bytes(), token.as_bytes()) {
        return Answer::Forbidden;
    }
    if method != "GET" {
        return Answer::MethodNotAllowed;
    }
    match path {
        "/" | "/inspector" => Answer::Page,
        "/api/traffic" => Answer::Traffic,
        _ => Answer::NotFound,
    }
}

/// Equal tokens, in time that depends only on the expected token's length
/// (public: always 32).
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the request line and headers within the bounds; `Err(answer)` for
/// a request that gets an error answer without being routed.
async fn read_head(
    stream: &mut TcpStream,
    read_timeout: Duration,
) -> std::io::Result<Result<(String, String), Answer>> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    let method = req.method.unwrap_or_default().to_owned();
                    let path = req.path.unwrap_or_default().to_owned();
                    return Ok(Some(Ok((method, path))));
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                    return Ok(Some(Err(Answer::HeadTooLarge)));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Ok(Some(Err(Answer::HeadTooLarge)));
                }
                Err(_) => return Ok(Some(Err(Answer::BadRequest))),
            }
            if buf.len() > MAX_HEAD {
                return Ok(Some(Err(Answer::HeadTooLarge)));
            }
        }
    };
    match tokio::time::timeout(read_timeout, read).await {
        Ok(Ok(Some(r))) => Ok(r),
        Ok(Ok(None)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(Err(Answer::Timeout)),
    }
}

async fn handle(
    mut stream: TcpStream,
    token: &str,
    traffic: &Traffic,
    read_timeout: Duration,
) -> Result<(), ConnError> {
    let answer = match read_head(&mut stream, read_timeout).await? {
        Ok((method, target)) => {
            let a = route(&method, &target, token);
            // The target carries the token: never logged.
            tracing::debug!(%method, answer = ?a, "inspector request");
            a
        }
        Err(a) => a,
    };
    let (status, ctype, body, csp): (&str, &str, std::borrow::Cow<'_, str>, bool) = match answer {
        Answer::Page => ("200 OK", "text/html; charset=utf-8", PAGE.into(), true),
        Answer::Traffic => (
            "200 OK",
            "application/json; charset=utf-8",
            traffic.snapshot().to_json().into(),
            false,
        ),
        Answer::Forbidden => ("403 Forbidden", "text/plain", "forbidden".into(), false),
        Answer::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed".into(),
            false,
        ),
        Answer::NotFound => ("404 Not Found", "text/plain", "not found".into(), false),
        Answer::BadRequest => ("400 Bad Request", "text/plain", "bad request".into(), false),
        Answer::HeadTooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request header fields too large".into(),
            false,
        ),
        Answer::Timeout => (
            "408 Request Timeout",
            "text/plain",
            "request timeout".into(),
            false,
        ),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n",
        body.len()
    );
    if answer == Answer::MethodNotAllowed {
        head.push_str("Allow: GET\r\n");
    }
    if csp {
        head.push_str("Content-Security-Policy: ");
        head.push_str(PAGE_CSP);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    // Drain what the client still sends (a body), bounded in bytes and time.
    let drain = async {
        let mut chunk = [0u8; 4096];
        let mut left = MAX_DRAIN;
        while left > 0 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Packet;
    use crate::inspect::traffic::{ManualClock, Traffic};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn routes_by_token_then_method_then_path() {
        let t = format!("token={TOKEN}");
        assert_eq!(route("GET", &format!("/?{t}"), TOKEN), Answer::Page);
        assert_eq!(
            route("GET", &format!("/inspector?{t}"), TOKEN),
            Answer::Page
        );
        assert_eq!(
            route("GET", &format!("/api/traffic?x=1&{t}"), TOKEN),
            Answer::Traffic
        );
        assert_eq!(route("GET", &format!("/nope?{t}"), TOKEN), Answer::NotFound);
        assert_eq!(
            route("POST", &format!("/api/traffic?{t}"), TOKEN),
            Answer::MethodNotAllowed
        );
        assert_eq!(
            route("HEAD", &format!("/?{t}"), TOKEN),
            Answer::MethodNotAllowed
        );
        // Without the token: 403 for everything, unknown paths and methods too.
        for (m, target) in [
            ("GET", "/"),
            ("GET", "/inspector"),
            ("GET", "/api/traffic"),
            ("GET", "/nope"),
            ("POST", "/api/traffic"),
            ("GET", "/api/traffic?token="),
            ("GET", "/api/traffic?token=0123456789abcdef0123456789abcdee"),
            (
                "GET",
                "/api/traffic?token=0123456789abcdef0123456789abcdef0",
            ),
            ("GET", "/api/traffic?token=0123456789abcdef"),
            (
                "GET",
                "/api/traffic?xtoken=0123456789abcdef0123456789abcdef",
            ),
            ("POST", "/api/traffic?token=bad"),
        ] {
            assert_eq!(route(m, target, TOKEN), Answer::Forbidden, "{m} {target}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
        assert!(!same_token(b"abcd", b"abc"));
        assert!(!same_token(b"", b"abc"));
        // A byte equal to the inverse of the expected one is no match either.
        assert!(!same_token(&[!b'a'], b""));
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.contains("api/traffic"));
        assert!(!PAGE.contains("/api/traffic"), "relative URLs only");
        // The SVG namespace is a name, not a fetch.
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        for external in [
            "http://", "https://", "//cdn", "src=", "href=", "<link", "@import", "url(",
        ] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(!PAGE.contains("innerHTML"), "untrusted text is never HTML");
    }

    async fn request(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn server() -> (SocketAddr, Arc<Traffic>, JoinHandle<()>) {
        server_with(READ_TIMEOUT).await
    }

    async fn server_with(read_timeout: Duration) -> (SocketAddr, Arc<Traffic>, JoinHandle<()>) {
        let traffic = Arc::new(Traffic::new(ManualClock::new(1000).clock()));
        let listener = bind(0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        let task = serve_with(listener, TOKEN.into(), traffic.clone(), read_timeout);
        (addr, traffic, task)
    }

    #[tokio::test]
    async fn serves_the_api_and_the_page_over_tcp() {
        let (addr, traffic, task) = server().await;
        traffic.record(&Packet::new("status", serde_json::json!({"a": 1})));
        let r = request(
            addr,
            format!("GET /api/traffic?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: application/json"));
        assert!(r.contains("Connection: close\r\n"));
        let body = r.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["channels"][0]["channel"], "status");
        let r = request(
            addr,
            format!("GET /inspector?token={TOKEN} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Security-Policy: default-src 'none'"));
        assert!(r.ends_with(PAGE));
        let r = request(addr, b"GET /api/traffic HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nforbidden"));
        let r = request(
            addr,
            format!("POST /api/traffic?token={TOKEN} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
                .as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        assert!(r.contains("Allow: GET\r\n"));
        let r = request(
            addr,
            format!("GET /x?token={TOKEN} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = request(addr, b"\x00\x01 nonsense\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
        task.abort();
    }

    #[tokio::test]
    async fn bounds_the_request_head() {
        let (addr, _, task) = server().await;
        // Longer than MAX_HEAD without its end.
        let mut raw = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        let r = request(addr, &raw).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // More headers than MAX_HEADERS.
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            raw.extend(format!("X-{i}: 1\r\n").as_bytes());
        }
        raw.extend(b"\r\n");
        let r = request(addr, &raw).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // Exactly MAX_HEADERS is fine.
        let mut raw = format!("GET /?token={TOKEN} HTTP/1.1\r\n").into_bytes();
        for i in 0..MAX_HEADERS {
            raw.extend(format!("X-{i}: 1\r\n").as_bytes());
        }
        raw.extend(b"\r\n");
        let r = request(addr, &raw).await;
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_client_is_answered_408_after_the_read_timeout() {
        let (addr, _, task) = server_with(Duration::from_millis(50)).await;
        // Half a request, then nothing.
        let r = request(addr, b"GET / HTTP/1.1\r\n").await;
        assert!(r.starts_with("HTTP/1.1 408 "), "{r}");
        task.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_bound_are_closed() {
        let (addr, _, task) = server().await;
        // MAX_CONNECTIONS clients that say nothing hold every slot.
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Wait until the server accepted them all: one more is closed
        // without an answer; it gets nothing back.
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra
            .write_all(format!("GET /?token={TOKEN} HTTP/1.1\r\n\r\n").as_bytes())
            .await;
        let mut out = Vec::new();
        let _ = extra.read_to_end(&mut out).await;
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        // A slot that comes free serves again.
        drop(held.pop());
        let mut served = false;
        for _ in 0..100 {
            let r = request(
                addr,
                format!("GET /?token={TOKEN} HTTP/1.1\r\n\r\n").as_bytes(),
            )
            .await;
            if r.starts_with("HTTP/1.1 200 ") {
                served = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(served);
        task.abort();
    }
}
