//! Self-rescue of the native daemon: after a fatal error (the daemon already
//! stopped its work and released `interactor.sock`), start this same binary
//! again the way `InteractorClient.daemonize` starts an agent, wait for its
//! first IPC message, then let the caller exit.
//!
//! What the relaunched agent gets, like with the Node host:
//! - a new session (`setsid`, Node's `detached: true`), stdin closed,
//!   stdout/stderr appended to `agent.log` (mode 0600), or inherited in test
//!   runs (`TRAVIS`, or `NODE_ENV` containing `test`: daemonize's rule);
//! - this process's environment, with `PM2_AGENT_RESCUES` counting the
//!   rescues and `PM2_AGENT_FAULT_INJECTION` removed (an injected fault
//!   fires once);
//! - an IPC channel: one end of a socketpair as fd 3, named by
//!   `NODE_CHANNEL_FD`, on which its first message tells us it is up;
//! - the native title as `argv[0]`; it takes `agent.lock` (released by this
//!   daemon when it stopped) and writes `agent.pid` itself.
//!
//! More than [`MAX_RESCUES`] rescues, each within [`RESCUE_WINDOW`] of the
//! previous start, give up instead (a crash loop must end).

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::title::{process_title, HostMode};
use crate::config::Paths;
use crate::protocol::ipc;

/// Rescues allowed in a row (a sixth gives up).
pub const MAX_RESCUES: u32 = 5;
/// A daemon that ran longer than this before failing starts a new count.
pub const RESCUE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How long the relaunched agent has to send its first IPC message.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// The environment variable carrying the rescue count.
pub const ENV_RESCUES: &str = "PM2_AGENT_RESCUES";
/// The fd the relaunched agent finds its IPC channel on (as with PM2's
/// `stdio: [null, out, err, 'ipc']`).
const CHILD_IPC_FD: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RescueError {
    #[error("it crashed {MAX_RESCUES} times in a row, giving up")]
    GaveUp,
    #[error("cannot find this binary to relaunch it: {0}")]
    NoExe(std::io::Error),
    #[error("cannot open {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the IPC channel: {0}")]
    Channel(std::io::Error),
    #[error("cannot spawn {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the relaunched agent (pid {pid}) did not answer: {why}")]
    NoAnswer { pid: u32, why: String },
    #[error("the relaunched agent (pid {pid}) reported an error: {msg}")]
    Refused { pid: u32, msg: String },
}

/// The rescue count of the next agent: one more than `previous` when this
/// one lived less than [`RESCUE_WINDOW`], else a fresh 1.
pub fn next_count(previous: u32, lived: Duration) -> Result<u32, RescueError> {
    let count = if lived < RESCUE_WINDOW {
        previous.saturating_add(1)
    } else {
        1
    };
    if count > MAX_RESCUES {
        Err(RescueError::GaveUp)
    } else {
        Ok(count)
    }
}

/// What [`relaunch`] needs to know.
pub struct Rescue<'a> {
    pub paths: &'a Paths,
    /// When this daemon started.
    pub started: Instant,
    /// The fatal error (already logged by the daemon; repeated on the
    /// relaunch line).
    pub reason: &'a str,
}

/// Relaunches the agent and waits for its first IPC message. `Ok(pid)` once
/// it answered with a non-error message.
pub fn relaunch(r: &Rescue<'_>) -> Result<u32, RescueError> {
    let previous = std::env::var(ENV_RESCUES)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let count = next_count(previous, r.started.elapsed())?;
    let exe = relaunch_path(std::env::current_exe().map_err(RescueError::NoExe)?);
    let (mut ours, theirs) = UnixStream::pair().map_err(RescueError::Channel)?;

    let mut cmd = Command::new(&exe);
    cmd.arg0(process_title(HostMode::Native, &r.paths.pm2_home))
        .env(ENV_RESCUES, count.to_string())
        .env_remove("PM2_AGENT_FAULT_INJECTION")
        .env("NODE_CHANNEL_FD", CHILD_IPC_FD.to_string())
        .env("NODE_CHANNEL_SERIALIZATION_MODE", "json")
        .stdin(Stdio::null());
    if test_run() {
        cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        let log = open_log(&r.paths.log_file)?;
        let err = log.try_clone().map_err(|source| RescueError::Log {
            path: r.paths.log_file.clone(),
            source,
        })?;
        cmd.stdout(log).stderr(err);
    }
    let channel = theirs.as_raw_fd();
    // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 gives fd 3 without close-on-exec; when the channel is
            // already fd 3, clear the flag instead.
            let rc = if channel == CHILD_IPC_FD {
                libc::fcntl(channel, libc::F_SETFD, 0)
            } else {
                libc::dup2(channel, CHILD_IPC_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    tracing::info!(rescue = count, exe = %exe.display(), reason = r.reason, "Re-initiating Agent");
    let child = cmd.spawn().map_err(|source| RescueError::Spawn {
        exe: exe.clone(),
        source,
    })?;
    drop(theirs);
    let pid = child.id();
    // agent.pid is the relaunched agent's to write, once agent.lock is its
    // own (our lock went with the daemon's end, before this relaunch).
    // The child is not waited for: it outlives us (it is in its own session).
    drop(child);

    let msg = first_message(&mut ours, ANSWER_TIMEOUT)
        .map_err(|why| RescueError::NoAnswer { pid, why })?;
    if msg.get("error").and_then(Value::as_bool) == Some(true) {
        let what = msg.get("msg").cloned().unwrap_or(Value::Null).to_string();
        return Err(RescueError::Refused { pid, msg: what });
    }
    if msg
        .pointer("/km_data/error")
        .and_then(Value::as_bool)
        .is_some_and(|e| e)
    {
        let what = msg
            .pointer("/km_data/msg")
            .cloned()
            .unwrap_or(Value::Null)
            .to_string();
        return Err(RescueError::Refused { pid, msg: what });
    }
    Ok(pid)
}

/// The binary to start: this one, or, when it was replaced on disk since we
/// started (an upgrade renames a new file over it, and Linux then names our
/// image `<path> (deleted)`), the new file at the same path.
fn relaunch_path(exe: PathBuf) -> PathBuf {
    if exe.exists() {
        return exe;
    }
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(original) => PathBuf::from(original),
        None => exe,
    }
}

/// Reads the first newline-terminated JSON message within `timeout`.
fn first_message(stream: &mut UnixStream, timeout: Duration) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            return ipc::decode(&buf[..end]).map_err(|e| e.to_string());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no IPC message in {timeout:?}"));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err("it closed the IPC channel (exited?)".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("no IPC message in {timeout:?}"))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `agent.log` opened for appending, readable by its owner only (existing
/// files included), as daemonize opens it.
fn open_log(path: &Path) -> Result<std::fs::File, RescueError> {
    let err = |source| RescueError::Log {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    Ok(f)
}

/// daemonize's rule: test runs keep the agent's output on the console.
fn test_run() -> bool {
    std::env::var_os("TRAVIS").is_some_and(|v| !v.is_empty())
        || std::env::var("NODE_ENV").is_ok_and(|v| v.contains("test"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rescues_are_counted_within_the_window() {
        let quick = Duration::from_secs(10);
        assert_eq!(next_count(0, quick).unwrap(), 1);
        assert_eq!(next_count(4, quick).unwrap(), 5);
        assert!(matches!(next_count(5, quick), Err(RescueError::GaveUp)));
        // A long run starts over.
        assert_eq!(next_count(5, RESCUE_WINDOW).unwrap(), 1);
    }

    #[test]
    fn a_replaced_binary_is_relaunched_from_its_path() {
        let here = std::env::current_exe().unwrap();
        assert_eq!(relaunch_path(here.clone()), here);
        assert_eq!(
            relaunch_path(PathBuf::from("/opt/pkg/daemon (deleted)")),
            PathBuf::from("/opt/pkg/daemon")
        );
    }

    #[test]
    fn first_message_is_one_json_line() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"{\"error\":false,\"pid\":1").unwrap();
        b.write_all(b"2}\n{\"second\":true}\n").unwrap();
        let m = first_message(&mut a, Duration::from_secs(5)).unwrap();
        assert_eq!(m, serde_json::json!({"error": false, "pid": 12}));
    }

    #[test]
    fn a_closed_channel_is_no_answer() {
        let (mut a, b) = UnixStream::pair().unwrap();
        drop(b);
        let e = first_message(&mut a, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("closed"), "{e}");
    }

    #[test]
    fn silence_is_bounded() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let e = first_message(&mut a, Duration::from_millis(50)).unwrap_err();
        assert!(e.contains("no IPC message"), "{e}");
    }

    #[test]
    fn log_is_private() {
        let dir = std::env::temp_dir().join(format!("ka-rescue-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("agent.log");
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = open_log(&p).unwrap();
        f.write_all(b"new\n").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\nnew\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
