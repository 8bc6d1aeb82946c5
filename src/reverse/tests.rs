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
        Some(
            r#"trigger:action:failure {"success":false,"err":"the custom action failed; PM2 gave no reason","id":1,"action_name":"x"}"#
        ),
        "a text even when PM2 gave none (JS sent the Error itself: {{}})"
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
            r#"trigger:pm2:result {"ret":{"err":{"message":"boom","code":"PM2_ERROR"}},"meta":{"method_name":"restart","app_name":"workers","machine_name":"m1","public_key":"pub"}}"#
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
    assert!(out
        .unwrap()
        .contains(r#""ret":{"err":{"message":"not connected","code":"PM2_ERROR"}}"#));
    // PM2 failing without a message still says something.
    let api = FakePm2::new(|_, _| Err(String::new()));
    let err = ret_err(
        &reverse(&api),
        json!({"method_name": "ping", "parameters": {"id": 1}}),
    )
    .await;
    assert_eq!(
        err,
        json!({"message": "PM2 failed without saying why", "code": "PM2_ERROR"})
    );
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

/// `ret.err` of the reply to a `trigger:pm2:action`.
async fn ret_err(r: &Reverse, payload: Value) -> Value {
    let p = r.handle("trigger:pm2:action", payload).await.unwrap();
    assert_eq!(p.channel, "trigger:pm2:result");
    p.payload["ret"]["err"].clone()
}

const ALLOWED: &str = "restart, reload, reset, scale, startLogging, stopLogging, ping";

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
            format!(
                r#"trigger:pm2:result {{"ret":{{"err":{{"message":"Method not allowed: \"delete\" is not a remote PM2 action (allowed: {ALLOWED})","code":"METHOD_NOT_ALLOWED"}}}},"meta":{{"method_name":"delete","app_name":"app","machine_name":"m1","public_key":"pub"}}}}"#
            )
            .as_str()
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
            r#"trigger:pm2:result {"ret":{"err":{"message":"Deprecated or invalid method: \"deepUpdate\" is no longer supported","code":"DEPRECATED_METHOD"}},"meta":{"method_name":"deepUpdate","machine_name":"m1","public_key":"pub"}}"#
        )
    );
    // Prototype names and PM2 methods outside the whitelist are not actions.
    for method in [
        "kill",
        "__proto__",
        "toString",
        "constructor",
        "killDaemon",
        "",
    ] {
        let err = ret_err(&r, json!({"method_name": method, "parameters": {}})).await;
        assert_eq!(err["code"], "METHOD_NOT_ALLOWED", "{method}");
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("Method not allowed: {}", json!(method))),
            "{msg}"
        );
    }
    // A huge method name is not echoed whole.
    let long = "x".repeat(10_000);
    let err = ret_err(&r, json!({"method_name": long, "parameters": {}})).await;
    let msg = err["message"].as_str().unwrap();
    assert!(msg.len() < 300 && msg.contains("…"), "{msg}");
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
    for (params, code, message) in [
        (
            json!(null),
            "INVALID_PARAMETERS",
            "parameters missing or not an object",
        ),
        (
            json!("app"),
            "INVALID_PARAMETERS",
            "parameters missing or not an object",
        ),
        (
            json!([]),
            "INVALID_PARAMETERS",
            "parameters missing or not an object",
        ),
        (
            json!({}),
            "NO_TARGET",
            "parameters have neither id nor name",
        ),
        (
            json!({"name": null}),
            "NO_TARGET",
            "parameters have neither id nor name",
        ),
    ] {
        let err = ret_err(&r, json!({"method_name": "restart", "parameters": params})).await;
        assert_eq!(err, json!({"message": message, "code": code}), "{params}");
    }
    let out = reply(&r, "trigger:pm2:action", json!({"method_name": "restart"})).await;
    assert_eq!(
        out.as_deref(),
        Some(
            r#"trigger:pm2:result {"ret":{"err":{"message":"parameters missing or not an object","code":"INVALID_PARAMETERS"}},"meta":{"method_name":"restart","machine_name":"m1","public_key":"pub"}}"#
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
    let code = |ret: &str| serde_json::from_str::<Value>(ret).unwrap()["err"]["code"].clone();
    for number in [json!(2), json!("2")] {
        let (ret, calls) = scale(number.clone()).await;
        assert_eq!(code(&ret), "SAME_PROCESS_NUMBER", "{number}");
        assert!(
            ret.contains(r#"Same process number: \"workers\" already runs 2 processes"#),
            "{ret}"
        );
        assert!(calls.is_empty());
    }
    // Not a number at all (JS said "Same process number" to these too).
    for number in [
        json!(null),
        json!("abc"),
        json!({}),
        json!("+abc"),
        json!("+-1"),
        json!("3-"),
        json!("+100000"),
        json!(100000),
    ] {
        let (ret, calls) = scale(number.clone()).await;
        assert_eq!(code(&ret), "INVALID_SCALE_NUMBER", "{number}: {ret}");
        assert!(ret.contains("invalid scale number"), "{ret}");
        assert!(calls.is_empty(), "{number}");
    }
    let api = FakePm2::with_fixture();
    let err = ret_err(
        &reverse(&api),
        json!({"method_name": "scale", "parameters": {"name": "ghost", "number": 3}}),
    )
    .await;
    assert_eq!(
        err,
        json!({"message": "App not found: no process is named \"ghost\"", "code": "APP_NOT_FOUND"})
    );
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
    // Each starts with the JS agent's text.
    let m = ActionError::NotAllowed("kill".into()).to_string();
    assert_eq!(
        m,
        format!(r#"Method not allowed: "kill" is not a remote PM2 action (allowed: {ALLOWED})"#)
    );
    assert!(ActionError::Deprecated("deepUpdate".into())
        .to_string()
        .starts_with("Deprecated or invalid method"));
    assert!(ActionError::AppNotFound("a".into())
        .to_string()
        .starts_with("App not found"));
    assert!(ActionError::SameNumber("a".into(), 1)
        .to_string()
        .starts_with("Same process number"));
    assert_eq!(
        ActionError::Pm2("Process 4 not found".into()).wire(),
        json!({"message": "Process 4 not found", "code": "PM2_ERROR"})
    );
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
                    // Every failure says why.
                    let err = match packet.channel.as_str() {
                        "trigger:pm2:result" => packet.payload["ret"]["err"].clone(),
                        "trigger:action:failure" => packet.payload["err"].clone(),
                        _ => Value::Null,
                    };
                    if !err.is_null() {
                        let text = err.get("message").unwrap_or(&err);
                        prop_assert!(text.as_str().is_some_and(|t| !t.is_empty()), "{}", err);
                    }
                }
            }
            Ok(())
        })?;
        // Bounded: each of the two PM2 requests issues at most MAX_SCALE_UP steps.
        prop_assert!(api.log().len() <= 2 * MAX_SCALE_UP + 8);
    }
}
