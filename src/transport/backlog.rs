//! Where a route keeps what nobody carries: the disk [`Spool`] under
//! `PM2_HOME`, so an outage (and an agent restart during it) loses nothing
//! within the spool's bounds. When the spool cannot be used (no room, a
//! read-only disk) the route falls back to its bounded memory queue; that
//! is said once in the log and the state is in `getInfos`.
//!
//! Records are packets as JSON (`{"channel":…,"payload":…}`): serialized
//! once when spooled, parsed once when replayed. Replayed records are
//! acknowledged (deleted) once the carrier has written them, or handed them
//! back to the route's memory queue; a crash in between replays them again
//! (at least once for that batch).

use serde_json::{json, Value};
use tracing::warn;

use super::spool::{Spool, SpoolConfig, SpoolDrops};
use crate::common::drops::Drops;
use crate::common::Packet;

/// Why the spool drops records (reasons in `getInfos.drops`).
pub const SPOOL_FULL: &str = "spool full: oldest records dropped";
pub const SPOOL_EXPIRED: &str = "spool: records older than the maximum age";
pub const SPOOL_CORRUPT: &str = "spool: damaged records skipped (torn write or disk corruption)";
/// Records replayed per turn, so the live status is never held up long.
const REPLAY_RECORDS: usize = 256;
const REPLAY_BYTES: usize = 256 << 10;

#[derive(Default)]
pub struct Backlog {
    spool: Option<Spool>,
    /// Records handed to the carrier and not acknowledged yet.
    taken: usize,
    /// The spool's drop totals already reported.
    seen: SpoolDrops,
    /// Why the spool is not in use.
    error: Option<String>,
}

impl Backlog {
    /// Opens the spool of `cfg` (`None`: spooling is off).
    pub fn open(cfg: Option<SpoolConfig>) -> Backlog {
        let Some(cfg) = cfg else {
            return Backlog::default();
        };
        let dir = cfg.dir.display().to_string();
        match Spool::open(cfg) {
            Ok(spool) => Backlog {
                spool: Some(spool),
                ..Backlog::default()
            },
            Err(e) => {
                warn!(dir = %dir, "cannot use the spool ({e}); packets nobody carries are kept in memory only");
                Backlog {
                    error: Some(e.to_string()),
                    ..Backlog::default()
                }
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.spool.is_some()
    }

    /// Records waiting on disk (or handed out and not acknowledged).
    pub fn has_pending(&self) -> bool {
        self.taken > 0 || self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Spools `p`; `false` when the spool cannot take it (the caller keeps
    /// it in memory). A failing spool is given up, said once.
    pub fn append(&mut self, p: &Packet, drops: &Drops) -> bool {
        let Some(spool) = self.spool.as_mut() else {
            return false;
        };
        let record = match serde_json::to_vec(&json!({"channel": p.channel, "payload": p.payload}))
        {
            Ok(r) => r,
            Err(_) => return false,
        };
        match spool.append(&record) {
            Ok(()) => {
                self.account(drops);
                true
            }
            Err(e) => {
                warn!("spool write failed ({e}); packets nobody carries are kept in memory only from now on");
                self.error = Some(e.to_string());
                self.spool = None;
                false
            }
        }
    }

    /// The next records to replay, oldest first, as packets (none while a
    /// batch awaits its acknowledgement).
    pub fn take(&mut self, max: usize, max_bytes: usize, drops: &Drops) -> Vec<Packet> {
        if self.taken > 0 {
            return Vec::new();
        }
        let Some(spool) = self.spool.as_mut() else {
            return Vec::new();
        };
        let records = match spool.peek(max.min(REPLAY_RECORDS), max_bytes.min(REPLAY_BYTES)) {
            Ok(r) => r,
            Err(e) => {
                warn!("spool read failed ({e}); its records are abandoned");
                self.error = Some(e.to_string());
                self.spool = None;
                return Vec::new();
            }
        };
        self.taken = records.len();
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            match serde_json::from_slice::<Value>(&r) {
                Ok(Value::Object(mut o)) => match o.remove("channel") {
                    Some(Value::String(channel)) => out.push(Packet::new(
                        channel,
                        o.remove("payload").unwrap_or(Value::Null),
                    )),
                    _ => drops.record("spool", SPOOL_CORRUPT, 1),
                },
                _ => drops.record("spool", SPOOL_CORRUPT, 1),
            }
        }
        self.account(drops);
        out
    }

    /// The carrier is done with the last batch (written, or handed back to
    /// the memory queue): its records leave the spool.
    /// `true` when a batch was acknowledged.
    pub fn ack(&mut self, drops: &Drops) -> bool {
        if self.taken == 0 {
            return false;
        }
        let n = std::mem::take(&mut self.taken);
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.ack(n) {
                warn!("spool acknowledgement failed ({e}); those records may be replayed again");
            }
        }
        self.account(drops);
        true
    }

    /// Reports the spool's new drops (per reason; the channel of a dropped
    /// record is not known without reading it: `spool`).
    fn account(&mut self, drops: &Drops) {
        let Some(spool) = self.spool.as_ref() else {
            return;
        };
        let now = spool.drops();
        drops.record("spool", SPOOL_FULL, now.full.saturating_sub(self.seen.full));
        drops.record(
            "spool",
            SPOOL_EXPIRED,
            now.expired.saturating_sub(self.seen.expired),
        );
        drops.record(
            "spool",
            SPOOL_CORRUPT,
            now.corrupt.saturating_sub(self.seen.corrupt),
        );
        self.seen = now;
    }

    /// `getInfos.transport.routes[].spool`.
    pub fn info(&self) -> Value {
        match &self.spool {
            Some(s) => json!({
                "enabled": true,
                "records": s.pending_records(),
                "bytes": s.size_bytes(),
                "error": self.error,
            }),
            None => json!({ "enabled": false, "records": 0, "bytes": 0, "error": self.error }),
        }
    }
}
