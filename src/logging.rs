//! `tracing` output for `agent.log`, filtered the way the JS agent's `debug`
//! module filters: `DEBUG=interactor:*,-interactor:axon` enables debug
//! lines per namespace. Info, warnings and errors are always written (they
//! are the JS agent's `console.log`/`console.error`).
//!
//! Namespaces are the JS agent's names, derived from the Rust module path:
//! `transport::websocket` → `interactor:websocket`, `pm2` →
//! `interactor:pm2:client`, and so on.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

/// The default of the JS client when `DEBUG` is unset.
pub const DEFAULT_DEBUG: &str =
    "interactor:*,-interactor:axon,-interactor:websocket,-interactor:pm2:client,-interactor:push";

/// A parsed `DEBUG` value.
#[derive(Debug, Clone, Default)]
pub struct DebugFilter {
    enabled: Vec<String>,
    disabled: Vec<String>,
}

impl DebugFilter {
    pub fn parse(spec: &str) -> DebugFilter {
        let mut f = DebugFilter::default();
        for part in spec
            .split([',', ' '])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match part.strip_prefix('-') {
                Some(neg) => f.disabled.push(neg.to_owned()),
                None => f.enabled.push(part.to_owned()),
            }
        }
        f
    }

    pub fn enabled(&self, namespace: &str) -> bool {
        !self.disabled.iter().any(|p| glob(p, namespace))
            && self.enabled.iter().any(|p| glob(p, namespace))
    }
}

/// `debug`'s wildcard: `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The JS namespace of a tracing target (a module path of this crate).
pub fn namespace(target: &str) -> String {
    let path = target.strip_prefix("interactor::").unwrap_or(target);
    let ns = match path.split("::").collect::<Vec<_>>().as_slice() {
        ["transport", "websocket", ..] => "websocket".to_owned(),
        ["transport", "axon", ..] => "axon".to_owned(),
        ["pm2", ..] => "pm2:client".to_owned(),
        ["push", ..] => "push".to_owned(),
        ["reverse", ..] => "reverse".to_owned(),
        ["daemon", "watchdog", ..] => "watchdog".to_owned(),
        ["daemon", ..] => "daemon".to_owned(),
        other => other.join(":"),
    };
    format!("interactor:{ns}")
}

/// Whether a line is written: info, warnings and errors always (the JS
/// agent's console output); debug lines when `DEBUG` enables their
/// namespace; trace lines (per tick, per packet) never, they would flood
/// agent.log. (tracing orders levels by verbosity: TRACE > DEBUG > INFO.)
pub fn admits(filter: &DebugFilter, level: Level, target: &str) -> bool {
    if level <= Level::INFO {
        return true;
    }
    level == Level::DEBUG && filter.enabled(&namespace(target))
}

/// Secrets shorter than this are not redacted: a short test key such as
/// `sec` would mangle every line that holds those letters. PM2.io keys are
/// far longer.
pub const MIN_REDACTED_LEN: usize = 8;

/// What replaces a secret in a log line.
pub const REDACTED: &str = "[secret]";

static SECRET: RwLock<Option<String>> = RwLock::new(None);

/// Registers the secret key: from now on it never reaches the log, whatever
/// carries it (a peer echoing it back, an error message, a panic), nor the
/// messages the hosts pass on ([`redact`], [`redact_json`]). Keys shorter
/// than [`MIN_REDACTED_LEN`] are not registered.
pub fn hide_secret(secret: &str) {
    if secret.len() >= MIN_REDACTED_LEN {
        *SECRET.write().unwrap_or_else(|e| e.into_inner()) = Some(secret.to_owned());
    }
}

/// `text` with the registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let secret = SECRET.read().unwrap_or_else(|e| e.into_inner());
    match secret.as_deref() {
        Some(s) if text.contains(s) => Cow::Owned(text.replace(s, REDACTED)),
        _ => Cow::Borrowed(text),
    }
}

/// Every string (keys included) of `value` passed through [`redact`].
pub fn redact_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    if SECRET.read().unwrap_or_else(|e| e.into_inner()).is_none() {
        return;
    }
    match value {
        Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::Object(o) => {
            let hit = o.keys().any(|k| matches!(redact(k), Cow::Owned(_)));
            if hit {
                *o = std::mem::take(o)
                    .into_iter()
                    .map(|(k, v)| (redact(&k).into_owned(), v))
                    .collect();
            }
            o.values_mut().for_each(redact_json);
        }
        _ => {}
    }
}

/// Stdout for log lines, [`redact`]ed. The fmt layer writes each event
/// with one `write_all` of the whole line, so a secret is never split
/// across two writes.
struct RedactingStdout(std::io::Stdout);

impl Write for RedactingStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf).map(redact) {
            Ok(Cow::Owned(line)) => self.0.write_all(line.as_bytes())?,
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Installs the process-wide subscriber once (later calls are no-ops).
/// Lines go to stdout, which the CLI points at `agent.log`, with the secret
/// registered by [`hide_secret`] redacted.
pub fn init(debug: Option<&str>) {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = DebugFilter::parse(debug.unwrap_or(""));
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(|| RedactingStdout(std::io::stdout()))
            .with_ansi(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
                admits(&filter, *meta.level(), meta.target())
            }));
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        // A panic is logged with where it happened before it is caught
        // (tokio and the daemon's catch_unwind turn it into a rescue).
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let thread = std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_owned();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(target: "interactor::daemon", %location, %thread, "panic: {msg}");
        }));
    });
}

/// How often a recurring drop may write a line to `agent.log`.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Rate limit for warnings about things that can happen thousands of times
/// a second (dropped packets, malformed frames from a hostile peer), per
/// reason: the first occurrence is reported at once, then at most one line
/// per [`SUMMARY_EVERY`] with how many happened since the last line. The
/// exact totals live in counters (`getInfos`); this only keeps the log
/// bounded.
#[derive(Debug, Default)]
pub struct Throttle {
    reasons: Mutex<Vec<(&'static str, ThrottleState)>>,
}

#[derive(Debug)]
struct ThrottleState {
    last: Instant,
    pending: u64,
}

impl Throttle {
    /// Counts `n` occurrences of `reason`; `Some(count since the last
    /// line)` when a line is due now.
    pub fn hit(&self, reason: &'static str, n: u64) -> Option<u64> {
        self.hit_at(reason, n, Instant::now())
    }

    fn hit_at(&self, reason: &'static str, n: u64, now: Instant) -> Option<u64> {
        let mut reasons = self.reasons.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, s)) = reasons.iter_mut().find(|(r, _)| *r == reason) else {
            reasons.push((
                reason,
                ThrottleState {
                    last: now,
                    pending: 0,
                },
            ));
            return Some(n);
        };
        s.pending = s.pending.saturating_add(n);
        if now.saturating_duration_since(s.last) < SUMMARY_EVERY {
            return None;
        }
        s.last = now;
        Some(std::mem::take(&mut s.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_patterns() {
        let f = DebugFilter::parse(DEFAULT_DEBUG);
        assert!(f.enabled("interactor:daemon"));
        assert!(f.enabled("interactor:reverse"));
        assert!(!f.enabled("interactor:websocket"));
        assert!(!f.enabled("interactor:pm2:client"));
        assert!(!f.enabled("other:thing"));
        let f = DebugFilter::parse("interactor:*");
        assert!(f.enabled("interactor:websocket"));
        let f = DebugFilter::parse("");
        assert!(!f.enabled("interactor:daemon"));
        assert!(DebugFilter::parse("*").enabled("interactor:push"));
        assert!(DebugFilter::parse("interactor:*:client").enabled("interactor:pm2:client"));
    }

    #[test]
    fn levels() {
        let f = DebugFilter::parse(DEFAULT_DEBUG);
        let t = "interactor::daemon::workers";
        assert!(admits(&f, Level::ERROR, "interactor::transport::websocket"));
        assert!(admits(&f, Level::INFO, "interactor::pm2"));
        assert!(admits(&f, Level::DEBUG, t));
        assert!(!admits(
            &f,
            Level::DEBUG,
            "interactor::transport::websocket"
        ));
        assert!(
            !admits(&f, Level::TRACE, t),
            "trace never reaches agent.log"
        );
        assert!(!admits(&DebugFilter::parse(""), Level::DEBUG, t));
    }

    #[test]
    fn namespaces() {
        assert_eq!(
            namespace("interactor::transport::websocket"),
            "interactor:websocket"
        );
        assert_eq!(namespace("interactor::pm2::bus"), "interactor:pm2:client");
        assert_eq!(namespace("interactor::daemon::rpc"), "interactor:daemon");
        assert_eq!(
            namespace("interactor::socket::req"),
            "interactor:socket:req"
        );
    }

    #[test]
    fn the_secret_is_redacted_from_text_and_json() {
        // Process-wide state: this is the only test that registers one.
        hide_secret("short");
        assert_eq!(
            redact("a short line"),
            "a short line",
            "short keys are not registered"
        );
        let key = "kaTestRedact0123456789";
        hide_secret(key);
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
        assert_eq!(
            redact(&format!("echo {{\"private_id\":\"{key}\"}} and {key}")),
            format!("echo {{\"private_id\":\"{REDACTED}\"}} and {REDACTED}")
        );
        let mut v = serde_json::json!({
            "error": true,
            "msg": format!("Endpoints field not present ({key})"),
            "nested": [{"x": key}, 1, null],
            key: "as a key"
        });
        redact_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains(key), "{text}");
        assert_eq!(
            v["msg"],
            format!("Endpoints field not present ({REDACTED})")
        );
        assert_eq!(v[REDACTED], "as a key");
        // The writer: one line in, the same line out but the key.
        let mut w = RedactingStdout(std::io::stdout());
        let line = format!("INFO got {key}\n");
        assert_eq!(w.write(line.as_bytes()).unwrap(), line.len());
        let odd = b"\xff\xfe not utf-8\n";
        assert_eq!(w.write(odd).unwrap(), odd.len());
    }

    #[test]
    fn throttle_reports_the_first_then_one_summary_per_interval_and_reason() {
        let t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.hit_at("full", 1, t0), Some(1));
        for i in 1..1000 {
            assert_eq!(t.hit_at("full", 1, t0 + Duration::from_millis(i)), None);
        }
        // Another reason has its own budget.
        assert_eq!(t.hit_at("closed", 3, t0), Some(3));
        assert_eq!(t.hit_at("full", 5, t0 + SUMMARY_EVERY), Some(999 + 5));
        assert_eq!(
            t.hit_at("full", 1, t0 + SUMMARY_EVERY + Duration::from_secs(1)),
            None
        );
    }
}
