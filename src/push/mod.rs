//! The push side: what the agent sends to PM2.io about PM2 and its apps.
//!
//! Pure logic, no sockets: the daemon feeds it PM2's `getMonitorData` list
//! every second ([`status::build_status`], [`EventPipeline::on_status_tick`])
//! and every bus event ([`EventPipeline::handle`]), and carries out the
//! returned [`PushAction`]s (send a packet, read a profile with
//! [`profiling::read_profile`], hand a trace to the aggregator).

pub mod context;
pub mod events;
pub(crate) mod host;
pub mod host_sampler;
#[cfg(any(not(target_os = "linux"), test))]
pub(crate) mod host_sys;
pub(crate) mod js;
pub mod logs;
pub mod profiling;
pub mod status;
pub mod streaming;
pub mod transactions;

pub use events::{EventPipeline, PushAction, PushConfig};
pub use logs::LOGS_BUFFER;
pub use profiling::{read_profile, ProfileError, ProfilePolicy, MAX_PROFILE_BYTES};
pub use status::{
    build_status, internal_ip, status_packet, CpuMeta, HostIdentity, HostStats, StatusContext,
};
pub use streaming::{LogStreaming, LOG_STREAMING_DURATION};

#[cfg(test)]
pub(crate) mod test_support {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    /// Arbitrary JSON, biased towards the keys the agent reads so that
    /// nested shapes actually reach the code paths.
    pub(crate) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[a-z_:/0-9+-]{0,8}".prop_map(Value::String),
            prop_oneof![
                Just("name"),
                Just("id"),
                Just("workers"),
                Just("number"),
                Just("+1"),
                Just("-1")
            ]
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("method_name".to_owned()),
                            Just("parameters".to_owned()),
                            Just("name".to_owned()),
                            Just("id".to_owned()),
                            Just("number".to_owned()),
                            Just("process".to_owned()),
                            Just("process_id".to_owned()),
                            Just("pm_id".to_owned()),
                            Just("action_name".to_owned()),
                            "[a-z]{1,4}",
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
mod proptests {
    use super::status::build_status_with;
    use super::test_support::any_json;
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn ctx() -> StatusContext {
        StatusContext::sample("m")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any bus traffic and any process list: no panic, and what comes
        /// out is a packet whose process is normalised.
        #[test]
        fn pipeline_accepts_any_input(
            procs in prop::collection::vec(any_json(), 0..4),
            events in prop::collection::vec((prop_oneof![
                Just("log:out".to_owned()), Just("log:".to_owned()), Just("process:exception".to_owned()),
                Just("axm:reply".to_owned()), Just("human:event".to_owned()), Just("axm:trace".to_owned()),
                Just("axm:action".to_owned()), Just("process:event".to_owned()), "[a-z:]{0,10}"
            ], any_json()), 0..8),
        ) {
            let mut p = EventPipeline::new(
                PushConfig::new("m", "k"),
                LogStreaming::new(),
            );
            p.streaming().start(std::time::Duration::from_secs(60));
            p.on_status_tick(&procs);
            let status = build_status_with(&procs, &ctx(), &HostStats { uptime: 1.0, loadavg: [0.0; 3], total_mem: 1, free_mem: 1 });
            prop_assert!(status["data"]["process"].as_array().unwrap().len() <= procs.len());
            for (event, packet) in events {
                for action in p.handle(&event, packet) {
                    match action {
                        PushAction::Send(pk) => {
                            prop_assert_eq!(&pk.payload["process"]["server"], &Value::from("m"));
                        }
                        PushAction::Trace(v) => prop_assert!(v["process"].is_object()),
                        PushAction::Profile { meta, .. } => prop_assert!(meta["type"].is_string()),
                    }
                }
            }
        }

        #[test]
        fn context_accepts_any_error(mut err in any_json(), stack in "[ -~\\n]{0,60}") {
            let mut c = context::StackContext::from_fs();
            c.attach_context(&mut err);
            let mut with_stack = serde_json::json!({"stack": stack});
            c.attach_context(&mut with_stack);
        }
    }
}
