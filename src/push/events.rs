//! PM2 bus events → packets for PM2.io (`PushInteractor._onPM2Event`), plus
//! the per-tick bookkeeping of `_worker` that the event filter depends on.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::context::{StackContext, CONTEXT_ON_ERROR};
use super::js;
use super::logs::{LogBuffers, LOGS_BUFFER, MAX_LOG_APPS, MAX_LOG_ENTRY_BYTES};
use super::profiling::profile_request;
use super::streaming::LogStreaming;
use crate::common::Packet;

/// Processes remembered from one status tick. PM2's list is the natural
/// bound; this cap only protects against a runaway reply.
pub const MAX_TRACKED_PROCESSES: usize = 16_384;

/// What the caller must do with one bus event.
#[derive(Debug, Clone, PartialEq)]
pub enum PushAction {
    /// Send as is.
    Send(Packet),
    /// Read `path` (then delete it) and send `profiling` with `meta` + `data`;
    /// see [`super::profiling::read_profile`].
    Profile { path: PathBuf, meta: Value },
    /// An `axm:trace*` packet (process already normalised) for the
    /// transaction aggregator.
    Trace(Value),
}

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// `MACHINE_NAME`: `process.server` of every packet.
    pub machine_name: String,
    /// `PUBLIC_KEY`: in `profiling` payloads.
    pub public_key: String,
    /// `ENABLE_CONTEXT_ON_ERROR`: attach `last_logs`/`callsite`/`context`
    /// to `process:exception`.
    pub enable_context_on_error: bool,
    /// `LOGS_BUFFER` (`PM2_LOGS_BUFFER`): bus log entries kept per app, the
    /// `last_logs` of its next exception (at least 1, as in JS).
    pub logs_buffer: usize,
    /// `CONTEXT_ON_ERROR` (`PM2_CONTEXT_ON_ERROR`): source lines shown before
    /// and after the line of an exception's callsite.
    pub context_on_error: usize,
}

impl PushConfig {
    /// The JS agent's defaults: context on, [`LOGS_BUFFER`] entries,
    /// [`CONTEXT_ON_ERROR`] lines.
    pub fn new(machine_name: impl Into<String>, public_key: impl Into<String>) -> Self {
        PushConfig {
            machine_name: machine_name.into(),
            public_key: public_key.into(),
            enable_context_on_error: true,
            logs_buffer: LOGS_BUFFER,
            context_on_error: CONTEXT_ON_ERROR,
        }
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig::new("", "")
    }
}

/// What the event filter needs to know about a process, from its last
/// `pm2_env`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ProcState {
    /// `_km_monitored === false`.
    unmonitored: bool,
    /// `send_logs === false`.
    no_logs: bool,
}

pub struct EventPipeline {
    cfg: PushConfig,
    /// By process name (`proc.name`), rebuilt from every tick so removed
    /// apps do not linger (JS never pruned; docs/js-agent-behaviour.md §6.14).
    processes: HashMap<String, ProcState>,
    /// By pm_id (JSON text, so `0` and `"0"` differ as in a JS Map), rebuilt
    /// the same way.
    broadcast_logs: HashMap<String, bool>,
    logs: LogBuffers,
    streaming: LogStreaming,
    context: StackContext,
}

impl EventPipeline {
    /// Reads source files from disk for exception context.
    pub fn new(cfg: PushConfig, streaming: LogStreaming) -> Self {
        Self::with_context(cfg, streaming, StackContext::from_fs())
    }

    /// `cfg.context_on_error` replaces the context size of `context`.
    pub fn with_context(cfg: PushConfig, streaming: LogStreaming, context: StackContext) -> Self {
        EventPipeline {
            processes: HashMap::new(),
            broadcast_logs: HashMap::new(),
            logs: LogBuffers::with_limits(MAX_LOG_APPS, cfg.logs_buffer, MAX_LOG_ENTRY_BYTES),
            streaming,
            context: context.with_context_lines(cfg.context_on_error),
            cfg,
        }
    }

    /// The gate shared with `reverse` (`startLogging`/`stopLogging`).
    pub fn streaming(&self) -> &LogStreaming {
        &self.streaming
    }

    /// `log_buffer[name]` (what an exception of `app` would carry).
    pub fn last_logs(&self, app: &str) -> Option<Value> {
        self.logs.get(app)
    }

    pub fn tracked_processes(&self) -> usize {
        self.processes.len()
    }

    /// Bookkeeping of one `getMonitorData` reply (before the status is built).
    pub fn on_status_tick(&mut self, procs: &[Value]) {
        self.processes.clear();
        self.broadcast_logs.clear();
        for proc in procs.iter().take(MAX_TRACKED_PROCESSES) {
            let Some(p) = proc.as_object() else { continue };
            let env = p.get("pm2_env").and_then(Value::as_object);
            let flag = |k: &str| env.and_then(|e| e.get(k));
            self.processes.insert(
                name_key(p.get("name")).into_owned(),
                ProcState {
                    unmonitored: flag("_km_monitored") == Some(&Value::Bool(false)),
                    no_logs: flag("send_logs") == Some(&Value::Bool(false)),
                },
            );
            self.broadcast_logs
                .insert(id_key(p.get("pm_id")), loosely_true(flag("broadcast_logs")));
        }
        if procs.len() > MAX_TRACKED_PROCESSES {
            tracing::warn!(
                count = procs.len(),
                max = MAX_TRACKED_PROCESSES,
                "PM2 lists more processes than tracked"
            );
        }
        let keep: HashSet<String> = self.processes.keys().cloned().collect();
        self.logs.retain_apps(&keep);
    }

    /// One bus event (`event` = topic, `packet` = its JSON). Follows the JS
    /// handler step by step; inputs it would crash on are dropped or
    /// skipped instead.
    pub fn handle(&mut self, event: &str, packet: Value) -> Vec<PushAction> {
        // 1. Actions are PM2-internal; packets without a process are not app events.
        if event == "axm:action" {
            return vec![];
        }
        let Value::Object(mut packet) = packet else {
            tracing::debug!(event, "bus packet is not an object, dropped");
            return vec![];
        };
        if !js::truthy(packet.get("process")) {
            tracing::debug!(event, "bus packet without process, dropped");
            return vec![];
        }
        // Only the identity fields are needed (a `process:event` process is a
        // whole pm2_env clone, not worth copying).
        let (pm_id, name_value, rev) = {
            let process = packet.get("process").and_then(Value::as_object);
            let field = |k: &str| process.and_then(|p| p.get(k));
            let rev = match field("rev") {
                Some(r) if js::truthy(Some(r)) => r.clone(),
                _ => field("versioning")
                    .and_then(|v| v.get("revision"))
                    .filter(|r| js::truthy(Some(r)))
                    .cloned()
                    .unwrap_or(Value::Null),
            };
            (field("pm_id").cloned(), field("name").cloned(), rev)
        };
        let pm_id = pm_id.as_ref();
        let name = name_key(name_value.as_ref());

        // 2. Transitional `_old_` instances and apps opted out of monitoring.
        if pm_id
            .and_then(Value::as_str)
            .is_some_and(|id| id.contains("_old"))
        {
            return vec![];
        }
        let state = self.processes.get(&*name).copied();
        if state.is_some_and(|s| s.unmonitored) {
            return vec![];
        }

        // 3. Logs: always buffered, streamed only when enabled.
        let is_log = event.starts_with("log:");
        if is_log {
            self.logs
                .push(&name, packet.get("data").cloned().unwrap_or(Value::Null));
            // (The per-process flag is only looked up when streaming is off.)
            if !self.streaming.is_on()
                && !self
                    .broadcast_logs
                    .get(&id_key(pm_id))
                    .copied()
                    .unwrap_or(false)
            {
                return vec![];
            }
            if state.is_none_or(|s| s.no_logs) {
                return vec![];
            }
        }

        // 4. Exceptions: recent logs and source context.
        if event == "process:exception" && self.cfg.enable_context_on_error {
            // Non-object data (JS: TypeError) is forwarded untouched.
            if let Some(data) = packet.get_mut("data") {
                if let Value::Object(obj) = data {
                    match self.logs.get(&name) {
                        Some(lines) => {
                            obj.insert("last_logs".into(), lines);
                        }
                        // `= undefined`: an app-provided value vanishes too.
                        None => {
                            obj.shift_remove("last_logs");
                        }
                    }
                }
                self.context.attach_context(data);
            }
        }

        // 5. Profiles written to disk: the file goes out instead of the reply.
        if event == "axm:reply" {
            let ret = packet.get("data").and_then(|d| d.get("return"));
            if ["heapdump", "cpuprofile", "heapprofile"]
                .iter()
                .any(|k| js::truthy(ret.and_then(|r| r.get(*k))))
            {
                let as_value = Value::Object(packet);
                return match profile_request(
                    &as_value,
                    &self.cfg.machine_name,
                    &self.cfg.public_key,
                ) {
                    Some((path, meta)) => vec![PushAction::Profile { path, meta }],
                    None => vec![],
                };
            }
        }

        // 6. Custom events carry their name inside the data.
        if event == "human:event" {
            let taken = match packet.get_mut("data") {
                Some(Value::Object(d)) => d.shift_remove("__name"),
                _ => None,
            };
            match taken {
                Some(n) => {
                    packet.insert("name".into(), n);
                }
                None => {
                    packet.shift_remove("name");
                }
            }
        }

        // 7. Normalised process identity.
        let mut norm = Map::new();
        if let Some(id) = pm_id {
            norm.insert("pm_id".into(), id.clone());
        }
        if let Some(n) = name_value {
            norm.insert("name".into(), n);
        }
        norm.insert("rev".into(), rev);
        norm.insert(
            "server".into(),
            Value::String(self.cfg.machine_name.clone()),
        );
        packet.insert("process".into(), Value::Object(norm));

        // 8. Traces feed the aggregator.
        if event.contains("axm:trace") {
            return vec![PushAction::Trace(Value::Object(packet))];
        }

        // 9./10. Logs go out on `logs` with their stream; the rest keep their name.
        if is_log {
            let log_type = event.split(':').nth(1).unwrap_or_default();
            packet.insert("log_type".into(), Value::String(log_type.to_owned()));
            return vec![PushAction::Send(Packet::new("logs", Value::Object(packet)))];
        }
        vec![PushAction::Send(Packet::new(event, Value::Object(packet)))]
    }
}

/// A process name as a map key; JS object keys stringify (`undefined` →
/// `"undefined"`), non-strings are kept apart by their JSON text.
fn name_key(v: Option<&Value>) -> std::borrow::Cow<'_, str> {
    match v {
        Some(Value::String(s)) => std::borrow::Cow::Borrowed(s),
        None => "undefined".into(),
        Some(other) => format!("\u{0}{other}").into(),
    }
}

/// A pm_id as a map key (JSON text: `0` ≠ `"0"`, like JS Map keys).
fn id_key(v: Option<&Value>) -> String {
    v.map_or_else(|| "undefined".to_owned(), Value::to_string)
}

/// `x == 1 || x == 'true'`.
fn loosely_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::String(s)) => s == "true" || js::string_to_number(s) == 1.0,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        Some(Value::Array(a)) => match a.as_slice() {
            [one] => loosely_true(Some(one)),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::context::{SourceCache, SourceReader};
    use serde_json::json;
    use std::path::Path;
    use std::time::Duration;

    struct Files(Vec<(&'static str, &'static str)>);

    impl SourceReader for Files {
        fn read(&self, path: &Path, _max: u64) -> Option<Vec<u8>> {
            self.0
                .iter()
                .find(|(p, _)| Path::new(p) == path)
                .map(|(_, c)| c.as_bytes().to_vec())
        }
    }

    fn cfg() -> PushConfig {
        PushConfig::new("m1", "pub")
    }

    fn pipeline() -> EventPipeline {
        pipeline_with(cfg())
    }

    fn pipeline_with(cfg: PushConfig) -> EventPipeline {
        let files = Files(vec![("/app/index.js", "a\nb\n\tthrow err\nd\n")]);
        let mut p = EventPipeline::with_context(
            cfg,
            LogStreaming::new(),
            StackContext::new(SourceCache::new(Box::new(files))),
        );
        p.on_status_tick(&[
            json!({"name": "app", "pm_id": 0, "pm2_env": {"name": "app", "broadcast_logs": "false"}}),
            json!({"name": "loud", "pm_id": 1, "pm2_env": {"broadcast_logs": 1}}),
            json!({"name": "quiet", "pm_id": 2, "pm2_env": {"broadcast_logs": "true", "send_logs": false}}),
            json!({"name": "hidden", "pm_id": 3, "pm2_env": {"_km_monitored": false}}),
        ]);
        p
    }

    fn sent(actions: Vec<PushAction>) -> Option<(String, String)> {
        match actions.as_slice() {
            [PushAction::Send(p)] => Some((
                p.channel.clone(),
                serde_json::to_string(&p.payload).unwrap(),
            )),
            [] => None,
            other => panic!("unexpected actions {other:?}"),
        }
    }

    fn log(name: &str, id: Value, data: &str) -> Value {
        json!({"process": {"pm_id": id, "name": name, "rev": null, "namespace": "default"}, "at": 5, "data": data})
    }

    #[test]
    fn log_packets_are_normalised_and_gated() {
        let mut p = pipeline();
        // Not streaming, not broadcasting: buffered only.
        assert_eq!(sent(p.handle("log:out", log("app", json!(0), "x\n"))), None);
        assert_eq!(p.last_logs("app"), Some(json!(["x\n"])));
        // broadcast_logs == 1.
        assert_eq!(
            sent(p.handle("log:err", log("loud", json!(1), "e\n"))),
            Some((
                "logs".into(),
                r#"{"process":{"pm_id":1,"name":"loud","rev":null,"server":"m1"},"at":5,"data":"e\n","log_type":"err"}"#.into()
            ))
        );
        // Broadcast but send_logs === false.
        assert_eq!(sent(p.handle("log:out", log("quiet", json!(2), "q"))), None);
        // Streaming on: every known app; unknown apps still not.
        p.streaming().start(Duration::from_secs(120));
        assert!(sent(p.handle("log:out", log("app", json!(0), "y\n"))).is_some());
        assert_eq!(
            sent(p.handle("log:out", log("stranger", json!(9), "s"))),
            None
        );
        assert_eq!(p.last_logs("stranger"), Some(json!(["s"])));
        p.streaming().stop();
        assert_eq!(sent(p.handle("log:out", log("app", json!(0), "z\n"))), None);
        assert_eq!(p.last_logs("app"), Some(json!(["x\n", "y\n", "z\n"])));
    }

    #[test]
    fn broadcast_is_keyed_by_pm_id_type() {
        let mut p = pipeline();
        // "1" (string) is not the pm_id 1 PM2 listed.
        assert_eq!(
            sent(p.handle("log:out", log("loud", json!("1"), "e"))),
            None
        );
    }

    #[test]
    fn log_buffer_keeps_eight_lines() {
        let mut p = pipeline();
        for i in 0..12 {
            p.handle("log:out", log("app", json!(0), &format!("{i}")));
        }
        let last = p.last_logs("app").unwrap();
        assert_eq!(last, json!(["4", "5", "6", "7", "8", "9", "10", "11"]));
    }

    #[test]
    fn status_tick_prunes_vanished_apps() {
        let mut p = pipeline();
        p.handle("log:out", log("app", json!(0), "x"));
        p.handle("log:out", log("PM2", json!("PM2"), "daemon line"));
        p.on_status_tick(&[json!({"name": "other", "pm_id": 7, "pm2_env": {}})]);
        assert_eq!(p.tracked_processes(), 1);
        assert_eq!(p.last_logs("app"), None);
        assert_eq!(p.last_logs("PM2"), None);
        // `loud` no longer broadcasts: its pm_id entry went with it.
        assert_eq!(sent(p.handle("log:out", log("loud", json!(1), "e"))), None);
    }

    #[test]
    fn drops() {
        let mut p = pipeline();
        let pkt = json!({"process": {"pm_id": 0, "name": "app"}, "data": {}});
        assert!(p.handle("axm:action", pkt.clone()).is_empty());
        assert!(p
            .handle("pm2:kill", json!({"status": "killed", "msg": "x"}))
            .is_empty());
        assert!(p.handle("x", json!({"process": null})).is_empty());
        assert!(p.handle("x", json!({"process": 0})).is_empty());
        assert!(p.handle("x", json!(null)).is_empty());
        assert!(p.handle("x", json!("str")).is_empty());
        assert!(p
            .handle(
                "process:event",
                json!({"process": {"pm_id": "3_old_1", "name": "app"}})
            )
            .is_empty());
        assert!(p
            .handle(
                "process:event",
                json!({"process": {"pm_id": 3, "name": "hidden"}})
            )
            .is_empty());
        // The hidden app's logs are not even buffered (step 2 precedes 3).
        p.handle("log:out", log("hidden", json!(3), "x"));
        assert_eq!(p.last_logs("hidden"), None);
    }

    #[test]
    fn other_events_keep_their_channel_and_rev_falls_back_to_versioning() {
        let mut p = pipeline();
        let (ch, body) = sent(p.handle(
            "process:event",
            json!({"event": "online", "process": {"pm_id": 0, "name": "app", "versioning": {"revision": "abc"}, "env": {"A": 1}}, "at": 1}),
        ))
        .unwrap();
        assert_eq!(ch, "process:event");
        assert_eq!(
            body,
            r#"{"event":"online","process":{"pm_id":0,"name":"app","rev":"abc","server":"m1"},"at":1}"#
        );
        let (_, body) = sent(p.handle(
            "custom",
            json!({"process": {"rev": "r1", "versioning": {"revision": "abc"}}, "data": 1}),
        ))
        .unwrap();
        assert_eq!(body, r#"{"process":{"rev":"r1","server":"m1"},"data":1}"#);
        // A truthy non-object process is accepted with no fields.
        let (_, body) = sent(p.handle("custom", json!({"process": "x", "data": 1}))).unwrap();
        assert_eq!(body, r#"{"process":{"rev":null,"server":"m1"},"data":1}"#);
    }

    #[test]
    fn exceptions_get_last_logs_and_context() {
        let mut p = pipeline();
        p.handle("log:err", log("app", json!(0), "before crash\n"));
        let (ch, body) = sent(p.handle(
            "process:exception",
            json!({"at": 1, "data": {"message": "boom", "stack": "Error: boom\n    at main (/app/index.js:3:5)", "last_logs": "app's own"}, "process": {"pm_id": 0, "name": "app", "rev": null}}),
        ))
        .unwrap();
        assert_eq!(ch, "process:exception");
        assert_eq!(
            body,
            r#"{"at":1,"data":{"message":"boom","stack":"Error: boom\n    at main (/app/index.js:3:5)","last_logs":["before crash\n"],"callsite":"/app/index.js:3","context":"a\nb\n>>throw err\nd\n"},"process":{"pm_id":0,"name":"app","rev":null,"server":"m1"}}"#
        );
        // No buffer: the app's `last_logs` key vanishes (`= undefined`).
        let (_, body) = sent(p.handle(
            "process:exception",
            json!({"data": {"last_logs": 1, "message": "m"}, "process": {"pm_id": 1, "name": "loud"}}),
        ))
        .unwrap();
        assert_eq!(
            body,
            r#"{"data":{"message":"m"},"process":{"pm_id":1,"name":"loud","rev":null,"server":"m1"}}"#
        );
    }

    #[test]
    fn buffer_and_context_sizes_come_from_the_config() {
        let mut p = pipeline_with(PushConfig {
            logs_buffer: 2,
            context_on_error: 1,
            ..cfg()
        });
        for line in ["1\n", "2\n", "3\n"] {
            p.handle("log:err", log("app", json!(0), line));
        }
        let (_, body) = sent(p.handle(
            "process:exception",
            json!({"data": {"stack": "Error: boom\n    at main (/app/index.js:3:5)"}, "process": {"pm_id": 0, "name": "app"}}),
        ))
        .unwrap();
        let data = serde_json::from_str::<Value>(&body).unwrap()["data"].clone();
        assert_eq!(data["last_logs"], json!(["2\n", "3\n"]));
        assert_eq!(data["context"], json!("b\n>>throw err\nd"));

        // 0 lines of context: the failing line alone; a 0 buffer keeps one entry.
        let mut p = pipeline_with(PushConfig {
            logs_buffer: 0,
            context_on_error: 0,
            ..cfg()
        });
        p.handle("log:err", log("app", json!(0), "1\n"));
        p.handle("log:err", log("app", json!(0), "2\n"));
        let (_, body) = sent(p.handle(
            "process:exception",
            json!({"data": {"stack": "Error: boom\n    at main (/app/index.js:3:5)"}, "process": {"pm_id": 0, "name": "app"}}),
        ))
        .unwrap();
        let data = serde_json::from_str::<Value>(&body).unwrap()["data"].clone();
        assert_eq!(data["last_logs"], json!(["2\n"]));
        assert_eq!(data["context"], json!(">>throw err"));
    }

    #[test]
    fn exceptions_without_object_data_or_with_context_disabled() {
        let mut p = pipeline();
        for data in [json!(null), json!("boom"), json!([1])] {
            let (_, body) = sent(p.handle(
                "process:exception",
                json!({"data": data.clone(), "process": {"pm_id": 0, "name": "app"}}),
            ))
            .unwrap();
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["data"], data);
        }
        let mut cfg = cfg();
        cfg.enable_context_on_error = false;
        let mut p = EventPipeline::with_context(
            cfg,
            LogStreaming::new(),
            StackContext::new(SourceCache::new(Box::new(Files(vec![])))),
        );
        let (_, body) = sent(p.handle(
            "process:exception",
            json!({"data": {"stack": "at /app/index.js:3:5"}, "process": {"name": "app"}}),
        ))
        .unwrap();
        assert_eq!(
            body,
            r#"{"data":{"stack":"at /app/index.js:3:5"},"process":{"name":"app","rev":null,"server":"m1"}}"#
        );
    }

    #[test]
    fn profiling_replies_become_profile_actions() {
        let mut p = pipeline();
        let acts = p.handle(
            "axm:reply",
            json!({"at": 1, "data": {"return": {"heapdump": true, "dump_file": "/tmp/h.heapsnapshot"}, "action_name": "km:heapdump"}, "process": {"pm_id": 0, "name": "app"}}),
        );
        assert_eq!(
            acts,
            vec![PushAction::Profile {
                path: PathBuf::from("/tmp/h.heapsnapshot"),
                meta: json!({"pm_id": 0, "name": "app", "server_name": "m1", "public_key": "pub", "type": "heapdump", "heapdump": true}),
            }]
        );
        // Without a usable dump_file: neither the file nor the reply goes out.
        assert!(p
            .handle(
                "axm:reply",
                json!({"data": {"return": {"cpuprofile": true}}, "process": {"name": "app"}})
            )
            .is_empty());
        // Ordinary replies pass through.
        let (ch, _) = sent(p.handle(
            "axm:reply",
            json!({"data": {"return": {"ok": 1}}, "process": {"name": "app"}}),
        ))
        .unwrap();
        assert_eq!(ch, "axm:reply");
        assert!(
            sent(p.handle("axm:reply", json!({"data": 5, "process": {"name": "app"}}))).is_some()
        );
    }

    #[test]
    fn human_events_move_their_name() {
        let mut p = pipeline();
        let (ch, body) = sent(p.handle(
            "human:event",
            json!({"at": 1, "data": {"__name": "evt", "foo": 1}, "process": {"pm_id": 0, "name": "app", "namespace": "default"}}),
        ))
        .unwrap();
        assert_eq!(ch, "human:event");
        assert_eq!(
            body,
            r#"{"at":1,"data":{"foo":1},"process":{"pm_id":0,"name":"app","rev":null,"server":"m1"},"name":"evt"}"#
        );
        for data in [json!(null), json!("s"), json!({"foo": 1})] {
            let (_, body) = sent(p.handle(
                "human:event",
                json!({"name": "stale", "data": data, "process": {"name": "app"}}),
            ))
            .unwrap();
            assert!(!body.contains("stale"), "{body}");
        }
    }

    #[test]
    fn traces_go_to_the_aggregator() {
        let mut p = pipeline();
        let acts = p.handle(
            "axm:trace",
            json!({"data": {"spans": []}, "process": {"pm_id": 0, "name": "app", "rev": "r"}}),
        );
        assert_eq!(
            acts,
            vec![PushAction::Trace(
                json!({"data": {"spans": []}, "process": {"pm_id": 0, "name": "app", "rev": "r", "server": "m1"}})
            )]
        );
    }

    #[test]
    fn odd_log_packets() {
        let mut p = pipeline();
        p.streaming().start(Duration::from_secs(10));
        // No data: buffered as null; bare "log:" gives an empty log_type.
        let (_, body) =
            sent(p.handle("log:", json!({"process": {"pm_id": 0, "name": "app"}}))).unwrap();
        assert_eq!(
            body,
            r#"{"process":{"pm_id":0,"name":"app","rev":null,"server":"m1"},"log_type":""}"#
        );
        assert_eq!(p.last_logs("app"), Some(json!([null])));
    }

    #[test]
    fn status_tick_tolerates_any_shape() {
        let mut p = pipeline();
        p.on_status_tick(&[
            json!(null),
            json!(1),
            json!({"pm2_env": "x"}),
            json!({"name": ["a"], "pm_id": {"x": 1}}),
        ]);
        assert_eq!(p.tracked_processes(), 2);
        let many: Vec<Value> = (0..MAX_TRACKED_PROCESSES + 10)
            .map(|i| json!({"name": format!("a{i}"), "pm_id": i}))
            .collect();
        p.on_status_tick(&many);
        assert_eq!(p.tracked_processes(), MAX_TRACKED_PROCESSES);
    }

    #[test]
    fn loose_equality_of_broadcast_logs() {
        for v in [
            json!(1),
            json!("1"),
            json!(" 1 "),
            json!(true),
            json!("true"),
            json!(1.0),
            json!(["1"]),
        ] {
            assert!(loosely_true(Some(&v)), "{v}");
        }
        for v in [
            json!(0),
            json!("TRUE"),
            json!("yes"),
            json!(null),
            json!({}),
            json!(2),
        ] {
            assert!(!loosely_true(Some(&v)), "{v}");
        }
        assert!(!loosely_true(None));
    }
}
