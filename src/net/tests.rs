//! End-to-end tests of the net layer against servers on 127.0.0.1 with
//! ephemeral ports: HTTP framing, HTTP CONNECT proxies (plain and TLS),
//! SOCKS5 proxies, and TLS with a private CA made by rcgen.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

// ---------------------------------------------------------------- helpers

fn opts() -> NetOptions {
    NetOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..NetOptions::default()
    }
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn via(proxy: &str) -> NetOptions {
    NetOptions {
        proxy: Some(ProxyConfig::for_all(url(proxy)).unwrap()),
        ..opts()
    }
}

async fn listen() -> (TcpListener, u16) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    listen().await.1
}

/// Reads one request: head byte by byte, then a Content-Length body.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 || s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    let lower = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.ok()?;
    head.extend(body);
    Some(head)
}

/// What a test HTTP server answers, and whether it then keeps the
/// connection open (so a client waiting for close would hang).
#[derive(Clone)]
struct Reply {
    bytes: Vec<u8>,
    hold_open: bool,
}

fn reply(bytes: impl Into<Vec<u8>>, hold_open: bool) -> Reply {
    Reply {
        bytes: bytes.into(),
        hold_open,
    }
}

fn json_reply(status: &str, body: &str) -> Reply {
    reply(
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        false,
    )
}

/// An HTTP server (TLS with `tls`) answering every connection with `reply`;
/// the raw requests it read come out of the receiver.
async fn http_server(
    tls: Option<Arc<rustls::ServerConfig>>,
    reply: Reply,
) -> (u16, mpsc::Receiver<Vec<u8>>) {
    let (l, port) = listen().await;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (tx, reply, tls) = (tx.clone(), reply.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(cfg) => {
                        if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                            serve(s, reply, tx).await
                        }
                    }
                    None => serve(tcp, reply, tx).await,
                }
            });
        }
    });
    (port, rx)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    reply: Reply,
    tx: mpsc::Sender<Vec<u8>>,
) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    let _ = tx.try_send(req);
    let _ = s.write_all(&reply.bytes).await;
    let _ = s.flush().await;
    if reply.hold_open {
        tokio::time::sleep(Duration::from_secs(60)).await;
    } else {
        let _ = s.shutdown().await;
    }
}

/// A test PKI: an rcgen CA, a leaf for `names` signed by it, the CA in a
/// PEM file, and matching server and client configs.
struct Pki {
    ca_path: PathBuf,
    server: Arc<rustls::ServerConfig>,
    /// Trusts the OS store plus the CA file, through `tls::build_config`.
    client: Arc<rustls::ClientConfig>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_path);
    }
}

fn pki(names: &[&str], expired: bool) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "keymetrics-agent test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    if expired {
        leaf.not_before = rcgen::date_time_ymd(2000, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    static N: AtomicUsize = AtomicUsize::new(0);
    let ca_path = std::env::temp_dir().join(format!(
        "km-net-test-ca-{}-{}.pem",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf_cert.der().clone()], key)
    .unwrap();
    let client = Arc::new(tls::build_config(std::slice::from_ref(&ca_path)));
    Pki {
        ca_path,
        server: Arc::new(server),
        client,
    }
}

fn with_tls(mut o: NetOptions, p: &Pki) -> NetOptions {
    o.tls_config = Some(p.client.clone());
    o
}

/// Behaviour of the test HTTP CONNECT proxy.
#[derive(Clone, Default)]
struct ConnectProxy {
    /// Required `Proxy-Authorization` value; anything else gets a 407.
    auth: Option<String>,
    /// Canned answer instead of tunnelling.
    answer: Option<&'static str>,
    /// Serve the proxy itself over TLS (an `https://` proxy).
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// A CONNECT proxy; each request head it read comes out of the receiver.
async fn connect_proxy(p: ConnectProxy) -> (u16, mpsc::Receiver<String>) {
    let (l, port) = listen().await;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (p, tx) = (p.clone(), tx.clone());
            tokio::spawn(async move {
                match p.tls.clone() {
                    Some(cfg) => {
                        if let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                            handle_connect(s, p, tx).await
                        }
                    }
                    None => handle_connect(tcp, p, tx).await,
                }
            });
        }
    });
    (port, rx)
}

async fn handle_connect<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    p: ConnectProxy,
    tx: mpsc::Sender<String>,
) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    let head = String::from_utf8_lossy(&req).into_owned();
    let _ = tx.try_send(head.clone());
    if let Some(answer) = p.answer {
        let _ = s.write_all(answer.as_bytes()).await;
        return;
    }
    if let Some(want) = &p.auth {
        if head
            .lines()
            .find_map(|l| l.strip_prefix("Proxy-Authorization: "))
            != Some(want.as_str())
        {
            let _ = s
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"t\"\r\n\r\n")
                .await;
            return;
        }
    }
    let mut words = head.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        return;
    };
    let Some((host, port)) = target.rsplit_once(':') else {
        return;
    };
    // The test servers listen on IPv4 loopback only.
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let Ok(mut up) = TcpStream::connect((host, port.parse::<u16>().unwrap_or(0))).await else {
        let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    let _ = s
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await;
    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
}

/// Behaviour of the test SOCKS5 proxy.
#[derive(Clone, Default)]
struct Socks {
    /// Required username/password (RFC 1929); `None` = no-auth only.
    creds: Option<(String, String)>,
    /// Reply code to the CONNECT request (0 = tunnel).
    reply: u8,
}

/// What the SOCKS5 proxy saw.
#[derive(Debug, PartialEq)]
enum Seen {
    Ip(IpAddr, u16),
    Domain(String, u16),
    AuthFailed,
    NoAcceptableMethod,
}

async fn socks_proxy(p: Socks) -> (u16, mpsc::Receiver<Seen>) {
    let (l, port) = listen().await;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(handle_socks(tcp, p.clone(), tx.clone()));
        }
    });
    (port, rx)
}

async fn handle_socks(mut s: TcpStream, p: Socks, tx: mpsc::Sender<Seen>) -> Option<()> {
    let mut hello = [0u8; 2];
    s.read_exact(&mut hello).await.ok()?;
    let mut methods = vec![0; usize::from(hello[1])];
    s.read_exact(&mut methods).await.ok()?;
    let want = if p.creds.is_some() { 2 } else { 0 };
    if hello[0] != 5 || !methods.contains(&want) {
        s.write_all(&[5, 0xff]).await.ok()?;
        let _ = tx.try_send(Seen::NoAcceptableMethod);
        return None;
    }
    s.write_all(&[5, want]).await.ok()?;
    if let Some((user, pass)) = &p.creds {
        let mut v = [0u8; 2];
        s.read_exact(&mut v).await.ok()?;
        let mut u = vec![0; usize::from(v[1])];
        s.read_exact(&mut u).await.ok()?;
        let mut plen = [0u8; 1];
        s.read_exact(&mut plen).await.ok()?;
        let mut pw = vec![0; usize::from(plen[0])];
        s.read_exact(&mut pw).await.ok()?;
        if v[0] != 1 || u != user.as_bytes() || pw != pass.as_bytes() {
            s.write_all(&[1, 1]).await.ok()?;
            let _ = tx.try_send(Seen::AuthFailed);
            return None;
        }
        s.write_all(&[1, 0]).await.ok()?;
    }
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await.ok()?;
    let addr = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await.ok()?;
            Ok(IpAddr::from(a))
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await.ok()?;
            Ok(IpAddr::from(a))
        }
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.ok()?;
            let mut name = vec![0; usize::from(len[0])];
            s.read_exact(&mut name).await.ok()?;
            Err(String::from_utf8(name).ok()?)
        }
        _ => return None,
    };
    let mut port = [0u8; 2];
    s.read_exact(&mut port).await.ok()?;
    let port = u16::from_be_bytes(port);
    let _ = tx.try_send(match &addr {
        Ok(ip) => Seen::Ip(*ip, port),
        Err(name) => Seen::Domain(name.clone(), port),
    });
    if p.reply != 0 {
        s.write_all(&[5, p.reply, 0, 1, 0, 0, 0, 0, 0, 0])
            .await
            .ok()?;
        return None;
    }
    // Loopback (and "localhost") go to 127.0.0.1, where the test servers are.
    let reachable = match &addr {
        Ok(ip) => ip.is_loopback(),
        Err(name) => name == "localhost",
    };
    if !reachable {
        s.write_all(&[5, 4, 0, 1, 0, 0, 0, 0, 0, 0]).await.ok()?;
        return None;
    }
    let mut up = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
    // Bound address as a domain for name requests, IPv4 otherwise, so the
    // client's skipping of both forms is exercised.
    let mut ok = vec![5, 0, 0];
    if addr.is_err() {
        ok.extend_from_slice(&[3, 10]);
        ok.extend_from_slice(b"proxy.test");
    } else {
        ok.extend_from_slice(&[1, 127, 0, 0, 1]);
    }
    ok.extend_from_slice(&[0x12, 0x34]);
    s.write_all(&ok).await.ok()?;
    tokio::io::copy_bidirectional(&mut s, &mut up).await.ok()?;
    Some(())
}

// ---------------------------------------------------------------- HTTP client

#[tokio::test]
async fn content_length_body_and_request_bytes() {
    // The server keeps the connection open: the client must stop at the length.
    let (port, mut reqs) = http_server(
        None,
        reply(
            "HTTP/1.1 200 OK\r\nX-Thing: b\r\nContent-Length: 5\r\n\r\nhello",
            true,
        ),
    )
    .await;
    let ua = [("User-Agent".to_owned(), "PM2 Agent v9".to_owned())];
    let target = url(&format!("http://127.0.0.1:{port}/api/node/verifyPM2"));
    let res = http::post_json(&target, &json!({"name": "café"}), &ua, &opts())
        .await
        .unwrap();
    assert_eq!(
        (res.status, res.body.as_slice(), res.header("x-thing")),
        (200, &b"hello"[..], Some("b"))
    );

    let req = String::from_utf8(reqs.recv().await.unwrap()).unwrap();
    let body = r#"{"name":"café"}"#;
    assert!(
        req.starts_with("POST /api/node/verifyPM2 HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(
        req.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
        "{req}"
    );
    // Bytes (16), not characters (15): the test server reads exactly that many.
    assert!(req.contains("Content-Length: 16\r\n"), "{req}");
    assert!(
        req.contains("Content-Type: application/json\r\n")
            && req.contains("User-Agent: PM2 Agent v9\r\n")
    );
    assert!(req.contains("Connection: close\r\n"), "{req}");
    assert!(req.ends_with(&format!("\r\n\r\n{body}")), "{req}");
}

#[tokio::test]
async fn chunked_body() {
    let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
               5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let (port, _) = http_server(None, reply(raw, true)).await;
    let res = http::request(
        "GET",
        &url(&format!("http://127.0.0.1:{port}/")),
        &[],
        None,
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(res.body, b"hello, world");
}

#[tokio::test]
async fn close_delimited_body() {
    let (port, _) = http_server(None, reply("HTTP/1.1 200 OK\r\n\r\nuntil the end", false)).await;
    let res = http::request(
        "GET",
        &url(&format!("http://127.0.0.1:{port}/")),
        &[],
        None,
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!(res.body, b"until the end");
}

#[tokio::test]
async fn interim_response_is_skipped() {
    let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let (port, _) = http_server(None, reply(raw, true)).await;
    let res = http::request(
        "GET",
        &url(&format!("http://127.0.0.1:{port}/")),
        &[],
        None,
        &opts(),
    )
    .await
    .unwrap();
    assert_eq!((res.status, res.body.as_slice()), (201, &b"ok"[..]));
}

#[tokio::test]
async fn error_status_still_returns_the_body() {
    let (port, _) = http_server(
        None,
        json_reply(
            "500 Internal Server Error",
            r#"{"error":true,"msg":"down"}"#,
        ),
    )
    .await;
    let target = url(&format!("http://127.0.0.1:{port}/api/node/verifyPM2"));
    let res = http::post_json(&target, &json!({}), &[], &opts())
        .await
        .unwrap();
    assert_eq!(res.status, 500);
    assert_eq!(res.json().unwrap()["msg"], "down");
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let big = 5 * 1024 * 1024;
    let cases = [
        reply(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {big}\r\n\r\n"),
            true,
        ),
        reply(
            [b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), vec![b'x'; big]].concat(),
            false,
        ),
        {
            let chunk = [
                b"100000\r\n".to_vec(),
                vec![b'x'; 0x100000],
                b"\r\n".to_vec(),
            ]
            .concat();
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..5 {
                raw.extend_from_slice(&chunk);
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            reply(raw, false)
        },
    ];
    for (i, r) in cases.into_iter().enumerate() {
        let (port, _) = http_server(None, r).await;
        match http::request(
            "GET",
            &url(&format!("http://127.0.0.1:{port}/")),
            &[],
            None,
            &opts(),
        )
        .await
        {
            Err(NetError::Http(m)) => assert!(m.contains("4 MiB limit"), "case {i}: {m}"),
            other => panic!("case {i}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn truncated_body_is_an_error() {
    let (port, _) = http_server(
        None,
        reply("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", false),
    )
    .await;
    match http::request(
        "GET",
        &url(&format!("http://127.0.0.1:{port}/")),
        &[],
        None,
        &opts(),
    )
    .await
    {
        Err(NetError::Http(m)) => assert!(m.contains("after 3 of 10 body bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn silent_server_times_out() {
    let (port, _) = http_server(None, reply("", true)).await;
    let o = NetOptions {
        request_timeout: Duration::from_millis(300),
        ..opts()
    };
    let start = Instant::now();
    let res = http::post_json(
        &url(&format!("http://127.0.0.1:{port}/")),
        &json!({}),
        &[],
        &o,
    )
    .await;
    assert_eq!(res, Err(NetError::Timeout(Duration::from_millis(300))));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn direct_refusal_and_bad_schemes() {
    let port = closed_port().await;
    let res = connect(&url(&format!("http://127.0.0.1:{port}/")), &opts())
        .await
        .map(|_| ());
    assert_eq!(res, Err(NetError::Refused(format!("127.0.0.1:{port}"))));
    let res = connect(&url("socks5://127.0.0.1:1"), &opts())
        .await
        .map(|_| ());
    assert!(matches!(res, Err(NetError::InvalidUrl(_))), "{res:?}");
}

// ---------------------------------------------------------------- HTTP CONNECT proxy

#[tokio::test]
async fn http_through_connect_proxy() {
    let (srv, mut reqs) = http_server(None, json_reply("200 OK", r#"{"ok":1}"#)).await;
    let (pport, mut heads) = connect_proxy(ConnectProxy::default()).await;
    let target = url(&format!("http://127.0.0.1:{srv}/api/node/verifyPM2"));
    let res = http::post_json(
        &target,
        &json!({"a": 1}),
        &[],
        &via(&format!("http://127.0.0.1:{pport}")),
    )
    .await
    .unwrap();
    assert_eq!(res.json().unwrap(), json!({"ok": 1}));
    let head = heads.recv().await.unwrap();
    assert!(
        head.starts_with(&format!(
            "CONNECT 127.0.0.1:{srv} HTTP/1.1\r\nHost: 127.0.0.1:{srv}\r\n"
        )),
        "{head}"
    );
    assert!(!head.contains("Proxy-Authorization"), "{head}");
    assert!(String::from_utf8(reqs.recv().await.unwrap())
        .unwrap()
        .starts_with("POST /api/node/verifyPM2 "));
}

#[tokio::test]
async fn connect_proxy_basic_auth() {
    let (srv, _) = http_server(None, json_reply("200 OK", "{}")).await;
    // base64("agent:p@ss:word"), computed independently of our encoder.
    let p = ConnectProxy {
        auth: Some("Basic YWdlbnQ6cEBzczp3b3Jk".into()),
        ..Default::default()
    };
    let (pport, _) = connect_proxy(p).await;
    let target = url(&format!("http://127.0.0.1:{srv}/"));

    let good = via(&format!("http://agent:p%40ss%3Aword@127.0.0.1:{pport}"));
    assert_eq!(
        http::post_json(&target, &json!({}), &[], &good)
            .await
            .unwrap()
            .status,
        200
    );

    let bad = via(&format!("http://agent:nope@127.0.0.1:{pport}"));
    let res = http::post_json(&target, &json!({}), &[], &bad).await;
    assert_eq!(
        res,
        Err(NetError::ProxyAuth(format!("http://127.0.0.1:{pport}")))
    );
    let none = via(&format!("http://127.0.0.1:{pport}"));
    assert!(matches!(
        http::post_json(&target, &json!({}), &[], &none).await,
        Err(NetError::ProxyAuth(_))
    ));
}

#[tokio::test]
async fn connect_proxy_errors_are_specific() {
    let (pport, _) = connect_proxy(ConnectProxy {
        answer: Some("HTTP/1.1 502 Bad Gateway\r\n\r\n"),
        ..Default::default()
    })
    .await;
    let res = connect(
        &url("http://127.0.0.1:9/"),
        &via(&format!("http://127.0.0.1:{pport}")),
    )
    .await
    .map(|_| ());
    let proxy = format!("http://127.0.0.1:{pport}");
    assert_eq!(
        res,
        Err(NetError::Proxy {
            proxy,
            reason: "CONNECT answered 502 Bad Gateway".into()
        })
    );

    let dead = closed_port().await;
    let res = connect(
        &url("http://127.0.0.1:9/"),
        &via(&format!("http://127.0.0.1:{dead}")),
    )
    .await
    .map(|_| ());
    let proxy = format!("http://127.0.0.1:{dead}");
    assert_eq!(
        res,
        Err(NetError::Proxy {
            proxy,
            reason: "connection refused".into()
        })
    );

    let (pport, _) = connect_proxy(ConnectProxy {
        answer: Some(""),
        ..Default::default()
    })
    .await;
    match connect(
        &url("http://127.0.0.1:9/"),
        &via(&format!("http://127.0.0.1:{pport}")),
    )
    .await
    .map(|_| ())
    {
        Err(NetError::Proxy { reason, .. }) => {
            assert!(reason.contains("without answering CONNECT"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn https_through_connect_proxy() {
    let pki = pki(&["localhost", "127.0.0.1"], false);
    let (srv, mut reqs) = http_server(
        Some(pki.server.clone()),
        json_reply("200 OK", r#"{"tls":true}"#),
    )
    .await;
    let (pport, mut heads) = connect_proxy(ConnectProxy::default()).await;
    let o = with_tls(via(&format!("http://127.0.0.1:{pport}")), &pki);
    let target = url(&format!("https://localhost:{srv}/api/node/verifyPM2"));
    let res = http::post_json(&target, &json!({"x": 1}), &[], &o)
        .await
        .unwrap();
    assert_eq!(res.json().unwrap(), json!({"tls": true}));
    assert!(heads
        .recv()
        .await
        .unwrap()
        .starts_with(&format!("CONNECT localhost:{srv} HTTP/1.1\r\n")));
    let req = String::from_utf8(reqs.recv().await.unwrap()).unwrap();
    assert!(
        req.contains(&format!("Host: localhost:{srv}\r\n")) && req.ends_with(r#"{"x":1}"#),
        "{req}"
    );
}

#[tokio::test]
async fn https_through_tls_proxy() {
    // TLS to the proxy, CONNECT, then TLS to the target inside that tunnel.
    let pki = pki(&["localhost", "127.0.0.1"], false);
    let (srv, _) = http_server(
        Some(pki.server.clone()),
        json_reply("200 OK", r#"{"inner":true}"#),
    )
    .await;
    let (pport, mut heads) = connect_proxy(ConnectProxy {
        tls: Some(pki.server.clone()),
        ..Default::default()
    })
    .await;
    let o = with_tls(via(&format!("https://localhost:{pport}")), &pki);
    let res = http::post_json(
        &url(&format!("https://localhost:{srv}/")),
        &json!({}),
        &[],
        &o,
    )
    .await
    .unwrap();
    assert_eq!(res.json().unwrap(), json!({"inner": true}));
    assert!(heads
        .recv()
        .await
        .unwrap()
        .starts_with(&format!("CONNECT localhost:{srv} ")));

    // Without our CA, the proxy's own certificate is what fails.
    let o = NetOptions {
        tls_config: Some(Arc::new(tls::build_config(&[]))),
        ..via(&format!("https://localhost:{pport}"))
    };
    match http::post_json(
        &url(&format!("https://localhost:{srv}/")),
        &json!({}),
        &[],
        &o,
    )
    .await
    {
        Err(NetError::Proxy { reason, .. }) => {
            assert!(reason.contains("unknown authority"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_proxy_bypasses_pm2_proxy() {
    let (srv, _) = http_server(None, json_reply("200 OK", "{}")).await;
    let (pport, mut heads) = connect_proxy(ConnectProxy::default()).await;
    let target = url(&format!("http://127.0.0.1:{srv}/"));
    let env = |no_proxy: &str| {
        let mut m = std::collections::HashMap::new();
        m.insert("PM2_PROXY".to_owned(), format!("http://127.0.0.1:{pport}"));
        m.insert("NO_PROXY".to_owned(), no_proxy.to_owned());
        NetOptions {
            proxy: Some(ProxyConfig::from_env_map(&m)),
            ..opts()
        }
    };
    http::post_json(&target, &json!({}), &[], &env("example.com, 127.0.0.1"))
        .await
        .unwrap();
    assert!(
        heads.try_recv().is_err(),
        "NO_PROXY target went through the proxy"
    );
    http::post_json(&target, &json!({}), &[], &env("example.com"))
        .await
        .unwrap();
    assert!(heads
        .recv()
        .await
        .unwrap()
        .starts_with("CONNECT 127.0.0.1:"));
}

// ---------------------------------------------------------------- SOCKS5

async fn socks_get(
    proxy: &str,
    target: &str,
    o: NetOptions,
) -> Result<http::HttpResponse, NetError> {
    let o = NetOptions {
        proxy: Some(ProxyConfig::for_all(url(proxy)).unwrap()),
        ..o
    };
    http::request("GET", &url(target), &[], None, &o).await
}

#[tokio::test]
async fn socks5_resolves_locally() {
    let (srv, _) = http_server(None, json_reply("200 OK", r#"{"s":5}"#)).await;
    let (sport, mut seen) = socks_proxy(Socks::default()).await;
    let res = socks_get(
        &format!("socks5://127.0.0.1:{sport}"),
        &format!("http://localhost:{srv}/"),
        opts(),
    )
    .await;
    assert_eq!(res.unwrap().json().unwrap(), json!({"s": 5}));
    match seen.recv().await.unwrap() {
        Seen::Ip(ip, port) => assert!(ip.is_loopback() && port == srv, "{ip} {port}"),
        other => panic!("proxy should get an address, got {other:?}"),
    }
}

#[tokio::test]
async fn socks5h_sends_the_name() {
    let (srv, _) = http_server(None, json_reply("200 OK", r#"{"s":"5h"}"#)).await;
    let (sport, mut seen) = socks_proxy(Socks::default()).await;
    let res = socks_get(
        &format!("socks5h://127.0.0.1:{sport}"),
        &format!("http://localhost:{srv}/"),
        opts(),
    )
    .await;
    assert_eq!(res.unwrap().json().unwrap(), json!({"s": "5h"}));
    assert_eq!(
        seen.recv().await.unwrap(),
        Seen::Domain("localhost".into(), srv)
    );
}

#[tokio::test]
async fn https_through_socks5h() {
    let pki = pki(&["localhost"], false);
    let (srv, _) = http_server(Some(pki.server.clone()), json_reply("200 OK", "[1]")).await;
    let (sport, _) = socks_proxy(Socks::default()).await;
    let res = socks_get(
        &format!("socks5h://127.0.0.1:{sport}"),
        &format!("https://localhost:{srv}/"),
        with_tls(opts(), &pki),
    )
    .await;
    assert_eq!(res.unwrap().body, b"[1]");
}

#[tokio::test]
async fn socks5_username_password() {
    let (srv, _) = http_server(None, json_reply("200 OK", "{}")).await;
    let creds = Some(("agent".to_owned(), "s3cr:t".to_owned()));
    let (sport, mut seen) = socks_proxy(Socks {
        creds,
        ..Default::default()
    })
    .await;
    let target = format!("http://localhost:{srv}/");

    let ok = socks_get(
        &format!("socks5h://agent:s3cr%3At@127.0.0.1:{sport}"),
        &target,
        opts(),
    )
    .await;
    assert_eq!(ok.unwrap().status, 200);
    assert_eq!(
        seen.recv().await.unwrap(),
        Seen::Domain("localhost".into(), srv)
    );

    let proxy = format!("socks5h://127.0.0.1:{sport}");
    let bad = socks_get(
        &format!("socks5h://agent:wrong@127.0.0.1:{sport}"),
        &target,
        opts(),
    )
    .await;
    let reason = "SOCKS5 authentication failed (wrong username or password)".to_owned();
    assert_eq!(
        bad,
        Err(NetError::Proxy {
            proxy: proxy.clone(),
            reason
        })
    );
    assert_eq!(seen.recv().await.unwrap(), Seen::AuthFailed);

    match socks_get(&proxy, &target, opts()).await {
        Err(NetError::Proxy { reason, .. }) => {
            assert!(reason.contains("requires authentication"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.recv().await.unwrap(), Seen::NoAcceptableMethod);
}

#[tokio::test]
async fn socks5_reply_codes_are_explained() {
    let (sport, _) = socks_proxy(Socks {
        reply: 5,
        ..Default::default()
    })
    .await;
    match socks_get(
        &format!("socks5h://127.0.0.1:{sport}"),
        "http://localhost:9/",
        opts(),
    )
    .await
    {
        Err(NetError::Proxy { reason, .. }) => {
            assert_eq!(
                reason,
                "SOCKS5 proxy could not connect to localhost:9: connection refused"
            )
        }
        other => panic!("{other:?}"),
    }
    let (sport, _) = socks_proxy(Socks {
        reply: 2,
        ..Default::default()
    })
    .await;
    match socks_get(
        &format!("socks5://127.0.0.1:{sport}"),
        "http://127.0.0.1:9/",
        opts(),
    )
    .await
    {
        Err(NetError::Proxy { reason, .. }) => assert!(
            reason.ends_with("connection not allowed by ruleset"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- TLS

async fn tls_error(names: &[&str], expired: bool, trust_ca: bool) -> String {
    let pki = pki(names, expired);
    let (srv, _) = http_server(Some(pki.server.clone()), json_reply("200 OK", "{}")).await;
    let o = if trust_ca {
        with_tls(opts(), &pki)
    } else {
        NetOptions {
            tls_config: Some(Arc::new(tls::build_config(&[]))),
            ..opts()
        }
    };
    match http::post_json(
        &url(&format!("https://localhost:{srv}/")),
        &json!({}),
        &[],
        &o,
    )
    .await
    {
        Err(NetError::Tls(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tls_with_and_without_the_ca() {
    let pki = pki(&["localhost", "127.0.0.1"], false);
    let (srv, _) = http_server(
        Some(pki.server.clone()),
        json_reply("200 OK", r#"{"secure":1}"#),
    )
    .await;
    for host in ["localhost", "127.0.0.1"] {
        let res = http::post_json(
            &url(&format!("https://{host}:{srv}/")),
            &json!({}),
            &[],
            &with_tls(opts(), &pki),
        )
        .await;
        assert_eq!(res.unwrap().json().unwrap(), json!({"secure": 1}), "{host}");
    }
    let m = tls_error(&["localhost"], false, false).await;
    assert!(
        m.contains("certificate signed by an unknown authority") && m.contains("PM2_AGENT_CA_FILE"),
        "{m}"
    );
}

#[tokio::test]
async fn tls_failures_are_classified() {
    let m = tls_error(&["other.test"], false, true).await;
    assert!(m.contains("name mismatch"), "{m}");
    let m = tls_error(&["localhost"], true, true).await;
    assert!(m.contains("certificate has expired"), "{m}");

    // A plain-HTTP server behind an https:// URL.
    let (l, port) = listen().await;
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    match connect(&url(&format!("https://localhost:{port}/")), &opts())
        .await
        .map(|_| ())
    {
        Err(NetError::Tls(m)) => assert!(m.contains("handshake failure"), "{m}"),
        other => panic!("{other:?}"),
    }
}
