//! One spool record: a pure codec, no I/O.
//!
//! ```text
//! offset  size  field
//!      0     4  len     payload length, u32 little-endian
//!      4     4  crc     CRC-32 (IEEE) over ts_ms bytes followed by payload
//!      8     8  ts_ms   append time, milliseconds since the Unix epoch, u64 LE
//!     16   len  payload the opaque packet bytes
//! ```
//!
//! The checksum covers everything but the two fields that frame it: a wrong
//! `len` either runs past the end of the data ([`Decoded::Torn`]) or shifts
//! the payload window so the checksum no longer matches
//! ([`Decoded::Corrupt`]). An all-zero region (what some file systems leave
//! after a power cut) decodes as `Corrupt` too, as the CRC of eight zero
//! bytes is not zero.
//!
//! Decoding is *check-then-decode*: nothing of a record is handed out before
//! its length fits the buffer and its checksum matches.

/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;

/// Largest payload accepted by [`encode`] callers and by [`decode`]; a
/// header claiming more is corrupt, whatever follows.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The result of decoding the record at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record; `len` is how many bytes of the buffer it used.
    Record {
        ts_ms: u64,
        payload: &'a [u8],
        len: usize,
    },
    /// The buffer is empty: a clean end.
    End,
    /// The header or the payload it announces runs past the end of the
    /// buffer: an append cut short (crash, full disk, truncation).
    Torn,
    /// The length is over [`MAX_PAYLOAD`] or the checksum does not match.
    Corrupt,
}

/// Encodes one record as a single buffer, so that it can be written with a
/// single write.
///
/// The caller keeps `payload.len() <= MAX_PAYLOAD`.
pub fn encode(ts_ms: u64, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&checksum(ts_ms, payload).to_le_bytes());
    buf.extend_from_slice(&ts_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// The payload length a header announces, without checking anything else:
/// lets a reader know how many bytes to fetch before calling [`decode`].
pub fn announced_len(header: &[u8; HEADER_LEN]) -> usize {
    u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize
}

/// Decodes the record at the start of `buf` (check first, then decode).
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.is_empty() {
        return Decoded::End;
    }
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Decoded::Torn;
    };
    let len = announced_len(header);
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Decoded::Torn;
    };
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut ts = [0; 8];
    ts.copy_from_slice(&header[8..16]);
    let ts_ms = u64::from_le_bytes(ts);
    if checksum(ts_ms, payload) != crc {
        return Decoded::Corrupt;
    }
    Decoded::Record {
        ts_ms,
        payload,
        len: HEADER_LEN + len,
    }
}

fn checksum(ts_ms: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&ts_ms.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}
