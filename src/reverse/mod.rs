//! The reverse side (`ReverseInteractor`): PM2.io asks, the agent calls PM2
//! and answers.
//!
//! * `trigger:action` / `trigger:scoped_action` → PM2 `msgProcess` (the
//!   app's custom action) → `trigger:action:success` / `:failure`;
//! * `trigger:pm2:action` → a whitelisted PM2 method → `trigger:pm2:result`.
//!
//! PM2 is reached through [`Pm2Api`] (method name + positional args, like
//! pm2-axon-rpc), so this module holds no socket. Every input shape is
//! accepted without panicking: where JS threw (and the agent respawned) a
//! reply with an error is sent when the request identifies what it answers,
//! otherwise the request is dropped with a warning.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::common::Packet;
use crate::push::js;
use crate::push::streaming::{LogStreaming, LOG_STREAMING_DURATION};

mod pm2;

pub use pm2::MAX_SCALE_UP;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// PM2's RPC as the reverse side needs it. `Ok` holds the reply arguments
/// after `err` (`{"args":[…]}`), `Err` the error message (`err.message`).
/// Implementations own timeouts and the not-connected case.
pub trait Pm2Api: Send + Sync {
    fn call<'a>(
        &'a self,
        method: &'a str,
        args: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, String>>;
}

/// Inbound channels this module answers.
pub const CHANNELS: [&str; 3] = [
    "trigger:action",
    "trigger:scoped_action",
    "trigger:pm2:action",
];

/// `PM2_REMOTE_METHOD_ALLOWED` (PM2 7 / agent 2.x).
pub const REMOTE_METHODS_ALLOWED: [&str; 9] = [
    "restart",
    "reload",
    "reset",
    "scale",
    "startLogging",
    "stopLogging",
    "ping",
    "launchSysMonitoring",
    "deepUpdate",
];

/// Why a `trigger:pm2:action` failed.
///
/// On the wire (`trigger:pm2:result` `ret.err`) the JS agent sent the
/// `Error` itself, which JSON serialises as `{}`: the dashboard got an
/// error without a reason (docs/js-agent-behaviour.md §6.22). The reply keeps that shape, an object (still
/// truthy, still `typeof 'object'`), and fills in what a JS error carries:
/// `{"message": <this Display>, "code": <Self::code>}` ([`Self::wire`]).
/// Each message starts with the JS agent's text (`Method not allowed`, …).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("Method not allowed: {} is not a remote PM2 action (allowed: {ALLOWED_TEXT})", shown(.0))]
    NotAllowed(String),
    #[error("Deprecated or invalid method: {} is no longer supported", shown(.0))]
    Deprecated(String),
    #[error("App not found: no process is named {}", shown(.0))]
    AppNotFound(String),
    #[error("Same process number: {} already runs {} processes", shown(.0), .1)]
    SameNumber(String, usize),
    #[error("invalid scale number {0}: expected a count, \"+n\" or \"-n\" (at most {MAX_SCALE_UP} more)")]
    BadScaleNumber(String),
    #[error("parameters missing or not an object")]
    MissingParameters,
    #[error("parameters have neither id nor name")]
    NoTarget,
    #[error("{}", if .0.is_empty() { "PM2 failed without saying why" } else { .0.as_str() })]
    Pm2(String),
}

/// The methods a remote action may call (the whitelist less the
/// deprecated ones), as refusals list them.
const ALLOWED_TEXT: &str = "restart, reload, reset, scale, startLogging, stopLogging, ping";

/// Longest name (method, app) quoted in a message; a backend may send any.
const SHOWN_MAX: usize = 80;

/// `s` JSON-quoted, cut to [`SHOWN_MAX`] characters.
fn shown(s: &str) -> String {
    if s.chars().count() <= SHOWN_MAX {
        return Value::String(s.to_owned()).to_string();
    }
    let cut: String = s.chars().take(SHOWN_MAX).collect();
    format!("{}…", Value::String(cut))
}

/// `s` cut to [`SHOWN_MAX`] characters.
pub(crate) fn clip(s: String) -> String {
    if s.chars().count() <= SHOWN_MAX {
        return s;
    }
    let mut cut: String = s.chars().take(SHOWN_MAX).collect();
    cut.push('…');
    cut
}

impl ActionError {
    /// A stable code for the dashboard (and tests) to branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ActionError::NotAllowed(_) => "METHOD_NOT_ALLOWED",
            ActionError::Deprecated(_) => "DEPRECATED_METHOD",
            ActionError::AppNotFound(_) => "APP_NOT_FOUND",
            ActionError::SameNumber(..) => "SAME_PROCESS_NUMBER",
            ActionError::BadScaleNumber(_) => "INVALID_SCALE_NUMBER",
            ActionError::MissingParameters => "INVALID_PARAMETERS",
            ActionError::NoTarget => "NO_TARGET",
            ActionError::Pm2(_) => "PM2_ERROR",
        }
    }

    /// `ret.err` of `trigger:pm2:result`: `{"message", "code"}`.
    pub fn wire(&self) -> Value {
        let mut err = Map::new();
        err.insert("message".into(), Value::String(self.to_string()));
        err.insert("code".into(), Value::String(self.code().to_owned()));
        Value::Object(err)
    }
}

#[derive(Debug, Clone)]
pub struct ReverseConfig {
    /// `meta.machine_name` of `trigger:pm2:result`.
    pub machine_name: String,
    /// `meta.public_key` of `trigger:pm2:result`.
    pub public_key: String,
    /// How long `startLogging` streams (JS: 120 s).
    pub log_streaming_duration: Duration,
    /// What app names given as script paths resolve against (JS: the agent's cwd).
    pub cwd: PathBuf,
}

impl ReverseConfig {
    /// 120 s streaming, the current directory as cwd.
    pub fn new(machine_name: impl Into<String>, public_key: impl Into<String>) -> Self {
        ReverseConfig {
            machine_name: machine_name.into(),
            public_key: public_key.into(),
            log_streaming_duration: LOG_STREAMING_DURATION,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }
}

pub struct Reverse {
    api: Arc<dyn Pm2Api>,
    cfg: ReverseConfig,
    streaming: LogStreaming,
}

impl Reverse {
    /// `streaming` must be the push pipeline's gate (`EventPipeline::streaming`).
    pub fn new(api: Arc<dyn Pm2Api>, cfg: ReverseConfig, streaming: LogStreaming) -> Self {
        Reverse {
            api,
            cfg,
            streaming,
        }
    }

    /// Whether [`Reverse::handle`] answers `channel`.
    pub fn handles(channel: &str) -> bool {
        CHANNELS.contains(&channel)
    }

    /// One inbound packet; the reply to send, if any. Requests are
    /// independent: the daemon may run several concurrently.
    pub async fn handle(&self, channel: &str, payload: Value) -> Option<Packet> {
        match channel {
            "trigger:action" | "trigger:scoped_action" => self.on_custom_action(payload).await,
            "trigger:pm2:action" => self.on_pm2_action(payload).await,
            _ => None,
        }
    }

    /// `_onCustomAction`: run the app's action through PM2's `msgProcess`.
    pub async fn on_custom_action(&self, payload: Value) -> Option<Packet> {
        let Value::Object(data) = payload else {
            tracing::warn!("trigger:action payload is not an object, ignored");
            return None;
        };
        let action_name = data.get("action_name").cloned();
        // `process_id !== undefined ? process_id : process.pm_id`; JS threw
        // when both were missing.
        let process_id = match (data.get("process_id"), data.get("process")) {
            (Some(id), _) => Some(id.clone()),
            (None, None | Some(Value::Null)) => {
                tracing::warn!(action = ?action_name, "trigger:action without process_id nor process");
                let err = Value::String("missing process_id or process".into());
                return Some(action_failure(err, None, action_name));
            }
            (None, Some(p)) => p.get("pm_id").cloned(),
        };
        tracing::debug!(
            kind = if js::truthy(data.get("uuid")) { "SCOPED" } else { "REMOTE" },
            action = ?action_name,
            process_id = ?process_id,
            "custom action triggered"
        );
        // Absent keys stay absent: PM2 picks the `id` branch on the key's
        // mere presence (`"id":null` → "null id unknown").
        let mut msg = Map::new();
        if let Some(name) = data.get("app_name") {
            msg.insert("name".into(), name.clone());
        }
        if let Some(id) = &process_id {
            msg.insert("id".into(), id.clone());
        }
        if let Some(a) = &action_name {
            msg.insert("msg".into(), a.clone());
        }
        let opts = [data.get("opts"), data.get("options")]
            .into_iter()
            .find(|v| js::truthy(*v))
            .flatten();
        msg.insert("opts".into(), opts.cloned().unwrap_or(Value::Null));
        if let Some(a) = &action_name {
            msg.insert("action_name".into(), a.clone());
        }
        if let Some(uuid) = data.get("uuid") {
            msg.insert("uuid".into(), uuid.clone());
        }
        match self.api.call("msgProcess", vec![Value::Object(msg)]).await {
            Ok(_) => {
                let mut out = Map::new();
                out.insert("success".into(), Value::Bool(true));
                insert_some(&mut out, "id", process_id);
                insert_some(&mut out, "action_name", action_name);
                Some(Packet::new("trigger:action:success", Value::Object(out)))
            }
            Err(message) => {
                tracing::debug!(error = %message, "custom action failed");
                // `err.message || err`: the message, a string. (JS sent the
                // Error itself, `{}`, when the message was empty.)
                let err = if message.is_empty() {
                    "the custom action failed; PM2 gave no reason".to_owned()
                } else {
                    message
                };
                Some(action_failure(Value::String(err), process_id, action_name))
            }
        }
    }

    /// `_onPM2Action`: a whitelisted PM2 method, answered on `trigger:pm2:result`.
    pub async fn on_pm2_action(&self, payload: Value) -> Option<Packet> {
        let Value::Object(data) = payload else {
            tracing::warn!("trigger:pm2:action payload is not an object, ignored");
            return None;
        };
        let Some(method) = data.get("method_name").and_then(Value::as_str) else {
            tracing::warn!(method_name = ?data.get("method_name"), "trigger:pm2:action with an invalid method name, ignored");
            return None;
        };
        let params = data.get("parameters");
        let app_name = params
            .and_then(Value::as_object)
            .and_then(|p| p.get("name"))
            .cloned();
        let result = self.run_pm2_method(method, params).await;
        match &result {
            Ok(_) => tracing::debug!(method, "PM2 action ended: no error"),
            Err(e) => tracing::warn!(method, error = %e, "PM2 action failed"),
        }
        Some(pm2_result(method, app_name, result, &self.cfg))
    }

    async fn run_pm2_method(
        &self,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Option<Value>, ActionError> {
        if !REMOTE_METHODS_ALLOWED.contains(&method) {
            return Err(ActionError::NotAllowed(method.to_owned()));
        }
        match method {
            "startLogging" => {
                self.streaming.start(self.cfg.log_streaming_duration);
                Ok(Some(Value::String("Log streaming enabled".into())))
            }
            "stopLogging" => {
                self.streaming.stop();
                Ok(Some(Value::String("Log streaming disabled".into())))
            }
            "launchSysMonitoring" | "deepUpdate" => Err(ActionError::Deprecated(method.to_owned())),
            _ => {
                // The payload is owned: this copy is the per-request clone JS
                // made with JSON.parse(JSON.stringify(parameters)).
                let Some(Value::Object(params)) = params else {
                    return Err(ActionError::MissingParameters);
                };
                pm2::remote(self.api.as_ref(), &self.cfg.cwd, method, params.clone()).await
            }
        }
    }
}

fn insert_some(map: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        map.insert(key.into(), v);
    }
}

/// `{success:false, err, id, action_name}` (undefined keys omitted).
fn action_failure(err: Value, id: Option<Value>, action_name: Option<Value>) -> Packet {
    let mut out = Map::new();
    out.insert("success".into(), Value::Bool(false));
    out.insert("err".into(), err);
    insert_some(&mut out, "id", id);
    insert_some(&mut out, "action_name", action_name);
    Packet::new("trigger:action:failure", Value::Object(out))
}

/// `{ret:{err, data}, meta:{method_name, app_name, machine_name, public_key}}`:
/// an error is `{"message", "code"}` ([`ActionError::wire`]; JS sent `{}`);
/// `data` and `app_name` vanish when undefined.
fn pm2_result(
    method: &str,
    app_name: Option<Value>,
    result: Result<Option<Value>, ActionError>,
    cfg: &ReverseConfig,
) -> Packet {
    let mut ret = Map::new();
    match result {
        Ok(data) => {
            ret.insert("err".into(), Value::Null);
            insert_some(&mut ret, "data", data);
        }
        Err(e) => {
            ret.insert("err".into(), e.wire());
        }
    }
    let mut meta = Map::new();
    meta.insert("method_name".into(), Value::String(method.to_owned()));
    insert_some(&mut meta, "app_name", app_name);
    meta.insert(
        "machine_name".into(),
        Value::String(cfg.machine_name.clone()),
    );
    meta.insert("public_key".into(), Value::String(cfg.public_key.clone()));
    let mut out = Map::new();
    out.insert("ret".into(), Value::Object(ret));
    out.insert("meta".into(), Value::Object(meta));
    Packet::new("trigger:pm2:result", Value::Object(out))
}

#[cfg(test)]
mod tests;
