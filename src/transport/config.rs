//! Which transporters run and where they connect: `config.json` at the
//! package root, then `AGENT_*` environment variables, then the endpoints
//! of the verifyPM2 answer (the seed README's rules).
//!
//! `endpoints` in `config.json` is a string or an object of strings; each
//! string names an endpoint of the verifyPM2 answer and is replaced by its
//! URL, or used as is when no endpoint has that name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

use super::{Endpoints, TransportEndpoint};

/// The two transporters, by their `config.json` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Axon,
    WebSocket,
}

impl Kind {
    pub fn key(self) -> &'static str {
        match self {
            Kind::Axon => "axon",
            Kind::WebSocket => "websocket",
        }
    }
}

/// A transporter's endpoint spec before resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointSpec {
    Single(String),
    Named(BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransporterSettings {
    pub kind: Kind,
    pub enabled: bool,
    pub endpoints: EndpointSpec,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigFileError {
    #[error("{file}: not valid JSON ({reason})")]
    Json { file: String, reason: String },
    #[error("{file}: expected an object of transporters")]
    NotObject { file: String },
    #[error("{file}: unknown transporter {key:?} (known: axon, websocket)")]
    UnknownTransporter { file: String, key: String },
    #[error("{file}: {key} must be {expected}")]
    BadValue {
        file: String,
        key: String,
        expected: &'static str,
    },
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
}

/// The settings the seed README documents as defaults.
pub fn defaults() -> Vec<TransporterSettings> {
    vec![
        TransporterSettings {
            kind: Kind::Axon,
            enabled: true,
            endpoints: EndpointSpec::Named(BTreeMap::from([
                ("push".into(), "push".into()),
                ("pull".into(), "reverse".into()),
            ])),
        },
        TransporterSettings {
            kind: Kind::WebSocket,
            enabled: false,
            endpoints: EndpointSpec::Single("ws".into()),
        },
    ]
}

/// Reads `config.json` (absent file → defaults) and applies the env.
pub fn load(
    file: Option<&Path>,
    env: &HashMap<String, String>,
) -> Result<Vec<TransporterSettings>, ConfigFileError> {
    let mut settings = defaults();
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Ok(text) => apply_file(&mut settings, &text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigFileError::Read {
                    file: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
    apply_env(&mut settings, env);
    Ok(settings)
}

pub fn apply_file(
    settings: &mut [TransporterSettings],
    text: &str,
    file: &str,
) -> Result<(), ConfigFileError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ConfigFileError::Json {
        file: file.into(),
        reason: e.to_string(),
    })?;
    let Value::Object(obj) = v else {
        return Err(ConfigFileError::NotObject { file: file.into() });
    };
    for (key, conf) in obj {
        let kind = match key.as_str() {
            "axon" => Kind::Axon,
            "websocket" => Kind::WebSocket,
            _ => {
                return Err(ConfigFileError::UnknownTransporter {
                    file: file.into(),
                    key,
                })
            }
        };
        let bad = |sub: &str, expected| ConfigFileError::BadValue {
            file: file.into(),
            key: format!("{key}.{sub}"),
            expected,
        };
        let Value::Object(conf) = conf else {
            return Err(ConfigFileError::BadValue {
                file: file.into(),
                key: key.clone(),
                expected: "an object with enabled and endpoints",
            });
        };
        let s = settings
            .iter_mut()
            .find(|s| s.kind == kind)
            .expect("defaults list every kind");
        match conf.get("enabled") {
            None => {}
            Some(Value::Bool(b)) => s.enabled = *b,
            Some(_) => return Err(bad("enabled", "true or false")),
        }
        match conf.get("endpoints") {
            None => {}
            Some(Value::String(e)) => s.endpoints = EndpointSpec::Single(e.clone()),
            Some(Value::Object(m)) => {
                let mut named = BTreeMap::new();
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad(&format!("endpoints.{k}"), "a string"))?;
                    named.insert(k.clone(), v.to_owned());
                }
                s.endpoints = EndpointSpec::Named(named);
            }
            Some(_) => return Err(bad("endpoints", "a string or an object of strings")),
        }
    }
    Ok(())
}

pub fn apply_env(settings: &mut [TransporterSettings], env: &HashMap<String, String>) {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    for s in settings.iter_mut() {
        let var = match s.kind {
            Kind::Axon => "AGENT_TRANSPORT_AXON",
            Kind::WebSocket => "AGENT_TRANSPORT_WEBSOCKET",
        };
        match get(var) {
            Some("true") | Some("1") => s.enabled = true,
            Some("false") | Some("0") => s.enabled = false,
            Some(other) => tracing::warn!("{var}={other:?} is neither 'true' nor 'false'; ignored"),
            None => {}
        }
        match s.kind {
            Kind::Axon => {
                for (var, key) in [
                    ("AGENT_PUSH_ENDPOINT", "push"),
                    ("AGENT_REVERSE_ENDPOINT", "pull"),
                ] {
                    if let Some(v) = get(var) {
                        match &mut s.endpoints {
                            EndpointSpec::Named(m) => {
                                m.insert(key.into(), v.into());
                            }
                            EndpointSpec::Single(_) => {
                                s.endpoints =
                                    EndpointSpec::Named(BTreeMap::from([(key.into(), v.into())]));
                            }
                        }
                    }
                }
            }
            Kind::WebSocket => {
                if let Some(v) = get("AGENT_WEBSOCKET_ENDPOINT") {
                    s.endpoints = EndpointSpec::Single(v.into());
                }
            }
        }
    }
}

/// `endpoints[s] || s`, for a string or each value of an object.
pub fn resolve(spec: &EndpointSpec, endpoints: &Endpoints) -> TransportEndpoint {
    let one = |s: &String| endpoints.get(s).cloned().unwrap_or_else(|| s.clone());
    match spec {
        EndpointSpec::Single(s) => TransportEndpoint::Single(one(s)),
        EndpointSpec::Named(m) => {
            TransportEndpoint::Named(m.iter().map(|(k, v)| (k.clone(), one(v))).collect())
        }
    }
}

/// Whether a resolved endpoint points anywhere usable: every value was
/// either found among the endpoints or looks like an address itself.
pub fn usable(spec: &EndpointSpec, endpoints: &Endpoints) -> bool {
    let ok = |s: &String| endpoints.contains_key(s) || s.contains("://") || s.contains(':');
    match spec {
        EndpointSpec::Single(s) => ok(s),
        EndpointSpec::Named(m) => !m.is_empty() && m.values().all(ok),
    }
}

/// The transporters to run for these endpoints. When none of the enabled
/// ones has a usable endpoint but the backend offers `ws`, WebSocket is used
/// (today's PM2.io only advertises `ws`); the reason is returned for the log.
pub fn select(
    settings: &[TransporterSettings],
    endpoints: &Endpoints,
) -> (Vec<(Kind, TransportEndpoint)>, Option<String>) {
    let chosen: Vec<_> = settings
        .iter()
        .filter(|s| s.enabled && usable(&s.endpoints, endpoints))
        .map(|s| (s.kind, resolve(&s.endpoints, endpoints)))
        .collect();
    if !chosen.is_empty() {
        return (chosen, None);
    }
    if let Some(ws) = endpoints.get("ws") {
        let enabled: Vec<_> = settings
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.kind.key())
            .collect();
        let why = format!(
            "no endpoint for the enabled transporters ({}); PM2.io offers a WebSocket endpoint, using it",
            if enabled.is_empty() { "none enabled".to_owned() } else { enabled.join(", ") }
        );
        return (
            vec![(Kind::WebSocket, TransportEndpoint::Single(ws.clone()))],
            Some(why),
        );
    }
    (
        vec![],
        Some("no usable endpoint for any transporter".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(pairs: &[(&str, &str)]) -> Endpoints {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_use_axon_with_push_and_reverse() {
        let s = load(None, &env(&[])).unwrap();
        let (chosen, why) = select(
            &s,
            &eps(&[
                ("push", "tcp://p:1"),
                ("reverse", "tcp://r:2"),
                ("ws", "ws://w"),
            ]),
        );
        assert_eq!(why, None);
        assert_eq!(
            chosen,
            vec![(
                Kind::Axon,
                TransportEndpoint::Named(BTreeMap::from([
                    ("pull".into(), "tcp://r:2".into()),
                    ("push".into(), "tcp://p:1".into())
                ]))
            )]
        );
    }

    #[test]
    fn ws_fallback_when_only_ws_is_offered() {
        let s = load(None, &env(&[])).unwrap();
        let (chosen, why) = select(&s, &eps(&[("ws", "ws://w"), ("web", "http://x")]));
        assert_eq!(
            chosen,
            vec![(Kind::WebSocket, TransportEndpoint::Single("ws://w".into()))]
        );
        assert!(why.unwrap().contains("axon"));
    }

    #[test]
    fn env_overrides() {
        let s = load(
            None,
            &env(&[
                ("AGENT_TRANSPORT_WEBSOCKET", "true"),
                ("AGENT_TRANSPORT_AXON", "false"),
                ("AGENT_WEBSOCKET_ENDPOINT", "ws://literal:1"),
            ]),
        )
        .unwrap();
        let (chosen, _) = select(&s, &eps(&[("ws", "ws://w")]));
        assert_eq!(
            chosen,
            vec![(
                Kind::WebSocket,
                TransportEndpoint::Single("ws://literal:1".into())
            )]
        );
        let s = load(
            None,
            &env(&[
                ("AGENT_PUSH_ENDPOINT", "tcp://127.0.0.1:5"),
                ("AGENT_REVERSE_ENDPOINT", "ws"),
            ]),
        )
        .unwrap();
        let (chosen, _) = select(&s, &eps(&[("ws", "tcp://127.0.0.1:6")]));
        assert_eq!(
            chosen,
            vec![(
                Kind::Axon,
                TransportEndpoint::Named(BTreeMap::from([
                    ("pull".into(), "tcp://127.0.0.1:6".into()),
                    ("push".into(), "tcp://127.0.0.1:5".into())
                ]))
            )]
        );
    }

    #[test]
    fn both_enabled() {
        let s = load(None, &env(&[("AGENT_TRANSPORT_WEBSOCKET", "true")])).unwrap();
        let (chosen, _) = select(
            &s,
            &eps(&[
                ("push", "tcp://p:1"),
                ("reverse", "tcp://r:2"),
                ("ws", "ws://w"),
            ]),
        );
        assert_eq!(
            chosen.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![Kind::Axon, Kind::WebSocket]
        );
    }

    #[test]
    fn config_file_string_and_object_endpoints() {
        let mut s = defaults();
        apply_file(
            &mut s,
            r#"{"websocket":{"enabled":true,"endpoints":"web"},"axon":{"enabled":false}}"#,
            "config.json",
        )
        .unwrap();
        assert_eq!(
            select(&s, &eps(&[("web", "ws://via-web")])).0,
            vec![(
                Kind::WebSocket,
                TransportEndpoint::Single("ws://via-web".into())
            )]
        );
        let mut s = defaults();
        apply_file(
            &mut s,
            r#"{"axon":{"endpoints":{"push":"tcp://raw:1","pull":"reverse"}}}"#,
            "config.json",
        )
        .unwrap();
        assert_eq!(
            select(&s, &eps(&[("reverse", "tcp://r:2")])).0,
            vec![(
                Kind::Axon,
                TransportEndpoint::Named(BTreeMap::from([
                    ("pull".into(), "tcp://r:2".into()),
                    ("push".into(), "tcp://raw:1".into())
                ]))
            )]
        );
    }

    #[test]
    fn malformed_config_is_a_clear_error() {
        let mut s = defaults();
        assert_eq!(
            apply_file(&mut s, r#"{"carrier_pigeon":{}}"#, "/pkg/config.json"),
            Err(ConfigFileError::UnknownTransporter {
                file: "/pkg/config.json".into(),
                key: "carrier_pigeon".into()
            })
        );
        let e = apply_file(&mut s, r#"{"axon":{"enabled":"yes"}}"#, "c.json").unwrap_err();
        assert_eq!(e.to_string(), "c.json: axon.enabled must be true or false");
        let e = apply_file(&mut s, r#"{"websocket":{"endpoints":[1]}}"#, "c.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.json: websocket.endpoints must be a string or an object of strings"
        );
        assert!(matches!(
            apply_file(&mut s, "{", "c.json"),
            Err(ConfigFileError::Json { .. })
        ));
        assert!(matches!(
            apply_file(&mut s, "[]", "c.json"),
            Err(ConfigFileError::NotObject { .. })
        ));
    }
}
