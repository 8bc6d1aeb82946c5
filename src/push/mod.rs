//! The push side: what the agent sends to PM2.io about PM2 and its apps.
//!
//! Pure logic, no sockets: the daemon feeds it PM2's `getMonitorData` list
//! every second ([`status::build_status`]).

mod host;
pub(crate) mod js;
pub mod status;

pub use status::{
    build_status, internal_ip, status_packet, HostIdentity, HostStats, StatusContext,
};
