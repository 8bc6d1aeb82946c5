//! The daemon's running parts once verified: PM2 client, transporters,
//! push (status + bus events) and reverse (remote actions).

use std::sync::Arc;

use crate::config::DaemonConfig;
use crate::transport::Endpoints;

#[derive(Clone)]
pub struct Workers {
    cfg: Arc<DaemonConfig>,
}

impl Workers {
    pub fn start(cfg: Arc<DaemonConfig>, endpoints: Option<Endpoints>) -> Workers {
        let _ = endpoints;
        Workers { cfg }
    }

    pub fn connect_transports(&self, endpoints: &Endpoints) {
        let _ = (endpoints, &self.cfg);
    }

    pub fn disconnect_transports(&self) {}

    pub fn is_connected(&self) -> bool {
        false
    }

    pub fn active_transporters(&self) -> Vec<String> {
        vec![]
    }

    pub fn last_error(&self) -> Option<String> {
        None
    }

    pub async fn stop(&self) {}
}
