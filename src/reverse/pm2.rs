//! The PM2 calls behind `trigger:pm2:action` (`PM2Interface` + the
//! `PM2Client.remote` dispatch): by-name fan-out for restart/reload/reset/
//! ping, and scaling.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::{ActionError, Pm2Api};
use crate::push::js;

/// Processes a single `scale` may add. JS looped forever on a NaN or
/// negative count (`number-- === 0` never true); any sane request is far
/// below this.
pub const MAX_SCALE_UP: usize = 1024;

/// `pm2Interface[method](params, cb)`: `Ok(None)` is a success without data
/// (JS `cb()`/`cb(null)`), `Ok(Some(v))` carries PM2's first reply value.
pub(crate) async fn remote(
    api: &dyn Pm2Api,
    cwd: &Path,
    method: &str,
    params: Map<String, Value>,
) -> Result<Option<Value>, ActionError> {
    match method {
        "restart" => {
            call_with_process_id(api, cwd, "restartProcessId", params, |p| {
                vec![Value::Object(p)]
            })
            .await
        }
        "reload" => {
            call_with_process_id(api, cwd, "reloadProcessId", params, |p| {
                vec![Value::Object(p)]
            })
            .await
        }
        "ping" => call_with_process_id(api, cwd, "ping", params, |p| vec![Value::Object(p)]).await,
        // PM2 wants the bare id here (`[0]`, not `[{id:0}]`); a missing id
        // is what `JSON.stringify([undefined])` sends: `[null]`.
        "reset" => {
            call_with_process_id(api, cwd, "resetMetaProcessId", params, |p| {
                vec![p.get("id").cloned().unwrap_or(Value::Null)]
            })
            .await
        }
        "scale" => scale(api, cwd, &params).await,
        _ => Err(ActionError::Deprecated(method.to_owned())),
    }
}

/// First reply value, `None` for an empty reply (`cb(null)`).
async fn call(
    api: &dyn Pm2Api,
    method: &str,
    args: Vec<Value>,
) -> Result<Option<Value>, ActionError> {
    let reply = api.call(method, args).await.map_err(ActionError::Pm2)?;
    Ok(reply.into_iter().next())
}

/// `_callWithProcessId`: with an `id` key, one call as is. Without, every
/// process named `name` (or whose script is `name` resolved against `cwd`)
/// gets its own call, each with its own copy of the parameters (JS mutated
/// one shared object: docs/js-agent-behaviour.md §6.15); no match → one call
/// with `id: name`.
async fn call_with_process_id(
    api: &dyn Pm2Api,
    cwd: &Path,
    method: &str,
    params: Map<String, Value>,
    args: impl Fn(Map<String, Value>) -> Vec<Value>,
) -> Result<Option<Value>, ActionError> {
    if params.contains_key("id") {
        return call(api, method, args(params)).await;
    }
    let name = target_name(&params)?;
    let procs = process_by_name(api, cwd, name).await?;
    if procs.is_empty() {
        // "We believe pm2 will find it": `Object.assign({id: name}, params)`.
        let mut p = Map::new();
        p.insert("id".into(), name.clone());
        p.extend(params);
        return call(api, method, args(p)).await;
    }
    let calls = procs.iter().map(|proc| {
        let mut p = params.clone();
        if let Some(id) = proc.get("pm_id") {
            p.insert("id".into(), id.clone());
        }
        call(api, method, args(p))
    });
    // JS replied at the first error while the other calls went on; here all
    // calls finish, then the first error in process order is reported.
    let results = futures_util::future::join_all(calls).await;
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// `params.name`, required when there is no id (JS crashed on
/// `undefined.toString()`).
fn target_name(params: &Map<String, Value>) -> Result<&Value, ActionError> {
    match params.get("name") {
        None | Some(Value::Null) => Err(ActionError::NoTarget),
        Some(n) => Ok(n),
    }
}

/// `getProcessByName`: PM2's list filtered on `pm2_env.name === name ||
/// pm2_env.pm_exec_path === path.resolve(String(name))`.
async fn process_by_name(
    api: &dyn Pm2Api,
    cwd: &Path,
    name: &Value,
) -> Result<Vec<Value>, ActionError> {
    let list = match call(api, "getMonitorData", vec![json!({})]).await? {
        Some(Value::Array(list)) => list,
        other => {
            tracing::warn!(reply = ?other.map(|v| v.to_string()), "getMonitorData reply is not a list");
            vec![]
        }
    };
    let script = resolve_path(cwd, &js::to_js_string(name));
    Ok(list
        .into_iter()
        .filter(|proc| {
            let env = proc.get("pm2_env");
            let env_name = env.and_then(|e| e.get("name"));
            let exec = env
                .and_then(|e| e.get("pm_exec_path"))
                .and_then(Value::as_str);
            env_name.is_some_and(|n| strict_eq(n, name)) || exec == Some(script.as_str())
        })
        .collect())
}

/// JS `===` between JSON values: objects and arrays are never equal (they
/// are distinct references), numbers compare by value.
fn strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(_), _) | (Value::Object(_), _) => false,
        _ => a == b,
    }
}

/// `path.resolve(p)` from `cwd` (POSIX rules: absolute `p` wins, `.`/`..`/
/// repeated slashes normalised, no trailing slash).
#[cfg(not(windows))]
pub(crate) fn resolve_path(cwd: &Path, p: &str) -> String {
    let base = cwd.to_string_lossy();
    let joined = if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("{base}/{p}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Windows: a plain join (Node's win32 resolve also normalises separators
/// and drive letters; script paths PM2 stores are already absolute, so
/// only names given as relative paths may differ).
#[cfg(windows)]
pub(crate) fn resolve_path(cwd: &Path, p: &str) -> String {
    cwd.join(p).to_string_lossy().into_owned()
}

/// `PM2Interface.scale({name, number})`: `"+n"` adds, `"-n"` removes,
/// anything else is an absolute target. Steps run one after the other and
/// their errors are ignored, as in JS.
async fn scale(
    api: &dyn Pm2Api,
    cwd: &Path,
    params: &Map<String, Value>,
) -> Result<Option<Value>, ActionError> {
    let name = target_name(params)?;
    let procs = process_by_name(api, cwd, name).await?;
    let Some(first) = procs.first() else {
        return Err(ActionError::AppNotFound(js::to_js_string(name)));
    };
    let number = params.get("number");
    let bad = || {
        ActionError::BadScaleNumber(super::clip(
            number.map_or_else(|| "undefined".to_owned(), Value::to_string),
        ))
    };
    let delta: i64 = match number {
        Some(Value::String(s)) if s.contains('+') => {
            let n = js::parse_int(s);
            if n.is_nan() || n < 0.0 {
                return Err(bad());
            }
            n.min(i64::MAX as f64) as i64
        }
        Some(Value::String(s)) if s.contains('-') => {
            let n = js::parse_int(s);
            if n.is_nan() || n > 0.0 {
                return Err(bad());
            }
            n.max(i64::MIN as f64) as i64
        }
        other => {
            let target =
                js::parse_int(&other.map_or_else(|| "undefined".to_owned(), js::to_js_string));
            let diff = target - procs.len() as f64;
            // JS answered "Same process number" to a NaN too (it compares
            // false both ways); here a number that is none is said so.
            if diff.is_nan() {
                return Err(bad());
            }
            if diff == 0.0 {
                return Err(ActionError::SameNumber(js::to_js_string(name), procs.len()));
            }
            diff as i64
        }
    };
    if delta > 0 {
        let count = usize::try_from(delta).unwrap_or(usize::MAX);
        if count > MAX_SCALE_UP {
            return Err(bad());
        }
        let id = env_pm_id(first);
        for _ in 0..count {
            step(api, "duplicateProcessId", &id).await;
        }
    } else {
        // Never more deletions than processes (JS hit `undefined.pm2_env`).
        let count = usize::try_from(delta.unsigned_abs())
            .unwrap_or(usize::MAX)
            .min(procs.len());
        for proc in &procs[..count] {
            step(api, "deleteProcessId", &env_pm_id(proc)).await;
        }
    }
    Ok(Some(json!({"success": true})))
}

fn env_pm_id(proc: &Value) -> Value {
    proc.get("pm2_env")
        .and_then(|e| e.get("pm_id"))
        .or_else(|| proc.get("pm_id"))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn step(api: &dyn Pm2Api, method: &str, id: &Value) {
    if let Err(e) = api.call(method, vec![id.clone()]).await {
        tracing::debug!(method, id = %id, error = %e, "scale step failed (ignored)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(windows))]
    #[test]
    fn resolve_like_node() {
        let cwd = Path::new("/home/u/app");
        assert_eq!(resolve_path(cwd, "x.js"), "/home/u/app/x.js");
        assert_eq!(resolve_path(cwd, "./a/../b.js"), "/home/u/app/b.js");
        assert_eq!(resolve_path(cwd, "/abs//x.js/"), "/abs/x.js");
        assert_eq!(resolve_path(cwd, "../../../../.."), "/");
        assert_eq!(resolve_path(cwd, ""), "/home/u/app");
    }

    #[test]
    fn strict_equality() {
        assert!(strict_eq(&json!("a"), &json!("a")));
        assert!(strict_eq(&json!(1), &json!(1.0)));
        assert!(!strict_eq(&json!(1), &json!("1")));
        assert!(!strict_eq(&json!({}), &json!({})));
        assert!(!strict_eq(&json!([]), &json!([])));
        assert!(strict_eq(&json!(null), &json!(null)));
    }
}
