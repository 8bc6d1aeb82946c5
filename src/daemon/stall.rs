//! The stall watch: catches a wedged runtime (a task that blocks its
//! worker thread, a deadlock on a std lock, an endless loop inside a poll),
//! which no panic handler ever sees.
//!
//! * On the runtime, a task bumps a [`Heartbeat`] every [`period`] (a sixth
//!   of the timeout, at most 5 s: one wakeup every 5 s at the default 30 s).
//! * A plain thread outside the runtime, one for the daemon's life, looks
//!   at the heartbeat as often. When it has not moved for the timeout
//!   (`PM2_AGENT_STALL_TIMEOUT`), the thread logs why, once, releases
//!   `interactor.sock` (so the relaunched agent can bind it: a wedged
//!   listener still completes connections in the kernel, which would make
//!   the new agent believe an agent is running) and hands the host the
//!   rescue through a path that does not need the runtime: the native host
//!   relaunches from this thread and exits ([`crate::host`]); the Node host
//!   gets a threadsafe-function call, which Node's event loop serves, and
//!   relaunches through `daemonize` as after a panic. Should the host not
//!   have exited [`HOST_EXIT_BOUND`] later (a shutdown waiting on the wedged
//!   runtime), the thread ends the process itself.
//!
//! The thread only counts time it was awake to observe: when its own sleep
//! overran (the whole process was stopped or starved), the runtime gets a
//! fresh timeout instead of being blamed.
//!
//! A stop that was asked for (`kill` over `interactor.sock`, SIGTERM,
//! `daemon.exit`) is never answered by a relaunch: should the runtime be
//! wedged then, or the stop still not be done [`STOP_BOUND`] after it was
//! asked, the thread says so, removes the agent's files and ends the
//! process itself.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{DaemonHandle, HostEvent};
use crate::config::{DaemonConfig, Paths};

/// How long the Node host has, after being handed a stall rescue, to
/// relaunch the agent and exit (its own `daemonize` wait is 15 s).
pub const HOST_EXIT_BOUND: Duration = Duration::from_secs(30);

/// How long a stop that was asked for may take before the watch thread
/// ends the process (a clean stop takes milliseconds; one waiting on a
/// wedged runtime never ends by itself).
pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// `PM2_AGENT_FAULT_INJECTION` value that blocks the runtime (testing aid).
pub const FAULT_BLOCK_RUNTIME: &str = "block:runtime";

/// How long after the start `block:runtime` blocks the runtime (the agent
/// is verified and sending its status by then).
pub const FAULT_BLOCK_AFTER: Duration = Duration::from_secs(3);

/// The runtime's heartbeat: a counter bumped by a task on the runtime.
#[derive(Clone, Default)]
pub struct Heartbeat(Arc<AtomicU64>);

impl Heartbeat {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The heartbeat period, which is also how often the thread looks: a
/// sixth of the timeout, between 10 ms and 5 s.
pub fn period(timeout: Duration) -> Duration {
    (timeout / 6).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// `30 s`, `2.5 s`: a duration as the log line says it.
pub fn seconds(d: Duration) -> String {
    let s = (d.as_millis() as f64 / 100.0).round() / 10.0;
    format!("{s} s")
}

/// What the thread concludes from the heartbeats it sees: a pure function
/// of the observations.
#[derive(Debug)]
pub struct Judge {
    timeout: Duration,
    /// A wakeup later than this after the previous one means the thread
    /// itself did not run: the observation restarts.
    max_gap: Duration,
    beat: u64,
    moved_at: Instant,
    seen_at: Instant,
}

impl Judge {
    pub fn new(timeout: Duration, now: Instant) -> Judge {
        Judge {
            timeout,
            max_gap: period(timeout) * 2 + Duration::from_secs(1),
            beat: 0,
            moved_at: now,
            seen_at: now,
        }
    }

    /// How long the heartbeat has not moved, as of the last observation.
    pub fn still(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.moved_at)
    }

    /// `Some(for how long)` when the heartbeat has not moved for the
    /// timeout (the runtime is wedged), `None` otherwise.
    pub fn observe(&mut self, beat: u64, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.seen_at);
        self.seen_at = now;
        if beat != self.beat || gap > self.max_gap {
            self.beat = beat;
            self.moved_at = now;
            return None;
        }
        let still = now.saturating_duration_since(self.moved_at);
        (still >= self.timeout).then_some(still)
    }
}

/// What the watch thread concludes from one look.
#[derive(Debug, PartialEq)]
pub enum Look {
    Fine,
    /// The heartbeat stood still this long: relaunch.
    Stalled(Duration),
    /// A stop was seen asked at least `since` ago and is not done: end the
    /// process, no relaunch. `wedged`: the heartbeat has not moved since
    /// (else the runtime runs and the stop itself is what hangs).
    StopStuck {
        since: Duration,
        wedged: bool,
    },
}

/// [`Judge`] plus the stop that may have been asked for: a pure function of
/// the observations, like the judge.
#[derive(Debug)]
pub struct Watcher {
    judge: Judge,
    stop_bound: Duration,
    stop_seen: Option<Instant>,
}

impl Watcher {
    pub fn new(timeout: Duration, stop_bound: Duration, now: Instant) -> Watcher {
        Watcher {
            judge: Judge::new(timeout, now),
            stop_bound,
            stop_seen: None,
        }
    }

    pub fn look(&mut self, beat: u64, stop_requested: bool, now: Instant) -> Look {
        if stop_requested && self.stop_seen.is_none() {
            self.stop_seen = Some(now);
        }
        let stopping = self.stop_seen.map(|at| now.saturating_duration_since(at));
        match (self.judge.observe(beat, now), stopping) {
            (Some(_), Some(since)) => Look::StopStuck {
                since,
                wedged: true,
            },
            (Some(still), None) => Look::Stalled(still),
            (None, Some(since)) if since >= self.stop_bound => Look::StopStuck {
                since,
                wedged: self.judge.still(now) >= since,
            },
            (None, _) => Look::Fine,
        }
    }
}

/// What the host is told when the runtime is wedged.
#[derive(Debug, Clone, PartialEq)]
pub struct Stalled {
    /// Why, for the rescue line (the full reason was logged already).
    pub reason: String,
    /// `false` when another live agent already replaced this one (its pid
    /// is in `agent.pid`): leave without relaunching.
    pub relaunch: bool,
}

/// What the host does with a wedged runtime; runs on the watch thread,
/// never on the runtime.
pub type StallHook = Box<dyn FnOnce(Stalled) + Send>;

/// The watch thread of one daemon; dropping this ends it.
pub struct StallWatch {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
}

/// Starts the watch thread over `heartbeat` and the daemon's
/// `stop_requested` flag ([`super::DaemonHandle::stop_flag`]).
pub fn watch(
    timeout: Duration,
    heartbeat: Heartbeat,
    stop_requested: Arc<AtomicBool>,
    paths: Paths,
    hook: StallHook,
) -> std::io::Result<StallWatch> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("km-stall-watch".into())
        // It only compares numbers and, once, relaunches: a small stack.
        .stack_size(256 * 1024)
        .spawn(move || {
            let every = period(timeout);
            let mut watcher = Watcher::new(timeout, STOP_BOUND, Instant::now());
            let (lock, cv) = &*flag;
            loop {
                let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (stopped, _) = cv
                    .wait_timeout_while(stopped, every, |s| !*s)
                    .unwrap_or_else(|e| e.into_inner());
                if *stopped {
                    return;
                }
                drop(stopped);
                let asked = stop_requested.load(Ordering::Relaxed);
                match watcher.look(heartbeat.get(), asked, Instant::now()) {
                    Look::Fine => {}
                    Look::Stalled(_) => {
                        hook(on_stall(timeout, &paths));
                        return;
                    }
                    Look::StopStuck { since, wedged } => stop_stuck(since, wedged, &paths),
                }
            }
        })?;
    Ok(StallWatch { stop })
}

/// The host-independent part of a rescue from a wedged runtime: say why,
/// once, and free `interactor.sock` for the next agent unless another
/// live agent already took over.
fn on_stall(timeout: Duration, paths: &Paths) -> Stalled {
    let why = format!("runtime made no progress for {}", seconds(timeout));
    let ours = successor_needed(&paths.pid_file);
    if ours {
        tracing::error!(
            "-- FATAL EXCEPTION happened -- {why}: the agent is wedged, relaunching it"
        );
        release_socket(&paths.interactor_sock);
    } else {
        tracing::error!(
            "-- FATAL EXCEPTION happened -- {why}: another agent already runs, leaving"
        );
    }
    Stalled {
        reason: "stalled runtime (see above)".into(),
        relaunch: ours,
    }
}

/// A stop that was asked for and cannot complete: no relaunch (the user
/// wants the agent gone); the files a clean stop removes are removed here,
/// and the process ends without going back to the runtime.
fn stop_stuck(since: Duration, wedged: bool, paths: &Paths) -> ! {
    let why = if wedged {
        "the runtime made no progress since"
    } else {
        "the runtime runs, the shutdown hangs"
    };
    tracing::error!(
        "the stop asked at least {} ago did not complete ({why}): exiting without relaunch",
        seconds(since)
    );
    super::rpc_server::remove_own_files(paths);
    let _ = std::fs::remove_file(paths.pm2_home.join(crate::inspect::URL_FILE));
    hard_exit(1)
}

/// Ends the process without running exit handlers (which could wait on
/// the wedged runtime).
pub fn hard_exit(code: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: `_exit` ends the process at once; nothing runs after it.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// Whether this agent must hand over to a new one: `agent.pid` names this
/// process, is missing, or names a process that no longer exists.
fn successor_needed(pid_file: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return true;
    };
    pid == std::process::id() || !alive(pid)
}

#[cfg(target_os = "linux")]
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(all(unix, not(target_os = "linux")))]
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    true
}

/// Unlinks `interactor.sock`: the wedged listener stays open (unreachable)
/// until this process exits, and the next agent binds a fresh one.
fn release_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "interactor.sock released"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), "cannot release interactor.sock: {e}"),
    }
}

/// The runtime side: bumps `heartbeat` every `every`. With `block_after`
/// (the `block:runtime` fault), blocks its worker thread for good once that
/// much time has passed, which wedges the runtime of either host (each runs
/// its tasks on one thread) and, in any case, stops the heartbeat.
pub async fn beat(heartbeat: Heartbeat, every: Duration, block_after: Option<Duration>) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        heartbeat.bump();
        if block_after.is_some_and(|after| started.elapsed() >= after) {
            tracing::warn!("fault injection: blocking the runtime");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// [`super::start`] under a stall watch: the daemon, its heartbeat task and
/// the watch thread, which lives as long as the returned future runs (and
/// calls `hook` if the runtime stops making progress). Without a timeout
/// (`PM2_AGENT_STALL_TIMEOUT=0`), the plain daemon.
pub fn start(
    cfg: DaemonConfig,
    host: mpsc::Sender<HostEvent>,
    hook: StallHook,
) -> (DaemonHandle, impl Future<Output = ()> + Send) {
    let timeout = cfg.stall_timeout;
    let block_after =
        (cfg.fault_injection.as_deref() == Some(FAULT_BLOCK_RUNTIME)).then_some(FAULT_BLOCK_AFTER);
    let paths = cfg.paths.clone();
    let (handle, run) = super::start(cfg, host);
    let heartbeat = Heartbeat::default();
    let guard = timeout.and_then(|t| {
        watch(t, heartbeat.clone(), handle.stop_flag(), paths, hook)
            .inspect_err(|e| tracing::warn!("cannot start the stall watch: {e}"))
            .ok()
    });
    let fut = async move {
        let beats = match (&guard, timeout) {
            (Some(_), Some(t)) => Some(tokio::spawn(beat(heartbeat, period(t), block_after))),
            _ => None,
        };
        run.await;
        if let Some(b) = beats {
            b.abort();
        }
        drop(guard);
    };
    (handle, fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_bounded() {
        assert_eq!(period(Duration::from_secs(30)), Duration::from_secs(5));
        assert_eq!(period(Duration::from_secs(600)), Duration::from_secs(5));
        assert_eq!(period(Duration::from_secs(3)), Duration::from_millis(500));
        assert_eq!(period(Duration::from_millis(1)), Duration::from_millis(10));
    }

    #[test]
    fn seconds_as_logged() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(seconds(Duration::from_millis(100)), "0.1 s");
    }

    #[test]
    fn a_stop_is_bounded_and_never_relaunched() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let timeout = Duration::from_secs(30);
        let bound = Duration::from_secs(10);
        let stuck = |since: u64, wedged: bool| Look::StopStuck {
            since: Duration::from_secs(since),
            wedged,
        };
        // The runtime beats but the stop takes longer than the bound.
        let mut w = Watcher::new(timeout, bound, t0);
        assert_eq!(w.look(1, false, at(5)), Look::Fine);
        assert_eq!(w.look(2, true, at(10)), Look::Fine);
        assert_eq!(w.look(3, true, at(15)), Look::Fine);
        assert_eq!(w.look(4, true, at(20)), stuck(10, false));
        // A runtime that stopped beating when the stop was asked, before
        // its stall timeout: wedged.
        let mut w = Watcher::new(timeout, bound, t0);
        assert_eq!(w.look(1, false, at(5)), Look::Fine);
        assert_eq!(w.look(1, true, at(10)), Look::Fine);
        assert_eq!(w.look(1, true, at(15)), Look::Fine);
        assert_eq!(w.look(1, true, at(20)), stuck(10, true));
        // A runtime wedged before the stop: the stall ends it as a stop,
        // not as a rescue, even before the bound.
        let mut w = Watcher::new(timeout, Duration::from_secs(600), t0);
        for s in [5, 10, 15, 20, 25] {
            assert_eq!(w.look(1, s >= 25, at(s)), Look::Fine, "{s}");
        }
        assert_eq!(w.look(1, true, at(35)), stuck(10, true));
        // Without a stop, the same heartbeat is a stall.
        let mut w = Watcher::new(timeout, bound, t0);
        for s in [5, 10, 15, 20, 25, 30] {
            assert_eq!(w.look(1, false, at(s)), Look::Fine, "{s}");
        }
        assert_eq!(
            w.look(1, false, at(35)),
            Look::Stalled(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_moving_heartbeat_is_never_a_stall() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut j = Judge::new(timeout, t0);
        for i in 1..100u64 {
            assert_eq!(j.observe(i, t0 + Duration::from_secs(5 * i)), None);
        }
    }

    #[test]
    fn a_still_heartbeat_is_a_stall_after_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut j = Judge::new(timeout, t0);
        assert_eq!(j.observe(1, t0 + Duration::from_secs(5)), None);
        for s in [10, 15, 20, 25, 30] {
            assert_eq!(j.observe(1, t0 + Duration::from_secs(s)), None, "{s}");
        }
        assert_eq!(
            j.observe(1, t0 + Duration::from_secs(35)),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_heartbeat_that_never_started_is_a_stall() {
        let t0 = Instant::now();
        let mut j = Judge::new(Duration::from_secs(3), t0);
        let mut fired = None;
        for i in 1..=8u64 {
            if let Some(d) = j.observe(0, t0 + Duration::from_millis(500 * i)) {
                fired = Some((i, d));
                break;
            }
        }
        assert_eq!(fired, Some((6, Duration::from_secs(3))));
    }

    #[test]
    fn a_stopped_process_is_not_blamed_on_the_runtime() {
        // The whole process was stopped for a minute (SIGSTOP, suspend of
        // a container): the thread's own wakeup is late, so it starts over.
        let t0 = Instant::now();
        let mut j = Judge::new(Duration::from_secs(30), t0);
        assert_eq!(j.observe(1, t0 + Duration::from_secs(5)), None);
        assert_eq!(j.observe(1, t0 + Duration::from_secs(65)), None);
        for s in [70, 75, 80, 85, 90] {
            assert_eq!(j.observe(1, t0 + Duration::from_secs(s)), None, "{s}");
        }
        assert_eq!(
            j.observe(1, t0 + Duration::from_secs(95)),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn only_a_stale_or_own_pid_file_asks_for_a_successor() {
        let dir = std::env::temp_dir().join(format!("ka-stall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("agent.pid");
        assert!(successor_needed(&f), "no pid file");
        std::fs::write(&f, std::process::id().to_string()).unwrap();
        assert!(successor_needed(&f), "our own pid");
        std::fs::write(&f, "4194304999").unwrap();
        assert!(successor_needed(&f), "a pid nobody has");
        let other = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        std::fs::write(&f, other.id().to_string()).unwrap();
        assert!(!successor_needed(&f), "another live agent took over");
        let mut other = other;
        let _ = other.kill();
        let _ = other.wait();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_thread_calls_the_hook_once_when_the_heartbeat_stops() {
        let dir = std::env::temp_dir().join(format!("ka-stall-thread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut env = std::collections::HashMap::new();
        env.insert("PM2_HOME".to_string(), dir.display().to_string());
        let paths = Paths::new(dir.clone(), &env);
        std::fs::write(&paths.interactor_sock, "").unwrap();
        let hb = Heartbeat::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let w = watch(
            Duration::from_millis(120),
            hb.clone(),
            Arc::default(),
            paths.clone(),
            Box::new(move |s| tx.send(s).unwrap()),
        )
        .unwrap();
        // Alive while it beats.
        for _ in 0..20 {
            hb.bump();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(rx.try_recv().is_err());
        let s = rx.recv_timeout(Duration::from_secs(5)).expect("stall seen");
        assert!(s.relaunch);
        assert!(!paths.interactor_sock.exists(), "socket released");
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "once");
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropping_the_watch_ends_the_thread_without_a_call() {
        let dir = std::env::temp_dir().join(format!("ka-stall-drop-{}", std::process::id()));
        let paths = Paths::new(dir, &Default::default());
        let (tx, rx) = std::sync::mpsc::channel::<Stalled>();
        let w = watch(
            Duration::from_secs(2),
            Heartbeat::default(),
            Arc::default(),
            paths,
            Box::new(move |s| tx.send(s).unwrap()),
        )
        .unwrap();
        drop(w);
        // The hook (and its sender) is dropped with the thread, uncalled.
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        ));
    }
}
