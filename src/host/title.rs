//! The agent's process title: what `ps` shows, and how the CLI recognises a
//! running agent before signalling the pid found in `agent.pid`
//! (`looksLikeAgent` in src/InteractorClient.js matches `^PM2 Agent v`).
//!
//! The mode in brackets tells which host runs the daemon:
//! `PM2 Agent v0.1.0 [native]: (/home/u/.pm2)` for this binary (its
//! `argv[0]`, set by whoever spawns it), `… [node]: (…)` for
//! `node src/InteractorDaemon.js` (its `process.title`).

use std::fmt;
use std::path::Path;

/// Which process hosts the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMode {
    /// The `keymetrics-agent-daemon` binary.
    Native,
    /// `node src/InteractorDaemon.js` with the napi addon.
    Node,
}

impl fmt::Display for HostMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostMode::Native => "native",
            HostMode::Node => "node",
        })
    }
}

/// `PM2 Agent v<version> [<mode>]: (<PM2_HOME>)`.
pub fn process_title(mode: HostMode, pm2_home: &Path) -> String {
    format!(
        "PM2 Agent v{} [{mode}]: ({})",
        env!("CARGO_PKG_VERSION"),
        pm2_home.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_names_version_mode_and_home() {
        assert_eq!(
            process_title(HostMode::Native, Path::new("/root/.pm2")),
            format!(
                "PM2 Agent v{} [native]: (/root/.pm2)",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(process_title(HostMode::Node, Path::new("/h")).contains("[node]"));
    }
}
