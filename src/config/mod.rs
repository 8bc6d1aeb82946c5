//! The daemon's configuration, read from its environment the way the JS
//! agent's `InteractorDaemon` and `constants.js` read theirs. Reading is a
//! pure function of an env map, so every rule is unit-tested.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub mod transporters;

/// Where and how much the agent spools while PM2.io is unreachable.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
}

use crate::common::Identity;
use transporters::{ConfigFileError, TransporterSettings};

/// Files and sockets under `PM2_HOME`.
#[derive(Debug, Clone)]
pub struct Paths {
    pub pm2_home: PathBuf,
    pub rpc_sock: PathBuf,
    pub pub_sock: PathBuf,
    pub interactor_sock: PathBuf,
    pub pid_file: PathBuf,
    pub dump_file: PathBuf,
    pub log_file: PathBuf,
    pub conf_file: PathBuf,
}

impl Paths {
    pub fn new(pm2_home: PathBuf, env: &HashMap<String, String>) -> Paths {
        let over = |key: &str, default: &str| -> PathBuf {
            match env.get(key).filter(|v| !v.is_empty()) {
                Some(v) => PathBuf::from(v),
                None => pm2_home.join(default),
            }
        };
        // PM2 on Windows (paths.js, and constants.js here) puts its sockets
        // at fixed named pipes, whatever PM2_HOME and the environment say.
        let sock = |key: &str, name: &str| -> PathBuf {
            if cfg!(windows) {
                PathBuf::from(format!(r"\\.\pipe\{name}"))
            } else {
                over(key, name)
            }
        };
        Paths {
            rpc_sock: sock("PM2_DAEMON_RPC_PORT", "rpc.sock"),
            pub_sock: sock("PM2_DAEMON_PUB_PORT", "pub.sock"),
            interactor_sock: sock("PM2_INTERACTOR_RPC_PORT", "interactor.sock"),
            pid_file: over("PM2_INTERACTOR_PID_PATH", "agent.pid"),
            dump_file: over("PM2_DUMP_FILE_PATH", "dump.pm2"),
            log_file: over("PM2_INTERACTOR_LOG_FILE_PATH", "agent.log"),
            conf_file: over("PM2_INTERACTION_CONF", "agent.json5"),
            pm2_home,
        }
    }
}

/// Facts about the host that Node knows best (the JS wrapper passes them,
/// so `verifyPM2` and `status` carry exactly what the JS agent sent).
#[derive(Debug, Clone, Default)]
pub struct HostInfo {
    /// `os.cpus()`.
    pub cpus: Value,
    /// `os.totalmem()` in bytes.
    pub total_mem: u64,
    pub hostname: String,
    /// `process.version`, e.g. `v20.20.2`.
    pub node_version: String,
    /// `process.execPath`, to run PM2's CLI for the watchdog.
    pub node_path: Option<PathBuf>,
    /// The package's `config.json` (transporters).
    pub config_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct DaemonConfig {
    pub identity: Identity,
    /// `KEYMETRICS_NODE`: where verifyPM2 lives.
    pub root_url: String,
    /// `KM_RECYCLE` parsed as JSON, `false` by default.
    pub recycle: Value,
    /// `PM2_VERSION` as given (absent → omitted from verifyPM2).
    pub pm2_version_env: Option<String>,
    pub paths: Paths,
    pub host: HostInfo,
    /// `WS_JSON_PATCH`: any non-empty value turns patch mode on.
    pub ws_json_patch: bool,
    /// `WS_GZIP`: permessage-deflate requested.
    pub ws_gzip: bool,
    pub status_interval: Duration,
    pub packet_queue_size: usize,
    /// `LOGS_BUFFER`: bus log entries kept per app, attached to its next
    /// exception as `last_logs` (`PM2_LOGS_BUFFER`, default 8).
    pub logs_buffer: usize,
    /// `CONTEXT_ON_ERROR`: source lines before and after the failing line in
    /// an exception's `context` (`PM2_CONTEXT_ON_ERROR`, default 4).
    pub context_on_error: usize,
    pub enable_context_on_error: bool,
    pub trace_flush_interval: Duration,
    /// `AGGREGATION_DURATION`: the transaction learning period after an app
    /// comes back online (`PM2_AGGREGATION_DURATION`, seconds).
    pub aggregation_duration: Duration,
    /// Trace label censoring; `PM2_DEBUG` turns it off.
    pub trace_censoring: bool,
    pub pm2_binary_path: Option<PathBuf>,
    /// `PM2_AGENT_FAULT_INJECTION` (testing aid): `panic:daemon` or
    /// `panic:status` makes that task panic once the agent runs, to
    /// exercise the self-rescue path; `block:runtime` blocks the runtime
    /// (see [`crate::daemon::stall`]).
    pub fault_injection: Option<String>,
    /// How long the runtime may make no progress before the stall watch
    /// relaunches the agent (`PM2_AGENT_STALL_TIMEOUT`, ms, default 30 s;
    /// `0` turns the watch off).
    pub stall_timeout: Option<Duration>,
    /// How long a connection to PM2.io may go without an answer from the
    /// peer (WebSocket: no frame; Axon: written bytes neither acknowledged
    /// nor taken) before it counts as dead and is reopened
    /// (`PM2_AGENT_DEAD_PEER_TIMEOUT`, ms, default 15 s).
    pub dead_peer_timeout: Duration,
    /// Watchdog: `PM2_AGENT_WATCHDOG=false` turns it off.
    pub watchdog: bool,
    /// Delay before the watchdog starts (`PM2_AGENT_WATCHDOG_DELAY`, ms).
    pub watchdog_delay: Duration,
    /// Period of the process-list dump (`PM2_AGENT_DUMP_INTERVAL`, ms).
    pub dump_interval: Duration,
    /// How often verifyPM2 is asked again (`PM2_AGENT_REVERIFY_INTERVAL`, ms).
    pub reverify_interval: Duration,
    /// How long a transporter may take to connect and prove its peer
    /// (`PM2_AGENT_PROOF_TIMEOUT`, ms; default 10 s).
    pub proof_timeout: Duration,
    /// Bytes each outbound queue may hold (`PM2_AGENT_QUEUE_BYTES`;
    /// default 8 MiB): bursts wait there while the socket writes.
    pub queue_bytes: usize,
    /// The disk spool of what nobody carries (`PM2_AGENT_SPOOL=false`
    /// turns it off): `PM2_AGENT_SPOOL_BYTES` (64 MiB) and
    /// `PM2_AGENT_SPOOL_MAX_AGE` (ms, 24 h), under `$PM2_HOME/agent-spool`.
    pub spool: Option<SpoolSettings>,
    /// Transporters from `config.json` and `AGENT_*` variables.
    pub transporters: Vec<TransporterSettings>,
    /// The whole environment (DEBUG, proxies, …).
    pub env: HashMap<String, String>,
}

impl std::fmt::Debug for DaemonConfig {
    // The environment holds the secret key: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("identity", &self.identity)
            .field("root_url", &self.root_url)
            .field("paths", &self.paths)
            .field("ws_json_patch", &self.ws_json_patch)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("You must provide a {0} environment variable")]
    Missing(&'static str),
    #[error("KM_RECYCLE is not valid JSON: {0}")]
    Recycle(String),
    #[error(transparent)]
    ConfigFile(#[from] ConfigFileError),
    #[error("{key} must be a number, got {value:?}")]
    NotANumber { key: String, value: String },
}

impl DaemonConfig {
    pub fn from_env(
        env: HashMap<String, String>,
        host: HostInfo,
    ) -> Result<DaemonConfig, ConfigError> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        // A switch set to a value that means off (`false`, `0`).
        let off = |v: &str| v == "false" || v == "0";
        // A switch the JS agent turns on for any value: here `false` and
        // `0` mean off (the wire is valid either way).
        let on = |k: &str| get(k).is_some_and(|v| !off(&v));
        // Checked in this order, with these messages, like the JS daemon.
        let machine_name =
            get("PM2_MACHINE_NAME").ok_or(ConfigError::Missing("PM2_MACHINE_NAME"))?;
        let public_key = get("PM2_PUBLIC_KEY").ok_or(ConfigError::Missing("PM2_PUBLIC_KEY"))?;
        let secret_key = get("PM2_SECRET_KEY").ok_or(ConfigError::Missing("PM2_SECRET_KEY"))?;
        let recycle = match get("KM_RECYCLE") {
            Some(s) => serde_json::from_str(&s).map_err(|e| ConfigError::Recycle(e.to_string()))?,
            None => Value::Bool(false),
        };
        let pm2_home = match get("PM2_HOME") {
            Some(h) => PathBuf::from(h),
            None => home_dir().join(".pm2"),
        };
        let number = |key: &str, default: u64| -> Result<u64, ConfigError> {
            match get(key) {
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(|n| n as u64)
                    .ok_or(ConfigError::NotANumber {
                        key: key.to_owned(),
                        value: v,
                    }),
                None => Ok(default),
            }
        };
        let debugish = match get("PM2_DEBUG") {
            Some(v) => v == "true",
            None => get("NODE_ENV").as_deref() == Some("local_test"),
        };
        // AGGREGATION_DURATION has its own fallback: 0 under NODE_ENV test or
        // development.
        let no_learning = match get("PM2_DEBUG") {
            Some(v) => v == "true",
            None => matches!(get("NODE_ENV").as_deref(), Some("test" | "development")),
        };
        // JS: `DEBUG = PM2_DEBUG || false`, so even `PM2_DEBUG=false` turned
        // censoring off (docs/js-agent-behaviour.md §6.9); here only a value
        // meaning "on" does.
        let trace_censoring = !on("PM2_DEBUG");
        let enable_context_on_error = match get("PM2_AGENT_ENABLE_CONTEXT_ON_ERROR")
            .or_else(|| get("PM2_ENABLE_CONTEXT_ON_ERROR"))
        {
            Some(v) => !off(&v),
            None => true,
        };
        let transporters = transporters::load(host.config_file.as_deref(), &env)?;
        let paths = Paths::new(pm2_home, &env);
        Ok(DaemonConfig {
            transporters,
            identity: Identity {
                public_key,
                secret_key,
                machine_name,
                pm2_version: get("PM2_VERSION").unwrap_or_else(|| "0.0.0".into()),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            },
            root_url: get("KEYMETRICS_NODE")
                .or_else(|| get("PM2_KEYMETRICS_ROOT_URL"))
                .unwrap_or_else(|| "https://root.keymetrics.io".into()),
            recycle,
            pm2_version_env: get("PM2_VERSION"),
            host,
            ws_json_patch: on("WS_JSON_PATCH"),
            ws_gzip: on("WS_GZIP"),
            status_interval: Duration::from_millis(number("PM2_STATUS_INTERVAL", 1000)?.max(100)),
            packet_queue_size: number("PM2_PACKET_QUEUE_SIZE", 200)? as usize,
            logs_buffer: (number("PM2_LOGS_BUFFER", 8)? as usize).min(1000),
            context_on_error: (number("PM2_CONTEXT_ON_ERROR", 4)? as usize).min(100),
            enable_context_on_error,
            trace_flush_interval: Duration::from_millis(
                number(
                    "PM2_TRACE_FLUSH_INTERVAL",
                    if debugish { 1000 } else { 30_000 },
                )?
                .max(100),
            ),
            aggregation_duration: Duration::from_secs(number(
                "PM2_AGGREGATION_DURATION",
                if no_learning { 0 } else { 600 },
            )?),
            trace_censoring,
            pm2_binary_path: get("PM2_BINARY_PATH").map(PathBuf::from),
            fault_injection: get("PM2_AGENT_FAULT_INJECTION"),
            stall_timeout: match number("PM2_AGENT_STALL_TIMEOUT", 30_000)? {
                0 => None,
                ms => Some(Duration::from_millis(ms.max(100))),
            },
            dead_peer_timeout: Duration::from_millis(
                number("PM2_AGENT_DEAD_PEER_TIMEOUT", 15_000)?.max(300),
            ),
            watchdog: !get("PM2_AGENT_WATCHDOG").is_some_and(|v| off(&v)),
            watchdog_delay: Duration::from_millis(number("PM2_AGENT_WATCHDOG_DELAY", 30_000)?),
            dump_interval: Duration::from_millis(
                number("PM2_AGENT_DUMP_INTERVAL", 300_000)?.max(1000),
            ),
            reverify_interval: Duration::from_millis(
                number("PM2_AGENT_REVERIFY_INTERVAL", 60_000)?.max(500),
            ),
            proof_timeout: Duration::from_millis(
                number("PM2_AGENT_PROOF_TIMEOUT", 10_000)?.max(100),
            ),
            queue_bytes: number("PM2_AGENT_QUEUE_BYTES", 8 << 20)?.max(1024) as usize,
            spool: if get("PM2_AGENT_SPOOL").is_some_and(|v| off(&v)) {
                None
            } else {
                Some(SpoolSettings {
                    dir: paths.pm2_home.join("agent-spool"),
                    max_bytes: number("PM2_AGENT_SPOOL_BYTES", 64 << 20)?.max(4096),
                    max_age: Duration::from_millis(
                        number("PM2_AGENT_SPOOL_MAX_AGE", 24 * 3600 * 1000)?.max(1000),
                    ),
                })
            },
            paths,
            env,
        })
    }

    /// `getSystemMetadata()` of the JS daemon: the `data` of verifyPM2, key
    /// order kept (the Axon handshake lower-cases these keys in this order).
    pub fn system_metadata(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(
            "MACHINE_NAME".into(),
            self.identity.machine_name.clone().into(),
        );
        m.insert("PUBLIC_KEY".into(), self.identity.public_key.clone().into());
        m.insert("RECYCLE".into(), self.recycle.clone());
        if let Some(v) = &self.pm2_version_env {
            m.insert("PM2_VERSION".into(), v.clone().into());
        }
        m.insert(
            "MEMORY".into(),
            js_number(self.host.total_mem as f64 / 1000.0 / 1000.0),
        );
        m.insert("HOSTNAME".into(), self.host.hostname.clone().into());
        m.insert(
            "CPUS".into(),
            if self.host.cpus.is_array() {
                self.host.cpus.clone()
            } else {
                Value::Array(vec![])
            },
        );
        Value::Object(m)
    }
}

pub use crate::common::js::js_number;

/// `os.homedir()`: `HOME`, else (Windows) `USERPROFILE`.
fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn missing_keys_in_js_order() {
        let e = DaemonConfig::from_env(env(&[]), HostInfo::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "You must provide a PM2_MACHINE_NAME environment variable"
        );
        let e = DaemonConfig::from_env(env(&[("PM2_MACHINE_NAME", "m")]), HostInfo::default())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "You must provide a PM2_PUBLIC_KEY environment variable"
        );
        let e = DaemonConfig::from_env(
            env(&[("PM2_MACHINE_NAME", "m"), ("PM2_PUBLIC_KEY", "p")]),
            HostInfo::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "You must provide a PM2_SECRET_KEY environment variable"
        );
    }

    #[test]
    fn reads_env() {
        let c = DaemonConfig::from_env(
            env(&[
                ("PM2_MACHINE_NAME", "m1"),
                ("PM2_PUBLIC_KEY", "pub"),
                ("PM2_SECRET_KEY", "sec"),
                ("PM2_HOME", "/tmp/h"),
                ("KEYMETRICS_NODE", "http://127.0.0.1:1"),
                ("WS_JSON_PATCH", "false"),
                ("PM2_STATUS_INTERVAL", "2000"),
            ]),
            HostInfo {
                total_mem: 25_276_510_208,
                hostname: "h".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.paths.interactor_sock,
            PathBuf::from(if cfg!(windows) {
                r"\\.\pipe\interactor.sock"
            } else {
                "/tmp/h/interactor.sock"
            })
        );
        assert_eq!(c.root_url, "http://127.0.0.1:1");
        assert!(
            !c.ws_json_patch,
            "'false' is off (the JS agent would turn it on)"
        );
        assert!(!c.ws_gzip, "unset is off");
        for (value, on) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("0", false),
            ("false", false),
        ] {
            let c = DaemonConfig::from_env(
                env(&[
                    ("PM2_MACHINE_NAME", "m1"),
                    ("PM2_PUBLIC_KEY", "pub"),
                    ("PM2_SECRET_KEY", "sec"),
                    ("WS_JSON_PATCH", value),
                    ("WS_GZIP", value),
                ]),
                HostInfo::default(),
            )
            .unwrap();
            assert_eq!((c.ws_json_patch, c.ws_gzip), (on, on), "{value}");
        }
        assert_eq!(c.status_interval, Duration::from_secs(2));
        assert_eq!(c.identity.pm2_version, "0.0.0");
        assert_eq!(
            c.system_metadata().to_string(),
            r#"{"MACHINE_NAME":"m1","PUBLIC_KEY":"pub","RECYCLE":false,"MEMORY":25276.510208,"HOSTNAME":"h","CPUS":[]}"#
        );
        assert!(!format!("{:?}", c.identity).contains("sec"));
        // The whole configuration as a log line would show it: no secret,
        // nor the environment that holds it (KEYMETRICS_SECRET, SECRET_KEY…).
        let mut e = env(&[
            ("PM2_MACHINE_NAME", "m1"),
            ("PM2_PUBLIC_KEY", "pub"),
            ("PM2_SECRET_KEY", "kaDebugSecret42"),
            ("SECRET_KEY", "kaDebugSecret42"),
        ]);
        e.insert("KEYMETRICS_SECRET".into(), "kaDebugSecret42".into());
        let c = DaemonConfig::from_env(e, HostInfo::default()).unwrap();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("kaDebugSecret42"), "{shown}");
        let bad = DaemonConfig::from_env(
            env(&[
                ("PM2_MACHINE_NAME", "m"),
                ("PM2_PUBLIC_KEY", "p"),
                ("PM2_SECRET_KEY", "s"),
                ("PM2_STATUS_INTERVAL", "soon"),
            ]),
            HostInfo::default(),
        );
        assert!(matches!(bad, Err(ConfigError::NotANumber { .. })));
    }

    #[test]
    fn trace_settings() {
        let keys = [
            ("PM2_MACHINE_NAME", "m"),
            ("PM2_PUBLIC_KEY", "p"),
            ("PM2_SECRET_KEY", "s"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut e = env(&keys);
            e.extend(env(extra));
            DaemonConfig::from_env(e, HostInfo::default()).unwrap()
        };
        let c = with(&[]);
        assert_eq!(c.trace_flush_interval, Duration::from_secs(30));
        assert_eq!(c.aggregation_duration, Duration::from_secs(600));
        assert!(c.trace_censoring);
        let c = with(&[("NODE_ENV", "local_test")]);
        assert_eq!(c.trace_flush_interval, Duration::from_secs(1));
        assert_eq!(c.aggregation_duration, Duration::from_secs(600));
        let c = with(&[("NODE_ENV", "test")]);
        assert_eq!(c.aggregation_duration, Duration::ZERO);
        let c = with(&[("PM2_DEBUG", "true"), ("NODE_ENV", "production")]);
        assert_eq!(c.trace_flush_interval, Duration::from_secs(1));
        assert_eq!(c.aggregation_duration, Duration::ZERO);
        assert!(!c.trace_censoring);
        let c = with(&[("PM2_DEBUG", "false"), ("NODE_ENV", "test")]);
        assert!(
            c.trace_censoring,
            "PM2_DEBUG=false keeps censoring (JS: docs/js-agent-behaviour.md §6.9)"
        );
        assert_eq!(c.aggregation_duration, Duration::from_secs(600));
        let c = with(&[("PM2_AGGREGATION_DURATION", "12")]);
        assert_eq!(c.aggregation_duration, Duration::from_secs(12));
    }

    #[test]
    fn js_numbers() {
        assert_eq!(js_number(1000.0).to_string(), "1000");
        assert_eq!(js_number(0.5).to_string(), "0.5");
        assert_eq!(js_number(f64::NAN), Value::Null);
    }
}
