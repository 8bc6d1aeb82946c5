//! The running daemon's transporters, built from a [`Plan`]: one [`Route`]
//! per configured transporter (each carries every packet, like the JS
//! `TransporterInterface` fans out), each with its fallback if the plan
//! gives one. Also what `getInfos` reports about them.

use std::sync::{Arc, Weak};

use serde_json::{json, Value};

use super::plan::{FallbackPlan, Plan};
use super::route::{Role, Route};
use super::spool::SpoolConfig;
use super::{TransportEndpoint, Transporter};
use crate::common::drops::Drops;
use crate::common::Packet;
use crate::config::transporters::Kind;
use crate::inspect::traffic::Traffic;

/// Builds a transporter of `kind` joining `route` (the daemon knows the
/// options); `None` when it cannot (logged by the factory).
pub type Factory<'a> = &'a dyn Fn(Kind, Arc<Route>, Role) -> Option<Arc<dyn Transporter>>;

struct HubRoute {
    route: Arc<Route>,
    kind: Kind,
    configured: Arc<dyn Transporter>,
    fallback: Option<Arc<dyn Transporter>>,
}

#[derive(Default)]
pub struct Hub {
    routes: Vec<HubRoute>,
    /// The inspector's recorder (`PM2_AGENT_INSPECT`); `None`, the usual
    /// case, costs one branch per packet.
    tap: Option<Arc<Traffic>>,
}

impl Hub {
    /// The transporters `plan` needs, not connected yet (see [`Hub::apply`]).
    /// Each route keeps at most `offline_cap` packets while nothing carries
    /// it and weighs at most `queue_bytes`; all count their drops in `drops`.
    /// `spool(i)` gives route `i` its disk spool (see `Route::with_spool`).
    pub fn build(
        plan: &Plan,
        factory: Factory<'_>,
        offline_cap: usize,
        queue_bytes: usize,
        drops: &Arc<Drops>,
        spool: &dyn Fn(usize) -> Option<SpoolConfig>,
    ) -> Hub {
        let mut routes = Vec::new();
        for (i, r) in plan.routes.iter().enumerate() {
            let route = Arc::new(Route::with_spool(
                offline_cap,
                queue_bytes,
                drops.clone(),
                spool(i),
            ));
            let Some(configured) = factory(r.kind, route.clone(), Role::Configured) else {
                continue;
            };
            let fallback = match r.fallback {
                FallbackPlan::WebSocket(_) => {
                    factory(Kind::WebSocket, route.clone(), Role::Fallback)
                }
                _ => None,
            };
            routes.push(HubRoute {
                route,
                kind: r.kind,
                configured,
                fallback,
            });
        }
        Hub { routes, tap: None }
    }

    /// Records every packet this hub hands to its transporters into `tap`.
    pub fn with_tap(mut self, tap: Option<Arc<Traffic>>) -> Hub {
        self.tap = tap;
        self
    }

    /// Per route: (configured kind, has a fallback), to compare with
    /// [`Plan::shape`].
    pub fn shape(&self) -> Vec<(Kind, bool)> {
        self.routes
            .iter()
            .map(|r| (r.kind, r.fallback.is_some()))
            .collect()
    }

    /// Points the transporters at the plan's endpoints (a plan of the same
    /// shape as the one the hub was built from). Unchanged endpoints are a
    /// no-op: never a second socket.
    pub fn apply(&self, plan: &Plan) {
        for (r, p) in self.routes.iter().zip(&plan.routes) {
            r.configured.connect(p.endpoint.clone());
            match (&p.fallback, &r.fallback) {
                (FallbackPlan::WebSocket(endpoint), Some(fb)) => {
                    let weak: Weak<dyn Transporter> = Arc::downgrade(fb);
                    let to = endpoint.clone();
                    r.route.set_fallback(
                        describe(endpoint),
                        Arc::new(move |on| {
                            if let Some(fb) = weak.upgrade() {
                                if on {
                                    fb.connect(to.clone());
                                } else {
                                    fb.disconnect();
                                }
                            }
                        }),
                    );
                }
                (FallbackPlan::Forbidden(why), _) => r.route.forbid_fallback(why.clone()),
                _ => {}
            }
        }
    }

    /// Hands `packet` to every route; never blocks. This is where every
    /// outgoing packet passes once: the inspector's tap records it here
    /// (synchronously, bounded, a short lock; see [`Traffic::record`]).
    pub fn send(&self, packet: Packet) {
        if let (Some(tap), false) = (&self.tap, self.routes.is_empty()) {
            tap.record(&packet);
        }
        self.push(packet);
    }

    fn push(&self, packet: Packet) {
        if let Some((last, rest)) = self.routes.split_last() {
            for r in rest {
                r.route.push(packet.clone());
            }
            last.route.push(packet);
        }
    }

    pub fn disconnect(&self) {
        for r in &self.routes {
            r.route.forbid_fallback("the agent is disconnecting".into());
            r.configured.disconnect();
            if let Some(fb) = &r.fallback {
                fb.disconnect();
            }
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn Transporter>> {
        self.routes
            .iter()
            .flat_map(|r| std::iter::once(&r.configured).chain(r.fallback.as_ref()))
    }

    /// True when every route has a proven transporter carrying it.
    pub fn is_connected(&self) -> bool {
        !self.routes.is_empty() && self.routes.iter().all(|r| r.route.is_carried())
    }

    /// Names of the transporters carrying traffic (`getInfos.transporters`).
    pub fn active_transporters(&self) -> Vec<&'static str> {
        self.routes
            .iter()
            .filter_map(|r| r.route.carrier_name())
            .collect()
    }

    /// The most recent problem of a transporter that is not proven.
    pub fn last_error(&self) -> Option<String> {
        self.all()
            .filter(|t| !t.is_connected())
            .find_map(|t| t.last_error())
    }

    /// Stops this hub's transporters and hands every packet still queued
    /// to `next` (a re-verification changed which transporters run), so a
    /// rebuild loses nothing that was waiting, and sends nothing twice.
    ///
    /// Every route is given the same packets in the same order and each
    /// takes from its front, so what one route still holds is a tail of
    /// that stream, and the longest queue holds all the others: it alone
    /// is handed on; the other queues are copies of part of it.
    pub fn replace_with(&self, next: &Hub) {
        self.disconnect();
        let mut queues: Vec<Vec<Packet>> = self.routes.iter().map(|r| r.route.drain()).collect();
        let longest = (0..queues.len()).max_by_key(|&i| queues[i].len());
        if let Some(i) = longest {
            // Already recorded when first sent.
            for p in queues.swap_remove(i) {
                next.push(p);
            }
        }
    }

    /// Every transporter's state for `getInfos.transport`.
    pub fn infos(&self) -> Value {
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let drops = r.route.drops();
                json!({
                    "carrier": r.route.carrier_name(),
                    "queued": r.route.queued(),
                    "queued_bytes": r.route.queued_bytes(),
                    "spool": r.route.spool_info(),
                    "dropped": {
                        "queue_full": drops.queue_full,
                        "superseded": drops.superseded,
                    },
                    "transporters": r.route.members().iter().map(|m| m.to_json()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "routes": routes })
    }
}

/// A resolved endpoint as one string (the Axon pair as `push=… pull=…`).
pub fn describe(e: &TransportEndpoint) -> String {
    match e {
        TransportEndpoint::Single(s) => s.clone(),
        TransportEndpoint::Named(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::traffic::{ManualClock, Traffic};
    use crate::transport::plan::RoutePlan;

    struct Idle;
    impl Transporter for Idle {
        fn name(&self) -> &'static str {
            "Idle"
        }
        fn connect(&self, _: TransportEndpoint) {}
        fn disconnect(&self) {}
        fn send(&self, _: Packet) {}
        fn is_connected(&self) -> bool {
            false
        }
        fn last_error(&self) -> Option<String> {
            None
        }
    }

    fn hub(routes: usize, tap: Option<Arc<Traffic>>) -> Hub {
        let plan = Plan {
            routes: (0..routes)
                .map(|_| RoutePlan {
                    kind: Kind::WebSocket,
                    endpoint: TransportEndpoint::Single("ws://127.0.0.1:1".into()),
                    fallback: FallbackPlan::None,
                })
                .collect(),
            note: None,
        };
        Hub::build(
            &plan,
            &|_, _, _| Some(Arc::new(Idle) as Arc<dyn Transporter>),
            100,
            1 << 20,
            &Arc::default(),
            &|_| None,
        )
        .with_tap(tap)
    }

    fn logs(i: u64) -> Packet {
        Packet::new("logs", serde_json::json!({ "i": i }))
    }

    #[test]
    fn the_tap_records_each_packet_once_whatever_the_routes() {
        let traffic = Arc::new(Traffic::new(ManualClock::new(0).clock()));
        let h = hub(2, Some(traffic.clone()));
        for i in 0..3 {
            h.send(logs(i));
        }
        let s = traffic.snapshot();
        assert_eq!(s.channels[0].packets, 3, "once, not once per route");
        assert!(h.routes.iter().all(|r| r.route.queued() == 3));
    }

    #[test]
    fn packets_handed_to_a_rebuilt_hub_are_not_recorded_again() {
        let traffic = Arc::new(Traffic::new(ManualClock::new(0).clock()));
        let h = hub(1, Some(traffic.clone()));
        for i in 0..3 {
            h.send(logs(i));
        }
        let next = hub(1, Some(traffic.clone()));
        h.replace_with(&next);
        assert_eq!(next.routes[0].route.queued(), 3);
        assert_eq!(traffic.snapshot().channels[0].packets, 3);
    }

    #[test]
    fn a_rebuild_from_two_routes_hands_each_waiting_packet_on_once() {
        let h = hub(2, None);
        // The second route still holds a packet the first one carried.
        h.routes[1].route.push(logs(0));
        for i in 1..3 {
            h.send(logs(i));
        }
        assert_eq!(h.routes[0].route.queued(), 2);
        let next = hub(1, None);
        h.replace_with(&next);
        let handed: Vec<Packet> = next.routes[0].route.drain();
        assert_eq!(handed, vec![logs(0), logs(1), logs(2)]);
        assert!(h.routes.iter().all(|r| r.route.queued() == 0));
    }

    #[test]
    fn nothing_is_recorded_without_a_transporter_or_a_tap() {
        let traffic = Arc::new(Traffic::new(ManualClock::new(0).clock()));
        hub(0, Some(traffic.clone())).send(logs(0));
        assert!(traffic.snapshot().channels.is_empty());
        let h = hub(1, None);
        h.send(logs(0));
        assert_eq!(h.routes[0].route.queued(), 1);
    }
}
