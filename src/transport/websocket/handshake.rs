//! The WebSocket opening handshake, written by hand so the request is
//! byte for byte what the `ws` library sends (docs/protocols.md §7.1), and
//! checked the way `ws` checks the `101` answer.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::deflate::{self, Negotiated};
use super::inflate_stream::InflateStream;
use super::{WebSocketOptions, Ws, WsError};
use crate::common::Identity;
use crate::net::{self, BoxStream, Url};

/// Upper bound on the HTTP response head of the upgrade: a real 101 is a few
/// hundred bytes; anything bigger is not a WebSocket server.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// `ws:`/`wss:` as given, `http:`/`https:` mapped to them like the `ws`
/// library does (old configs and tests use `http://localhost:3900`).
pub fn parse_ws_url(s: &str) -> Result<Url, WsError> {
    if s.trim().is_empty() {
        return Err(WsError::NoUrl);
    }
    // Scheme first: `Url::parse` rejects schemes without a default port
    // with a less helpful message.
    if let Some((scheme, _)) = s.trim().split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "ws" | "wss" | "http" | "https") {
            return Err(WsError::Scheme(scheme));
        }
    }
    let mut url = Url::parse(s)?;
    if url.scheme == "http" {
        url.scheme = "ws".to_owned();
    } else if url.scheme == "https" {
        url.scheme = "wss".to_owned();
    }
    // The path goes verbatim into the request line: no spaces or controls
    // (request splitting).
    if url.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(WsError::Path(url.path));
    }
    Ok(url)
}

/// One connection attempt: TCP/TLS via `net`, then the HTTP upgrade. With
/// permessage-deflate agreed, tungstenite reads the server's frames through
/// an [`InflateStream`].
pub(super) async fn open(
    url: &Url,
    identity: &Identity,
    opts: &WebSocketOptions,
) -> Result<(Ws, Negotiated), WsError> {
    let key = generate_key();
    // Built first: a bad header value fails without touching the network.
    let request = upgrade_request(url, identity, &key, opts.gzip)?;
    let mut stream = net::connect(url, &opts.net).await?;
    let (leftover, negotiated) = tokio::time::timeout(
        opts.handshake_timeout,
        upgrade(&mut stream, &request, &key, opts.gzip),
    )
    .await
    .map_err(|_| WsError::HandshakeTimeout(opts.handshake_timeout))??;
    let config = config(opts);
    let ws = match negotiated.params() {
        Some(params) => {
            let stream: BoxStream = Box::pin(InflateStream::new(
                stream,
                leftover,
                &params,
                opts.max_message_size,
            ));
            WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await
        }
        None => {
            WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config)).await
        }
    };
    Ok((ws, negotiated))
}

/// The limits the socket reads the server's frames with.
pub(crate) fn config(opts: &WebSocketOptions) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(opts.max_message_size))
        .max_frame_size(Some(opts.max_message_size))
}

/// The upgrade request, byte for byte in the order and case `ws` 7 writes
/// it (docs/protocols.md §7.1), with `ws`'s permessage-deflate offer when
/// `gzip`. Written by hand because tungstenite's client handshake lowercases
/// header names and reorders them.
pub(super) fn upgrade_request(
    url: &Url,
    id: &Identity,
    key: &str,
    gzip: bool,
) -> Result<String, WsError> {
    let user_agent = format!("PM2 Agent v{}", id.agent_version);
    let host = url.host_header();
    let offer = gzip.then_some(("Sec-WebSocket-Extensions", deflate::OFFER));
    let headers: [Option<(&'static str, &str)>; 12] = [
        Some(("Sec-WebSocket-Version", "13")),
        Some(("Sec-WebSocket-Key", key)),
        Some(("Connection", "Upgrade")),
        Some(("Upgrade", "websocket")),
        Some(("X-KM-PUBLIC", &id.public_key)),
        Some(("X-KM-SECRET", &id.secret_key)),
        Some(("X-KM-SERVER", &id.machine_name)),
        Some(("X-PM2-VERSION", &id.pm2_version)),
        Some(("X-PROTOCOL-VERSION", "1")),
        Some(("User-Agent", &user_agent)),
        offer,
        Some(("Host", &host)),
    ];
    let mut req = format!("GET {} HTTP/1.1\r\n", url.path);
    for (name, value) in headers.into_iter().flatten() {
        // Node's rule (checkInvalidHeaderChar): no control characters, so a
        // key or machine name cannot inject headers.
        if value.chars().any(|c| (c < ' ' && c != '\t') || c == '\x7f') {
            return Err(WsError::HeaderValue(name));
        }
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    Ok(req)
}

/// Sends the request and reads the `101` response head; returns the bytes
/// read past it (frames the server may already have sent) and what the
/// server agreed to about compression.
async fn upgrade(
    stream: &mut BoxStream,
    request: &str,
    key: &str,
    offered: bool,
) -> Result<(Vec<u8>, Negotiated), WsError> {
    let io = |e: std::io::Error| WsError::Handshake(e.to_string());
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(WsError::Handshake(
                "connection closed before the HTTP response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((len, negotiated)) = check_response(&buf, key, offered)? {
            return Ok((buf.split_off(len), negotiated));
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(WsError::Handshake(format!(
                "HTTP response head larger than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
    }
}

/// `Ok(None)` while the head is incomplete; `Ok(Some((head_len,
/// negotiated)))` for a valid `101` (the checks `ws` makes: status, Upgrade,
/// Sec-WebSocket-Accept, no extension or subprotocol we did not ask for, a
/// permessage-deflate answer RFC 7692 allows). `offered`: we sent
/// [`deflate::OFFER`].
pub(super) fn check_response(
    buf: &[u8],
    key: &str,
    offered: bool,
) -> Result<Option<(usize, Negotiated)>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WsError::Handshake(format!("invalid HTTP response: {e}"))),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(WsError::HttpStatus(code));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(WsError::Handshake("invalid Upgrade header".into()));
    }
    if header("Sec-WebSocket-Accept").as_deref() != Some(derive_accept_key(key.as_bytes()).as_str())
    {
        return Err(WsError::Handshake(
            "invalid Sec-WebSocket-Accept header".into(),
        ));
    }
    if header("Sec-WebSocket-Protocol").is_some() {
        return Err(WsError::Handshake(
            "server sent a subprotocol that was not requested".into(),
        ));
    }
    // Every Sec-WebSocket-Extensions header, as one list (RFC 7230 §3.2.2).
    let mut extensions: Option<String> = None;
    for h in resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
    {
        let v = std::str::from_utf8(h.value)
            .map_err(|_| deflate::ExtensionError::Syntax("not ASCII".into()))?
            .trim();
        match &mut extensions {
            Some(all) => {
                all.push_str(", ");
                all.push_str(v);
            }
            None => extensions = Some(v.to_owned()),
        }
    }
    let negotiated = deflate::negotiate(extensions.as_deref(), offered)?;
    Ok(Some((len, negotiated)))
}
