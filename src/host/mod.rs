//! The native host: the whole daemon as a process of its own, without Node
//! (the `keymetrics-agent-daemon` binary; `InteractorClient.daemonize`
//! starts it when `PM2_AGENT_NATIVE=true`).
//!
//! It does what `node src/InteractorDaemon.js` does around the same
//! [`crate::daemon`]:
//! - reads the same environment and files ([`facts`] replaces the facts Node
//!   knew: `os.cpus()`, `os.totalmem()`, `os.hostname()`, `process.version`);
//! - writes the daemon's IPC message to the parent on the fd named by
//!   `NODE_CHANNEL_FD` (Node's `json` serialization, [`crate::socket::ipc`]);
//! - turns SIGTERM, SIGINT and SIGHUP into a clean exit (like `kill` over
//!   `interactor.sock`);
//! - on a fatal error relaunches itself ([`rescue`]), then exits; so does
//!   a wedged runtime, from the stall watch's thread ([`daemon::stall`]).
//!
//! Everything runs on one thread (a tokio current-thread runtime; short-lived
//! blocking-pool threads appear only for DNS lookups and file reads): the
//! agent mostly waits on sockets, and each thread costs private memory.

pub mod facts;
pub mod rescue;
pub mod title;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::DaemonConfig;
use crate::daemon::stall::{StallHook, Stalled};
use crate::daemon::{self, DaemonHandle, HostEvent};
use crate::socket::ipc::{IpcChannel, IpcChannelError};

/// Exit code of a failed start or a failed rescue (the JS `ERROR_EXIT`).
pub const ERROR_EXIT: i32 = 1;

/// How the daemon ended, for the host to act on.
enum End {
    Exit(i32),
    Rescue(String),
}

/// Runs the daemon to its end and returns the process exit code. Call it
/// from `main` before any other thread exists (it edits the environment).
pub fn run() -> i32 {
    let started = Instant::now();
    // Take the channel first: it removes NODE_CHANNEL_* from the
    // environment so nothing we spawn inherits them.
    let mut channel = match IpcChannel::from_env() {
        Ok(c) => Some(c),
        Err(IpcChannelError::Absent) => None,
        Err(e) => {
            eprintln!("[PM2 Agent] no IPC channel to the parent: {e}");
            None
        }
    };
    // An agent runs in this process, as the Node host records too. (The
    // watchdog sets it for its `pm2 resurrect` itself, and keeps it from
    // PM2: see daemon::watchdog.)
    // SAFETY: single-threaded here; no other thread reads the environment.
    unsafe { std::env::set_var("PM2_AGENT_ONLINE", "true") };

    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let exe = std::env::current_exe().ok();
    let host = facts::detect(&env, exe.as_deref());
    let cfg = match DaemonConfig::from_env(env, host) {
        Ok(c) => c,
        Err(e) => {
            // The JS daemon's `console.error(e.message)`, then exit 1.
            eprintln!("{e}");
            return ERROR_EXIT;
        }
    };
    crate::logging::hide_secret(&cfg.identity.secret_key);
    crate::logging::init(cfg.env.get("DEBUG").map(String::as_str));
    let paths = cfg.paths.clone();

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .thread_keep_alive(Duration::from_secs(1))
        .thread_name("km-agent-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ERROR_EXIT;
        }
    };
    let end = rt.block_on(host_loop(cfg, &mut channel, started));
    rt.shutdown_timeout(Duration::from_secs(1));

    match end {
        End::Exit(code) => code,
        End::Rescue(reason) => {
            let r = rescue::Rescue {
                paths: &paths,
                started,
                reason: &reason,
            };
            match rescue::relaunch(&r) {
                Ok(pid) => {
                    tracing::info!(pid, "[PM2 Agent] rescued: the new agent answered");
                    0
                }
                Err(e) => {
                    tracing::error!("[PM2 Agent] Failed to rescue agent : {e}");
                    ERROR_EXIT
                }
            }
        }
    }
}

/// Starts the daemon (under a stall watch) and serves its [`HostEvent`]s
/// until it ends.
async fn host_loop(cfg: DaemonConfig, channel: &mut Option<IpcChannel>, started: Instant) -> End {
    let (tx, mut rx) = mpsc::channel::<HostEvent>(16);
    let paths = cfg.paths.clone();
    let on_stall: StallHook = Box::new(move |s| rescue_stalled(&paths, started, s));
    let (handle, daemon) = daemon::stall::start(cfg, tx, on_stall);
    tokio::spawn(daemon);
    flag_stop_on_signals(&handle);
    tokio::spawn(exit_on_signals(handle));
    while let Some(ev) = rx.recv().await {
        match ev {
            HostEvent::SendToParent(mut msg) => {
                crate::logging::redact_json(&mut msg);
                send_to_parent(channel, &msg)
            }
            HostEvent::Started => tracing::debug!("agent started"),
            HostEvent::Exit(code) => return End::Exit(code),
            HostEvent::Rescue(reason) => return End::Rescue(reason),
        }
    }
    tracing::error!("the daemon ended without an exit code");
    End::Exit(ERROR_EXIT)
}

/// A wedged runtime (see [`daemon::stall`]): this runs on the stall watch
/// thread while the runtime's thread is blocked, so it relaunches the agent
/// from here and ends the process without going back to the runtime.
fn rescue_stalled(paths: &crate::config::Paths, started: Instant, s: Stalled) -> ! {
    if !s.relaunch {
        std::process::exit(ERROR_EXIT);
    }
    let r = rescue::Rescue {
        paths,
        started,
        reason: &s.reason,
    };
    let code = match rescue::relaunch(&r) {
        Ok(pid) => {
            tracing::info!(pid, "[PM2 Agent] rescued: the new agent answered");
            0
        }
        Err(e) => {
            tracing::error!("[PM2 Agent] Failed to rescue agent : {e}");
            ERROR_EXIT
        }
    };
    std::process::exit(code)
}

/// `process.send` of the Node host: a failure is logged, never fatal (the
/// CLI disconnects once it has the first message).
fn send_to_parent(channel: &mut Option<IpcChannel>, msg: &serde_json::Value) {
    match channel {
        None => tracing::info!("Could not send data to parent"),
        Some(c) => {
            if let Err(e) = c.send(msg) {
                tracing::debug!("Parent process disconnected: {e}");
                *channel = None;
            }
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP also set the daemon's stop flag from the
/// signal handler itself, not through the runtime: a wedged runtime never
/// reads the signal, and the stall watch then ends the process instead of
/// relaunching it (see [`daemon::stall`]).
fn flag_stop_on_signals(handle: &DaemonHandle) {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let flag = handle.stop_flag();
        // SAFETY: the action only stores to an atomic, which is
        // async-signal-safe; tokio's own action on the signal still runs.
        let registered = unsafe {
            signal_hook_registry::register(sig, move || {
                flag.store(true, std::sync::atomic::Ordering::Relaxed)
            })
        };
        if let Err(e) = registered {
            tracing::warn!(
                signal = sig,
                "cannot watch the signal outside the runtime: {e}"
            );
        }
    }
}

/// SIGTERM, SIGINT and SIGHUP: the same clean shutdown as `kill` over
/// `interactor.sock` (files removed, exit 0).
async fn exit_on_signals(handle: DaemonHandle) {
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (mut term, mut int, mut hup) = match streams {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::warn!("cannot handle SIGTERM/SIGINT/SIGHUP; stop the agent with `kill` over interactor.sock");
            return;
        }
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        tracing::info!(signal = name, "stopping on signal");
        // A repeated signal asks again (a no-op once stopping).
        handle.exit(None);
    }
}
