//! The `status` payload (`DataRetriever.status` + `PushInteractor._worker`),
//! sent every second on whichever transporter is up. Process entries carry
//! the PM2 7 / agent 2.1.1 field set; the `server` entry carries the agent
//! 1.0.x one (a superset of 2.1.1 and PM2 7's), in the 1.0.x key order
//! (docs/js-agent-behaviour.md §4.4).

use serde_json::{Map, Value};

pub use super::host::{internal_ip, CpuMeta, HostIdentity, HostStats};
use super::js;
use crate::common::Packet;
use crate::pm2::snapshot::ProcSnapshot;

/// Everything `build_status` needs besides the process list.
#[derive(Debug, Clone)]
pub struct StatusContext {
    /// `MACHINE_NAME` → `server_name`.
    pub server_name: String,
    /// Refreshed by the caller (the JS agent re-reads it every 61 ticks).
    pub internal_ip: String,
    /// Adds `"rev_con":true` (1.0.8 did; the Axon transporter wants it).
    pub rev_con: bool,
    /// `conf.PM2_VERSION`; `None` drops the key like `undefined` would.
    pub pm2_version: Option<String>,
    /// `pm2_agent_version` (PM2 7's vendored agent reports PM2's version).
    pub agent_version: String,
    /// `process.version` of the hosting Node, e.g. `v20.20.2`.
    pub node_version: String,
    /// `UNIQUE_SERVER_ID`: one random uuid per agent process.
    pub unique_id: String,
    /// `interaction` (`conf.REVERSE_INTERACT`). Agent 1.0.x never sets
    /// `REVERSE_INTERACT`, so the key is absent there (`None`); PM2's
    /// built-in interactor sent `PM2_REVERSE_INTERACT`, usually `true`.
    pub interaction: Option<bool>,
    pub host: HostIdentity,
}

impl StatusContext {
    /// A fixed context for tests and fuzz targets: server `name`, one
    /// CPU, no optional keys.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn sample(name: &str) -> Self {
        StatusContext {
            server_name: name.into(),
            internal_ip: "127.0.0.1".into(),
            rev_con: false,
            pm2_version: None,
            agent_version: "0".into(),
            node_version: "v0".into(),
            unique_id: "u".into(),
            interaction: None,
            host: HostIdentity {
                username: None,
                hostname: "h".into(),
                platform: "linux".into(),
                os_type: "Linux".into(),
                arch: "x64".into(),
                cpu: CpuMeta {
                    number: 1,
                    info: "c".into(),
                },
            },
        }
    }
}

/// The `status` payload for `procs` (PM2's `getMonitorData` list), with the
/// host's uptime/loadavg/memory read now.
pub fn build_status(procs: &[Value], ctx: &StatusContext) -> Value {
    build_status_with(procs, ctx, &HostStats::read())
}

/// `build_status` as a ready-to-send packet on channel `status`.
pub fn status_packet(procs: &[Value], ctx: &StatusContext) -> Packet {
    Packet::new("status", build_status(procs, ctx))
}

/// `build_status` with given host stats (deterministic for tests).
pub fn build_status_with(procs: &[Value], ctx: &StatusContext, stats: &HostStats) -> Value {
    let procs = procs.iter().filter_map(ProcSnapshot::from_value).collect();
    build_status_from(procs, ctx, stats)
}

/// The `status` payload from the status tick's light read of PM2's list
/// ([`crate::pm2::snapshot::SnapshotReader`]); its values are moved into
/// the payload, not copied.
pub fn build_status_from(
    procs: Vec<ProcSnapshot>,
    ctx: &StatusContext,
    stats: &HostStats,
) -> Value {
    let process: Vec<Value> = procs.into_iter().filter_map(process_entry).collect();
    let mut data = Map::new();
    data.insert("process".into(), Value::Array(process));
    data.insert("server".into(), server_entry(ctx, stats));
    let mut out = Map::new();
    out.insert("data".into(), Value::Object(data));
    out.insert("server_name".into(), Value::String(ctx.server_name.clone()));
    out.insert("internal_ip".into(), Value::String(ctx.internal_ip.clone()));
    if ctx.rev_con {
        out.insert("rev_con".into(), Value::Bool(true));
    }
    Value::Object(out)
}

/// One `process` entry, or `None` for what the JS agent filters out
/// (`_km_monitored === false`, a name containing `_old_`) and for shapes it
/// would crash on (no `pm2_env` object).
fn process_entry(proc: ProcSnapshot) -> Option<Value> {
    let Some(env) = proc.env else {
        tracing::debug!("status: process without pm2_env skipped");
        return None;
    };
    if env.km_monitored == Some(Value::Bool(false)) {
        return None;
    }
    if env
        .name
        .as_ref()
        .and_then(Value::as_str)
        .is_some_and(|n| n.contains("_old_"))
    {
        return None;
    }
    let mut e = Map::new();
    // Absent sources stay absent (`undefined` vanishes from the JSON).
    let mut copy = |key: &str, src: Option<Value>| {
        if let Some(v) = src {
            e.insert(key.to_owned(), v);
        }
    };
    copy("pid", proc.pid);
    copy("name", env.name);
    copy("interpreter", env.exec_interpreter);
    copy("args", env.node_args);
    copy("path", env.pm_exec_path);
    copy("restart_time", env.restart_time);
    copy("created_at", env.created_at);
    copy("exec_mode", env.exec_mode);
    copy("pm_uptime", env.pm_uptime);
    copy("status", env.status);
    copy("pm_id", env.pm_id);
    copy("unique_id", env.unique_id);
    e.insert("cpu".into(), floor_or_zero(proc.cpu.as_ref()));
    e.insert("memory".into(), floor_or_zero(proc.memory.as_ref()));
    e.insert(
        "versioning".into(),
        js::or_default(env.versioning, Value::Null),
    );
    e.insert("node_env".into(), js::or_default(env.node_env, Value::Null));
    e.insert(
        "axm_actions".into(),
        js::or_default(env.axm_actions, Value::Array(vec![])),
    );
    e.insert(
        "axm_monitor".into(),
        js::or_default(env.axm_monitor, Value::Object(Map::new())),
    );
    e.insert("axm_options".into(), Value::Object(Map::new()));
    e.insert(
        "axm_dynamic".into(),
        js::or_default(env.dynamic, Value::Object(Map::new())),
    );
    Some(Value::Object(e))
}

/// `Math.floor(x) || 0`.
fn floor_or_zero(v: Option<&Value>) -> Value {
    let f = js::to_number(v).floor();
    if f.is_nan() || f == 0.0 {
        Value::from(0)
    } else {
        js::js_number(f)
    }
}

/// The `server` entry, keys in the order of the 1.0.x `DataRetriever.js`
/// object literal; `undefined` values (username, interaction, pm2_version)
/// leave their key out.
fn server_entry(ctx: &StatusContext, stats: &HostStats) -> Value {
    let host = &ctx.host;
    let mut s = Map::new();
    s.insert(
        "loadavg".into(),
        Value::Array(stats.loadavg.iter().map(|f| js::js_number(*f)).collect()),
    );
    s.insert("total_mem".into(), Value::from(stats.total_mem));
    s.insert("free_mem".into(), Value::from(stats.free_mem));
    let mut cpu = Map::new();
    cpu.insert("number".into(), Value::from(host.cpu.number));
    cpu.insert("info".into(), Value::String(host.cpu.info.clone()));
    s.insert("cpu".into(), Value::Object(cpu));
    if let Some(u) = &host.username {
        s.insert("username".into(), Value::String(u.clone()));
    }
    s.insert("hostname".into(), Value::String(host.hostname.clone()));
    s.insert("uptime".into(), js::js_number(stats.uptime));
    s.insert("type".into(), Value::String(host.os_type.clone()));
    s.insert("platform".into(), Value::String(host.platform.clone()));
    s.insert("arch".into(), Value::String(host.arch.clone()));
    if let Some(i) = ctx.interaction {
        s.insert("interaction".into(), Value::Bool(i));
    }
    if let Some(v) = &ctx.pm2_version {
        s.insert("pm2_version".into(), Value::String(v.clone()));
    }
    s.insert(
        "pm2_agent_version".into(),
        Value::String(ctx.agent_version.clone()),
    );
    s.insert(
        "node_version".into(),
        Value::String(ctx.node_version.clone()),
    );
    s.insert("unique_id".into(), Value::String(ctx.unique_id.clone()));
    Value::Object(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A real PM2 7.0.4 `getMonitorData` reply (fork app with actions and
    /// probes, two cluster instances), env vars trimmed.
    const MONITOR_DATA: &str = include_str!("testdata/get_monitor_data.json");
    /// The JS `DataRetriever.status(list).process` for that reply.
    const EXPECTED_PROCESS: &str = include_str!("testdata/expected_status_process.json");

    fn ctx() -> StatusContext {
        StatusContext {
            server_name: "m1".into(),
            internal_ip: "10.0.0.2".into(),
            rev_con: false,
            pm2_version: Some("7.0.4".into()),
            agent_version: "7.0.4".into(),
            node_version: "v20.20.2".into(),
            unique_id: "99146de2-68e9-4160-b99e-d33f2f92716e".into(),
            interaction: None,
            host: HostIdentity {
                username: Some("root".into()),
                hostname: "vm".into(),
                platform: "linux".into(),
                os_type: "Linux".into(),
                arch: "x64".into(),
                cpu: CpuMeta {
                    number: 4,
                    info: "Intel(R) Xeon(R) CPU @ 2.20GHz".into(),
                },
            },
        }
    }

    const STATS: HostStats = HostStats {
        uptime: 966.93,
        loadavg: [2.53, 1.0, 0.0],
        total_mem: 25_276_510_208,
        free_mem: 20_480_000_000,
    };

    fn procs() -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(MONITOR_DATA).unwrap()
    }

    #[test]
    fn process_entries_match_the_js_output_byte_for_byte() {
        let status = build_status_with(&procs(), &ctx(), &STATS);
        let got = serde_json::to_string(&status["data"]["process"]).unwrap();
        assert_eq!(got, EXPECTED_PROCESS.trim());
    }

    #[test]
    fn envelope_and_server_entry_shape() {
        let status = build_status_with(&[], &ctx(), &STATS);
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            r#"{"data":{"process":[],"server":{"loadavg":[2.53,1,0],"total_mem":25276510208,"free_mem":20480000000,"cpu":{"number":4,"info":"Intel(R) Xeon(R) CPU @ 2.20GHz"},"username":"root","hostname":"vm","uptime":966.93,"type":"Linux","platform":"linux","arch":"x64","pm2_version":"7.0.4","pm2_agent_version":"7.0.4","node_version":"v20.20.2","unique_id":"99146de2-68e9-4160-b99e-d33f2f92716e"}},"server_name":"m1","internal_ip":"10.0.0.2"}"#
        );
    }

    #[test]
    fn undefined_username_and_pm2_version_vanish_and_rev_con_is_optional() {
        let mut c = ctx();
        c.host.username = None;
        c.pm2_version = None;
        c.rev_con = true;
        let status = build_status_with(
            &[],
            &c,
            &HostStats {
                uptime: 12.0,
                ..STATS
            },
        );
        let server = status["data"]["server"].as_object().unwrap();
        let keys: Vec<&str> = server.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "loadavg",
                "total_mem",
                "free_mem",
                "cpu",
                "hostname",
                "uptime",
                "type",
                "platform",
                "arch",
                "pm2_agent_version",
                "node_version",
                "unique_id"
            ]
        );
        assert_eq!(server["uptime"].to_string(), "12");
        let top: Vec<&str> = status
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(top, ["data", "server_name", "internal_ip", "rev_con"]);
        assert_eq!(status["rev_con"], json!(true));
    }

    /// Every key of the 1.0.x `DataRetriever.js` server literal, in its
    /// order, with the type `JSON.stringify` gives it.
    #[test]
    fn server_entry_has_the_full_1_0_field_set_with_js_types() {
        let mut c = ctx();
        c.interaction = Some(true);
        let status = build_status_with(&[], &c, &STATS);
        let server = status["data"]["server"].as_object().unwrap();
        let keys: Vec<&str> = server.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "loadavg",
                "total_mem",
                "free_mem",
                "cpu",
                "username",
                "hostname",
                "uptime",
                "type",
                "platform",
                "arch",
                "interaction",
                "pm2_version",
                "pm2_agent_version",
                "node_version",
                "unique_id"
            ]
        );
        let loadavg = server["loadavg"].as_array().unwrap();
        assert_eq!(loadavg.len(), 3);
        assert!(loadavg.iter().all(Value::is_number));
        assert_eq!(loadavg[0], json!(2.53));
        assert_eq!(server["total_mem"], json!(25_276_510_208u64));
        assert_eq!(server["free_mem"], json!(20_480_000_000u64));
        assert_eq!(
            server["cpu"],
            json!({"number": 4, "info": "Intel(R) Xeon(R) CPU @ 2.20GHz"})
        );
        assert!(server["cpu"]["number"].is_u64());
        for key in [
            "username",
            "hostname",
            "type",
            "platform",
            "arch",
            "pm2_version",
            "pm2_agent_version",
            "node_version",
            "unique_id",
        ] {
            assert!(server[key].is_string(), "{key} is not a string");
        }
        assert!(server["uptime"].is_number());
        assert_eq!(server["interaction"], json!(true));
        assert_eq!(server["arch"], json!("x64"));
        assert_eq!(server["type"], json!("Linux"));
    }

    #[test]
    fn no_cpu_listed_reads_no_data() {
        let mut c = ctx();
        c.host.cpu = CpuMeta {
            number: 0,
            info: CpuMeta::NO_DATA.into(),
        };
        let status = build_status_with(&[], &c, &STATS);
        assert_eq!(
            status["data"]["server"]["cpu"],
            json!({"number": 0, "info": "no-data"})
        );
    }

    /// `DataRetriever.js` reads `proc.pm2_env.name` / `proc.pm2_env.pm_id`;
    /// the top-level copies of the `getMonitorData` entry are ignored.
    #[test]
    fn name_and_pm_id_come_from_pm2_env() {
        let list = vec![json!({
            "pid": 1,
            "name": "old",
            "pm_id": 7,
            "pm2_env": {"name": "new", "pm_id": 3},
            "monit": {"cpu": 0, "memory": 0}
        })];
        let status = build_status_with(&list, &ctx(), &STATS);
        let p = &status["data"]["process"][0];
        assert_eq!(p["name"], json!("new"));
        assert_eq!(p["pm_id"], json!(3));
        let text = serde_json::to_string(&status).unwrap();
        assert!(!text.contains("\"old\""), "{text}");
        assert!(!text.contains(":7"), "{text}");
        // A top-level `_old_` name does not filter the process; pm2_env's does.
        let mut list = list;
        list[0]["name"] = json!("x_old_1");
        assert_eq!(
            build_status_with(&list, &ctx(), &STATS)["data"]["process"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        list[0]["name"] = json!("x");
        list[0]["pm2_env"]["name"] = json!("x_old_1");
        assert!(build_status_with(&list, &ctx(), &STATS)["data"]["process"]
            .as_array()
            .unwrap()
            .is_empty());
        // No pm2_env name/pm_id: the keys are absent, never the top-level ones.
        let list = vec![json!({"name": "old", "pm_id": 7, "pm2_env": {}})];
        let p = &build_status_with(&list, &ctx(), &STATS)["data"]["process"][0];
        assert!(p.get("name").is_none() && p.get("pm_id").is_none(), "{p}");
    }

    #[test]
    fn filters_old_and_unmonitored_processes() {
        let mut list = procs();
        list[0]["pm2_env"]["_km_monitored"] = json!(false);
        list[1]["pm2_env"]["name"] = json!("workers_old_1");
        // Only `false` itself hides a process.
        list[2]["pm2_env"]["_km_monitored"] = json!(0);
        let status = build_status_with(&list, &ctx(), &STATS);
        let names: Vec<&Value> = status["data"]["process"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["pm_id"])
            .collect();
        assert_eq!(names, [&json!(2)]);
    }

    #[test]
    fn js_defaults_and_floors() {
        let list = vec![json!({
            "pid": null,
            "pm2_env": {
                "name": 7, "versioning": "", "NODE_ENV": 0, "axm_actions": null,
                "axm_monitor": false, "dynamic": {"a": 1}, "axm_options": {"x": 1}
            },
            "monit": {"cpu": "5.9", "memory": -0.5}
        })];
        let status = build_status_with(&list, &ctx(), &STATS);
        assert_eq!(
            serde_json::to_string(&status["data"]["process"][0]).unwrap(),
            r#"{"pid":null,"name":7,"cpu":5,"memory":-1,"versioning":null,"node_env":null,"axm_actions":[],"axm_monitor":{},"axm_options":{},"axm_dynamic":{"a":1}}"#
        );
    }

    #[test]
    fn odd_inputs_do_not_panic_and_are_skipped() {
        let list = vec![
            json!(null),
            json!(3),
            json!("x"),
            json!({}),
            json!({"pm2_env": null}),
            json!({"pm2_env": []}),
            json!({"pm2_env": {"name": null}, "monit": "nope"}),
            json!({"pm2_env": {}, "monit": {"cpu": {"a": 1}, "memory": [1, 2]}}),
            json!({"pm2_env": {}, "monit": {"cpu": 1e300, "memory": "Infinity"}}),
        ];
        let status = build_status_with(&list, &ctx(), &STATS);
        let out = status["data"]["process"].as_array().unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0]["name"], Value::Null);
        assert_eq!(out[1]["cpu"], json!(0));
        assert_eq!(out[1]["memory"], json!(0));
        assert_eq!(out[2]["cpu"], json!(1e300));
        // `Math.floor(Infinity) || 0` is Infinity, which JSON.stringify prints as null.
        assert_eq!(out[2]["memory"], Value::Null);
    }

    #[test]
    fn live_host_stats_are_plain_numbers() {
        let status = build_status(&procs(), &ctx());
        let server = &status["data"]["server"];
        assert!(server["uptime"].is_number());
        assert_eq!(server["loadavg"].as_array().unwrap().len(), 3);
        assert!(server["total_mem"].is_u64());
        assert!(server["free_mem"].is_u64());
        assert!(server["cpu"]["number"].is_u64());
        assert!(server["cpu"]["info"].is_string());
        assert!(server["arch"].is_string());
        assert_eq!(status_packet(&[], &ctx()).channel, "status");
    }
}
