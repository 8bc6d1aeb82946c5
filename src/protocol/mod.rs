//! Pure codecs for every wire format the agent speaks. Nothing here does I/O
//! or holds policy (timeouts, reconnects, queues): see `crate::socket`.

pub mod amp;
pub mod cipher;
pub mod ipc;
pub mod lines;
pub mod nssocket;
pub mod rpc;
pub mod sniff;
pub mod topic;
