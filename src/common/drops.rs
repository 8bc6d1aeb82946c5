//! What the agent dropped, per channel and reason: counted exactly (for
//! `getInfos`, `pm2 link info`) and summarised in `agent.log` at most once
//! per channel and reason every [`SUMMARY_EVERY`], never one line per item.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

pub use crate::logging::SUMMARY_EVERY;

#[derive(Debug)]
struct Entry {
    channel: String,
    reason: &'static str,
    total: u64,
    /// Dropped since the last log line.
    unreported: u64,
    last_line: Option<Instant>,
}

/// See the module documentation. Shared (`Arc`) by everything that drops.
#[derive(Debug, Default)]
pub struct Drops {
    entries: Mutex<Vec<Entry>>,
}

/// One counter, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCount {
    pub channel: String,
    pub reason: &'static str,
    pub count: u64,
}

impl Drops {
    /// Counts `n` packets of `channel` dropped for `reason`.
    pub fn record(&self, channel: &str, reason: &'static str, n: u64) {
        self.record_at(channel, reason, n, Instant::now());
    }

    fn record_at(&self, channel: &str, reason: &'static str, n: u64, now: Instant) {
        if n == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = match entries
            .iter()
            .position(|e| e.reason == reason && e.channel == channel)
        {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    channel: channel.to_owned(),
                    reason,
                    total: 0,
                    unreported: 0,
                    last_line: None,
                });
                entries.len() - 1
            }
        };
        let e = &mut entries[i];
        e.total = e.total.saturating_add(n);
        e.unreported = e.unreported.saturating_add(n);
        let due = e
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= SUMMARY_EVERY);
        if due {
            tracing::warn!(
                channel = %e.channel,
                total = e.total,
                "dropped {} `{}` packets since the last report: {reason}",
                e.unreported,
                e.channel
            );
            e.unreported = 0;
            e.last_line = Some(now);
        }
    }

    /// Writes the summaries that are due: drops not reported yet whose
    /// last line is at least [`SUMMARY_EVERY`] old (call it periodically,
    /// so the tail of a burst is reported too, not only at the next drop).
    pub fn report_due(&self) {
        self.report_due_at(Instant::now());
    }

    fn report_due_at(&self, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        for e in entries.iter_mut().filter(|e| e.unreported > 0) {
            if e.last_line
                .is_none_or(|t| now.saturating_duration_since(t) >= SUMMARY_EVERY)
            {
                tracing::warn!(
                    channel = %e.channel,
                    total = e.total,
                    "dropped {} `{}` packets since the last report: {}",
                    e.unreported,
                    e.channel,
                    e.reason
                );
                e.unreported = 0;
                e.last_line = Some(now);
            }
        }
    }

    /// Not reported in the log yet (tests).
    #[cfg(test)]
    fn unreported(&self) -> u64 {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.unreported)
            .sum()
    }

    pub fn counts(&self) -> Vec<DropCount> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| DropCount {
                channel: e.channel.clone(),
                reason: e.reason,
                count: e.total,
            })
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().map(|c| c.count).sum()
    }

    /// `[{"channel","reason","count"}]` for `getInfos`.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.counts()
                .into_iter()
                .map(|c| json!({"channel": c.channel, "reason": c.reason, "count": c.count}))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_per_channel_and_reason() {
        let d = Drops::default();
        let t0 = Instant::now();
        for i in 0..1000 {
            d.record_at("logs", "queue full", 1, t0 + Duration::from_millis(i));
        }
        d.record_at("human:event", "queue full", 2, t0);
        d.record_at("logs", "stale", 0, t0);
        assert_eq!(
            d.counts(),
            vec![
                DropCount {
                    channel: "logs".into(),
                    reason: "queue full",
                    count: 1000
                },
                DropCount {
                    channel: "human:event".into(),
                    reason: "queue full",
                    count: 2
                },
            ]
        );
        assert_eq!(d.total(), 1002);
        // The tail of the burst (999 `logs` after the first line) is
        // reported by the periodic call once due, not before.
        assert_eq!(d.unreported(), 999);
        d.report_due_at(t0 + Duration::from_secs(1));
        assert_eq!(d.unreported(), 999);
        d.report_due_at(t0 + SUMMARY_EVERY);
        assert_eq!(d.unreported(), 0);
        assert_eq!(d.to_json()[0]["count"], 1000);
    }
}
