//! `POST {KEYMETRICS_NODE}/api/node/verifyPM2` and what its answer means
//! (docs/protocols.md §8). The request is sent by [`verify`]; [`judge`] is the
//! pure decision the daemon takes on the answer.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::Endpoints;
use crate::config::DaemonConfig;
use crate::net::{self, http, NetOptions, Url};

/// Verification attempts after the first one, as in the JS daemon.
pub const MAX_RETRIES: u32 = 30;
/// Delay before retry `n` (1-based) is `n ×` this.
pub const RETRY_STEP: Duration = Duration::from_millis(200);

/// The `REFUSED` text of the JS daemon, kept verbatim for the CLI.
pub const REFUSED: &str =
    "Connection refused, you might have hit the limit of agents you can connect (send email at contact@keymetrics.io for more infos)";

/// What the daemon does with one verifyPM2 answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Try again later; the text says why.
    Retry {
        reason: String,
        km_data: Option<Value>,
    },
    /// `active === false`: report to the parent; exit 1 when `error === true`.
    Inactive { km_data: Value, fatal: bool },
    /// Connect the transporters to these endpoints.
    Active {
        km_data: Value,
        endpoints: Endpoints,
    },
}

pub fn judge(answer: Result<Value, String>) -> Verdict {
    let data = match answer {
        Ok(v) => v,
        Err(reason) => {
            return Verdict::Retry {
                reason,
                km_data: None,
            }
        }
    };
    let Some(obj) = data.as_object() else {
        return Verdict::Retry {
            reason: format!("verifyPM2 answered {data} (not an object)"),
            km_data: None,
        };
    };
    let flag = |k: &str| obj.get(k) == Some(&Value::Bool(true));
    if flag("disabled") || flag("pending") {
        return Verdict::Retry {
            reason: REFUSED.into(),
            km_data: Some(data.clone()),
        };
    }
    if obj.get("active") == Some(&Value::Bool(false)) {
        return Verdict::Inactive {
            fatal: flag("error"),
            km_data: data.clone(),
        };
    }
    let Some(Value::Object(eps)) = obj.get("endpoints") else {
        return Verdict::Retry {
            reason: format!("Endpoints field not present ({data})"),
            km_data: None,
        };
    };
    let endpoints = eps
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect();
    Verdict::Active {
        km_data: data.clone(),
        endpoints,
    }
}

/// The request body: keys, then the system metadata.
pub fn body(cfg: &DaemonConfig) -> Value {
    json!({
        "public_id": cfg.identity.public_key,
        "private_id": cfg.identity.secret_key,
        "data": cfg.system_metadata(),
    })
}

/// Sends one verifyPM2 request and parses the answer as JSON, whatever the
/// HTTP status (the backend answers errors in JSON too).
pub async fn verify(cfg: &DaemonConfig, opts: &NetOptions) -> Result<Value, String> {
    let base = Url::parse(&normalise_root(&cfg.root_url)).map_err(|e| e.to_string())?;
    let url = base.join("/api/node/verifyPM2");
    let headers = vec![(
        "User-Agent".to_owned(),
        format!("PM2 Agent v{}", cfg.identity.agent_version),
    )];
    let res = http::post_json(&url, &body(cfg), &headers, opts)
        .await
        .map_err(|e: net::NetError| e.to_string())?;
    parse_answer(&res)
}

/// The answer's body as JSON, whatever the HTTP status.
pub(crate) fn parse_answer(res: &http::HttpResponse) -> Result<Value, String> {
    serde_json::from_slice(&res.body).map_err(|e| {
        format!(
            "verifyPM2 answered HTTP {} with a body that is not JSON ({e})",
            res.status
        )
    })
}

/// The CLI prefixes `https://` when the stored value has no `http`.
pub fn normalise_root(root: &str) -> String {
    if root.contains("http") {
        root.to_owned()
    } else {
        format!("https://{root}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert!(matches!(
            judge(Err("refused".into())),
            Verdict::Retry { .. }
        ));
        assert!(matches!(judge(Ok(json!(null))), Verdict::Retry { .. }));
        match judge(Ok(json!({"disabled": true, "active": true}))) {
            Verdict::Retry { reason, km_data } => {
                assert_eq!(reason, REFUSED);
                assert!(km_data.is_some());
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            judge(Ok(json!({"pending": true}))),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            judge(Ok(json!({"active": false, "error": true, "msg": "x"}))),
            Verdict::Inactive { fatal: true, .. }
        ));
        assert!(matches!(
            judge(Ok(json!({"active": false}))),
            Verdict::Inactive { fatal: false, .. }
        ));
        match judge(Ok(json!({"active": true}))) {
            Verdict::Retry { reason, .. } => {
                assert!(reason.starts_with("Endpoints field not present ({"))
            }
            v => panic!("{v:?}"),
        }
        match judge(Ok(
            json!({"active": true, "endpoints": {"ws": "ws://x", "web": "http://w", "n": 1}}),
        )) {
            Verdict::Active { endpoints, .. } => {
                assert_eq!(endpoints.get("ws").map(String::as_str), Some("ws://x"));
                assert!(!endpoints.contains_key("n"));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn roots() {
        assert_eq!(
            normalise_root("root.keymetrics.io"),
            "https://root.keymetrics.io"
        );
        assert_eq!(normalise_root("http://127.0.0.1:3"), "http://127.0.0.1:3");
    }
}
