//! Names what a peer said when it was not the protocol we expected, so a
//! failed connection can say *why* ("the endpoint answers HTTP", "it
//! expects TLS") instead of a bare "closed".

/// A short, printable description of the first bytes a peer sent.
pub fn describe(bytes: &[u8]) -> String {
    if bytes.starts_with(b"HTTP/") {
        let line = bytes
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or(bytes);
        return format!("an HTTP response ({:?})", printable(line, 64));
    }
    // TLS record: content type 20..=23, then major version 3.
    if bytes.len() >= 2 && (0x14..=0x17).contains(&bytes[0]) && bytes[1] == 0x03 {
        let what = if bytes[0] == 0x15 { "alert" } else { "record" };
        return format!("a TLS {what} (the endpoint expects TLS)");
    }
    format!("unexpected bytes ({:?})", printable(bytes, 32))
}

/// Up to `max` bytes, non-printable ones escaped.
fn printable(bytes: &[u8], max: usize) -> String {
    bytes
        .iter()
        .take(max)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_http_tls_and_junk() {
        assert_eq!(
            describe(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"),
            r#"an HTTP response ("HTTP/1.1 400 Bad Request")"#
        );
        assert_eq!(
            describe(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]),
            "a TLS alert (the endpoint expects TLS)"
        );
        assert_eq!(
            describe(&[0x16, 0x03, 0x01]),
            "a TLS record (the endpoint expects TLS)"
        );
        assert_eq!(
            describe(b"SSH-2.0\x00"),
            r#"unexpected bytes ("SSH-2.0\\x00")"#
        );
        assert_eq!(describe(b""), r#"unexpected bytes ("")"#);
    }
}
