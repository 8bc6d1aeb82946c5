//! The agent daemon's lifecycle, in the JS daemon's order:
//! 0. take `$PM2_HOME/agent.lock` ([`lock`]): one agent per `PM2_HOME`; a
//!    daemon that finds it taken answers with the running agent's outcome
//!    and exits 0 without touching anything;
//! 1. bind `interactor.sock` (pm2-axon-rpc `kill`, `getInfos`) before
//!    anything else, so the CLI can find and stop us at once; then the
//!    inspector when `PM2_AGENT_INSPECT` asks for it ([`crate::inspect`]);
//! 2. verify with PM2.io (`verifyPM2`), retrying with a growing delay;
//! 3. report the outcome to the parent (one IPC message);
//! 4. connect the transporters and start the workers (status, bus events,
//!    remote actions), and re-verify every minute;
//! 5. on `kill` (or a host request), stop everything, remove our files and
//!    exit 0; on a fatal verification outcome, exit 1.
//!
//! The host receives [`HostEvent`]s: the IPC message to forward to the
//! parent, and the exit code or a rescue request. Two hosts exist: Node,
//! through the napi binding (`src/InteractorDaemon.js`), and the native
//! binary ([`crate::host`]).

pub mod lock;
pub mod rpc_server;
pub mod stall;
pub mod verify;
pub mod watchdog;
pub mod workers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::config::DaemonConfig;
use crate::net::NetOptions;
use verify::Verdict;

/// What the daemon asks of its host process.
#[derive(Debug, Clone, PartialEq)]
pub enum HostEvent {
    /// Forward to the parent through the IPC channel (`process.send`).
    SendToParent(Value),
    /// Verified and the workers are running (the JS `start(cb)` callback).
    Started,
    /// The daemon is done; exit the process with this code.
    Exit(i32),
    /// A fatal error: the daemon stopped its work and released
    /// `interactor.sock`; the host relaunches the agent the way
    /// `daemonize` does, then exits.
    Rescue(String),
}

/// Why the daemon stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// `kill` over RPC or a clean host request: exit 0, remove our files.
    Clean,
    /// An error: exit 1, leave the files (as the JS daemon does).
    Error(String),
    /// A fatal error in a task (a panic): stop and let the host relaunch.
    Rescue(String),
}

/// State the `getInfos` RPC reads.
#[derive(Default)]
pub struct Status {
    pub active: AtomicBool,
    pub km_data: Mutex<Option<Value>>,
    pub workers: Mutex<Option<workers::Workers>>,
    /// Why the last verification failed (proxy refused, 407, unknown
    /// certificate, …), cleared by a successful one.
    pub verify_error: Mutex<Option<String>>,
    /// The last IPC message sent to the parent: what a concurrent launcher
    /// is answered with (`launchOutcome`, see [`lock`]).
    pub outcome: Mutex<Option<Value>>,
    /// `getInfos.inspect` when `PM2_AGENT_INSPECT` is set: the
    /// inspector's URL (without its token) and URL file, or why it is off.
    pub inspect: Mutex<Option<Value>>,
}

/// A running daemon's control handle.
#[derive(Clone)]
pub struct DaemonHandle {
    stop: watch::Sender<Option<Stop>>,
    /// Set by [`DaemonHandle::exit`] (and by the native host's signal
    /// handlers) without the runtime: the stall watch bounds a stop that
    /// never completes (see [`stall`]).
    stop_requested: Arc<AtomicBool>,
}

impl DaemonHandle {
    /// Asks the daemon to stop (the JS `daemon.exit(err)`).
    pub fn exit(&self, error: Option<String>) {
        self.stop_requested.store(true, Ordering::Relaxed);
        let stop = match error {
            Some(e) => Stop::Error(e),
            None => Stop::Clean,
        };
        let _ = self.stop.send(Some(stop));
    }

    /// The flag [`DaemonHandle::exit`] sets: a signal handler may set it
    /// too (storing to an atomic is async-signal-safe).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop_requested.clone()
    }
}

/// Creates the daemon: its control handle, and the future that runs it to
/// the end (ending with [`HostEvent::Exit`] or [`HostEvent::Rescue`]). A
/// panic inside is caught, logged and turned into a rescue: it never
/// unwinds into the host.
pub fn start(
    cfg: DaemonConfig,
    host: mpsc::Sender<HostEvent>,
) -> (DaemonHandle, impl std::future::Future<Output = ()> + Send) {
    use futures_util::FutureExt;
    let (stop, stop_rx) = watch::channel(None);
    let handle = DaemonHandle {
        stop: stop.clone(),
        stop_requested: Arc::default(),
    };
    let status = Arc::new(Status::default());
    let fut = async move {
        let run = std::panic::AssertUnwindSafe(run(
            Arc::new(cfg),
            host.clone(),
            status.clone(),
            stop,
            stop_rx,
        ));
        let event = match run.catch_unwind().await {
            Ok(Outcome::Exit(code)) => HostEvent::Exit(code),
            Ok(Outcome::Rescue(why)) => HostEvent::Rescue(why),
            Err(panic) => {
                let what = panic_message(&*panic);
                tracing::error!("-- FATAL EXCEPTION happened -- {what}");
                // The unwinding dropped the RPC socket; stop what still runs.
                let workers = lock(&status.workers).take();
                if let Some(w) = workers {
                    w.stop().await;
                }
                HostEvent::Rescue(what)
            }
        };
        let _ = host.send(event).await;
    };
    (handle, fut)
}

/// How `run` ends.
enum Outcome {
    Exit(i32),
    Rescue(String),
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run(
    cfg: Arc<DaemonConfig>,
    host: mpsc::Sender<HostEvent>,
    status: Arc<Status>,
    stop: watch::Sender<Option<Stop>>,
    mut stop_rx: watch::Receiver<Option<Stop>>,
) -> Outcome {
    tracing::info!(
        machine_name = %cfg.identity.machine_name,
        public_key = %cfg.identity.public_key,
        root_url = %cfg.root_url,
        pm2_home = %cfg.paths.pm2_home.display(),
        "PM2 Agent v{} starting",
        cfg.identity.agent_version
    );
    // Held until `run` returns (a rescue relaunches only after that).
    let _lock = match lock::claim(&cfg, &host, &mut stop_rx).await {
        lock::Claim::Won(l) => l,
        lock::Claim::Failed(e) => {
            tracing::error!("{e}");
            send_to_parent(&host, &status, json!({"error": true, "msg": e.to_string()})).await;
            return Outcome::Exit(1);
        }
        other => {
            tracing::info!(outcome = ?other, "not starting: another agent runs on this PM2_HOME");
            return Outcome::Exit(0);
        }
    };
    let rpc = match rpc_server::bind(&cfg, status.clone(), stop.clone()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot serve {}: {e}", cfg.paths.interactor_sock.display());
            return Outcome::Exit(1);
        }
    };
    // Dropped when `run` ends (or unwinds): the server stops and its URL
    // file goes.
    let inspector = crate::inspect::Inspector::start(
        cfg.env.get(crate::inspect::ENV).map(String::as_str),
        &cfg.paths.pm2_home,
    )
    .await;
    *lock(&status.inspect) = inspector.as_ref().map(|i| i.infos());
    let tap = inspector.as_ref().and_then(|i| i.tap());
    let net = NetOptions::from_env();

    // Verification, racing the stop signal so `kill` works at any time.
    let verdict = tokio::select! {
        v = verify_with_retries(&cfg, &net, &host, &status) => Some(v),
        _ = stop_rx.wait_for(Option::is_some) => None,
    };
    let code = match verdict {
        None => 0,
        Some(Err(msg)) => {
            send_to_parent(&host, &status, json!({"error": true, "msg": msg})).await;
            let _ = stop.send(Some(Stop::Error("Error retrieving endpoints".into())));
            1
        }
        Some(Ok(verdict)) => {
            let km_data = match &verdict {
                Verdict::Active { km_data, .. } | Verdict::Inactive { km_data, .. } => {
                    km_data.clone()
                }
                Verdict::Retry { .. } => {
                    unreachable!("retries are exhausted inside verify_with_retries")
                }
            };
            *status.km_data.lock().unwrap_or_else(|e| e.into_inner()) = Some(km_data.clone());
            if let Verdict::Active { .. } = verdict {
                status.active.store(true, Ordering::SeqCst);
            }
            send_to_parent(&host, &status, success_message(&cfg, &km_data)).await;
            match verdict {
                Verdict::Inactive {
                    fatal: true,
                    km_data,
                } => {
                    let msg = km_data
                        .get("msg")
                        .map(|m| m.as_str().map(str::to_owned).unwrap_or(m.to_string()));
                    tracing::error!("Error when connecting: {}", msg.unwrap_or_default());
                    1
                }
                verdict => {
                    let endpoints = match verdict {
                        Verdict::Active { endpoints, .. } => Some(endpoints),
                        _ => None,
                    };
                    let fatal = stop.clone();
                    let w = workers::Workers::start(
                        cfg.clone(),
                        endpoints,
                        Arc::new(move |why: String| {
                            let _ = fatal.send(Some(Stop::Rescue(why)));
                        }),
                        tap,
                    );
                    *status.workers.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
                    let reverify =
                        tokio::spawn(reverify_loop(cfg.clone(), net.clone(), status.clone(), w));
                    let _ = host.send(HostEvent::Started).await;
                    if cfg.fault_injection.as_deref() == Some("panic:daemon") {
                        panic!("fault injection: panic in the daemon task");
                    }
                    let _ = stop_rx.wait_for(Option::is_some).await;
                    reverify.abort();
                    match stop_rx.borrow().clone() {
                        Some(Stop::Error(_)) => 1,
                        _ => 0,
                    }
                }
            }
        }
    };

    // Shut down: workers, transporters, then our files and socket.
    let workers = status
        .workers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(w) = workers {
        w.stop().await;
    }
    let stop_reason = stop_rx.borrow().clone();
    let clean = matches!(stop_reason, Some(Stop::Clean) | None) && code == 0;
    rpc.shutdown(clean, &cfg.paths).await;
    drop(inspector);
    if let Some(Stop::Rescue(why)) = stop_reason {
        tracing::error!("-- FATAL EXCEPTION happened -- {why}");
        tracing::info!("Re-initiating Agent");
        return Outcome::Rescue(why);
    }
    tracing::info!(code, "PM2 Agent stopped");
    Outcome::Exit(code)
}

/// Verifies until an answer the daemon can act on, or gives up after
/// [`verify::MAX_RETRIES`] retries (`Err(message)`).
async fn verify_with_retries(
    cfg: &DaemonConfig,
    net: &NetOptions,
    host: &mpsc::Sender<HostEvent>,
    status: &Status,
) -> Result<Verdict, String> {
    let mut retries = 0;
    let mut told_parent = false;
    loop {
        let verdict = verify::judge(verify::verify(cfg, net).await);
        match verdict {
            Verdict::Retry { reason, km_data } => {
                *status
                    .verify_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                // A disabled/pending bucket: tell the CLI now (it prints the
                // matching message) instead of after minutes of retries.
                if let (Some(km), false) = (km_data, told_parent) {
                    told_parent = true;
                    send_to_parent(host, status, success_message(cfg, &km)).await;
                }
                if retries >= verify::MAX_RETRIES {
                    tracing::error!("Error retrieving endpoints: {reason}");
                    return Err(reason);
                }
                retries += 1;
                tracing::warn!(attempt = retries, "verifyPM2 failed: {reason}; retrying");
                tokio::time::sleep(verify::RETRY_STEP * retries).await;
            }
            v => {
                *status
                    .verify_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                return Ok(v);
            }
        }
    }
}

/// Every minute: ask again; reconnect when endpoints changed, disconnect
/// when the bucket says error and inactive. Errors are only logged.
async fn reverify_loop(
    cfg: Arc<DaemonConfig>,
    net: NetOptions,
    status: Arc<Status>,
    workers: workers::Workers,
) {
    let every = cfg.reverify_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        match verify::judge(verify::verify(&cfg, &net).await) {
            Verdict::Retry { reason, .. } => tracing::debug!("re-verification failed: {reason}"),
            Verdict::Inactive { km_data, fatal } => {
                if fatal {
                    tracing::warn!("PM2.io reports an error for this bucket; disconnecting");
                    workers.disconnect_transports();
                }
                *status.km_data.lock().unwrap_or_else(|e| e.into_inner()) = Some(km_data);
            }
            Verdict::Active { km_data, endpoints } => {
                *status.km_data.lock().unwrap_or_else(|e| e.into_inner()) = Some(km_data);
                status.active.store(true, Ordering::SeqCst);
                workers.connect_transports(&endpoints);
            }
        }
    }
}

/// The IPC message of a completed verification (docs/protocols.md §6),
/// the secret key masked (the launcher gave it; nothing reads it back).
pub fn success_message(cfg: &DaemonConfig, km_data: &Value) -> Value {
    json!({
        "error": false,
        "km_data": km_data,
        "online": true,
        "pid": std::process::id(),
        "machine_name": cfg.identity.machine_name,
        "public_key": cfg.identity.public_key,
        "secret_key": cfg.identity.masked_secret(),
    })
}

async fn send_to_parent(host: &mpsc::Sender<HostEvent>, status: &Status, msg: Value) {
    *lock(&status.outcome) = Some(msg.clone());
    if host.send(HostEvent::SendToParent(msg)).await.is_err() {
        tracing::debug!("host gone; IPC message not delivered");
    }
}
