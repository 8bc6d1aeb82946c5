//! The napi exports: the only file that knows about Node. Everything here is
//! glue that converts arguments and hands work to the Rust core on napi's
//! tokio runtime; callbacks into Node go through bounded threadsafe
//! functions.

use std::collections::HashMap;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{DaemonConfig, HostInfo};
use crate::daemon::{self, DaemonHandle, HostEvent};
use crate::socket::endpoint::Endpoint;
use crate::socket::req::ReqOptions;
use crate::socket::rpc::{RpcClient, RpcError};

/// JS `(json: string) => void`, with a bounded queue: the daemon sends a
/// handful of events in its life, so 64 is far above need.
type EventCallback = ThreadsafeFunction<String, Unknown<'static>, String, Status, false, false, 64>;

/// The agent's work is light and mostly waiting on sockets: one worker
/// thread is plenty, and every extra thread costs private memory (its stack
/// and a malloc arena) in the process PM2 users watch.
#[napi_derive::module_init]
fn init() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_name("km-agent")
        .enable_all()
        .build();
    if let Ok(rt) = rt {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}

/// The agent's version (the package version).
#[napi]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn endpoint(path: &str) -> Result<Endpoint> {
    Endpoint::parse(path).map_err(|e| Error::new(Status::InvalidArg, e.to_string()))
}

/// Whether something accepts connections on the axon socket at `path`
/// (the CLI's liveness probe of `interactor.sock`).
#[napi]
pub async fn ping_socket(path: String, timeout_ms: Option<u32>) -> Result<bool> {
    let ep = endpoint(&path)?;
    let t = Duration::from_millis(timeout_ms.unwrap_or(1000) as u64);
    Ok(matches!(
        tokio::time::timeout(t, ep.connect()).await,
        Ok(Ok(_))
    ))
}

/// One pm2-axon-rpc call on a fresh connection: resolves with the reply's
/// arguments, rejects with the remote error's message.
#[napi(
    ts_args_type = "path: string, method: string, args: any[], timeoutMs?: number",
    ts_return_type = "Promise<any[]>"
)]
pub async fn rpc_call(
    path: String,
    method: String,
    args: Vec<Value>,
    timeout_ms: Option<u32>,
) -> Result<Vec<Value>> {
    let ep = endpoint(&path)?;
    let t = Duration::from_millis(timeout_ms.unwrap_or(5000) as u64);
    let client = RpcClient::connect(
        ep,
        ReqOptions {
            timeout: t,
            max_queued: 4,
            ..Default::default()
        },
    );
    let res = client.call(&method, args).await;
    client.close().await;
    res.map_err(|e| match e {
        RpcError::Remote(r) => Error::new(Status::GenericFailure, r.message),
        other => Error::new(Status::GenericFailure, other.to_string()),
    })
}

/// What the Node host does with a wedged runtime (see
/// [`daemon::stall`]), from the stall watch thread: the rescue (or, when
/// another agent already took over, the exit) goes to JS through the
/// threadsafe function, which Node's event loop serves without the
/// runtime; `_rescue` relaunches the agent through `daemonize` and exits.
/// Should the process still be there [`daemon::stall::HOST_EXIT_BOUND`]
/// later (an exit waiting on the wedged runtime), it ends here.
fn stall_hook(on_event: std::sync::Arc<EventCallback>) -> daemon::stall::StallHook {
    Box::new(move |s| {
        let json = if s.relaunch {
            json!({"type": "rescue", "reason": s.reason})
        } else {
            json!({"type": "exit", "code": 1})
        }
        .to_string();
        for _ in 0..100 {
            match on_event.call(json.clone(), ThreadsafeFunctionCallMode::NonBlocking) {
                Status::QueueFull => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        std::thread::sleep(daemon::stall::HOST_EXIT_BOUND);
        tracing::error!(
            "the agent did not exit within {} of its rescue; exiting now",
            daemon::stall::seconds(daemon::stall::HOST_EXIT_BOUND)
        );
        daemon::stall::hard_exit(1);
    })
}

/// The Rust daemon behind `src/InteractorDaemon.js`.
#[napi]
pub struct NativeDaemon {
    cfg: DaemonConfig,
    handle: Option<DaemonHandle>,
}

#[napi]
impl NativeDaemon {
    /// Reads the configuration from `env` (the process environment) and
    /// `host` (`{cpus, totalmem, hostname, nodeVersion, execPath}`); throws
    /// the JS daemon's messages for missing keys.
    #[napi(
        constructor,
        ts_args_type = "env: Record<string, string | undefined>, host: { cpus: any[], totalmem: number, hostname: string, nodeVersion: string, execPath?: string, configFile?: string }"
    )]
    pub fn new(env: HashMap<String, Option<String>>, host: Value) -> Result<Self> {
        let env: HashMap<String, String> = env
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        let host = HostInfo {
            cpus: host.get("cpus").cloned().unwrap_or(json!([])),
            total_mem: host.get("totalmem").and_then(Value::as_f64).unwrap_or(0.0) as u64,
            hostname: host
                .get("hostname")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            node_version: host
                .get("nodeVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            node_path: host.get("execPath").and_then(Value::as_str).map(Into::into),
            config_file: host
                .get("configFile")
                .and_then(Value::as_str)
                .map(Into::into),
        };
        let cfg = DaemonConfig::from_env(env, host)
            .map_err(|e| Error::new(Status::InvalidArg, e.to_string()))?;
        Ok(NativeDaemon { cfg, handle: None })
    }

    /// Starts the daemon; `onEvent` receives JSON strings:
    /// `{"type":"ipc","data":…}`, `{"type":"started"}`, `{"type":"exit","code":n}`,
    /// `{"type":"rescue","reason":…}` (relaunch the agent, then exit).
    #[napi(ts_args_type = "onEvent: (json: string) => void")]
    pub fn start(&mut self, on_event: EventCallback) -> Result<()> {
        if self.handle.is_some() {
            return Err(Error::new(Status::GenericFailure, "daemon already started"));
        }
        crate::logging::hide_secret(&self.cfg.identity.secret_key);
        crate::logging::init(self.cfg.env.get("DEBUG").map(String::as_str));
        let (tx, mut rx) = mpsc::channel::<HostEvent>(16);
        let on_event = std::sync::Arc::new(on_event);
        let (handle, run) =
            daemon::stall::start(self.cfg.clone(), tx, stall_hook(on_event.clone()));
        self.handle = Some(handle);
        napi::bindgen_prelude::spawn(run);
        napi::bindgen_prelude::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let last = matches!(ev, HostEvent::Exit(_) | HostEvent::Rescue(_));
                let json = match ev {
                    // What Node prints or passes on never holds the secret.
                    HostEvent::SendToParent(mut data) => {
                        crate::logging::redact_json(&mut data);
                        json!({"type": "ipc", "data": data})
                    }
                    HostEvent::Started => json!({"type": "started"}),
                    HostEvent::Exit(code) => json!({"type": "exit", "code": code}),
                    HostEvent::Rescue(reason) => {
                        json!({"type": "rescue", "reason": crate::logging::redact(&reason)})
                    }
                }
                .to_string();
                // The queue is bounded; on the rare full queue, wait a bit.
                for _ in 0..100 {
                    match on_event.call(json.clone(), ThreadsafeFunctionCallMode::NonBlocking) {
                        Status::QueueFull => tokio::time::sleep(Duration::from_millis(10)).await,
                        _ => break,
                    }
                }
                if last {
                    break;
                }
            }
            // Dropping the function releases Node's event loop.
            drop(on_event);
        });
        Ok(())
    }

    /// Asks the daemon to stop: cleanly (exit 0) or with an error (exit 1).
    #[napi]
    pub fn exit(&self, error: Option<String>) {
        if let Some(h) = &self.handle {
            h.exit(error);
        }
    }

    /// `getSystemMetadata()`: the `data` sent to verifyPM2.
    #[napi]
    pub fn system_metadata(&self) -> Value {
        self.cfg.system_metadata()
    }
}
