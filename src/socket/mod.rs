//! Sockets with behaviour: connections, reconnects, correlation, fan-out.
//! They use the codecs of `crate::protocol` and hold the limits (queues,
//! timeouts, buffer sizes) that the JS libraries lack.

pub mod backoff;
pub mod connection;
pub mod endpoint;
#[cfg(unix)]
pub mod ipc;
pub mod liveness;
pub mod nssocket;
pub mod publisher;
pub mod rep;
pub mod req;
pub mod rpc;
pub mod sub_emitter;
