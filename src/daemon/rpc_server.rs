//! `interactor.sock`: the pm2-axon-rpc server the CLI uses to find, query
//! and stop the agent (`kill`, `getInfos`; docs/protocols.md §3), and that a
//! daemon which lost the race for `agent.lock` asks for this agent's outcome
//! (`launchOutcome`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::{Status, Stop};
use crate::config::{DaemonConfig, Paths};
use crate::socket::endpoint::{Endpoint, EndpointError};
use crate::socket::rep::RepSocket;
use crate::socket::rpc::RpcServer;

pub struct InteractorRpc {
    sock: RepSocket,
}

pub async fn bind(
    cfg: &Arc<DaemonConfig>,
    status: Arc<Status>,
    stop: watch::Sender<Option<Stop>>,
) -> Result<InteractorRpc, EndpointError> {
    let server = RpcServer::new();
    let stopper = stop.clone();
    server.expose("kill", &["cb"], move |args| {
        let stopper = stopper.clone();
        async move {
            // `kill(pid, cb)`: only if this agent is `pid`. A launcher that
            // decided to restart one agent must not stop the one a
            // concurrent launch has just started in its place. The CLI's
            // `kill(cb)` (no argument) is unconditional, as in JS.
            if let Some(wanted) = args.first().and_then(Value::as_u64) {
                let me = u64::from(std::process::id());
                if wanted != me {
                    tracing::info!(wanted, "kill for another agent ignored");
                    return Err(crate::protocol::rpc::RemoteError::message(format!(
                        "not killed: this agent is pid {me}, not {wanted}"
                    )));
                }
            }
            tracing::info!("kill requested over interactor.sock");
            // Reply first; the daemon then stops and removes its files. The
            // reply is written before the socket closes (see shutdown()).
            let _ = stopper.send(Some(Stop::Clean));
            Ok(vec![])
        }
    });
    let c = cfg.clone();
    let s = status.clone();
    server.expose("getInfos", &["cb"], move |_| {
        let cfg = c.clone();
        let status = s.clone();
        async move { Ok(infos(&cfg, &status).into_iter().collect()) }
    });
    // For a daemon that lost the race for agent.lock (daemon::lock): the IPC
    // message this agent last sent its parent, so that launcher is answered
    // the same way. Nothing while verifying or once stopping (a stopping
    // agent's outcome is no answer: its lock is about to come free).
    let stopping = stop.clone();
    server.expose(super::lock::OUTCOME_METHOD, &["cb"], move |_| {
        let outcome = if stopping.borrow().is_some() {
            None
        } else {
            status
                .outcome
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        async move { Ok(outcome.into_iter().collect()) }
    });
    let path = &cfg.paths.interactor_sock;
    let sock = server.bind(&Endpoint::local(path)).await?;
    // Owner and group only (getInfos answers the agent's identity and state).
    // A named pipe (Windows) has no mode: its default security descriptor
    // already lets only its creator, SYSTEM and administrators write.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    }
    tracing::debug!(path = %path.display(), "interactor RPC bound");
    Ok(InteractorRpc { sock })
}

/// The `getInfos` answer: nothing until the agent is active.
fn infos(cfg: &DaemonConfig, status: &Status) -> Option<Value> {
    if !status.active.load(Ordering::SeqCst) {
        // JS answers nothing until active. When verification is failing we
        // answer why, so `pm2 link info` shows the reason (a refused proxy,
        // a 407, an unknown certificate…) instead of `undefined`.
        let err = status
            .verify_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let mut v = json!({
            "machine_name": cfg.identity.machine_name,
            "public_key": cfg.identity.public_key,
            "connected": false,
            "transporters": [],
            "socket_path": cfg.paths.interactor_sock.display().to_string(),
            "pm2_home_monitored": cfg.paths.pm2_home.display().to_string(),
            "last_error": err,
        });
        add_inspect(&mut v, status);
        return Some(v);
    }
    let km = status
        .km_data
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or(Value::Null);
    let workers = status
        .workers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (connected, transporters) = match &workers {
        Some(w) => (w.is_connected(), w.active_transporters()),
        None => (false, vec![]),
    };
    let mut v = json!({
        "machine_name": cfg.identity.machine_name,
        "public_key": cfg.identity.public_key,
        // Masked: the JS agent answered the key itself to anyone who could
        // connect, and `pm2 link info` printed it (docs/js-agent-behaviour.md §6.1).
        "secret_key": cfg.identity.masked_secret(),
        "remote_host": km.get("endpoints").and_then(|e| e.get("web")).cloned(),
        "connected": connected,
        "transporters": transporters,
        "socket_path": cfg.paths.interactor_sock.display().to_string(),
        "pm2_home_monitored": cfg.paths.pm2_home.display().to_string(),
    });
    // JS drops an undefined `remote_host`.
    if v["remote_host"].is_null() {
        v.as_object_mut().map(|o| o.remove("remote_host"));
    }
    if let Some(w) = &workers {
        if let Some(err) = w.last_error() {
            v["last_error"] = json!(err);
        }
        // Per transporter: state, endpoint, since when, last error, and
        // which one carries the traffic (docs/transport.md).
        v["transport"] = w.transport_infos();
        v["drops"] = w.drops_infos();
    }
    add_inspect(&mut v, status);
    Some(v)
}

/// `inspect`: the inspector's URL without its token, or why it is off
/// (only when `PM2_AGENT_INSPECT` is set).
fn add_inspect(v: &mut Value, status: &Status) {
    if let Some(i) = status
        .inspect
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
    {
        v["inspect"] = i;
    }
}

impl InteractorRpc {
    /// Stops serving. On a clean stop, removes `interactor.sock`, and
    /// `agent.pid` when it names this process (never another agent's).
    pub async fn shutdown(self, clean: bool, paths: &Paths) {
        // Let a pending `kill` reply reach the CLI (JS waits 10 ms too).
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.sock.close();
        if clean {
            remove_own_files(paths);
        }
    }
}

/// Removes `interactor.sock`, and `agent.pid` when it names this process
/// (never another agent's): what a stopped agent leaves behind. Plain
/// file calls, so the stall watch can use it without the runtime.
pub fn remove_own_files(paths: &Paths) {
    let _ = std::fs::remove_file(&paths.interactor_sock);
    match std::fs::read_to_string(&paths.pid_file) {
        Ok(pid) if pid.trim() == std::process::id().to_string() || pid.trim().is_empty() => {
            let _ = std::fs::remove_file(&paths.pid_file);
        }
        Ok(other) => {
            tracing::debug!(pid = other.trim(), "agent.pid names another process; kept")
        }
        Err(_) => {}
    }
}
