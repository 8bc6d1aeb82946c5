//! keymetrics-agent: the PM2.io agent in Rust.
//!
//! - [`common`]: the shared vocabulary (packets, identity, endpoints, JS
//!   value rules), below every layer;
//!
//! Layers, bottom-up (data flows PM2 → push → transport → PM2.io and back
//! PM2.io → transport → reverse → PM2):
//! - [`protocol`]: pure codecs (AMP, rpc, nssocket, cipher, IPC, topics);
//! - [`socket`]: axon sockets, rpc client/server, nssocket and IPC I/O;
//! - [`push`]: status, bus events, logs, exception context, profiles → packets;
//! - [`reverse`]: PM2.io triggers (`trigger:*`) → PM2 RPC calls → reply packets;
//! - [`inspect`]: `PM2_AGENT_INSPECT`, a local read-only view of every
//!   packet handed to the transporters;
//! - `binding` (feature `node`): the napi exports, nothing else;
//! - [`host`] (Unix): the daemon as its own process, without Node (the
//!   `keymetrics-agent-daemon` binary).

pub mod common;
pub mod config;
pub mod daemon;
mod entropy;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(unix)]
pub mod host;
pub mod inspect;
pub mod logging;
pub mod net;
pub mod pm2;
#[cfg(test)]
mod portability;
pub mod protocol;
pub mod push;
pub mod reverse;
pub mod socket;
pub mod transport;

#[cfg(feature = "node")]
mod binding;
