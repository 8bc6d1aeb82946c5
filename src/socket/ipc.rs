//! The child end of Node's IPC channel (`NODE_CHANNEL_FD`), for a process
//! that is not itself Node. Inside `node InteractorDaemon.js` Node owns the
//! channel and the daemon's message goes through `process.send`; this is the
//! same wire format for other hosts (and for tests).

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use serde_json::Value;

use crate::protocol::ipc::{self, IpcError};

pub struct IpcChannel {
    stream: UnixStream,
}

#[derive(Debug, thiserror::Error)]
pub enum IpcChannelError {
    #[error("no IPC channel (NODE_CHANNEL_FD unset)")]
    Absent,
    #[error("NODE_CHANNEL_FD is not a file descriptor number: {0:?}")]
    BadFd(String),
    #[error("NODE_CHANNEL_SERIALIZATION_MODE {0:?} is not supported (only json)")]
    Serialization(String),
    #[error(transparent)]
    Encode(#[from] IpcError),
    #[error("IPC write failed: {0}")]
    Io(#[from] std::io::Error),
}

impl IpcChannel {
    /// Takes the channel from the environment and removes the variables, so
    /// children of this process do not inherit them (as Node does).
    pub fn from_env() -> Result<IpcChannel, IpcChannelError> {
        let fd = std::env::var("NODE_CHANNEL_FD").map_err(|_| IpcChannelError::Absent)?;
        let mode =
            std::env::var("NODE_CHANNEL_SERIALIZATION_MODE").unwrap_or_else(|_| "json".into());
        if mode != "json" {
            return Err(IpcChannelError::Serialization(mode));
        }
        let raw: i32 = fd
            .trim()
            .parse()
            .map_err(|_| IpcChannelError::BadFd(fd.clone()))?;
        if raw < 0 {
            return Err(IpcChannelError::BadFd(fd));
        }
        // SAFETY: Node hands the child this fd for exactly this purpose and
        // nothing else in this process uses it once the variable is removed.
        let stream = unsafe { UnixStream::from_raw_fd(raw) };
        // SAFETY: called before any other thread reads these variables.
        unsafe {
            std::env::remove_var("NODE_CHANNEL_FD");
            std::env::remove_var("NODE_CHANNEL_SERIALIZATION_MODE");
        }
        Ok(IpcChannel { stream })
    }

    pub fn send(&mut self, msg: &Value) -> Result<(), IpcChannelError> {
        let line = ipc::encode(msg)?;
        self.stream.write_all(line.as_bytes())?;
        Ok(())
    }
}
