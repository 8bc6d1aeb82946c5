//! Which transporters run, where they connect, and what backs them up: the
//! settings (`config.json`, `AGENT_*`, see `crate::config::transporters`)
//! applied to the endpoints of a verifyPM2 answer.
//!
//! Every enabled transporter with a usable endpoint gets a route of its own
//! (two enabled transporters both carry everything, as in the JS agent).
//! A route of Axon gets the WebSocket endpoint PM2.io offers as a fallback,
//! unless the user disabled WebSocket explicitly. When no enabled
//! transporter has an endpoint but PM2.io offers `ws`, WebSocket is used.

use crate::common::Endpoints;
use crate::config::transporters::{EndpointSpec, Kind, TransporterSettings};

use super::TransportEndpoint;

/// What backs up a route's configured transporter.
#[derive(Debug, Clone, PartialEq)]
pub enum FallbackPlan {
    None,
    /// The WebSocket transporter at this endpoint.
    WebSocket(TransportEndpoint),
    /// No fallback, and why (said in the log when the route fails).
    Forbidden(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutePlan {
    pub kind: Kind,
    pub endpoint: TransportEndpoint,
    pub fallback: FallbackPlan,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub routes: Vec<RoutePlan>,
    /// Why the plan is not what the settings alone say, for the log.
    pub note: Option<String>,
}

impl Plan {
    /// The transporters the plan needs, per route: (configured kind, with a
    /// fallback member). Two plans of the same shape differ only by their
    /// endpoints.
    pub fn shape(&self) -> Vec<(Kind, bool)> {
        self.routes
            .iter()
            .map(|r| (r.kind, matches!(r.fallback, FallbackPlan::WebSocket(_))))
            .collect()
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

/// The plan for these settings and endpoints.
pub fn plan(settings: &[TransporterSettings], endpoints: &Endpoints) -> Plan {
    let ws = settings.iter().find(|s| s.kind == Kind::WebSocket);
    let ws_forbidden = ws.is_some_and(|s| s.explicit && !s.enabled);
    let ws_offered = endpoints.get("ws").cloned();
    let chosen: Vec<&TransporterSettings> = settings
        .iter()
        .filter(|s| s.enabled && usable(&s.endpoints, endpoints))
        .collect();
    // WebSocket enabled carries everything on its own route: no fallback.
    let fallback = if chosen.iter().any(|s| s.kind == Kind::WebSocket) {
        FallbackPlan::None
    } else if ws_forbidden {
        FallbackPlan::Forbidden(
            "AGENT_TRANSPORT_WEBSOCKET=false forbids the WebSocket fallback".into(),
        )
    } else {
        match &ws_offered {
            Some(url) => FallbackPlan::WebSocket(TransportEndpoint::Single(url.clone())),
            None => FallbackPlan::Forbidden("PM2.io offers no WebSocket endpoint".into()),
        }
    };
    if !chosen.is_empty() {
        let routes = chosen
            .iter()
            .map(|s| RoutePlan {
                kind: s.kind,
                endpoint: resolve(&s.endpoints, endpoints),
                fallback: if s.kind == Kind::WebSocket {
                    FallbackPlan::None
                } else {
                    fallback.clone()
                },
            })
            .collect();
        return Plan { routes, note: None };
    }
    match ws_offered {
        Some(url) if !ws_forbidden => {
            let enabled: Vec<_> = settings
                .iter()
                .filter(|s| s.enabled)
                .map(|s| s.kind.key())
                .collect();
            Plan {
                routes: vec![RoutePlan {
                    kind: Kind::WebSocket,
                    endpoint: TransportEndpoint::Single(url),
                    fallback: FallbackPlan::None,
                }],
                note: Some(format!(
                    "no endpoint for the enabled transporters ({}); PM2.io offers a WebSocket endpoint, using it",
                    if enabled.is_empty() { "none enabled".to_owned() } else { enabled.join(", ") }
                )),
            }
        }
        _ => Plan {
            routes: vec![],
            note: Some("no usable endpoint for any transporter".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::transporters::{apply_file, defaults, load};
    use std::collections::{BTreeMap, HashMap};

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
    fn axon(push: &str, pull: &str) -> TransportEndpoint {
        TransportEndpoint::Named(BTreeMap::from([
            ("pull".into(), pull.into()),
            ("push".into(), push.into()),
        ]))
    }
    fn single(s: &str) -> TransportEndpoint {
        TransportEndpoint::Single(s.into())
    }
    const ALL: &[(&str, &str)] = &[
        ("push", "tcp://p:1"),
        ("reverse", "tcp://r:2"),
        ("ws", "ws://w"),
    ];

    #[test]
    fn defaults_use_axon_backed_by_the_offered_websocket() {
        let s = load(None, &env(&[])).unwrap();
        let p = plan(&s, &eps(ALL));
        assert_eq!(p.note, None);
        assert_eq!(
            p.routes,
            vec![RoutePlan {
                kind: Kind::Axon,
                endpoint: axon("tcp://p:1", "tcp://r:2"),
                fallback: FallbackPlan::WebSocket(single("ws://w")),
            }]
        );
        assert_eq!(p.shape(), vec![(Kind::Axon, true)]);
        // No ws offered: Axon alone, and the log will say why.
        let p = plan(&s, &eps(&[("push", "tcp://p:1"), ("reverse", "tcp://r:2")]));
        assert!(
            matches!(&p.routes[0].fallback, FallbackPlan::Forbidden(w) if w.contains("no WebSocket"))
        );
    }

    #[test]
    fn websocket_explicitly_disabled_means_no_fallback() {
        let s = load(None, &env(&[("AGENT_TRANSPORT_WEBSOCKET", "false")])).unwrap();
        let p = plan(&s, &eps(ALL));
        assert!(
            matches!(&p.routes[0].fallback, FallbackPlan::Forbidden(w) if w.contains("AGENT_TRANSPORT_WEBSOCKET=false"))
        );
        assert_eq!(p.shape(), vec![(Kind::Axon, false)]);
        // Nor as the only transporter when Axon has no endpoint.
        let p = plan(&s, &eps(&[("ws", "ws://w")]));
        assert!(p.routes.is_empty());
    }

    #[test]
    fn websocket_when_only_ws_is_offered() {
        let s = load(None, &env(&[])).unwrap();
        let p = plan(&s, &eps(&[("ws", "ws://w"), ("web", "http://x")]));
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].kind, Kind::WebSocket);
        assert_eq!(p.routes[0].endpoint, single("ws://w"));
        assert!(p.note.unwrap().contains("axon"));
        assert!(plan(&s, &eps(&[])).routes.is_empty());
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
        let p = plan(&s, &eps(&[("ws", "ws://w")]));
        assert_eq!(p.routes[0].endpoint, single("ws://literal:1"));
        let s = load(
            None,
            &env(&[
                ("AGENT_PUSH_ENDPOINT", "tcp://127.0.0.1:5"),
                ("AGENT_REVERSE_ENDPOINT", "ws"),
            ]),
        )
        .unwrap();
        let p = plan(&s, &eps(&[("ws", "tcp://127.0.0.1:6")]));
        assert_eq!(
            p.routes[0].endpoint,
            axon("tcp://127.0.0.1:5", "tcp://127.0.0.1:6")
        );
    }

    #[test]
    fn both_enabled_each_carries_on_its_own_route() {
        let s = load(None, &env(&[("AGENT_TRANSPORT_WEBSOCKET", "true")])).unwrap();
        let p = plan(&s, &eps(ALL));
        assert_eq!(
            p.shape(),
            vec![(Kind::Axon, false), (Kind::WebSocket, false)]
        );
        assert_eq!(p.routes[0].fallback, FallbackPlan::None);
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
        let p = plan(&s, &eps(&[("web", "ws://via-web")]));
        assert_eq!(p.routes[0].endpoint, single("ws://via-web"));
        let mut s = defaults();
        apply_file(
            &mut s,
            r#"{"axon":{"endpoints":{"push":"tcp://raw:1","pull":"reverse"}}}"#,
            "config.json",
        )
        .unwrap();
        let p = plan(&s, &eps(&[("reverse", "tcp://r:2")]));
        assert_eq!(p.routes[0].endpoint, axon("tcp://raw:1", "tcp://r:2"));
    }
}
