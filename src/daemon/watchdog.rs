//! The WatchDog: keeps PM2 alive under the agent. While PM2 is up, its
//! process list is dumped to `dump.pm2` every 5 minutes; when PM2 goes away
//! (its `rpc.sock` stays unreachable for a few seconds), `pm2 resurrect` is
//! run once for that outage, never two at a time.
//!
//! Differences from the JS WatchDog, on purpose: the dump is written
//! atomically and keeps the previous one as `dump.pm2.bak` (like `pm2 save`),
//! an empty process list never overwrites a saved dump, and a resurrect that
//! hangs is killed after a deadline.
//!
//! Nothing secret is handed on (the JS agent handed on its whole
//! environment: docs/js-agent-behaviour.md §6.21):
//! - `pm2 resurrect` runs without the keys and the agent's own variables
//!   ([`crate::common::child_env`]); it keeps `PM2_HOME` and PM2's settings;
//! - it gets `PM2_AGENT_ONLINE=true` so that it does not start a second
//!   agent, and is preloaded with `src/resurrectHook.js`, which keeps that
//!   marker out of what it spawns: the PM2 daemon it starts, and the apps
//!   that daemon starts, inherit neither the keys nor the marker;
//! - a value equal to the secret key is left out of `dump.pm2` (an app
//!   whose environment held the key, e.g. exported in the shell that
//!   started PM2, is restored without it).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::time::Instant;

use crate::common::child_env;
use crate::config::DaemonConfig;
use crate::pm2::Pm2Client;

/// How long `rpc.sock` must stay unreachable before PM2 counts as gone
/// (the JS agent acted on the 7th reconnect attempt, about 3 s).
pub const OUTAGE_THRESHOLD: Duration = Duration::from_secs(3);
/// A `pm2 resurrect` running longer than this is killed.
pub const RESURRECT_TIMEOUT: Duration = Duration::from_secs(120);

/// Sleeps until there is something to do: the next dump, a change of the
/// `rpc.sock` connection (published by the req socket), or, while PM2 is
/// down, the end of the outage threshold. Nothing is polled.
pub async fn run(cfg: Arc<DaemonConfig>, pm2: Pm2Client) {
    tokio::time::sleep(cfg.watchdog_delay).await;
    tracing::debug!("watchdog started");
    let mut state = pm2.rpc().socket().state();
    let mut dump_tick = tokio::time::interval(cfg.dump_interval);
    dump_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outage = Outage::default();
    // PM2 may already be down: that outage counts from now.
    outage.observe(state.borrow_and_update().connected, Instant::now());
    loop {
        // Only armed while PM2 is down and not yet resurrected.
        let resurrect_at = outage.resurrect_at();
        tokio::select! {
            _ = dump_tick.tick() => {
                if pm2.is_ready() {
                    if let Err(e) = dump(&cfg, &pm2).await {
                        tracing::warn!("process list not dumped: {e}");
                    }
                }
                continue;
            }
            r = state.changed() => if r.is_err() { return },
            _ = sleep_until_some(resurrect_at) => {}
        }
        let connected = state.borrow_and_update().connected;
        if outage.observe(connected, Instant::now()) {
            // Awaited inline: the loop cannot start a second one meanwhile.
            resurrect(&cfg).await;
        }
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The watchdog's view of one PM2 outage: when it began and whether PM2
/// was resurrected during it (once per outage).
#[derive(Debug, Default)]
struct Outage {
    down_since: Option<Instant>,
    resurrected: bool,
}

impl Outage {
    /// When PM2 will have been down long enough to resurrect it; `None`
    /// while it is up or already resurrected for this outage.
    fn resurrect_at(&self) -> Option<Instant> {
        match self.down_since {
            Some(since) if !self.resurrected => Some(since + OUTAGE_THRESHOLD),
            _ => None,
        }
    }

    /// Records the connection state seen at `now`; `true` when PM2 must be
    /// resurrected now.
    fn observe(&mut self, connected: bool, now: Instant) -> bool {
        if connected {
            if self.down_since.take().is_some() {
                tracing::info!("PM2 is back");
            }
            self.resurrected = false;
            return false;
        }
        let since = *self.down_since.get_or_insert(now);
        if !self.resurrected && now.duration_since(since) >= OUTAGE_THRESHOLD {
            self.resurrected = true;
            return true;
        }
        false
    }
}

/// Tells a CLI that an agent runs: its `launchAndInteract` returns at once.
pub const AGENT_ONLINE: &str = "PM2_AGENT_ONLINE";

/// Preloaded into `pm2 resurrect`, relative to the package root (the
/// directory of `config.json`): keeps [`AGENT_ONLINE`] out of the
/// environment of whatever that CLI spawns.
pub const RESURRECT_HOOK: &str = "src/resurrectHook.js";

/// How `pm2 resurrect` is run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResurrectCommand {
    pub program: PathBuf,
    pub args: Vec<std::ffi::OsString>,
    /// Whether [`RESURRECT_HOOK`] is preloaded (only when the CLI runs
    /// under node and the hook file is there).
    pub hooked: bool,
}

/// `<node> [--require <hook>] <pm2> resurrect`, or `<pm2> resurrect` for a
/// pm2 found on `PATH` (then without the hook: the marker reaches PM2, as
/// with the JS agent, but the keys still do not).
pub fn resurrect_command(cfg: &DaemonConfig) -> Option<ResurrectCommand> {
    let (program, script) = pm2_command(cfg)?;
    let hook = cfg
        .host
        .config_file
        .as_deref()
        .and_then(Path::parent)
        .map(|root| root.join(RESURRECT_HOOK))
        .filter(|h| h.is_file());
    let mut args = Vec::new();
    let hooked = match hook {
        Some(hook) if !script.is_empty() => {
            args.push("--require".into());
            args.push(hook.into_os_string());
            true
        }
        _ => false,
    };
    args.extend(script.into_iter().map(PathBuf::into_os_string));
    args.push("resurrect".into());
    Some(ResurrectCommand {
        program,
        args,
        hooked,
    })
}

/// Runs `pm2 resurrect` (see the module documentation for its environment).
async fn resurrect(cfg: &DaemonConfig) {
    let Some(rc) = resurrect_command(cfg) else {
        tracing::error!(
            "PM2 is down and no pm2 binary was found to resurrect it (set PM2_BINARY_PATH)"
        );
        return;
    };
    tracing::info!(program = %rc.program.display(), "PM2 is down: running pm2 resurrect");
    let mut cmd = tokio::process::Command::new(&rc.program);
    cmd.args(&rc.args);
    let removed = child_env::removed(std::env::vars_os(), &[&cfg.identity.secret_key]);
    for name in &removed {
        cmd.env_remove(name);
    }
    tracing::debug!(
        removed = removed.len(),
        hooked = rc.hooked,
        "pm2 resurrect runs without the agent's keys and variables"
    );
    if !rc.hooked {
        tracing::debug!(
            "{AGENT_ONLINE} may reach PM2's environment: {RESURRECT_HOOK} is not preloaded"
        );
    }
    cmd.env(AGENT_ONLINE, "true")
        .env("PM2_HOME", &cfg.paths.pm2_home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(RESURRECT_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                tracing::info!("pm2 resurrect done");
                tracing::debug!("pm2 resurrect: {}{}", text.trim(), err.trim());
            } else {
                tracing::error!(
                    "pm2 resurrect failed ({}): {}{}",
                    out.status,
                    text.trim(),
                    err.trim()
                );
            }
        }
        Ok(Err(e)) => tracing::error!("cannot run pm2 resurrect: {e}"),
        Err(_) => tracing::error!("pm2 resurrect did not finish in {RESURRECT_TIMEOUT:?}; killed"),
    }
}

/// The pm2 CLI: `PM2_BINARY_PATH`, else the pm2 found next to this
/// package (installed inside pm2, beside it, or as our dependency), else
/// `pm2` from `PATH`.
pub fn pm2_command(cfg: &DaemonConfig) -> Option<(PathBuf, Vec<PathBuf>)> {
    let node = cfg
        .host
        .node_path
        .clone()
        .unwrap_or_else(|| PathBuf::from("node"));
    if let Some(bin) = cfg.pm2_binary_path.as_ref().filter(|p| p.is_file()) {
        return Some((node, vec![bin.clone()]));
    }
    let pkg = cfg.host.config_file.as_deref().and_then(Path::parent);
    if let Some(pkg) = pkg {
        let candidates = [
            pkg.join("../../../bin/pm2"), // pm2/node_modules/@pm2/agent
            pkg.join("../../bin/pm2"),    // pm2/node_modules/keymetrics-agent
            pkg.join("../pm2/bin/pm2"),   // node_modules/pm2 beside us
            pkg.join("node_modules/pm2/bin/pm2"),
        ];
        if let Some(bin) = candidates.into_iter().find(|p| p.is_file()) {
            return Some((node, vec![bin]));
        }
    }
    let on_path = std::env::var_os("PATH")?;
    std::env::split_paths(&on_path)
        .map(|d| d.join("pm2"))
        .find(|p| p.is_file())
        .map(|p| (p, vec![]))
}

/// Writes PM2's process list to `dump.pm2` the way `pm2 save` does (the
/// `pm2_env` of each process but modules, without `instances`/`pm_id`).
pub async fn dump(cfg: &DaemonConfig, pm2: &Pm2Client) -> Result<usize, String> {
    let reply = pm2
        .rpc()
        .call_text("getMonitorData", vec![Value::Object(Default::default())])
        .await
        .map_err(|e| e.to_string())?;
    let Some((text, n)) = dump_text_hiding(&reply, &cfg.identity.secret_key)? else {
        // An empty list (PM2 just restarted, nothing resurrected yet) must
        // not replace the dump that would bring the apps back.
        return Ok(0);
    };
    write_atomically(&cfg.paths.dump_file, text.as_bytes()).map_err(|e| e.to_string())?;
    tracing::debug!(processes = n, "process list dumped");
    Ok(n)
}

/// The `getMonitorData` reply as `dump.pm2` (what `pm2 save` writes: every
/// process's `pm2_env` but modules', without `instances` and `pm_id`), and
/// how many processes it holds; `None` for an empty list.
///
/// Each `pm2_env` is copied field by field as raw JSON text, never parsed
/// into a tree: at 50 apps the reply is hundreds of KB, and a parsed copy
/// of it would set the daemon's memory high-water mark every five minutes.
pub fn dump_text(reply: &[u8]) -> Result<Option<(String, usize)>, String> {
    dump_text_hiding(reply, "")
}

/// [`dump_text`] without any environment variable whose value is `secret`
/// (the agent's secret key): neither a top-level `pm2_env` field (PM2
/// copies an app's variables there) nor an entry of its `env` object. Only
/// a field whose text may hold the secret is parsed.
pub fn dump_text_hiding(reply: &[u8], secret: &str) -> Result<Option<(String, usize)>, String> {
    #[derive(Deserialize)]
    struct Reply<'a> {
        #[serde(borrow, default)]
        args: Option<(Option<Vec<Proc<'a>>>,)>,
        #[serde(default)]
        error: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Proc<'a> {
        #[serde(borrow, default)]
        pm2_env: Option<RawFields<'a>>,
    }
    let reply: Reply = serde_json::from_slice(reply).map_err(|e| format!("getMonitorData: {e}"))?;
    if let Some(e) = reply.error {
        return Err(e
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| e.to_string()));
    }
    let procs = reply
        .args
        .and_then(|(p,)| p)
        .ok_or("getMonitorData did not return a list")?;
    let mut out = String::from("[");
    let mut n = 0;
    for fields in procs.into_iter().filter_map(|p| p.pm2_env?.0) {
        let module = fields.iter().any(|(k, v)| {
            k == "pmx_module"
                && serde_json::from_str::<Value>(v.get())
                    .is_ok_and(|v| crate::protocol::rpc::truthy(&v))
        });
        if module {
            continue;
        }
        out.push_str(if n == 0 { "\n  {" } else { ",\n  {" });
        let mut first = true;
        for (k, v) in fields
            .iter()
            .filter(|(k, _)| k != "instances" && k != "pm_id")
        {
            let hidden;
            let value = if may_hold(v.get(), secret) {
                if is_secret(v, secret) {
                    continue;
                }
                match without_secret(v, secret) {
                    Some(text) => {
                        hidden = text;
                        hidden.as_str()
                    }
                    None => v.get(),
                }
            } else {
                v.get()
            };
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str("\n    ");
            out.push_str(&serde_json::to_string(k.as_ref()).map_err(|e| e.to_string())?);
            out.push_str(": ");
            out.push_str(value);
        }
        out.push_str("\n  }");
        n += 1;
    }
    if n == 0 {
        return Ok(None);
    }
    out.push_str("\n]");
    Ok(Some((out, n)))
}

/// Whether the raw JSON `text` may hold `secret` (escapes included): the
/// cheap test before parsing. A key shorter than
/// [`crate::logging::MIN_REDACTED_LEN`] is not looked for (a test key such
/// as `s` would match unrelated values).
fn may_hold(text: &str, secret: &str) -> bool {
    secret.len() >= crate::logging::MIN_REDACTED_LEN
        && (text.contains(secret) || text.contains('\\'))
}

/// Whether `v` is the JSON string `secret`.
fn is_secret(v: &RawValue, secret: &str) -> bool {
    v.get().starts_with('"') && serde_json::from_str::<Cow<str>>(v.get()).is_ok_and(|s| s == secret)
}

/// An object's text without its entries whose value is the string
/// `secret` (an app's `env`); `None` when nothing is removed or `v` is not
/// an object.
fn without_secret(v: &RawValue, secret: &str) -> Option<String> {
    let mut map: serde_json::Map<String, Value> = serde_json::from_str(v.get()).ok()?;
    let before = map.len();
    map.retain(|_, v| v.as_str() != Some(secret));
    if map.len() == before {
        return None;
    }
    serde_json::to_string(&map).ok()
}

/// A JSON object's fields in order, values kept as raw text (a key with
/// escapes is unescaped into an owned string; others are borrowed); `None`
/// when the value is not an object (such a `pm2_env` is not dumped).
struct RawFields<'a>(Option<Vec<(Cow<'a, str>, &'a RawValue)>>);

impl<'de: 'a, 'a> Deserialize<'de> for RawFields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = RawFields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::new();
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    fields.push((k, m.next_value::<&'de RawValue>()?));
                }
                Ok(RawFields(Some(fields)))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Self::Value, S::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawFields(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(RawFields(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(RawFields(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RawFields(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RawFields(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(RawFields(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(RawFields(None))
            }
        }
        d.deserialize_any(Fields(std::marker::PhantomData))
    }
}

/// `file.tmp` then rename; the previous file is kept as `file.bak`.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("pm2.tmp");
    std::fs::write(&tmp, bytes)?;
    if file.exists() {
        let _ = std::fs::copy(file, file.with_extension("pm2.bak"));
    }
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_resurrect_per_outage_after_the_threshold() {
        let t0 = Instant::now();
        let mut o = Outage::default();
        assert!(!o.observe(true, t0));
        assert_eq!(o.resurrect_at(), None);
        // Down: armed for the end of the threshold, not before.
        assert!(!o.observe(false, t0));
        assert_eq!(o.resurrect_at(), Some(t0 + OUTAGE_THRESHOLD));
        assert!(!o.observe(false, t0 + OUTAGE_THRESHOLD / 2));
        assert!(o.observe(false, t0 + OUTAGE_THRESHOLD));
        // Once per outage: disarmed until PM2 comes back and goes again.
        assert_eq!(o.resurrect_at(), None);
        assert!(!o.observe(false, t0 + OUTAGE_THRESHOLD * 5));
        let t1 = t0 + OUTAGE_THRESHOLD * 6;
        assert!(!o.observe(true, t1));
        assert!(!o.observe(false, t1));
        assert_eq!(o.resurrect_at(), Some(t1 + OUTAGE_THRESHOLD));
    }

    #[test]
    fn dump_like_pm2_save() {
        let reply = json!({"args": [[
            {"pm_id": 0, "pm2_env": {"name": "a", "pm_id": 0, "instances": 1, "env": {"X": "1"}, "k\\\"q": [1, {"y": null}]}},
            {"pm_id": 1, "pm2_env": {"name": "mod", "pmx_module": true}},
            {"pm_id": 2},
            {"pm_id": 3, "pm2_env": "odd"},
            {"pm_id": 4, "pm2_env": {"name": "b", "pmx_module": false}}
        ]]});
        let (text, n) = dump_text(reply.to_string().as_bytes()).unwrap().unwrap();
        assert_eq!(n, 2);
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            json!([
                {"name": "a", "env": {"X": "1"}, "k\\\"q": [1, {"y": null}]},
                {"name": "b", "pmx_module": false}
            ])
        );
        let keys: Vec<String> = parsed[0].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["name", "env", "k\\\"q"], "field order kept");
    }

    #[test]
    fn dump_of_nothing_or_an_error() {
        assert_eq!(dump_text(br#"{"args":[[]]}"#).unwrap(), None);
        assert_eq!(
            dump_text(br#"{"args":[[{"pm2_env":{"name":"m","pmx_module":"yes"}}]]}"#).unwrap(),
            None
        );
        assert_eq!(dump_text(br#"{"error":"boom"}"#).unwrap_err(), "boom");
        assert!(dump_text(b"{garbage").is_err());
    }

    #[test]
    fn dump_leaves_the_secret_out() {
        let secret = "s3cr3t-Key-1";
        let reply = json!({"args": [[
            {"pm2_env": {
                "name": "keyed",
                "KEYMETRICS_SECRET": secret,
                "OTHER": "kept",
                "env": {"KEYMETRICS_SECRET": secret, "SECRET_KEY": secret, "PATH": "/bin", "NEAR": format!("{secret}x")},
                "args": ["--key", secret]
            }},
            {"pm2_env": {"name": "plain", "env": {"A": "1"}, "esc": "a\\b\"c"}},
            {"pm2_env": {"name": "escaped", "X": secret}}
        ]]});
        let raw = reply.to_string().replace("s3cr3t-K", "s3cr3t-\\u004b");
        let (text, n) = dump_text_hiding(raw.as_bytes(), secret).unwrap().unwrap();
        assert_eq!(n, 3);
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            json!([
                {"name": "keyed", "OTHER": "kept",
                 "env": {"PATH": "/bin", "NEAR": format!("{secret}x")},
                 "args": ["--key", secret]},
                {"name": "plain", "env": {"A": "1"}, "esc": "a\\b\"c"},
                {"name": "escaped"}
            ]),
            "variables holding the secret go (escaped or not); an app's own arguments stay"
        );
        // Without a secret (or a short one), nothing is touched.
        let (same, _) = dump_text_hiding(raw.as_bytes(), "").unwrap().unwrap();
        let (short, _) = dump_text_hiding(
            br#"{"args":[[{"pm2_env":{"name":"a","F":"true"}}]]}"#,
            "true",
        )
        .unwrap()
        .unwrap();
        assert!(short.contains(r#""F": "true""#), "{short}");
        assert_eq!(same, dump_text(raw.as_bytes()).unwrap().unwrap().0);
        assert!(same.contains("KEYMETRICS_SECRET"));
    }

    fn cfg_with(pm2_bin: Option<PathBuf>, config_file: Option<PathBuf>) -> DaemonConfig {
        let env: std::collections::HashMap<String, String> = [
            ("PM2_MACHINE_NAME", "m"),
            ("PM2_PUBLIC_KEY", "p"),
            ("PM2_SECRET_KEY", "s"),
            ("PM2_HOME", "/tmp/ka-home"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let host = crate::config::HostInfo {
            node_path: Some(PathBuf::from("/usr/bin/node")),
            config_file,
            ..Default::default()
        };
        let mut cfg = DaemonConfig::from_env(env, host).unwrap();
        cfg.pm2_binary_path = pm2_bin;
        cfg
    }

    #[test]
    fn resurrect_preloads_the_hook_under_node() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bin = root.join("node_modules/pm2/bin/pm2");
        let hook = root.join(RESURRECT_HOOK);
        assert!(hook.is_file(), "the hook ships in the package (src/*.js)");
        let rc = resurrect_command(&cfg_with(Some(bin.clone()), Some(root.join("config.json"))))
            .unwrap();
        assert_eq!(rc.program, PathBuf::from("/usr/bin/node"));
        let args: Vec<std::ffi::OsString> = vec![
            "--require".into(),
            hook.into(),
            bin.clone().into(),
            "resurrect".into(),
        ];
        assert_eq!(rc.args, args);
        assert!(rc.hooked);
        // No package root known: no hook, still a resurrect.
        let rc = resurrect_command(&cfg_with(Some(bin.clone()), None)).unwrap();
        assert_eq!(rc.args, vec![bin.into_os_string(), "resurrect".into()]);
        assert!(!rc.hooked);
    }

    #[test]
    fn atomic_write_keeps_a_backup() {
        let dir = std::env::temp_dir().join(format!("ka-dump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("dump.pm2");
        write_atomically(&f, b"[1]").unwrap();
        write_atomically(&f, b"[2]").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "[2]");
        assert_eq!(
            std::fs::read_to_string(dir.join("dump.pm2.bak")).unwrap(),
            "[1]"
        );
        assert!(!dir.join("dump.pm2.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
