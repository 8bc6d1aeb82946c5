//! A minimal HTTP/1.1 client for `verifyPM2`: one request per connection
//! (`Connection: close`, so no pooling state to get wrong), a byte-correct
//! `Content-Length` (the JS agent sent the UTF-16 length), responses read
//! by `Content-Length`, chunked encoding or until close, a body cap, and a
//! deadline over the whole exchange (the JS agent had none and could hang
//! forever on a silent backend).
//!
//! Proxies and TLS come from [`super::connect`], so this speaks plain
//! HTTP/1.1 over whatever stream it gets.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BoxStream, NetError, NetOptions, Url};

/// Largest response body accepted; verifyPM2 answers are a few hundred bytes.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest status line + headers accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers parsed (httparse needs a fixed array).
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (size + extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 16 * 1024;

/// Headers this client writes itself: the framing must match what it sends.
const OWN_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    /// As received (names keep their case; see [`HttpResponse::header`]).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of header `name`, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, whatever the status (PM2.io answers errors in JSON).
    pub fn json(&self) -> Result<serde_json::Value, NetError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| NetError::Http(format!("HTTP {} answer is not JSON ({e})", self.status)))
    }
}

/// Sends one request and reads the whole response, any status, under
/// `opts.request_timeout` (connection, proxy and TLS included).
///
/// `Host`, `Content-Length`, `Transfer-Encoding` and `Connection` in
/// `headers` are ignored: this function writes its own.
pub async fn request(
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
    opts: &NetOptions,
) -> Result<HttpResponse, NetError> {
    let req = encode_request(method, url, headers, body.as_deref())?;
    let exchange = async {
        let mut io = super::connect(url, opts).await?;
        let io_err = |e: std::io::Error| NetError::from_io(&e, &url.host_header());
        io.write_all(&req).await.map_err(io_err)?;
        io.flush().await.map_err(io_err)?;
        read_response(&mut io, method.eq_ignore_ascii_case("HEAD"), url).await
    };
    let res = tokio::time::timeout(opts.request_timeout, exchange)
        .await
        .map_err(|_| NetError::Timeout(opts.request_timeout))??;
    tracing::debug!(%url, method, status = res.status, bytes = res.body.len(), "HTTP exchange done");
    Ok(res)
}

/// `POST` of `body` as `application/json` (unless `extra_headers` names
/// another `Content-Type`).
pub async fn post_json(
    url: &Url,
    body: &serde_json::Value,
    extra_headers: &[(String, String)],
    opts: &NetOptions,
) -> Result<HttpResponse, NetError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| NetError::Http(format!("cannot encode JSON body: {e}")))?;
    let mut headers = Vec::with_capacity(extra_headers.len() + 1);
    if !extra_headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
    }
    headers.extend_from_slice(extra_headers);
    request("POST", url, &headers, Some(bytes), opts).await
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The request bytes. Everything caller-supplied is checked so that nothing
/// can inject a line into the request.
fn encode_request(
    method: &str,
    url: &Url,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<Vec<u8>, NetError> {
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(NetError::Http(format!("invalid method {method:?}")));
    }
    if !url.path.starts_with('/') || url.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(NetError::InvalidUrl(url.to_string()));
    }
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\n",
        url.path,
        url.host_header()
    );
    for (name, value) in headers {
        if name.is_empty()
            || !name.bytes().all(is_tchar)
            || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
        {
            return Err(NetError::Http(format!("invalid header {name:?}")));
        }
        if OWN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            tracing::debug!(header = %name, "ignoring caller header: the client sets it");
            continue;
        }
        head.push_str(&format!("{name}: {}\r\n", value.trim()));
    }
    match body {
        Some(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        // Some servers and proxies answer 411 to a body-less POST without it.
        None if matches!(method, "POST" | "PUT" | "PATCH") => {
            head.push_str("Content-Length: 0\r\n")
        }
        None => {}
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    Ok(out)
}

/// Unconsumed bytes read from the stream (`buf[pos..]`).
struct Reader<'a> {
    io: &'a mut BoxStream,
    buf: Vec<u8>,
    pos: usize,
    what: String,
}

impl Reader<'_> {
    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads more bytes; `Ok(0)` at end of stream. Callers check their caps
    /// before calling, so the buffer stays bounded.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        self.io.read_buf(&mut self.buf).await
    }

    async fn fill_or_fail(&mut self, context: &str) -> Result<(), NetError> {
        match self.fill().await {
            Ok(0) => Err(NetError::Http(format!(
                "{}: connection closed {context}",
                self.what
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(NetError::from_io(&e, &self.what)),
        }
    }

    /// Drops consumed bytes so a long chunked body does not keep them all.
    fn compact(&mut self) {
        self.buf.drain(..self.pos);
        self.pos = 0;
    }
}

pub(crate) async fn read_response(
    io: &mut BoxStream,
    head_request: bool,
    url: &Url,
) -> Result<HttpResponse, NetError> {
    let mut r = Reader {
        io,
        buf: Vec::new(),
        pos: 0,
        what: url.host_header(),
    };
    let (status, headers) = loop {
        let (status, headers) = read_head(&mut r).await?;
        // Interim answers (100 Continue, 103 Early Hints) precede the real one.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        break (status, headers);
    };
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if let Some(te) = values(&headers, "transfer-encoding").last() {
        // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length; chunked
        // must be the last coding, otherwise the body runs until close.
        let last = te.rsplit(',').next().unwrap_or("").trim();
        if last.eq_ignore_ascii_case("chunked") {
            read_chunked(&mut r).await?
        } else {
            read_to_close(&mut r).await?
        }
    } else if values(&headers, "content-length").next().is_some() {
        let mut len: Option<u64> = None;
        for v in values(&headers, "content-length").flat_map(|v| v.split(',')) {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| NetError::Http(format!("invalid Content-Length {v:?}")))?;
            if len.is_some_and(|l| l != n) {
                return Err(NetError::Http("conflicting Content-Length headers".into()));
            }
            len = Some(n);
        }
        read_exact(&mut r, len.unwrap_or(0)).await?
    } else {
        read_to_close(&mut r).await?
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a String> {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

async fn read_head(r: &mut Reader<'_>) -> Result<(u16, Vec<(String, String)>), NetError> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut slots);
        match res.parse(&r.buf[r.pos..]) {
            Ok(httparse::Status::Complete(n)) => {
                let status = res.code.unwrap_or(0);
                let headers = res
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                r.pos += n;
                return Ok((status, headers));
            }
            Ok(httparse::Status::Partial) => {
                if r.available() > MAX_HEAD {
                    return Err(NetError::Http(format!(
                        "response head larger than {} KiB",
                        MAX_HEAD / 1024
                    )));
                }
                let context = if r.available() == 0 {
                    "without answering"
                } else {
                    "in the middle of the response head"
                };
                r.fill_or_fail(context).await?;
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(NetError::Http(format!(
                    "more than {MAX_HEADERS} response headers"
                )))
            }
            Err(e) => {
                return Err(NetError::Http(format!(
                    "malformed response from {}: {e}",
                    r.what
                )))
            }
        }
    }
}

fn too_big() -> NetError {
    NetError::Http(format!(
        "response body larger than the {} MiB limit",
        MAX_BODY / (1024 * 1024)
    ))
}

async fn read_exact(r: &mut Reader<'_>, len: u64) -> Result<Vec<u8>, NetError> {
    // Refuse before reading anything: no point downloading 5 MiB to drop it.
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_BODY)
        .ok_or_else(too_big)?;
    while r.available() < len {
        let context = format!("after {} of {len} body bytes", r.available());
        r.fill_or_fail(&context).await?;
    }
    // Anything past `len` is ignored: the connection is closed anyway.
    Ok(r.buf[r.pos..r.pos + len].to_vec())
}

async fn read_to_close(r: &mut Reader<'_>) -> Result<Vec<u8>, NetError> {
    loop {
        if r.available() > MAX_BODY {
            return Err(too_big());
        }
        match r.fill().await {
            Ok(0) => break,
            Ok(_) => {}
            // Many TLS servers close without close_notify; for a body that
            // ends at close, that is the end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(NetError::from_io(&e, &r.what)),
        }
    }
    if r.available() > MAX_BODY {
        return Err(too_big());
    }
    Ok(r.buf[r.pos..].to_vec())
}

async fn read_chunked(r: &mut Reader<'_>) -> Result<Vec<u8>, NetError> {
    let mut body = Vec::new();
    loop {
        let size = loop {
            match httparse::parse_chunk_size(&r.buf[r.pos..]) {
                Ok(httparse::Status::Complete((used, size))) => {
                    r.pos += used;
                    break size;
                }
                Ok(httparse::Status::Partial) => {
                    if r.available() > MAX_CHUNK_LINE {
                        return Err(NetError::Http("chunk size line too long".into()));
                    }
                    r.fill_or_fail("inside a chunked body").await?;
                }
                Err(_) => return Err(NetError::Http("invalid chunk size in chunked body".into())),
            }
        };
        if size == 0 {
            // Trailers, if any, are not needed and the connection closes.
            return Ok(body);
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= MAX_BODY - body.len())
            .ok_or_else(too_big)?;
        while r.available() < size + 2 {
            r.fill_or_fail("inside a chunked body").await?;
        }
        body.extend_from_slice(&r.buf[r.pos..r.pos + size]);
        if &r.buf[r.pos + size..r.pos + size + 2] != b"\r\n" {
            return Err(NetError::Http("chunk data not followed by CRLF".into()));
        }
        r.pos += size + 2;
        r.compact();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<String, NetError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bytes = encode_request(
            method,
            &Url::parse(url).unwrap(),
            &headers,
            body.map(str::as_bytes),
        )?;
        Ok(String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn request_bytes() {
        let t = text(
            "POST",
            "https://root.keymetrics.io/api/node/verifyPM2?x=1",
            &[
                ("User-Agent", "PM2 Agent v1"),
                ("content-length", "1"),
                ("Host", "evil"),
            ],
            Some("{\"n\":\"café\"}"),
        )
        .unwrap();
        assert_eq!(
            t,
            "POST /api/node/verifyPM2?x=1 HTTP/1.1\r\nHost: root.keymetrics.io\r\nUser-Agent: PM2 Agent v1\r\n\
             Content-Length: 13\r\nConnection: close\r\n\r\n{\"n\":\"café\"}"
        );
        assert!(text("POST", "http://h:8080/", &[], None)
            .unwrap()
            .contains("Host: h:8080\r\nContent-Length: 0\r\n"));
        assert!(!text("GET", "http://h/", &[], None)
            .unwrap()
            .contains("Content-Length"));
    }

    #[test]
    fn injection_is_refused() {
        assert!(text("GET", "http://h/", &[("X", "a\r\nEvil: 1")], None).is_err());
        assert!(text("GET", "http://h/", &[("X Y", "a")], None).is_err());
        assert!(text("GET /x", "http://h/", &[], None).is_err());
        assert!(matches!(
            text("GET", "http://h/a b", &[], None),
            Err(NetError::InvalidUrl(_))
        ));
    }
}
