//! One agent per `PM2_HOME`: `agent.lock`.
//!
//! The daemon takes an exclusive lock on `$PM2_HOME/agent.lock` before it
//! binds anything (`flock(LOCK_EX | LOCK_NB)` through [`File::try_lock`]).
//! The lock lives as long as the open file: the kernel releases it when the
//! daemon exits or dies (SIGKILL included), so a lock file left behind by a
//! dead agent never blocks a start. The file is opened close-on-exec (Rust
//! opens every file with `O_CLOEXEC`), so nothing the agent starts (the
//! watchdog's `pm2 resurrect` and the PM2 daemon it leaves behind, a
//! rescued agent) inherits it. The file holds the holder's pid (and its
//! mtime says when it was taken): for people, for the log, and for
//! launchers, which tell by it which agent they found (`launchOrAttach`);
//! the lock itself is what decides.
//!
//! A daemon that finds the lock taken (another launcher's daemon won the
//! race, or the previous agent is still shutting down after `kill`) does
//! not bind, write or remove anything. It waits, at most [`ATTACH_WAIT`],
//! for one of two things:
//! - the lock comes free (the holder exited): it takes it and starts as
//!   usual;
//! - the holder has an outcome to give (the `launchOutcome` RPC on
//!   `interactor.sock`: the IPC message it sent its own launcher, or the
//!   same message for its current state): it forwards it to its own parent
//!   unchanged (the holder's pid in it) and exits 0.
//!
//! So every concurrent launcher is answered with the running agent's
//! outcome, and the losers leave quietly (the JS agent had no such guard:
//! docs/js-agent-behaviour.md §6.21).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::{HostEvent, Stop};
use crate::config::DaemonConfig;
use crate::socket::endpoint::Endpoint;
use crate::socket::req::ReqOptions;
use crate::socket::rpc::RpcClient;

/// The lock file's name in `PM2_HOME`.
pub const LOCK_FILE: &str = "agent.lock";
/// How long a daemon that found the lock taken waits for the lock or for
/// the holder's outcome before leaving (longer than a launcher waits for
/// an answer, 7 s, and than the previous agent takes to shut down).
pub const ATTACH_WAIT: Duration = Duration::from_secs(15);
/// How often the waiting daemon tries the lock and asks the holder.
const POLL: Duration = Duration::from_millis(100);
/// Deadline of one `launchOutcome` call.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// The RPC method that gives a running agent's outcome.
pub const OUTCOME_METHOD: &str = "launchOutcome";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the agent lock {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock. Dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct AgentLock {
    // Held for its lock; closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl AgentLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The outcome of one attempt.
#[derive(Debug)]
pub enum TryLock {
    Acquired(AgentLock),
    /// Another process holds it; `holder` is the pid its file names (if it
    /// could be read).
    Busy {
        holder: Option<u32>,
    },
}

/// `$PM2_HOME/agent.lock`.
pub fn lock_path(pm2_home: &Path) -> PathBuf {
    pm2_home.join(LOCK_FILE)
}

/// One attempt at the lock, without waiting. On success the file names
/// this process.
pub fn try_lock(pm2_home: &Path) -> Result<TryLock, LockError> {
    let path = lock_path(pm2_home);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&path).map_err(|source| LockError::Open {
        path: path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => {
            // Written over the previous pid, then cut to length: a reader
            // sees one pid or the other, never an empty file. A failure
            // to record it is no reason to give the lock up.
            let pid = std::process::id();
            let line = format!("{pid}\n");
            let written = file
                .seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(line.as_bytes()))
                .and_then(|_| file.set_len(line.len() as u64));
            if let Err(e) = written {
                tracing::debug!(path = %path.display(), "could not record our pid in the lock file: {e}");
            }
            Ok(TryLock::Acquired(AgentLock { _file: file, path }))
        }
        Err(TryLockError::WouldBlock) => Ok(TryLock::Busy {
            holder: holder_pid(&path),
        }),
        Err(TryLockError::Error(source)) => Err(LockError::Lock { path, source }),
    }
}

/// The pid a lock file names.
fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How [`claim`] ended.
#[derive(Debug)]
pub enum Claim {
    /// This daemon is the agent of its `PM2_HOME`.
    Won(AgentLock),
    /// Another agent runs; its outcome was forwarded to our parent.
    Answered { holder: Option<u32> },
    /// Another agent runs and gave no outcome within [`ATTACH_WAIT`].
    GaveUp { holder: Option<u32> },
    /// Asked to stop while waiting.
    Stopped,
    /// The lock file cannot be used.
    Failed(LockError),
}

/// Takes the lock, or waits for it or for the holder's outcome (see the
/// module documentation). Writes `agent.pid` once the lock is ours.
pub async fn claim(
    cfg: &DaemonConfig,
    host: &mpsc::Sender<HostEvent>,
    stop_rx: &mut watch::Receiver<Option<Stop>>,
) -> Claim {
    let home = &cfg.paths.pm2_home;
    let first_holder = match try_lock(home) {
        Ok(TryLock::Acquired(lock)) => return won(cfg, lock),
        Ok(TryLock::Busy { holder }) => holder,
        Err(e) => return Claim::Failed(e),
    };
    tracing::info!(
        holder = first_holder,
        lock = %lock_path(home).display(),
        "another agent holds this PM2_HOME; waiting for its outcome"
    );
    let client = match Endpoint::parse(&cfg.paths.interactor_sock.to_string_lossy()) {
        Ok(ep) => Some(RpcClient::connect(
            ep,
            ReqOptions {
                timeout: ASK_TIMEOUT,
                max_queued: 1,
                max_pending: 1,
                ..Default::default()
            },
        )),
        Err(e) => {
            tracing::warn!("cannot reach {}: {e}", cfg.paths.interactor_sock.display());
            None
        }
    };
    let deadline = tokio::time::Instant::now() + ATTACH_WAIT;
    let mut holder = first_holder;
    let claim = loop {
        if let Some(c) = &client {
            if let Some(msg) = ask_outcome(c).await {
                if host.send(HostEvent::SendToParent(msg)).await.is_err() {
                    tracing::debug!("host gone; the running agent's outcome not delivered");
                }
                break Claim::Answered { holder };
            }
        }
        // No outcome (yet): the holder may be starting, or stopping.
        match try_lock(home) {
            Ok(TryLock::Acquired(lock)) => {
                tracing::info!(previous = holder, "the lock came free");
                break won(cfg, lock);
            }
            Ok(TryLock::Busy { holder: h }) => holder = h.or(holder),
            Err(e) => break Claim::Failed(e),
        }
        if tokio::time::Instant::now() >= deadline {
            break Claim::GaveUp { holder };
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop_rx.wait_for(Option::is_some) => break Claim::Stopped,
        }
    };
    if let Some(c) = client {
        c.close().await;
    }
    claim
}

/// The lock is ours: name ourselves in `agent.pid`.
fn won(cfg: &DaemonConfig, lock: AgentLock) -> Claim {
    let pid = std::process::id();
    if let Err(e) = std::fs::write(&cfg.paths.pid_file, pid.to_string()) {
        tracing::warn!(file = %cfg.paths.pid_file.display(), "could not write the pid file: {e}");
    }
    tracing::debug!(lock = %lock.path().display(), pid, "agent lock taken");
    Claim::Won(lock)
}

/// The holder's outcome, if it has one (`None` while it verifies, stops,
/// or does not answer).
async fn ask_outcome(client: &RpcClient) -> Option<Value> {
    match client
        .call_with_timeout(OUTCOME_METHOD, vec![], Some(ASK_TIMEOUT))
        .await
    {
        Ok(mut args) if !args.is_empty() => {
            let msg = args.swap_remove(0);
            msg.is_object().then_some(msg)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::trace!("{OUTCOME_METHOD}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ka-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = home("excl");
        let first = match try_lock(&dir).unwrap() {
            TryLock::Acquired(l) => l,
            other => panic!("{other:?}"),
        };
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(lock_path(&dir)).unwrap(),
            format!("{pid}\n")
        );
        // A second open file description is refused, even in this process.
        match try_lock(&dir).unwrap() {
            TryLock::Busy { holder } => assert_eq!(holder, Some(pid)),
            other => panic!("{other:?}"),
        }
        drop(first);
        assert!(matches!(try_lock(&dir).unwrap(), TryLock::Acquired(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stale_file_does_not_block() {
        let dir = home("stale");
        std::fs::write(lock_path(&dir), "999999999999\n").unwrap();
        assert!(matches!(try_lock(&dir).unwrap(), TryLock::Acquired(_)));
        // The longer pid of the dead holder is overwritten, then cut.
        assert_eq!(
            std::fs::read_to_string(lock_path(&dir)).unwrap(),
            format!("{}\n", std::process::id())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_and_close_on_exec() {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::io::AsRawFd;
        let dir = home("cloexec");
        let lock = match try_lock(&dir).unwrap() {
            TryLock::Acquired(l) => l,
            other => panic!("{other:?}"),
        };
        let mode = std::fs::metadata(lock_path(&dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(lock._file.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "flags {flags}");
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unusable_home_is_an_error() {
        let e = try_lock(Path::new("/nonexistent/ka-lock-home")).unwrap_err();
        assert!(e.to_string().contains("agent.lock"), "{e}");
    }
}
