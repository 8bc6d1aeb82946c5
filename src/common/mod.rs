//! Vocabulary shared by several layers (push, reverse, transport, config,
//! daemon): what a packet is, who the agent is, where PM2.io lives, and the
//! JavaScript value rules the JS agent relies on. Nothing here does I/O.

pub mod child_env;
pub mod drops;
pub mod identity;
pub mod js;
pub mod packet;

pub use identity::{Endpoints, Identity};
pub use packet::Packet;
