//! Proxy selection (which proxy, if any, for a target URL) and tunnels
//! through HTTP CONNECT proxies (plain or TLS) and SOCKS5 proxies.
//!
//! Selection follows the conventions of curl and Node's `proxy-from-env`
//! (what `proxy-agent` used for the JS agent), plus PM2's own `PM2_PROXY`:
//! - `PM2_PROXY`, when set, is the proxy for every target;
//! - otherwise `https_proxy`/`HTTPS_PROXY` for `https`/`wss` targets and
//!   `http_proxy`/`HTTP_PROXY` for `http`/`ws` ones, falling back on
//!   `all_proxy`/`ALL_PROXY` (lowercase wins, as in `proxy-from-env`);
//! - `no_proxy`/`NO_PROXY` exempts targets in every case, `PM2_PROXY`
//!   included.
//!
//! A proxy value without a scheme is taken as `http://` (curl does the
//! same). Supported schemes: `http`, `https`, `socks5` (the agent resolves
//! the target name), `socks5h` (the proxy does).

use std::collections::HashMap;
use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{tcp_connect, tls, BoxStream, NetError, NetOptions, Url};

/// Cap on a CONNECT answer's head: proxies answer with a few hundred bytes;
/// anything bigger is not a proxy we can talk to.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Where the agent's traffic should go, from the environment (or given).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyConfig {
    /// `PM2_PROXY`: every target.
    pm2: Option<Setting>,
    http: Option<Setting>,
    https: Option<Setting>,
    all: Option<Setting>,
    no_proxy: NoProxy,
}

/// One proxy variable: a usable URL, or why it is not. An unusable value is
/// kept (rather than dropped) so connections fail with the reason instead of
/// silently bypassing a proxy the user asked for.
#[derive(Debug, Clone, PartialEq)]
enum Setting {
    Valid(Url),
    Invalid { var: String, reason: String },
}

impl ProxyConfig {
    /// The settings of the process environment. Non-UTF-8 variables are
    /// skipped (they cannot hold a usable URL anyway).
    pub fn from_env() -> ProxyConfig {
        let env: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let cfg = ProxyConfig::from_env_map(&env);
        for s in [&cfg.pm2, &cfg.https, &cfg.http, &cfg.all]
            .into_iter()
            .flatten()
        {
            match s {
                Setting::Valid(u) => tracing::info!(proxy = %label(u), "proxy configured"),
                Setting::Invalid { var, reason } => tracing::warn!(
                    "{var} is unusable ({reason}): connections that need it will fail"
                ),
            }
        }
        cfg
    }

    /// The settings an environment map describes (pure, for tests).
    pub fn from_env_map(env: &HashMap<String, String>) -> ProxyConfig {
        let get = |names: &[&'static str]| -> Option<Setting> {
            names.iter().find_map(|&n| {
                let v = env.get(n).map(|v| v.trim()).filter(|v| !v.is_empty())?;
                Some(parse_setting(n, v))
            })
        };
        let no_proxy = ["no_proxy", "NO_PROXY"]
            .iter()
            .find_map(|n| env.get(*n).filter(|v| !v.trim().is_empty()))
            .map(|v| NoProxy::parse(v))
            .unwrap_or_default();
        ProxyConfig {
            pm2: get(&["PM2_PROXY"]),
            http: get(&["http_proxy", "HTTP_PROXY"]),
            https: get(&["https_proxy", "HTTPS_PROXY"]),
            all: get(&["all_proxy", "ALL_PROXY"]),
            no_proxy,
        }
    }

    /// One proxy for every target (what `PM2_PROXY` does), no exemptions.
    pub fn for_all(proxy: Url) -> Result<ProxyConfig, NetError> {
        check_scheme(&proxy).map_err(|reason| NetError::Proxy {
            proxy: label(&proxy),
            reason,
        })?;
        Ok(ProxyConfig {
            pm2: Some(Setting::Valid(proxy)),
            ..ProxyConfig::default()
        })
    }

    /// True when no proxy variable is set at all.
    pub fn is_empty(&self) -> bool {
        self.pm2.is_none() && self.http.is_none() && self.https.is_none() && self.all.is_none()
    }

    /// The proxy to reach `target` through, `None` for a direct connection,
    /// or an error when the applicable proxy variable is unusable.
    pub fn proxy_for(&self, target: &Url) -> Result<Option<&Url>, NetError> {
        let setting = if self.pm2.is_some() {
            self.pm2.as_ref()
        } else if target.is_tls() {
            self.https.as_ref().or(self.all.as_ref())
        } else {
            self.http.as_ref().or(self.all.as_ref())
        };
        let Some(setting) = setting else {
            return Ok(None);
        };
        if self.no_proxy.matches(&target.host, target.port) {
            tracing::debug!(target = %target, "NO_PROXY: connecting directly");
            return Ok(None);
        }
        match setting {
            Setting::Valid(u) => Ok(Some(u)),
            Setting::Invalid { var, reason } => Err(NetError::Proxy {
                proxy: var.clone(),
                reason: reason.clone(),
            }),
        }
    }
}

fn parse_setting(var: &str, value: &str) -> Setting {
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    match Url::parse(&with_scheme) {
        // The value is not echoed: it may carry a password.
        Err(_) => Setting::Invalid {
            var: var.to_owned(),
            reason: "not a valid proxy URL".into(),
        },
        Ok(u) => match check_scheme(&u) {
            Ok(()) => Setting::Valid(u),
            Err(reason) => Setting::Invalid {
                var: var.to_owned(),
                reason,
            },
        },
    }
}

fn check_scheme(u: &Url) -> Result<(), String> {
    match u.scheme.as_str() {
        "http" | "https" | "socks5" | "socks5h" => Ok(()),
        s => Err(format!(
            "unsupported proxy scheme {s:?} (use http, https, socks5 or socks5h)"
        )),
    }
}

/// A proxy as shown in errors and logs: scheme, host and port, never the
/// credentials.
pub fn label(proxy: &Url) -> String {
    format!("{}://{}", proxy.scheme, proxy.host_header())
}

/// Parsed `NO_PROXY`: `*`, domain names (matching themselves and their
/// subdomains, with or without a leading `.` or `*.`), IP addresses, CIDR
/// blocks, each optionally with `:port`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NoProxy {
    everything: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone, PartialEq)]
enum NoProxyEntry {
    Domain { name: String, port: Option<u16> },
    Ip { ip: IpAddr, port: Option<u16> },
    Cidr { net: IpAddr, prefix: u8 },
}

impl NoProxy {
    pub fn parse(list: &str) -> NoProxy {
        let mut np = NoProxy::default();
        for raw in list.split(|c: char| c == ',' || c.is_whitespace()) {
            let e = raw.trim().to_ascii_lowercase();
            if e.is_empty() {
                continue;
            }
            if e == "*" {
                np.everything = true;
                continue;
            }
            match parse_entry(&e) {
                Some(entry) => np.entries.push(entry),
                None => tracing::debug!(entry = %e, "ignoring unusable NO_PROXY entry"),
            }
        }
        np
    }

    /// Whether `host` (as in [`Url::host`]: lowercase, IPv6 without
    /// brackets) on `port` is exempt from proxying.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.everything {
            return true;
        }
        let host = host.trim_end_matches('.');
        let ip = host.parse::<IpAddr>().ok();
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        self.entries.iter().any(|e| match e {
            NoProxyEntry::Ip { ip: want, port: p } => ip == Some(*want) && port_ok(p),
            NoProxyEntry::Cidr { net, prefix } => ip.is_some_and(|ip| in_cidr(ip, *net, *prefix)),
            // Suffix matching is for names only: "0.1" must not exempt 127.0.0.1.
            NoProxyEntry::Domain { name, port: p } => {
                port_ok(p)
                    && (host == name
                        || (ip.is_none()
                            && host.len() > name.len()
                            && host.ends_with(name.as_str())
                            && host.as_bytes()[host.len() - name.len() - 1] == b'.'))
            }
        })
    }
}

fn parse_entry(e: &str) -> Option<NoProxyEntry> {
    if let Some((net, prefix)) = e.split_once('/') {
        let net: IpAddr = net
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(NoProxyEntry::Cidr { net, prefix });
    }
    if let Some(rest) = e.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some(NoProxyEntry::Ip {
            ip: ip.parse().ok()?,
            port,
        });
    }
    // A bare IPv6 address has several colons and no port.
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(NoProxyEntry::Ip { ip, port: None });
    }
    let (host, port) = match e.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (e, None),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(NoProxyEntry::Ip { ip, port });
    }
    let name = host
        .trim_start_matches("*.")
        .trim_start_matches('.')
        .trim_end_matches('.');
    (!name.is_empty()).then(|| NoProxyEntry::Domain {
        name: name.to_owned(),
        port,
    })
}

fn in_cidr(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Opens a tunnel to `host:port` through `proxy`. The returned stream talks
/// to the target (TLS to the target, if wanted, is the caller's job).
pub async fn tunnel(
    proxy: &Url,
    host: &str,
    port: u16,
    opts: &NetOptions,
) -> Result<BoxStream, NetError> {
    let name = label(proxy);
    let fail = |reason: String| NetError::Proxy {
        proxy: name.clone(),
        reason,
    };
    check_scheme(proxy).map_err(fail)?;
    let tcp = tcp_connect(&proxy.host, proxy.port)
        .await
        .map_err(|e| match e {
            NetError::Refused(_) => fail("connection refused".into()),
            NetError::Dns(_) => fail("cannot resolve the proxy's host name".into()),
            other => fail(other.to_string()),
        })?;
    match proxy.scheme.as_str() {
        "http" => Ok(Box::pin(http_connect(tcp, proxy, host, port).await?)),
        "https" => {
            let tls = tls::wrap(tcp, &proxy.host, opts.tls())
                .await
                .map_err(|e| match e {
                    NetError::Tls(t) => fail(format!("TLS to the proxy failed: {t}")),
                    other => other,
                })?;
            Ok(Box::pin(http_connect(tls, proxy, host, port).await?))
        }
        "socks5" => Ok(Box::pin(socks5(tcp, proxy, host, port, false).await?)),
        "socks5h" => Ok(Box::pin(socks5(tcp, proxy, host, port, true).await?)),
        // check_scheme above lets nothing else through.
        s => Err(fail(format!("unsupported proxy scheme {s:?}"))),
    }
}

/// `CONNECT host:port` on an HTTP proxy connection.
async fn http_connect<S>(mut s: S, proxy: &Url, host: &str, port: u16) -> Result<S, NetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = label(proxy);
    let fail = |reason: String| NetError::Proxy {
        proxy: name.clone(),
        reason,
    };
    // The host ends up in a request line: refuse anything that could split it.
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b))
    {
        return Err(NetError::InvalidUrl(host.to_owned()));
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(user) = &proxy.username {
        let creds = format!("{user}:{}", proxy.password.as_deref().unwrap_or(""));
        req.push_str(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            base64(creds.as_bytes())
        ));
    }
    req.push_str("\r\n");
    let io_fail = |e: std::io::Error| fail(format!("CONNECT failed: {e}"));
    s.write_all(req.as_bytes()).await.map_err(io_fail)?;
    s.flush().await.map_err(io_fail)?;

    // Byte by byte: whatever follows the blank line belongs to the tunnel,
    // and a few hundred small reads once per connection cost nothing.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_CONNECT_RESPONSE {
            return Err(fail("CONNECT answer too large".into()));
        }
        match s.read(&mut byte).await.map_err(io_fail)? {
            0 => {
                return Err(fail(
                    "closed the connection without answering CONNECT".into(),
                ))
            }
            _ => head.push(byte[0]),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(fail(
                "answered CONNECT with something that is not HTTP".into(),
            ))
        }
    }
    let code = res.code.unwrap_or(0);
    match code {
        200..=299 => Ok(s),
        407 => Err(NetError::ProxyAuth(name.clone())),
        _ => Err(fail(
            format!("CONNECT answered {code} {}", res.reason.unwrap_or(""))
                .trim_end()
                .to_owned(),
        )),
    }
}

/// SOCKS5 (RFC 1928) CONNECT, with RFC 1929 username/password when the proxy
/// URL has credentials. `remote_dns` sends the name (socks5h) instead of an
/// address resolved here (socks5).
async fn socks5<S>(
    mut s: S,
    proxy: &Url,
    host: &str,
    port: u16,
    remote_dns: bool,
) -> Result<S, NetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = label(proxy);
    let fail = |reason: String| NetError::Proxy {
        proxy: name.clone(),
        reason,
    };
    let io_fail = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            fail("SOCKS5 proxy closed the connection during the handshake".into())
        }
        _ => fail(format!("SOCKS5 handshake failed: {e}")),
    };
    let creds = match (&proxy.username, &proxy.password) {
        (Some(u), p) if !u.is_empty() || p.as_deref().is_some_and(|p| !p.is_empty()) => {
            Some((u.as_str(), p.as_deref().unwrap_or("")))
        }
        _ => None,
    };

    // Greeting: offer no-auth, plus username/password when we have some.
    let greeting: &[u8] = if creds.is_some() {
        &[5, 2, 0x00, 0x02]
    } else {
        &[5, 1, 0x00]
    };
    s.write_all(greeting).await.map_err(io_fail)?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.map_err(io_fail)?;
    if choice[0] != 5 {
        return Err(fail("not a SOCKS5 proxy".into()));
    }
    match (choice[1], creds) {
        (0x00, _) => {}
        (0x02, Some((user, pass))) => {
            if user.is_empty() || user.len() > 255 || pass.len() > 255 {
                return Err(fail(
                    "SOCKS5 username and password must be 1-255 and 0-255 bytes".into(),
                ));
            }
            let mut auth = Vec::with_capacity(3 + user.len() + pass.len());
            auth.push(1);
            auth.push(user.len() as u8);
            auth.extend_from_slice(user.as_bytes());
            auth.push(pass.len() as u8);
            auth.extend_from_slice(pass.as_bytes());
            s.write_all(&auth).await.map_err(io_fail)?;
            let mut status = [0u8; 2];
            s.read_exact(&mut status).await.map_err(io_fail)?;
            if status[1] != 0 {
                return Err(fail(
                    "SOCKS5 authentication failed (wrong username or password)".into(),
                ));
            }
        }
        (0xFF, None) => {
            return Err(fail(
                "SOCKS5 proxy requires authentication (add user:password to the proxy URL)".into(),
            ))
        }
        (0xFF, Some(_)) => {
            return Err(fail(
                "SOCKS5 proxy accepts none of our authentication methods".into(),
            ))
        }
        (m, _) => {
            return Err(fail(format!(
                "SOCKS5 proxy chose authentication method {m:#04x} we did not offer"
            )))
        }
    }

    // CONNECT request with the target address.
    let mut req = vec![5, 1, 0];
    match host.parse::<IpAddr>() {
        Ok(ip) => push_ip(&mut req, ip),
        Err(_) if remote_dns => {
            if host.len() > 255 {
                return Err(NetError::InvalidUrl(host.to_owned()));
            }
            req.push(3);
            req.push(host.len() as u8);
            req.extend_from_slice(host.as_bytes());
        }
        Err(_) => {
            // socks5: the proxy gets an address we resolved; the first one, as
            // the system resolver orders them.
            let ip = tokio::net::lookup_host((host, port))
                .await
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| NetError::Dns(host.to_owned()))?
                .ip();
            push_ip(&mut req, ip);
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.map_err(io_fail)?;

    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).await.map_err(io_fail)?;
    if reply[0] != 5 {
        return Err(fail("not a SOCKS5 proxy".into()));
    }
    if reply[1] != 0 {
        return Err(fail(format!(
            "SOCKS5 proxy could not connect to {host}:{port}: {}",
            socks_reply_text(reply[1])
        )));
    }
    // Skip the bound address so the tunnel starts at the target's first byte.
    let skip = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.map_err(io_fail)?;
            usize::from(len[0]) + 2
        }
        t => return Err(fail(format!("SOCKS5 reply has unknown address type {t}"))),
    };
    let mut bound = [0u8; 257];
    s.read_exact(&mut bound[..skip]).await.map_err(io_fail)?;
    Ok(s)
}

fn push_ip(req: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            req.push(1);
            req.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            req.push(4);
            req.extend_from_slice(&v6.octets());
        }
    }
}

/// RFC 1928 §6 reply codes.
fn socks_reply_text(code: u8) -> String {
    match code {
        1 => "general SOCKS server failure".into(),
        2 => "connection not allowed by ruleset".into(),
        3 => "network unreachable".into(),
        4 => "host unreachable".into(),
        5 => "connection refused".into(),
        6 => "TTL expired".into(),
        7 => "command not supported".into(),
        8 => "address type not supported".into(),
        c => format!("unknown reply code {c}"),
    }
}

/// Standard base64 with padding (RFC 4648 §4), for `Proxy-Authorization`.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ProxyConfig {
        ProxyConfig::from_env_map(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn via(cfg: &ProxyConfig, target: &str) -> Option<String> {
        cfg.proxy_for(&Url::parse(target).unwrap())
            .unwrap()
            .map(label)
    }

    #[test]
    fn base64_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn scheme_specific_variables() {
        let cfg = env(&[
            ("HTTPS_PROXY", "http://s:3128"),
            ("http_proxy", "socks5://h:1080"),
            ("ALL_PROXY", "a:9"),
        ]);
        assert_eq!(
            via(&cfg, "https://root.keymetrics.io").as_deref(),
            Some("http://s:3128")
        );
        assert_eq!(
            via(&cfg, "wss://x.io/interaction").as_deref(),
            Some("http://s:3128")
        );
        assert_eq!(via(&cfg, "http://x.io").as_deref(), Some("socks5://h"));
        assert_eq!(via(&cfg, "ws://x.io").as_deref(), Some("socks5://h"));
        // ALL_PROXY fills in for a missing scheme-specific one; no scheme means http.
        let cfg = env(&[("HTTPS_PROXY", "http://s:3128"), ("ALL_PROXY", "a:9")]);
        assert_eq!(via(&cfg, "http://x.io").as_deref(), Some("http://a:9"));
        assert_eq!(via(&env(&[]), "https://x.io"), None);
        assert!(env(&[("HTTP_PROXY", "  ")]).is_empty());
    }

    #[test]
    fn lowercase_wins_and_pm2_proxy_overrides() {
        let cfg = env(&[
            ("https_proxy", "http://low:1"),
            ("HTTPS_PROXY", "http://up:2"),
        ]);
        assert_eq!(via(&cfg, "https://x.io").as_deref(), Some("http://low:1"));
        let cfg = env(&[
            ("PM2_PROXY", "https://pm2:3129"),
            ("HTTPS_PROXY", "http://up:2"),
            ("HTTP_PROXY", "http://h:3"),
        ]);
        assert_eq!(
            via(&cfg, "https://x.io").as_deref(),
            Some("https://pm2:3129")
        );
        assert_eq!(via(&cfg, "ws://x.io").as_deref(), Some("https://pm2:3129"));
    }

    #[test]
    fn no_proxy_applies_to_pm2_proxy_too() {
        let cfg = env(&[
            ("PM2_PROXY", "http://p:3128"),
            ("NO_PROXY", "internal.corp, .keymetrics.io"),
        ]);
        assert_eq!(via(&cfg, "https://root.keymetrics.io"), None);
        assert_eq!(via(&cfg, "https://keymetrics.io"), None);
        assert_eq!(via(&cfg, "https://api.internal.corp"), None);
        assert_eq!(
            via(&cfg, "https://pm2.io").as_deref(),
            Some("http://p:3128")
        );
    }

    #[test]
    fn no_proxy_forms() {
        let np = NoProxy::parse(
            "localhost,.example.com *.wild.org,exact.io:8443, 10.0.0.0/8,[::1]:9000,::2,192.168.1.7,\
             fd00::/8,bad/99,host.trailing.",
        );
        // Domain suffixes, with or without a leading dot or `*.`, on label boundaries.
        assert!(np.matches("localhost", 80));
        assert!(np.matches("example.com", 443));
        assert!(np.matches("a.b.example.com", 443));
        assert!(!np.matches("badexample.com", 443));
        assert!(np.matches("x.wild.org", 1));
        assert!(np.matches("wild.org", 1));
        assert!(np.matches("host.trailing", 1));
        assert!(np.matches("localhost.", 1));
        // host:port entries match that port only.
        assert!(np.matches("exact.io", 8443));
        assert!(np.matches("sub.exact.io", 8443));
        assert!(!np.matches("exact.io", 443));
        // IPs, CIDR blocks, bracketed and bare IPv6.
        assert!(np.matches("10.1.2.3", 80));
        assert!(!np.matches("11.1.2.3", 80));
        assert!(np.matches("192.168.1.7", 80));
        assert!(!np.matches("192.168.1.8", 80));
        assert!(np.matches("::1", 9000));
        assert!(!np.matches("::1", 9001));
        assert!(np.matches("::2", 1));
        assert!(np.matches("fd12::1", 1));
        assert!(!np.matches("fe80::1", 1));
        // Names only suffix-match names: an IP never matches "0.1"-like tails.
        assert!(!NoProxy::parse("0.1").matches("127.0.0.1", 80));
        assert!(!NoProxy::parse("").matches("anything", 80));
        assert!(NoProxy::parse("foo, *").matches("anything", 80));
        assert!(NoProxy::parse("0.0.0.0/0").matches("8.8.8.8", 53));
    }

    #[test]
    fn unusable_proxy_values_fail_loudly() {
        let cfg = env(&[("HTTPS_PROXY", "ftp://user:secret@p:21")]);
        match cfg.proxy_for(&Url::parse("https://x.io").unwrap()) {
            Err(NetError::Proxy { proxy, reason }) => {
                assert_eq!(proxy, "HTTPS_PROXY");
                assert!(
                    reason.contains("unsupported proxy scheme \"ftp\""),
                    "{reason}"
                );
                assert!(!reason.contains("secret"));
            }
            other => panic!("{other:?}"),
        }
        let cfg = env(&[("PM2_PROXY", "http://p:notaport")]);
        assert!(matches!(
            cfg.proxy_for(&Url::parse("http://x.io").unwrap()),
            Err(NetError::Proxy { .. })
        ));
        // ...but only when that proxy applies.
        let cfg = env(&[("PM2_PROXY", "http://p:notaport"), ("NO_PROXY", "x.io")]);
        assert_eq!(cfg.proxy_for(&Url::parse("http://x.io").unwrap()), Ok(None));
        assert!(ProxyConfig::for_all(Url::parse("ftp://p:21").unwrap()).is_err());
        assert!(ProxyConfig::for_all(Url::parse("socks5h://p").unwrap()).is_ok());
    }
}
