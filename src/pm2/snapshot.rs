//! A light parse of PM2's `getMonitorData` reply for the status tick.
//!
//! The reply is `{"args":[[{pid, name, pm_id, monit, pm2_env}, …]]}` where
//! each `pm2_env` holds the app's whole environment and PM2's bookkeeping:
//! most of the bytes, none of which the status needs. serde skips unknown
//! fields while scanning, so only the listed fields are allocated; the
//! result is rebuilt as the same JSON shape (`pm2_env.<field>`), so the
//! status builder and the push pipeline read it exactly as the full reply.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::protocol::rpc::RemoteError;
use crate::socket::rpc::RpcError;

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    args: Option<(Option<Vec<Proc>>,)>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    stack: Option<String>,
}

#[derive(Deserialize)]
struct Proc {
    pid: Option<Value>,
    name: Option<Value>,
    pm_id: Option<Value>,
    monit: Option<Value>,
    pm2_env: Option<Env>,
}

/// The `pm2_env` fields read by `push::status` and `push::events`.
#[derive(Deserialize)]
struct Env {
    name: Option<Value>,
    exec_interpreter: Option<Value>,
    node_args: Option<Value>,
    pm_exec_path: Option<Value>,
    restart_time: Option<Value>,
    created_at: Option<Value>,
    exec_mode: Option<Value>,
    pm_uptime: Option<Value>,
    status: Option<Value>,
    pm_id: Option<Value>,
    unique_id: Option<Value>,
    versioning: Option<Value>,
    #[serde(rename = "NODE_ENV")]
    node_env: Option<Value>,
    axm_actions: Option<Value>,
    axm_monitor: Option<Value>,
    axm_options: Option<Value>,
    dynamic: Option<Value>,
    #[serde(rename = "_km_monitored")]
    km_monitored: Option<Value>,
    broadcast_logs: Option<Value>,
    send_logs: Option<Value>,
    pmx_module: Option<Value>,
}

pub fn parse(text: &[u8]) -> Result<Vec<Value>, RpcError> {
    let reply: Reply = serde_json::from_slice(text)
        .map_err(|e| RpcError::Malformed(format!("getMonitorData: {e}")))?;
    if let Some(error) = reply.error {
        let message = error
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string());
        return Err(RpcError::Remote(RemoteError {
            message,
            error,
            stack: reply.stack,
        }));
    }
    let procs = reply
        .args
        .and_then(|(p,)| p)
        .ok_or_else(|| RpcError::Malformed("getMonitorData did not return a list".into()))?;
    Ok(procs.into_iter().map(Proc::into_value).collect())
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v);
    }
}

impl Proc {
    fn into_value(self) -> Value {
        let mut p = Map::new();
        put(&mut p, "pid", self.pid);
        put(&mut p, "name", self.name);
        if let Some(env) = self.pm2_env {
            let mut e = Map::new();
            put(&mut e, "name", env.name);
            put(&mut e, "exec_interpreter", env.exec_interpreter);
            put(&mut e, "node_args", env.node_args);
            put(&mut e, "pm_exec_path", env.pm_exec_path);
            put(&mut e, "restart_time", env.restart_time);
            put(&mut e, "created_at", env.created_at);
            put(&mut e, "exec_mode", env.exec_mode);
            put(&mut e, "pm_uptime", env.pm_uptime);
            put(&mut e, "status", env.status);
            put(&mut e, "pm_id", env.pm_id);
            put(&mut e, "unique_id", env.unique_id);
            put(&mut e, "versioning", env.versioning);
            put(&mut e, "NODE_ENV", env.node_env);
            put(&mut e, "axm_actions", env.axm_actions);
            put(&mut e, "axm_monitor", env.axm_monitor);
            put(&mut e, "axm_options", env.axm_options);
            put(&mut e, "dynamic", env.dynamic);
            put(&mut e, "_km_monitored", env.km_monitored);
            put(&mut e, "broadcast_logs", env.broadcast_logs);
            put(&mut e, "send_logs", env.send_logs);
            put(&mut e, "pmx_module", env.pmx_module);
            p.insert("pm2_env".into(), Value::Object(e));
        }
        put(&mut p, "pm_id", self.pm_id);
        put(&mut p, "monit", self.monit);
        Value::Object(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::status::{build_status_with, HostIdentity, HostStats, StatusContext};
    use serde_json::json;

    /// The status built from the light parse equals the one built from the
    /// full reply (real PM2 7 capture).
    #[test]
    fn same_status_as_the_full_reply() {
        let procs: Value =
            serde_json::from_str(include_str!("../push/testdata/get_monitor_data.json")).unwrap();
        let procs = procs.as_array().cloned().unwrap_or_default();
        assert!(!procs.is_empty());
        let text = serde_json::to_vec(&json!({ "args": [procs] })).unwrap();
        let light = parse(&text).unwrap();
        let ctx = StatusContext {
            server_name: "m".into(),
            internal_ip: "10.0.0.1".into(),
            rev_con: false,
            pm2_version: Some("7.0.4".into()),
            agent_version: "0.1.0".into(),
            node_version: "v20".into(),
            unique_id: "u".into(),
            interaction: None,
            host: HostIdentity::detect(),
        };
        let stats = HostStats::read();
        assert_eq!(
            build_status_with(&light, &ctx, &stats),
            build_status_with(&procs, &ctx, &stats)
        );
    }

    #[test]
    fn errors_and_garbage() {
        match parse(br#"{"error":"boom","stack":"s"}"#) {
            Err(RpcError::Remote(e)) => assert_eq!(
                (e.message.as_str(), e.stack.as_deref()),
                ("boom", Some("s"))
            ),
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(parse(b"{"), Err(RpcError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"args":[]}"#),
            Err(RpcError::Malformed(_))
        ));
        assert!(matches!(parse(br#"{"args":[[{"pm2_env":{"name":1}}]]}"#), Ok(v) if v.len() == 1));
    }
}
