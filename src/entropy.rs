//! Cheap per-call randomness without a crate.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// 64 bits from std's randomly keyed hasher (fresh keys each call) over the
/// clock. Good for seeding jitter and sampling PRNGs and for ids that only
/// need to differ between runs and hosts; NOT for anything security-related.
pub(crate) fn entropy_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// 128 random bits as 32 lowercase hex characters: a bearer token (the
/// inspector's). From the OS random source where there is one
/// (`/dev/urandom`); else from std's hasher keys, which std draws from the
/// OS random source once per thread: SipHash keyed with them over distinct
/// inputs, unpredictable without the keys.
pub(crate) fn token_hex_128() -> String {
    let mut bytes = [0u8; 16];
    #[cfg(unix)]
    {
        use std::io::Read;
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok()
        {
            return hex::encode(bytes);
        }
    }
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u64(entropy_u64());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_32_hex_and_differ() {
        let a = super::token_hex_128();
        let b = super::token_hex_128();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }
}
