//! What a process the agent starts inherits from the agent's environment.
//!
//! The agent's environment holds its keys (`PM2_SECRET_KEY`, given by the
//! launcher, and often `KEYMETRICS_SECRET` or PM2's `SECRET_KEY` alias from
//! the launcher's own environment) and its own settings. A child that is not
//! the agent itself — the watchdog's `pm2 resurrect`, and through it the
//! PM2 daemon it spawns and every app PM2 starts with env inheritance
//! (cluster mode) — gets none of them: [`removed`] lists what to take out.
//!
//! Removed:
//! - every variable whose value is the secret key, whatever its name;
//! - the keys and identity the launcher hands the agent, and the agent's
//!   own settings ([`AGENT_VARS`], `PM2_AGENT_*`, `AGENT_TRANSPORT_*`,
//!   `AGENT_*_ENDPOINT`);
//! - `DEBUG` when it is the launcher's default for the agent
//!   ([`crate::logging::DEFAULT_DEBUG`]); a `DEBUG` the user chose stays.
//!
//! Kept: everything else, `PM2_HOME` and PM2's own settings (`PM2_DEBUG`,
//! `PM2_NODE_OPTIONS`, `PM2_SILENT`, …) included.
//!
//! The self-rescue relaunch (`host::rescue`) is the agent itself: it keeps
//! its environment, keys included.

use std::ffi::{OsStr, OsString};

/// Variables that only mean something to the agent (or to the CLI that
/// launches it): its keys and identity, its settings, the IPC channel of
/// its launcher.
pub const AGENT_VARS: [&str; 26] = [
    "PM2_SECRET_KEY",
    "PM2_PUBLIC_KEY",
    "KEYMETRICS_SECRET",
    "KEYMETRICS_PUBLIC",
    "PM2_MACHINE_NAME",
    "PM2_REVERSE_INTERACT",
    "PM2_BINARY_PATH",
    "PM2_VERSION",
    "KEYMETRICS_NODE",
    "PM2_KEYMETRICS_ROOT_URL",
    "PM2_INTERACTOR_PROCESSING",
    "KM_RECYCLE",
    "WS_JSON_PATCH",
    "WS_GZIP",
    "PM2_STATUS_INTERVAL",
    "PM2_PACKET_QUEUE_SIZE",
    "PM2_LOGS_BUFFER",
    "PM2_CONTEXT_ON_ERROR",
    "PM2_ENABLE_CONTEXT_ON_ERROR",
    "PM2_TRACE_FLUSH_INTERVAL",
    "PM2_AGGREGATION_DURATION",
    "PM2_PROXY",
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    // The marker telling a CLI that an agent runs; the watchdog sets it
    // again for `pm2 resurrect` alone (see `daemon::watchdog`).
    "PM2_AGENT_ONLINE",
    "PM2_AGENT_NATIVE",
];

/// Whether `name` is one of the agent's own variables.
pub fn is_agent_var(name: &str) -> bool {
    AGENT_VARS.contains(&name)
        || name.starts_with("PM2_AGENT_")
        || name.starts_with("AGENT_TRANSPORT_")
        || (name.starts_with("AGENT_") && name.ends_with("_ENDPOINT"))
}

/// The names, among `env`, that a child must not inherit: the agent's own
/// variables and any whose value is one of `secrets` (those shorter than
/// [`crate::logging::MIN_REDACTED_LEN`] ignored: a test key such as `s`
/// would match unrelated values).
pub fn removed<I, K, V>(env: I, secrets: &[&str]) -> Vec<OsString>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let secrets: Vec<&OsStr> = secrets
        .iter()
        .filter(|s| s.len() >= crate::logging::MIN_REDACTED_LEN)
        .map(OsStr::new)
        .collect();
    env.into_iter()
        .filter(|(k, v)| {
            let (k, v) = (k.as_ref(), v.as_ref());
            let agents = k.to_str().is_some_and(|k| {
                is_agent_var(k)
                    || (k == "DEBUG" && v.to_str() == Some(crate::logging::DEFAULT_DEBUG))
            });
            agents || secrets.contains(&v)
        })
        .map(|(k, _)| k.as_ref().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(env: &[(&str, &str)], secrets: &[&str]) -> Vec<String> {
        removed(env.iter().copied(), secrets)
            .into_iter()
            .map(|n| n.into_string().unwrap())
            .collect()
    }

    #[test]
    fn keys_identity_and_settings_go_pm2_s_own_stay() {
        let env = [
            ("PM2_SECRET_KEY", "s3cr3t-value"),
            ("PM2_PUBLIC_KEY", "pub"),
            ("KEYMETRICS_SECRET", "s3cr3t-value"),
            ("KEYMETRICS_PUBLIC", "pub"),
            ("PM2_MACHINE_NAME", "box"),
            ("KEYMETRICS_NODE", "http://127.0.0.1:1"),
            ("PM2_AGENT_ONLINE", "true"),
            ("PM2_AGENT_NATIVE", "true"),
            ("PM2_AGENT_RESCUES", "1"),
            ("PM2_AGENT_SPOOL_BYTES", "10"),
            ("AGENT_TRANSPORT_AXON", "true"),
            ("AGENT_WEBSOCKET_ENDPOINT", "ws"),
            ("NODE_CHANNEL_FD", "3"),
            ("PM2_HOME", "/h/.pm2"),
            ("PM2_DEBUG", "true"),
            ("PM2_NODE_OPTIONS", "--max-old-space-size=200"),
            ("PM2_SILENT", "true"),
            ("PATH", "/usr/bin"),
            ("HOME", "/h"),
            ("AGENT_NAME", "an app's own"),
        ];
        let gone = names(&env, &["s3cr3t-value"]);
        assert_eq!(
            gone,
            [
                "PM2_SECRET_KEY",
                "PM2_PUBLIC_KEY",
                "KEYMETRICS_SECRET",
                "KEYMETRICS_PUBLIC",
                "PM2_MACHINE_NAME",
                "KEYMETRICS_NODE",
                "PM2_AGENT_ONLINE",
                "PM2_AGENT_NATIVE",
                "PM2_AGENT_RESCUES",
                "PM2_AGENT_SPOOL_BYTES",
                "AGENT_TRANSPORT_AXON",
                "AGENT_WEBSOCKET_ENDPOINT",
                "NODE_CHANNEL_FD",
            ]
        );
    }

    #[test]
    fn any_variable_holding_the_secret_goes() {
        let env = [
            ("SECRET_KEY", "s3cr3t-value"),
            ("MY_APP_VAR", "s3cr3t-value"),
            ("OTHER", "s3cr3t-value-not-quite"),
            ("EMPTY", ""),
        ];
        assert_eq!(
            names(&env, &["s3cr3t-value", ""]),
            ["SECRET_KEY", "MY_APP_VAR"]
        );
        // An empty or short secret matches no value.
        assert!(names(&[("EMPTY", "")], &[""]).is_empty());
        assert!(names(&[("FLAG", "true")], &["true"]).is_empty());
    }

    #[test]
    fn debug_goes_only_when_it_is_the_launcher_default() {
        let default = crate::logging::DEFAULT_DEBUG;
        assert_eq!(names(&[("DEBUG", default)], &[]), ["DEBUG"]);
        assert!(names(&[("DEBUG", "pm2:*")], &[]).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_values_are_compared_as_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let odd = OsStr::from_bytes(b"\xff\xfe");
        let env = [
            (OsStr::new("ODD"), odd),
            (OsStr::new("S"), OsStr::new("k-long-enough")),
        ];
        assert_eq!(removed(env, &["k-long-enough"]), [OsString::from("S")]);
    }
}
