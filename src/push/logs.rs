//! The last log lines of each app (`PushInteractor.log_buffer`), attached as
//! `last_logs` to exceptions. Bounded three ways, where the JS object grew
//! without limit: lines per app, apps, and bytes per line.

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::Value;

/// Lines kept per app (`LOGS_BUFFER`).
pub const LOGS_BUFFER: usize = 8;
/// Apps with a buffer at once; a name seen on the bus but absent from PM2's
/// list (e.g. `PM2` itself, or an app deleted meanwhile) must not pin memory.
pub const MAX_LOG_APPS: usize = 1024;
/// A single bus `data` string can be megabytes (one big stdout write); as
/// exception context its beginning is enough, so longer entries are cut (at
/// a char boundary) to this many bytes.
pub const MAX_LOG_ENTRY_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub struct LogBuffers {
    apps: HashMap<String, App>,
    /// Monotonic counter: the least recently written app is evicted first.
    clock: u64,
    max_apps: usize,
    per_app: usize,
    max_entry_bytes: usize,
}

#[derive(Debug)]
struct App {
    lines: VecDeque<Value>,
    touched: u64,
}

impl Default for LogBuffers {
    fn default() -> Self {
        Self::with_limits(MAX_LOG_APPS, LOGS_BUFFER, MAX_LOG_ENTRY_BYTES)
    }
}

impl LogBuffers {
    pub fn with_limits(max_apps: usize, per_app: usize, max_entry_bytes: usize) -> Self {
        LogBuffers {
            apps: HashMap::new(),
            clock: 0,
            max_apps: max_apps.max(1),
            per_app: per_app.max(1),
            max_entry_bytes,
        }
    }

    /// Appends one bus `data` value to `app`'s buffer, dropping its oldest
    /// line when full.
    pub fn push(&mut self, app: &str, data: Value) {
        let data = self.bounded(data);
        self.clock += 1;
        if !self.apps.contains_key(app) && self.apps.len() >= self.max_apps {
            self.evict_one();
        }
        // Looked up by &str first: no key allocation per line.
        if !self.apps.contains_key(app) {
            self.apps.insert(
                app.to_owned(),
                App {
                    lines: VecDeque::new(),
                    touched: 0,
                },
            );
        }
        let Some(entry) = self.apps.get_mut(app) else {
            return;
        };
        entry.touched = self.clock;
        if entry.lines.len() >= self.per_app {
            entry.lines.pop_front();
        }
        entry.lines.push_back(data);
    }

    /// `log_buffer[name]` as the array JS would attach (`None` = undefined).
    pub fn get(&self, app: &str) -> Option<Value> {
        self.apps
            .get(app)
            .map(|a| Value::Array(a.lines.iter().cloned().collect()))
    }

    /// Forgets apps PM2 no longer lists (called on every status tick).
    pub fn retain_apps(&mut self, keep: &HashSet<String>) {
        self.apps.retain(|name, _| keep.contains(name));
    }

    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    fn evict_one(&mut self) {
        if let Some(oldest) = self
            .apps
            .iter()
            .min_by_key(|(_, a)| a.touched)
            .map(|(n, _)| n.clone())
        {
            tracing::debug!(app = %oldest, "log buffer full, evicting the least recent app");
            self.apps.remove(&oldest);
        }
    }

    fn bounded(&self, data: Value) -> Value {
        match data {
            Value::String(s) if s.len() > self.max_entry_bytes => {
                let mut cut = self.max_entry_bytes;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                Value::String(s[..cut].to_owned())
            }
            Value::String(_) | Value::Null | Value::Bool(_) | Value::Number(_) => data,
            // PM2 always sends strings; other shapes come from odd apps and
            // are kept only if small.
            other => {
                if serde_json::to_string(&other).map_or(usize::MAX, |s| s.len())
                    <= self.max_entry_bytes
                {
                    other
                } else {
                    Value::Null
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_last_eight_lines_per_app() {
        let mut b = LogBuffers::default();
        for i in 0..20 {
            b.push("app", json!(format!("line {i}\n")));
        }
        b.push("other", json!("x"));
        let lines = b.get("app").unwrap();
        let lines = lines.as_array().unwrap();
        assert_eq!(lines.len(), LOGS_BUFFER);
        assert_eq!(lines[0], json!("line 12\n"));
        assert_eq!(lines[7], json!("line 19\n"));
        assert_eq!(b.get("other"), Some(json!(["x"])));
        assert_eq!(b.get("nope"), None);
    }

    #[test]
    fn app_count_is_capped_evicting_the_least_recent() {
        let mut b = LogBuffers::with_limits(3, 8, 100);
        b.push("a", json!("1"));
        b.push("b", json!("1"));
        b.push("c", json!("1"));
        b.push("a", json!("2")); // a is now the most recent
        b.push("d", json!("1")); // evicts b
        assert_eq!(b.app_count(), 3);
        assert!(b.get("b").is_none());
        assert_eq!(b.get("a"), Some(json!(["1", "2"])));
        for i in 0..5000 {
            b.push(&format!("app{i}"), json!("x"));
        }
        assert_eq!(b.app_count(), 3);
        assert_eq!(b.get("app4999"), Some(json!(["x"])));
    }

    #[test]
    fn retain_prunes_vanished_apps() {
        let mut b = LogBuffers::default();
        b.push("a", json!("1"));
        b.push("PM2", json!("1"));
        b.retain_apps(&HashSet::from(["a".to_owned()]));
        assert_eq!(b.app_count(), 1);
        assert!(b.get("PM2").is_none());
    }

    #[test]
    fn entries_are_size_bounded() {
        let mut b = LogBuffers::with_limits(4, 8, 10);
        b.push("a", json!("ééééééééé")); // 18 bytes; cut at a char boundary
        b.push("a", json!({"k": "0123456789"}));
        b.push("a", json!([1]));
        assert_eq!(b.get("a"), Some(json!(["ééééé", null, [1]])));
    }
}
