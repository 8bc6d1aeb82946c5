//! Transporter settings: `config.json` at the package root, then the
//! `AGENT_*` environment variables (the rules of the README). How they
//! apply to the endpoints of a verifyPM2 answer is `crate::transport::plan`.
//!
//! `endpoints` in `config.json` is a string or an object of strings; each
//! string names an endpoint of the verifyPM2 answer and is replaced by its
//! URL, or used as is when no endpoint has that name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

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
    /// `enabled` was set by the user's environment (`AGENT_TRANSPORT_*`),
    /// not by the shipped defaults: an explicit `false` forbids using this
    /// transporter as a fallback.
    pub explicit: bool,
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
            explicit: false,
            endpoints: EndpointSpec::Named(BTreeMap::from([
                ("push".into(), "push".into()),
                ("pull".into(), "reverse".into()),
            ])),
        },
        TransporterSettings {
            kind: Kind::WebSocket,
            enabled: false,
            explicit: false,
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
            Some("true") | Some("1") => {
                s.enabled = true;
                s.explicit = true;
            }
            Some("false") | Some("0") => {
                s.enabled = false;
                s.explicit = true;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
