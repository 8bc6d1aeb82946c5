//! Fan-out over the enabled transporters (the JS `TransporterInterface`,
//! agent-spec.md §5.1). Inbound packets need no merging here: every
//! transporter is built with a clone of the same inbound `mpsc::Sender`.
//! Which transporters exist and how endpoints map to them is decided by the
//! caller.

use std::sync::Arc;

use super::{Packet, TransportEndpoint, TransportStats, Transporter};

pub struct Hub {
    transporters: Vec<Arc<dyn Transporter>>,
}

impl Hub {
    pub fn new(transporters: Vec<Arc<dyn Transporter>>) -> Self {
        Hub { transporters }
    }

    pub fn transporters(&self) -> &[Arc<dyn Transporter>] {
        &self.transporters
    }

    /// Hands `packet` to every transporter (each applies its own offline
    /// rules); never blocks.
    pub fn send(&self, packet: Packet) {
        if let Some((last, rest)) = self.transporters.split_last() {
            for t in rest {
                t.send(packet.clone());
            }
            last.send(packet);
        }
    }

    /// Connects each transporter to the endpoint `endpoint_for` gives for it
    /// (by name); `None` leaves that transporter alone. Transporters treat
    /// an unchanged endpoint as a no-op, so calling this after every
    /// re-verification is cheap and never opens a second socket.
    pub fn connect(&self, endpoint_for: impl Fn(&dyn Transporter) -> Option<TransportEndpoint>) {
        for t in &self.transporters {
            match endpoint_for(t.as_ref()) {
                Some(endpoint) => t.connect(endpoint),
                None => tracing::debug!(
                    transporter = t.name(),
                    "no endpoint for transporter, not connecting"
                ),
            }
        }
    }

    pub fn disconnect(&self) {
        for t in &self.transporters {
            t.disconnect();
        }
    }

    /// True when at least one transporter is connected.
    pub fn is_connected(&self) -> bool {
        self.transporters.iter().any(|t| t.is_connected())
    }

    /// Names of the connected transporters (`getInfos.transporters`).
    pub fn active_transporters(&self) -> Vec<&'static str> {
        self.transporters
            .iter()
            .filter(|t| t.is_connected())
            .map(|t| t.name())
            .collect()
    }

    /// Counters summed over all transporters.
    pub fn stats(&self) -> TransportStats {
        self.transporters
            .iter()
            .map(|t| t.stats())
            .fold(TransportStats::default(), |a, b| TransportStats {
                sent: a.sent + b.sent,
                queued: a.queued + b.queued,
                dropped: a.dropped + b.dropped,
                inbound_dropped: a.inbound_dropped + b.inbound_dropped,
                connects: a.connects + b.connects,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// Records calls; "connected" once connect() was called.
    struct Fake {
        name: &'static str,
        connected: AtomicBool,
        sent: Mutex<Vec<Packet>>,
        endpoints: Mutex<Vec<TransportEndpoint>>,
    }

    impl Fake {
        fn new(name: &'static str) -> Arc<Fake> {
            Arc::new(Fake {
                name,
                connected: AtomicBool::new(false),
                sent: Mutex::default(),
                endpoints: Mutex::default(),
            })
        }
    }

    impl Transporter for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn connect(&self, endpoint: TransportEndpoint) {
            self.endpoints.lock().unwrap().push(endpoint);
            self.connected.store(true, Ordering::Relaxed);
        }
        fn disconnect(&self) {
            self.connected.store(false, Ordering::Relaxed);
        }
        fn send(&self, packet: Packet) {
            self.sent.lock().unwrap().push(packet);
        }
        fn is_connected(&self) -> bool {
            self.connected.load(Ordering::Relaxed)
        }
        fn last_error(&self) -> Option<String> {
            None
        }
    }

    #[test]
    fn fans_out_and_reports() {
        let ws = Fake::new("WebsocketTransport");
        let axon = Fake::new("AxonTransport");
        let hub = Hub::new(vec![ws.clone(), axon.clone()]);
        assert!(!hub.is_connected());
        assert!(hub.active_transporters().is_empty());

        hub.send(Packet::new("logs", json!({"data": "x"})));
        assert_eq!(ws.sent.lock().unwrap().len(), 1);
        assert_eq!(
            axon.sent.lock().unwrap()[0],
            Packet::new("logs", json!({"data": "x"}))
        );

        hub.connect(|t| {
            (t.name() == "WebsocketTransport")
                .then(|| TransportEndpoint::Single("ws://127.0.0.1:1".into()))
        });
        assert_eq!(
            *ws.endpoints.lock().unwrap(),
            [TransportEndpoint::Single("ws://127.0.0.1:1".into())]
        );
        assert!(axon.endpoints.lock().unwrap().is_empty());
        assert!(hub.is_connected());
        assert_eq!(hub.active_transporters(), ["WebsocketTransport"]);

        hub.disconnect();
        assert!(!hub.is_connected());
        assert_eq!(hub.stats(), TransportStats::default());

        // No transporter at all: nothing to do, nothing breaks.
        let empty = Hub::new(Vec::new());
        empty.send(Packet::new("logs", json!(1)));
        assert!(!empty.is_connected());
    }
}
