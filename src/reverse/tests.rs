use std::sync::Mutex;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::push::test_support::any_json;

type Responder = Box<dyn Fn(&str, &[Value]) -> Result<Vec<Value>, String> + Send + Sync>;

/// A stand-in for PM2's RPC: records every call, answers through a closure.
struct FakePm2 {
    calls: Mutex<Vec<(String, Value)>>,
    respond: Responder,
}

impl FakePm2 {
    fn new(
        respond: impl Fn(&str, &[Value]) -> Result<Vec<Value>, String> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(FakePm2 {
            calls: Mutex::new(vec![]),
            respond: Box::new(respond),
        })
    }

    /// PM2 with the captured process list (capapp 0, workers 1 and 2) that
    /// answers every other call with `{"args":[]}`.
    fn with_fixture() -> Arc<Self> {
        Self::new(|method, _| match method {
            "getMonitorData" => Ok(vec![fixture()]),
            _ => Ok(vec![]),
        })
    }

    /// `method(args)` lines in call order, args as JSON text.
    fn log(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(m, a)| format!("{m}{a}"))
            .collect()
    }
}

impl Pm2Api for FakePm2 {
    fn call<'a>(
        &'a self,
        method: &'a str,
        args: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, String>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push((method.to_owned(), Value::Array(args.clone())));
            // Let other calls interleave, as real RPC replies would.
            tokio::task::yield_now().await;
            (self.respond)(method, &args)
        })
    }
}

fn fixture() -> Value {
    serde_json::from_str(include_str!("../push/testdata/get_monitor_data.json")).unwrap()
}

fn cfg() -> ReverseConfig {
    ReverseConfig {
        machine_name: "m1".into(),
        public_key: "pub".into(),
        log_streaming_duration: Duration::from_secs(120),
        cwd: PathBuf::from("/tmp/pm2cap"),
    }
}

fn reverse(api: &Arc<FakePm2>) -> Reverse {
    Reverse::new(api.clone(), cfg(), LogStreaming::new())
}

/// `channel payload-json` of the reply.
async fn reply(r: &Reverse, channel: &str, payload: Value) -> Option<String> {
    r.handle(channel, payload).await.map(|p| {
        format!(
            "{} {}",
            p.channel,
            serde_json::to_string(&p.payload).unwrap()
        )
    })
}

// ---- trigger:action / trigger:scoped_action --------------------------------

#[tokio::test]
async fn custom_action_success() {
    let api = FakePm2::new(|_, _| Ok(vec![json!({"process_count": 1, "success": true})]));
    let r = reverse(&api);
    let out = reply(
        &r,
        "trigger:action",
        json!({"action_name": "hello", "process_id": 0}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(r#"trigger:action:success {"success":true,"id":0,"action_name":"hello"}"#)
    );
    assert_eq!(
        api.log(),
        [r#"msgProcess[{"id":0,"msg":"hello","opts":null,"action_name":"hello"}]"#]
    );
}

#[tokio::test]
async fn scoped_action_with_every_field() {
    let api = FakePm2::new(|_, _| Ok(vec![]));
    let r = reverse(&api);
    let out = reply(
        &r,
        "trigger:scoped_action",
        json!({"action_name": "stream", "process": {"pm_id": 2}, "app_name": "app", "opts": "", "options": {"x": 1}, "uuid": "u1"}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(r#"trigger:action:success {"success":true,"id":2,"action_name":"stream"}"#)
    );
    assert_eq!(
        api.log(),
        [
            r#"msgProcess[{"name":"app","id":2,"msg":"stream","opts":{"x":1},"action_name":"stream","uuid":"u1"}]"#
        ]
    );
}

#[tokio::test]
async fn custom_action_failure_carries_the_message() {
    let api = FakePm2::new(|_, _| Err("42 id unknown".into()));
    let r = reverse(&api);
    let out = reply(
        &r,
        "trigger:action",
        json!({"action_name": "x", "process_id": 42}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:action:failure {"success":false,"err":"42 id unknown","id":42,"action_name":"x"}"#
        )
    );
    let api = FakePm2::new(|_, _| Err(String::new()));
    let out = reply(
        &reverse(&api),
        "trigger:action",
        json!({"action_name": "x", "process_id": 1}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(r#"trigger:action:failure {"success":false,"err":{},"id":1,"action_name":"x"}"#)
    );
}

#[tokio::test]
async fn custom_action_id_presence_rules() {
    let api = FakePm2::new(|_, _| Ok(vec![]));
    let r = reverse(&api);
    // process without pm_id: no `id` key, PM2 goes by name.
    let out = reply(
        &r,
        "trigger:action",
        json!({"action_name": "a", "process": {}, "app_name": "app"}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(r#"trigger:action:success {"success":true,"action_name":"a"}"#)
    );
    // process_id null is present (JS `!== undefined`), and so is uuid null.
    reply(
        &r,
        "trigger:action",
        json!({"process_id": null, "uuid": null}),
    )
    .await;
    assert_eq!(
        api.log(),
        [
            r#"msgProcess[{"name":"app","msg":"a","opts":null,"action_name":"a"}]"#,
            r#"msgProcess[{"id":null,"opts":null,"uuid":null}]"#
        ]
    );
}

#[tokio::test]
async fn custom_action_without_target_is_refused_without_calling_pm2() {
    let api = FakePm2::new(|_, _| Ok(vec![]));
    let r = reverse(&api);
    let out = reply(&r, "trigger:action", json!({"action_name": "a"})).await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:action:failure {"success":false,"err":"missing process_id or process","action_name":"a"}"#
        )
    );
    let out = reply(
        &r,
        "trigger:action",
        json!({"action_name": "a", "process": null}),
    )
    .await;
    assert!(out.unwrap().starts_with("trigger:action:failure"));
    for bad in [json!(null), json!("x"), json!([1])] {
        assert_eq!(reply(&r, "trigger:action", bad).await, None);
    }
    assert!(api.log().is_empty());
}

// ---- trigger:pm2:action ------------------------------------------------------

#[tokio::test]
async fn ping_by_id_forwards_pm2_reply_as_data() {
    let api = FakePm2::new(|_, _| Ok(vec![json!({"msg": "pong"})]));
    let r = reverse(&api);
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "ping", "parameters": {"id": 0}}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":null,"data":{"msg":"pong"}},"meta":{"method_name":"ping","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    assert_eq!(api.log(), [r#"ping[{"id":0}]"#]);
}

#[tokio::test]
async fn ping_by_name_fans_out_with_one_param_copy_per_call() {
    let api = FakePm2::with_fixture();
    let r = reverse(&api);
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "ping", "parameters": {"name": "workers"}}),
    )
    .await;
    // No `data`: the by-name path drops PM2's results (captured from the JS agent).
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":null},"meta":{"method_name":"ping","app_name":"workers","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    assert_eq!(
        api.log(),
        [
            r#"getMonitorData[{}]"#,
            r#"ping[{"name":"workers","id":1}]"#,
            r#"ping[{"name":"workers","id":2}]"#
        ]
    );
}

#[tokio::test]
async fn restart_and_reload_paths() {
    let api = FakePm2::new(|m, _| match m {
        "getMonitorData" => Ok(vec![fixture()]),
        "restartProcessId" => Ok(vec![json!({"name": "x"})]),
        _ => Ok(vec![]),
    });
    let r = reverse(&api);
    // With an id: parameters as given, PM2's reply as data.
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "restart", "parameters": {"id": 5, "updateEnv": true}}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":null,"data":{"name":"x"}},"meta":{"method_name":"restart","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    // A name nobody has: one call with `id: name` first ("pm2 will find it"), reply forwarded.
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "restart", "parameters": {"name": "nope", "x": 1}}),
    )
    .await;
    assert!(out.unwrap().contains(r#""data":{"name":"x"}"#));
    // A script path relative to the agent's cwd matches pm_exec_path.
    reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "reload", "parameters": {"name": "./worker.js"}}),
    )
    .await;
    assert_eq!(
        api.log(),
        [
            r#"restartProcessId[{"id":5,"updateEnv":true}]"#,
            r#"getMonitorData[{}]"#,
            r#"restartProcessId[{"id":"nope","name":"nope","x":1}]"#,
            r#"getMonitorData[{}]"#,
            r#"reloadProcessId[{"name":"./worker.js","id":1}]"#,
            r#"reloadProcessId[{"name":"./worker.js","id":2}]"#,
        ]
    );
}

#[tokio::test]
async fn reset_sends_the_bare_id() {
    let api = FakePm2::with_fixture();
    let r = reverse(&api);
    reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "reset", "parameters": {"id": 0}}),
    )
    .await;
    reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "reset", "parameters": {"name": "workers"}}),
    )
    .await;
    reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "reset", "parameters": {"name": "ghost"}}),
    )
    .await;
    assert_eq!(
        api.log(),
        [
            "resetMetaProcessId[0]",
            "getMonitorData[{}]",
            "resetMetaProcessId[1]",
            "resetMetaProcessId[2]",
            "getMonitorData[{}]",
            r#"resetMetaProcessId["ghost"]"#,
        ]
    );
}

#[tokio::test]
async fn one_failing_instance_fails_the_fan_out() {
    let api = FakePm2::new(|m, args| match m {
        "getMonitorData" => Ok(vec![fixture()]),
        _ if args[0]["id"] == json!(2) => Err("boom".into()),
        _ => Ok(vec![json!(1)]),
    });
    let r = reverse(&api);
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "restart", "parameters": {"name": "workers"}}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":{}},"meta":{"method_name":"restart","app_name":"workers","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    assert_eq!(api.log().len(), 3, "both instances were still called");
}

#[tokio::test]
async fn pm2_errors_and_odd_process_lists() {
    let api = FakePm2::new(|_, _| Err("not connected".into()));
    let out = reply(
        &reverse(&api),
        "trigger:pm2:action",
        json!({"method_name": "ping", "parameters": {"name": "a"}}),
    )
    .await;
    assert!(out.unwrap().contains(r#""ret":{"err":{}}"#));
    // A list PM2 would never send: nothing matches, the name is tried as id.
    let api = FakePm2::new(|m, _| match m {
        "getMonitorData" => Ok(vec![json!({"not": "a list"})]),
        _ => Ok(vec![]),
    });
    reply(
        &reverse(&api),
        "trigger:pm2:action",
        json!({"method_name": "ping", "parameters": {"name": "a"}}),
    )
    .await;
    let api2 = FakePm2::new(|m, _| match m {
        "getMonitorData" => Ok(vec![
            json!([null, 1, {"pm2_env": null}, {"pm_id": 4, "pm2_env": {"name": "a"}}]),
        ]),
        _ => Ok(vec![]),
    });
    reply(
        &reverse(&api2),
        "trigger:pm2:action",
        json!({"method_name": "ping", "parameters": {"name": "a"}}),
    )
    .await;
    assert_eq!(
        api.log(),
        ["getMonitorData[{}]", r#"ping[{"id":"a","name":"a"}]"#]
    );
    assert_eq!(
        api2.log(),
        ["getMonitorData[{}]", r#"ping[{"name":"a","id":4}]"#]
    );
}

#[tokio::test]
async fn disallowed_deprecated_and_invalid_requests() {
    let api = FakePm2::with_fixture();
    let r = reverse(&api);
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "delete", "parameters": {"name": "app"}}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":{}},"meta":{"method_name":"delete","app_name":"app","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "deepUpdate"}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":{}},"meta":{"method_name":"deepUpdate","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    // Prototype names are not methods.
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "toString", "parameters": {}}),
    )
    .await;
    assert!(out.unwrap().contains(r#""err":{}"#));
    // No reply possible without a method name.
    for bad in [
        json!({"method_name": 3}),
        json!({"parameters": {}}),
        json!(null),
        json!("ping"),
    ] {
        assert_eq!(reply(&r, "trigger:pm2:action", bad).await, None);
    }
    // Missing/odd parameters or no target: an error reply, PM2 untouched.
    for params in [
        json!(null),
        json!("app"),
        json!([]),
        json!({}),
        json!({"name": null}),
    ] {
        let out = reply(
            &r,
            "trigger:pm2:action",
            json!({"method_name": "restart", "parameters": params}),
        )
        .await;
        assert!(out.unwrap().contains(r#""ret":{"err":{}}"#));
    }
    let out = reply(&r, "trigger:pm2:action", json!({"method_name": "restart"})).await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":{}},"meta":{"method_name":"restart","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    assert!(api.log().is_empty());
    assert_eq!(reply(&r, "status:resend", json!({})).await, None);
}

#[tokio::test]
async fn start_and_stop_logging_drive_the_shared_gate() {
    let api = FakePm2::with_fixture();
    let gate = LogStreaming::new();
    let r = Reverse::new(api.clone(), cfg(), gate.clone());
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "startLogging"}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":null,"data":"Log streaming enabled"},"meta":{"method_name":"startLogging","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    assert!(gate.is_on());
    let left = gate.deadline().unwrap() - std::time::Instant::now();
    assert!(
        left > Duration::from_secs(119) && left <= Duration::from_secs(120),
        "{left:?}"
    );
    let out = reply(
        &r,
        "trigger:pm2:action",
        json!({"method_name": "stopLogging", "parameters": {"name": "app"}}),
    )
    .await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":null,"data":"Log streaming disabled"},"meta":{"method_name":"stopLogging","app_name":"app","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    assert!(!gate.is_on());
    assert!(api.log().is_empty());
}

// ---- scale -------------------------------------------------------------------

async fn scale(number: Value) -> (String, Vec<String>) {
    let api = FakePm2::with_fixture();
    let out = reply(
        &reverse(&api),
        "trigger:pm2:action",
        json!({"method_name": "scale", "parameters": {"name": "workers", "number": number}}),
    )
    .await
    .unwrap();
    let ret =
        serde_json::from_str::<Value>(out.split_once(' ').unwrap().1).unwrap()["ret"].to_string();
    (ret, api.log().into_iter().skip(1).collect())
}

#[tokio::test]
async fn scale_relative_and_absolute() {
    let ok = r#"{"err":null,"data":{"success":true}}"#;
    assert_eq!(
        scale(json!("+2")).await,
        (
            ok.into(),
            vec![
                "duplicateProcessId[1]".into(),
                "duplicateProcessId[1]".into()
            ]
        )
    );
    assert_eq!(
        scale(json!("-1")).await,
        (ok.into(), vec!["deleteProcessId[1]".into()])
    );
    // Never more deletions than processes.
    assert_eq!(
        scale(json!("-5")).await,
        (
            ok.into(),
            vec!["deleteProcessId[1]".into(), "deleteProcessId[2]".into()]
        )
    );
    assert_eq!(
        scale(json!(4)).await,
        (
            ok.into(),
            vec![
                "duplicateProcessId[1]".into(),
                "duplicateProcessId[1]".into()
            ]
        )
    );
    assert_eq!(
        scale(json!("1")).await,
        (ok.into(), vec!["deleteProcessId[1]".into()])
    );
    assert_eq!(
        scale(json!(-3)).await,
        (
            ok.into(),
            vec!["deleteProcessId[1]".into(), "deleteProcessId[2]".into()]
        )
    );
    assert_eq!(scale(json!("+0")).await, (ok.into(), vec![]));
}

#[tokio::test]
async fn scale_errors() {
    let err = r#"{"err":{}}"#.to_owned();
    for number in [json!(2), json!("2"), json!(null), json!("abc"), json!({})] {
        assert_eq!(
            scale(number.clone()).await,
            (err.clone(), vec![]),
            "{number}: Same process number"
        );
    }
    for number in [
        json!("+abc"),
        json!("+-1"),
        json!("3-"),
        json!("+100000"),
        json!(100000),
    ] {
        assert_eq!(
            scale(number.clone()).await,
            (err.clone(), vec![]),
            "{number}: invalid"
        );
    }
    let api = FakePm2::with_fixture();
    let out = reply(
        &reverse(&api),
        "trigger:pm2:action",
        json!({"method_name": "scale", "parameters": {"name": "ghost", "number": 3}}),
    )
    .await;
    assert!(out.unwrap().contains(r#""ret":{"err":{}}"#));
    assert_eq!(api.log(), ["getMonitorData[{}]"]);
}

#[tokio::test]
async fn scale_step_errors_are_ignored() {
    let api = FakePm2::new(|m, _| match m {
        "getMonitorData" => Ok(vec![fixture()]),
        _ => Err("step failed".into()),
    });
    let out = reply(
        &reverse(&api),
        "trigger:pm2:action",
        json!({"method_name": "scale", "parameters": {"name": "workers", "number": "+2"}}),
    )
    .await;
    assert!(out
        .unwrap()
        .contains(r#""ret":{"err":null,"data":{"success":true}}"#));
    assert_eq!(api.log().len(), 3);
}

#[test]
fn action_error_messages() {
    assert_eq!(ActionError::NotAllowed.to_string(), "Method not allowed");
    assert_eq!(
        ActionError::Deprecated.to_string(),
        "Deprecated or invalid method"
    );
    assert_eq!(ActionError::AppNotFound.to_string(), "App not found");
    assert_eq!(ActionError::SameNumber.to_string(), "Same process number");
    assert!(Reverse::handles("trigger:scoped_action") && !Reverse::handles("trigger:pm2:result"));
}

// ---- any input -----------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_payload_gets_a_well_formed_reply_or_none(payload in any_json(), method in prop_oneof![
        Just("restart"), Just("reload"), Just("reset"), Just("scale"), Just("ping"), Just("startLogging"), Just("nope")
    ], pm2_list in any_json()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let api = FakePm2::new(move |m, _| match m {
            "getMonitorData" => Ok(vec![pm2_list.clone()]),
            _ => Ok(vec![]),
        });
        let r = reverse(&api);
        let mut pm2_payload = json!({"method_name": method});
        pm2_payload["parameters"] = payload.clone();
        rt.block_on(async {
            for (channel, p) in [("trigger:action", payload.clone()), ("trigger:pm2:action", pm2_payload), ("trigger:pm2:action", payload)] {
                if let Some(packet) = r.handle(channel, p).await {
                    prop_assert!(packet.channel.starts_with("trigger:"));
                    prop_assert!(packet.payload.is_object());
                }
            }
            Ok(())
        })?;
        // Bounded: each of the two PM2 requests issues at most MAX_SCALE_UP steps.
        prop_assert!(api.log().len() <= 2 * MAX_SCALE_UP + 8);
    }
}
