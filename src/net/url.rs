//! Just enough URL parsing for PM2.io endpoints and proxies: scheme,
//! optional `user:password@`, host (IPv6 in brackets), port, path+query.

use super::NetError;

#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    /// Lowercase scheme: http, https, ws, wss, socks5, socks5h, …
    pub scheme: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, NetError> {
        let bad = || NetError::InvalidUrl(s.to_owned());
        let (scheme, rest) = s.trim().split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else if path.is_empty() {
            "/".into()
        } else {
            path.to_owned()
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (Some(percent_decode(a)), Some(percent_decode(b))),
                None => (Some(percent_decode(u)), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(p) if !p.is_empty() => p.parse().map_err(|_| bad())?,
            _ => default_port(&scheme).ok_or_else(bad)?,
        };
        Ok(Url {
            scheme,
            username,
            password,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.scheme.as_str(), "https" | "wss")
    }

    /// `host:port` as written in a Host header (port omitted when default).
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if default_port(&self.scheme) == Some(self.port) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Joins a path onto this URL's base (used for `/api/node/verifyPM2`).
    pub fn join(&self, path: &str) -> Url {
        let mut u = self.clone();
        let base = self
            .path
            .split('?')
            .next()
            .unwrap_or("/")
            .trim_end_matches('/');
        u.path = format!("{base}{path}");
        u
    }
}

impl std::fmt::Debug for Url {
    /// Like the derived one, but a proxy password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Url")
            .field("scheme", &self.scheme)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .finish()
    }
}

impl std::fmt::Display for Url {
    /// Never prints credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.host_header(), self.path)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        "socks5" | "socks5h" | "socks" => Some(1080),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        // A `%` before a multi-byte character is kept, not sliced through.
        assert_eq!(
            Url::parse("ws://%aé@h/").unwrap().username.as_deref(),
            Some("%aé")
        );
        let u = Url::parse("https://root.keymetrics.io").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("https", "root.keymetrics.io", 443, "/")
        );
        assert_eq!(
            u.join("/api/node/verifyPM2").to_string(),
            "https://root.keymetrics.io/api/node/verifyPM2"
        );
        let u = Url::parse("ws://127.0.0.1:4000/interaction?x=1").unwrap();
        assert_eq!(
            (u.port, u.path.as_str(), u.host_header()),
            (4000, "/interaction?x=1", "127.0.0.1:4000".into())
        );
        let u = Url::parse("socks5://us%40r:p%3Ass@[::1]:1081").unwrap();
        assert_eq!(
            (
                u.username.as_deref(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port
            ),
            (Some("us@r"), Some("p:ss"), "::1", 1081)
        );
        assert!(!u.to_string().contains("p:ss"));
        assert!(!format!("{u:?}").contains("p:ss"));
        assert!(Url::parse("nope").is_err());
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://:80").is_err());
        assert_eq!(
            Url::parse("http://h:81/base/").unwrap().join("/api").path,
            "/base/api"
        );
    }
}
