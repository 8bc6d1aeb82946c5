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
