//! What the status tick reads of PM2's `getMonitorData` reply, and how it
//! is read cheaply every second.
//!
//! The reply is `{"args":[[{pid, name, pm_id, monit, pm2_env}, …]]}` where
//! each `pm2_env` holds the app's whole environment and PM2's bookkeeping:
//! most of the bytes, none of which the status needs. [`SnapshotReader`]
//! scans it once, borrowing the wanted fields as raw JSON text
//! ([`RawValue`]) and skipping the rest without allocating. Only the fields
//! whose text changed since the previous tick are parsed into [`Value`]s;
//! the others are copied from the previous tick (for idle apps, that is
//! everything but the probes in `axm_monitor` and `monit`).
//!
//! The result is typed ([`ProcSnapshot`]): the status builder moves its
//! values into the payload without another copy, and the push pipeline gets
//! the few fields it tracks ([`ProcSnapshot::pipeline_view`]).

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::protocol::rpc::RemoteError;
use crate::socket::rpc::RpcError;

/// One process of the reply, as the status and the push pipeline read it.
/// `None` is a missing key (JS `undefined`); a JSON `null` is `Some(Null)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcSnapshot {
    pub pid: Option<Value>,
    /// Top-level `name` and `pm_id` (the pipeline's keys; the status reads
    /// the `pm2_env` ones).
    pub name: Option<Value>,
    pub pm_id: Option<Value>,
    /// `monit.cpu` / `monit.memory` (absent when `monit` is not an object).
    pub cpu: Option<Value>,
    pub memory: Option<Value>,
    /// `None` when `pm2_env` is missing or not an object.
    pub env: Option<EnvSnapshot>,
}

/// The `pm2_env` fields read by `push::status` and `push::events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvSnapshot {
    pub name: Option<Value>,
    pub exec_interpreter: Option<Value>,
    pub node_args: Option<Value>,
    pub pm_exec_path: Option<Value>,
    pub restart_time: Option<Value>,
    pub created_at: Option<Value>,
    pub exec_mode: Option<Value>,
    pub pm_uptime: Option<Value>,
    pub status: Option<Value>,
    pub pm_id: Option<Value>,
    pub unique_id: Option<Value>,
    pub versioning: Option<Value>,
    /// `NODE_ENV`.
    pub node_env: Option<Value>,
    pub axm_actions: Option<Value>,
    pub axm_monitor: Option<Value>,
    pub dynamic: Option<Value>,
    /// `_km_monitored`.
    pub km_monitored: Option<Value>,
    pub broadcast_logs: Option<Value>,
    pub send_logs: Option<Value>,
}

impl ProcSnapshot {
    /// The same fields read from a parsed process entry (tests, callers
    /// holding the full reply). `None` when `proc` is not an object.
    pub fn from_value(proc: &Value) -> Option<ProcSnapshot> {
        let p = proc.as_object()?;
        let get = |m: &Map<String, Value>, k: &str| m.get(k).cloned();
        let monit = p.get("monit").and_then(Value::as_object);
        Some(ProcSnapshot {
            pid: get(p, "pid"),
            name: get(p, "name"),
            pm_id: get(p, "pm_id"),
            cpu: monit.and_then(|m| get(m, "cpu")),
            memory: monit.and_then(|m| get(m, "memory")),
            env: p
                .get("pm2_env")
                .and_then(Value::as_object)
                .map(|e| EnvSnapshot {
                    name: get(e, "name"),
                    exec_interpreter: get(e, "exec_interpreter"),
                    node_args: get(e, "node_args"),
                    pm_exec_path: get(e, "pm_exec_path"),
                    restart_time: get(e, "restart_time"),
                    created_at: get(e, "created_at"),
                    exec_mode: get(e, "exec_mode"),
                    pm_uptime: get(e, "pm_uptime"),
                    status: get(e, "status"),
                    pm_id: get(e, "pm_id"),
                    unique_id: get(e, "unique_id"),
                    versioning: get(e, "versioning"),
                    node_env: get(e, "NODE_ENV"),
                    axm_actions: get(e, "axm_actions"),
                    axm_monitor: get(e, "axm_monitor"),
                    dynamic: get(e, "dynamic"),
                    km_monitored: get(e, "_km_monitored"),
                    broadcast_logs: get(e, "broadcast_logs"),
                    send_logs: get(e, "send_logs"),
                }),
        })
    }

    /// What `EventPipeline::on_status_tick` reads, in the reply's shape:
    /// `{name, pm_id, pm2_env: {_km_monitored, send_logs, broadcast_logs}}`.
    pub fn pipeline_view(&self) -> Value {
        let mut p = Map::new();
        put(&mut p, "name", self.name.clone());
        put(&mut p, "pm_id", self.pm_id.clone());
        if let Some(env) = &self.env {
            let mut e = Map::new();
            put(&mut e, "_km_monitored", env.km_monitored.clone());
            put(&mut e, "send_logs", env.send_logs.clone());
            put(&mut e, "broadcast_logs", env.broadcast_logs.clone());
            p.insert("pm2_env".into(), Value::Object(e));
        }
        Value::Object(p)
    }
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_owned(), v);
    }
}

/// A field as raw JSON text borrowed from the reply; `None` when the key is
/// missing.
type Raw<'a> = Option<&'a RawValue>;

/// Keeps a JSON `null` as `Some("null")` (serde's `Option` would make it
/// `None`, and `null` must reach the status as `null`).
fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Raw<'a>, D::Error> {
    <&'a RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct RawReply<'a> {
    #[serde(default, borrow)]
    args: Option<(Option<Vec<RawProc<'a>>>,)>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    stack: Option<String>,
}

#[derive(Deserialize)]
struct RawProc<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    pid: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    name: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    pm_id: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    monit: Raw<'a>,
    #[serde(default, borrow)]
    pm2_env: Option<RawEnv<'a>>,
}

#[derive(Deserialize)]
struct RawMonit<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    cpu: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    memory: Raw<'a>,
}

#[derive(Deserialize)]
struct RawEnv<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    name: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    exec_interpreter: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    node_args: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    pm_exec_path: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    restart_time: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    created_at: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    exec_mode: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    pm_uptime: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    status: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    pm_id: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    unique_id: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    versioning: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present", rename = "NODE_ENV")]
    node_env: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    axm_actions: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    axm_monitor: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    dynamic: Raw<'a>,
    #[serde(
        default,
        borrow,
        deserialize_with = "present",
        rename = "_km_monitored"
    )]
    km_monitored: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    broadcast_logs: Raw<'a>,
    #[serde(default, borrow, deserialize_with = "present")]
    send_logs: Raw<'a>,
}

/// Fields per process in the cache: the 5 of the process, the 19 of its env.
const FIELDS: usize = 24;

/// One field's text at the last read, and its parsed value once the same
/// text came twice in a row (a field that changes every tick, like the
/// probes, is only parsed, never copied into the cache).
type Slot = Option<(Box<str>, Option<Value>)>;

/// Reads successive `getMonitorData` replies, remembering each process's
/// fields (by position in the list) to parse only what changed.
#[derive(Debug, Default)]
pub struct SnapshotReader {
    cache: Vec<[Slot; FIELDS]>,
}

impl SnapshotReader {
    pub fn new() -> SnapshotReader {
        SnapshotReader::default()
    }

    /// The processes of one reply (`{"args":[list]}` or `{"error":…}`).
    pub fn read(&mut self, text: &[u8]) -> Result<Vec<ProcSnapshot>, RpcError> {
        let reply: RawReply = serde_json::from_slice(text)
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
        self.cache
            .resize_with(procs.len(), || std::array::from_fn(|_| None));
        Ok(procs
            .into_iter()
            .zip(self.cache.iter_mut())
            .map(|(raw, slots)| snapshot(raw, slots))
            .collect())
    }
}

/// One-off read, without a cache from a previous tick.
pub fn parse(text: &[u8]) -> Result<Vec<ProcSnapshot>, RpcError> {
    SnapshotReader::new().read(text)
}

/// `raw` parsed, or the value of the same text at the last tick.
fn cached(slot: &mut Slot, raw: Raw<'_>) -> Option<Value> {
    let text = raw?.get();
    // Text that serde_json already scanned as one JSON value parses again.
    let parse = || serde_json::from_str(text).unwrap_or(Value::Null);
    match slot {
        Some((last, Some(value))) if **last == *text => Some(value.clone()),
        Some((last, cache @ None)) if **last == *text => {
            let value: Value = parse();
            *cache = Some(value.clone());
            Some(value)
        }
        _ => {
            *slot = Some((text.into(), None));
            Some(parse())
        }
    }
}

fn snapshot(raw: RawProc<'_>, slots: &mut [Slot; FIELDS]) -> ProcSnapshot {
    let [pid, name, pm_id, cpu, memory, e @ ..] = slots;
    // `monit` that is not an object reads as no cpu/memory.
    let monit = raw
        .monit
        .filter(|m| m.get().starts_with('{'))
        .and_then(|m| serde_json::from_str::<RawMonit>(m.get()).ok());
    let [e_name, interpreter, node_args, exec_path, restart_time, created_at, exec_mode, pm_uptime, status, e_pm_id, unique_id, versioning, node_env, axm_actions, axm_monitor, dynamic, km_monitored, broadcast_logs, send_logs] =
        e;
    ProcSnapshot {
        pid: cached(pid, raw.pid),
        name: cached(name, raw.name),
        pm_id: cached(pm_id, raw.pm_id),
        cpu: cached(cpu, monit.as_ref().and_then(|m| m.cpu)),
        memory: cached(memory, monit.as_ref().and_then(|m| m.memory)),
        env: raw.pm2_env.map(|env| EnvSnapshot {
            name: cached(e_name, env.name),
            exec_interpreter: cached(interpreter, env.exec_interpreter),
            node_args: cached(node_args, env.node_args),
            pm_exec_path: cached(exec_path, env.pm_exec_path),
            restart_time: cached(restart_time, env.restart_time),
            created_at: cached(created_at, env.created_at),
            exec_mode: cached(exec_mode, env.exec_mode),
            pm_uptime: cached(pm_uptime, env.pm_uptime),
            status: cached(status, env.status),
            pm_id: cached(e_pm_id, env.pm_id),
            unique_id: cached(unique_id, env.unique_id),
            versioning: cached(versioning, env.versioning),
            node_env: cached(node_env, env.node_env),
            axm_actions: cached(axm_actions, env.axm_actions),
            axm_monitor: cached(axm_monitor, env.axm_monitor),
            dynamic: cached(dynamic, env.dynamic),
            km_monitored: cached(km_monitored, env.km_monitored),
            broadcast_logs: cached(broadcast_logs, env.broadcast_logs),
            send_logs: cached(send_logs, env.send_logs),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::status::StatusContext;
    use crate::push::status::{build_status_from, build_status_with, HostIdentity, HostStats};
    use serde_json::json;

    fn ctx() -> StatusContext {
        StatusContext {
            server_name: "m".into(),
            internal_ip: "10.0.0.1".into(),
            rev_con: false,
            pm2_version: Some("7.0.4".into()),
            agent_version: "0.1.0".into(),
            node_version: "v20".into(),
            unique_id: "u".into(),
            interaction: None,
            host: HostIdentity::detect(),
        }
    }

    fn full_reply() -> Vec<Value> {
        let procs: Value =
            serde_json::from_str(include_str!("../push/testdata/get_monitor_data.json")).unwrap();
        procs.as_array().cloned().unwrap_or_default()
    }

    /// The status built from the light read equals the one built from the
    /// full reply (real PM2 7 capture), on a first and on a cached read.
    #[test]
    fn same_status_as_the_full_reply() {
        let procs = full_reply();
        assert!(!procs.is_empty());
        let text = serde_json::to_vec(&json!({ "args": [procs] })).unwrap();
        let stats = HostStats::read();
        let expected = build_status_with(&procs, &ctx(), &stats);
        let mut reader = SnapshotReader::new();
        for _ in 0..2 {
            let light = reader.read(&text).unwrap();
            assert_eq!(build_status_from(light, &ctx(), &stats), expected);
        }
    }

    /// A field whose text changed is parsed again; the list may shrink and
    /// grow between reads.
    #[test]
    fn cached_fields_follow_changes() {
        let mut reader = SnapshotReader::new();
        let a = br#"{"args":[[{"pm_id":0,"monit":{"cpu":1,"memory":5},"pm2_env":{"axm_monitor":{"h":{"value":1}}}},{"pm_id":1}]]}"#;
        let b = br#"{"args":[[{"pm_id":0,"monit":{"cpu":1,"memory":6},"pm2_env":{"axm_monitor":{"h":{"value":2}}}}]]}"#;
        let first = reader.read(a).unwrap();
        assert_eq!(first.len(), 2);
        let second = reader.read(b).unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].cpu, Some(json!(1)));
        assert_eq!(second[0].memory, Some(json!(6)));
        assert_eq!(
            second[0].env.as_ref().unwrap().axm_monitor,
            Some(json!({"h": {"value": 2}}))
        );
        assert_eq!(reader.read(a).unwrap(), first);
    }

    /// `null` stays `null` (JS prints it); a missing key stays missing.
    #[test]
    fn null_is_kept_and_missing_is_none() {
        let procs =
            parse(br#"{"args":[[{"pid":null,"monit":"nope","pm2_env":{"versioning":null}}]]}"#)
                .unwrap();
        let p = &procs[0];
        assert_eq!(p.pid, Some(Value::Null));
        assert_eq!((p.name.as_ref(), p.cpu.as_ref()), (None, None));
        let env = p.env.as_ref().unwrap();
        assert_eq!(env.versioning, Some(Value::Null));
        assert_eq!(env.name, None);
        assert_eq!(
            ProcSnapshot::from_value(
                &json!({"pid": null, "monit": "nope", "pm2_env": {"versioning": null}})
            )
            .as_ref(),
            Some(p)
        );
    }

    #[test]
    fn pipeline_view_has_what_on_status_tick_reads() {
        let p = ProcSnapshot::from_value(&json!({
            "name": "a", "pm_id": 3, "pid": 9,
            "pm2_env": {"_km_monitored": false, "send_logs": false, "broadcast_logs": 1, "status": "online"}
        }))
        .unwrap();
        assert_eq!(
            p.pipeline_view(),
            json!({"name": "a", "pm_id": 3, "pm2_env": {"_km_monitored": false, "send_logs": false, "broadcast_logs": 1}})
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
