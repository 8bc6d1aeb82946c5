//! Profiles dumped to disk by the app (`axm:reply` whose `data.return` has
//! `heapdump`/`heapprofile`/`cpuprofile` and `dump_file`): the file is read,
//! deleted, and sent on channel `profiling` (`PushInteractor._sendFile`).
//!
//! The path comes from an app, so it is trusted only as far as it points
//! where PM2 and its apps write dumps. The JS agent read and deleted any
//! path (docs/js-agent-behaviour.md §6.23). Here a dump is read and deleted only if it
//! - resolves (symlinks followed, `..` removed) inside the OS temp
//!   directory (`TMPDIR` or `/tmp`) or `PM2_HOME` ([`ProfilePolicy`]);
//! - is a regular file (not a directory, FIFO, socket or device),
//! - owned by the agent's user,
//! - of at most [`ProfilePolicy::max_bytes`].
//!
//! Anything else is refused and left in place, counted in the drop
//! counters (`profiling`, with the reason: [`ProfileError::reason`]) and
//! logged at most once per reason every [`crate::logging::SUMMARY_EVERY`]
//! ([`report`]).
//!
//! Races are narrowed where it is cheap: the resolved path is opened with
//! `O_NOFOLLOW` (a final component swapped for a symlink fails), type,
//! owner and size are checked on the opened descriptor, on Linux the
//! descriptor's own path (`/proc/self/fd`) must still be inside the
//! allowed directories, and the file is deleted only if the path still
//! names the file that was read (same device and inode).

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::js;
use crate::common::drops::Drops;
use crate::common::Packet;
use crate::logging::Throttle;

/// Profiles larger than this are not read (JS had no limit and would build
/// a string of any size).
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024 * 1024;

/// The drop-counter channel of refused profiles.
pub const DROP_CHANNEL: &str = "profiling";

/// Where a dump may be read from, and how large it may be.
#[derive(Debug, Clone)]
pub struct ProfilePolicy {
    /// A dump must resolve inside one of these (each canonicalised when
    /// checked; one that does not exist allows nothing).
    pub roots: Vec<PathBuf>,
    pub max_bytes: u64,
}

impl ProfilePolicy {
    /// The OS temp directory (`std::env::temp_dir()`: `TMPDIR`, else
    /// `/tmp`), `/tmp` itself on Unix (apps started with another `TMPDIR`
    /// than the agent's still write there), and `pm2_home`.
    pub fn new(pm2_home: &Path, max_bytes: u64) -> Self {
        let mut roots = vec![std::env::temp_dir()];
        if cfg!(unix) {
            roots.push(PathBuf::from("/tmp"));
        }
        roots.push(pm2_home.to_owned());
        ProfilePolicy { roots, max_bytes }
    }

    /// The roots as they are on disk now (symlinks resolved).
    fn resolved_roots(&self) -> Vec<PathBuf> {
        self.roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "profile dump {path} resolves to {resolved}, outside the temp directory and PM2_HOME: refused, left in place"
    )]
    Outside { path: PathBuf, resolved: PathBuf },
    /// Directories, FIFOs, sockets, devices: reading could block or leak
    /// something that is not a dump, and deleting them is never wanted.
    #[error("profile dump {0} is not a regular file: refused, left in place")]
    NotAFile(PathBuf),
    #[error(
        "profile dump {path} belongs to uid {owner}, not to the agent's user (uid {uid}): refused, left in place"
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "profile dump {path} is {size} bytes, over the {max} byte limit: refused, left in place"
    )]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("profile dump {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile meta is not a JSON object")]
    BadMeta,
}

impl ProfileError {
    /// The drop-counter reason (`getInfos.drops`).
    pub fn reason(&self) -> &'static str {
        match self {
            ProfileError::Outside { .. } => "dump_file outside the temp directory and PM2_HOME",
            ProfileError::NotAFile(_) => "dump_file is not a regular file",
            ProfileError::NotOwned { .. } => "dump_file not owned by the agent's user",
            ProfileError::TooLarge { .. } => "dump_file over the size limit",
            ProfileError::Io { .. } => "dump_file unreadable",
            ProfileError::BadMeta => "profile meta not an object",
        }
    }
}

/// Counts a profile that was not sent and says why, at most once per
/// reason every [`crate::logging::SUMMARY_EVERY`] (an app may report
/// dumps in a loop).
pub fn report(e: &ProfileError, drops: &Drops) {
    static LOG: LazyLock<Throttle> = LazyLock::new(Throttle::default);
    drops.record(DROP_CHANNEL, e.reason(), 1);
    if let Some(n) = LOG.hit(e.reason(), 1) {
        tracing::warn!(reason = e.reason(), since_last = n, "profile not sent: {e}");
    }
}

/// The profile kinds, in the JS priority order.
const TYPES: [&str; 3] = ["heapdump", "heapprofile", "cpuprofile"];

/// From an `axm:reply` packet, the dump path and the `profiling` payload
/// without its `data`: `{pm_id, name, server_name, public_key, type, <type>: true}`.
/// `None` when the reply is not a profile (no truthy type flag) or has no
/// usable `dump_file` (JS crashed or read a file descriptor number there).
pub fn profile_request(
    packet: &Value,
    server_name: &str,
    public_key: &str,
) -> Option<(PathBuf, Value)> {
    let ret = packet.get("data")?.get("return")?;
    let kind = TYPES.iter().find(|t| js::truthy(ret.get(**t)))?;
    let Some(path) = ret
        .get("dump_file")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        tracing::warn!(kind, "profiling reply without a dump_file path, ignored");
        return None;
    };
    let process = packet.get("process");
    let mut meta = Map::new();
    for key in ["pm_id", "name"] {
        if let Some(v) = process.and_then(|p| p.get(key)) {
            meta.insert(key.into(), v.clone());
        }
    }
    meta.insert("server_name".into(), Value::String(server_name.to_owned()));
    meta.insert("public_key".into(), Value::String(public_key.to_owned()));
    meta.insert("type".into(), Value::String((*kind).to_owned()));
    meta.insert((*kind).into(), Value::Bool(true));
    Some((PathBuf::from(path), Value::Object(meta)))
}

/// Reads the dump if [`ProfilePolicy`] allows it (see the module
/// documentation), deletes it, and returns the `profiling` packet: `meta`
/// plus `data` = the file as UTF-8 text. A refused or unreadable dump is
/// left in place.
pub async fn read_profile(
    path: &Path,
    meta: Value,
    policy: &ProfilePolicy,
) -> Result<Packet, ProfileError> {
    let Value::Object(mut payload) = meta else {
        return Err(ProfileError::BadMeta);
    };
    let path = path.to_owned();
    let policy = policy.clone();
    let bytes = tokio::task::spawn_blocking(move || read_checked(&path, &policy))
        .await
        .map_err(|e| ProfileError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })??;
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    payload.insert("data".into(), Value::String(text));
    Ok(Packet::new("profiling", Value::Object(payload)))
}

/// The checks, the read and the delete (blocking).
fn read_checked(path: &Path, policy: &ProfilePolicy) -> Result<Vec<u8>, ProfileError> {
    use std::io::Read;
    let io = |source| ProfileError::Io {
        path: path.to_owned(),
        source,
    };
    let resolved = std::fs::canonicalize(path).map_err(io)?;
    let roots = policy.resolved_roots();
    let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
    if !inside(&resolved) {
        return Err(ProfileError::Outside {
            path: path.to_owned(),
            resolved,
        });
    }
    // Refuse what is not a regular file before opening it (opening a
    // device may act on it).
    let before = std::fs::symlink_metadata(&resolved).map_err(io)?;
    if !before.file_type().is_file() {
        return Err(ProfileError::NotAFile(path.to_owned()));
    }
    let file = open_no_follow(&resolved).map_err(io)?;
    if let Some(now) = fd_path(&file) {
        if !inside(&now) {
            return Err(ProfileError::Outside {
                path: path.to_owned(),
                resolved: now,
            });
        }
    }
    let info = file.metadata().map_err(io)?;
    if !info.file_type().is_file() {
        return Err(ProfileError::NotAFile(path.to_owned()));
    }
    check_owner(path, &info)?;
    let too_large = |size| ProfileError::TooLarge {
        path: path.to_owned(),
        size,
        max: policy.max_bytes,
    };
    if info.len() > policy.max_bytes {
        return Err(too_large(info.len()));
    }
    let mut buf = Vec::with_capacity(info.len() as usize);
    // The file may still be growing: never read more than the cap.
    file.take(policy.max_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > policy.max_bytes {
        return Err(too_large(buf.len() as u64));
    }
    remove_if_same(&resolved, &info);
    Ok(buf)
}

/// Opens `path` read-only without following a symlink in its last
/// component, without blocking (a FIFO swapped in) and without taking a
/// controlling terminal.
#[cfg(unix)]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

/// Where the open descriptor really is (Linux), `None` when unknown.
#[cfg(target_os = "linux")]
fn fd_path(file: &std::fs::File) -> Option<PathBuf> {
    use std::os::unix::io::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

#[cfg(not(target_os = "linux"))]
fn fd_path(_: &std::fs::File) -> Option<PathBuf> {
    None
}

/// The agent's effective uid must own the dump.
#[cfg(unix)]
fn check_owner(path: &Path, info: &std::fs::Metadata) -> Result<(), ProfileError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if info.uid() != uid {
        return Err(ProfileError::NotOwned {
            path: path.to_owned(),
            owner: info.uid(),
            uid,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner(_: &Path, _: &std::fs::Metadata) -> Result<(), ProfileError> {
    Ok(())
}

/// Deletes `path` if it still names the file that was read.
fn remove_if_same(path: &Path, read: &std::fs::Metadata) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.dev() == read.dev() && m.ino() == read.ino() => {}
            _ => {
                tracing::debug!(path = %path.display(), "profile dump replaced meanwhile; not deleted");
                return;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = read;
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!(path = %path.display(), error = %e, "could not delete profile dump");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kma-prof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn reply(ret: Value) -> Value {
        json!({"at": 1, "data": {"return": ret}, "process": {"pm_id": 3, "name": "app", "rev": null}})
    }

    #[test]
    fn request_meta_shape_and_type_priority() {
        let (path, meta) = profile_request(
            &reply(json!({"cpuprofile": true, "heapdump": true, "heapprofile": 1, "dump_file": "/tmp/x.heapsnapshot"})),
            "m1",
            "pub",
        )
        .unwrap();
        assert_eq!(path, PathBuf::from("/tmp/x.heapsnapshot"));
        assert_eq!(
            serde_json::to_string(&meta).unwrap(),
            r#"{"pm_id":3,"name":"app","server_name":"m1","public_key":"pub","type":"heapdump","heapdump":true}"#
        );
        let (_, meta) = profile_request(
            &reply(json!({"cpuprofile": true, "heapprofile": "y", "dump_file": "/f"})),
            "m1",
            "pub",
        )
        .unwrap();
        assert_eq!(meta["type"], json!("heapprofile"));
        let (_, meta) = profile_request(
            &reply(json!({"cpuprofile": true, "heapdump": 0, "dump_file": "/f"})),
            "m1",
            "pub",
        )
        .unwrap();
        assert_eq!(meta["type"], json!("cpuprofile"));
        assert_eq!(meta["cpuprofile"], json!(true));
    }

    #[test]
    fn request_rejects_unusable_replies() {
        for ret in [
            json!({"heapdump": true}),
            json!({"heapdump": true, "dump_file": 3}),
            json!({"heapdump": true, "dump_file": ""}),
            json!({"heapdump": true, "dump_file": null}),
            json!({"dump_file": "/f"}),
            json!("str"),
        ] {
            assert!(
                profile_request(&reply(ret.clone()), "m", "p").is_none(),
                "{ret}"
            );
        }
        assert!(profile_request(&json!({"data": null}), "m", "p").is_none());
        assert!(profile_request(&json!(null), "m", "p").is_none());
        // No process: pm_id/name simply absent.
        let (_, meta) = profile_request(
            &json!({"data": {"return": {"heapdump": true, "dump_file": "/f"}}}),
            "m",
            "p",
        )
        .unwrap();
        assert_eq!(
            meta.as_object().unwrap().keys().next().unwrap(),
            "server_name"
        );
    }

    /// A scratch tree: `allowed/` is the only root of `policy`, `outside/`
    /// is not (both under the temp directory, which the real policy allows).
    struct Scratch {
        base: PathBuf,
        allowed: PathBuf,
        outside: PathBuf,
        policy: ProfilePolicy,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let base = temp(&format!("{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let allowed = base.join("allowed");
            let outside = base.join("outside");
            std::fs::create_dir_all(&allowed).unwrap();
            std::fs::create_dir_all(&outside).unwrap();
            let policy = ProfilePolicy {
                roots: vec![allowed.clone()],
                max_bytes: 100,
            };
            Scratch {
                base,
                allowed,
                outside,
                policy,
            }
        }

        async fn read(&self, path: &Path) -> Result<Packet, ProfileError> {
            read_profile(path, json!({"type": "heapdump"}), &self.policy).await
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    #[tokio::test]
    async fn reads_then_deletes_the_dump() {
        let path = temp("a.cpuprofile");
        std::fs::write(&path, "{\"nodes\":[]}\u{e9}").unwrap();
        let meta = json!({"pm_id": 3, "name": "app", "server_name": "m1", "public_key": "pub", "type": "cpuprofile", "cpuprofile": true});
        let policy = ProfilePolicy::new(Path::new("/nonexistent-pm2-home"), MAX_PROFILE_BYTES);
        let packet = read_profile(&path, meta, &policy).await.unwrap();
        assert_eq!(packet.channel, "profiling");
        assert_eq!(
            serde_json::to_string(&packet.payload).unwrap(),
            r#"{"pm_id":3,"name":"app","server_name":"m1","public_key":"pub","type":"cpuprofile","cpuprofile":true,"data":"{\"nodes\":[]}é"}"#
        );
        assert!(!path.exists());
    }

    #[test]
    fn the_default_policy_allows_the_temp_directory_and_pm2_home() {
        let p = ProfilePolicy::new(Path::new("/home/u/.pm2"), 7);
        assert!(p.roots.contains(&std::env::temp_dir()));
        assert!(p.roots.contains(&PathBuf::from("/home/u/.pm2")));
        assert_eq!(p.max_bytes, 7);
    }

    #[tokio::test]
    async fn outside_the_allowed_directories_is_refused_and_kept() {
        let s = Scratch::new("outside");
        let file = s.outside.join("x.heapsnapshot");
        std::fs::write(&file, "private").unwrap();
        let e = s.read(&file).await.unwrap_err();
        assert!(matches!(e, ProfileError::Outside { .. }), "{e}");
        assert_eq!(
            e.reason(),
            "dump_file outside the temp directory and PM2_HOME"
        );
        assert!(e.to_string().contains("left in place"), "{e}");
        // `..` out of an allowed directory is the same.
        let dotdot = s.allowed.join("../outside/x.heapsnapshot");
        assert!(matches!(
            s.read(&dotdot).await,
            Err(ProfileError::Outside { .. })
        ));
        // A sibling whose name merely starts like an allowed one.
        let twin = s.base.join("allowed-twin");
        std::fs::create_dir_all(&twin).unwrap();
        std::fs::write(twin.join("t"), "x").unwrap();
        assert!(matches!(
            s.read(&twin.join("t")).await,
            Err(ProfileError::Outside { .. })
        ));
        assert!(file.exists() && twin.join("t").exists());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlinks_are_judged_by_where_they_lead() {
        let s = Scratch::new("links");
        // Escaping: a link inside pointing outside is refused; both stay.
        let target = s.outside.join("secret.txt");
        std::fs::write(&target, "secret").unwrap();
        let link = s.allowed.join("link.heapsnapshot");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = s.read(&link).await.unwrap_err();
        match &e {
            ProfileError::Outside { resolved, .. } => {
                assert_eq!(resolved, &std::fs::canonicalize(&target).unwrap())
            }
            other => panic!("{other}"),
        }
        assert!(target.exists() && link.symlink_metadata().is_ok());
        // A directory symlink inside pointing outside: same.
        let dir_link = s.allowed.join("dir");
        std::os::unix::fs::symlink(&s.outside, &dir_link).unwrap();
        assert!(matches!(
            s.read(&dir_link.join("secret.txt")).await,
            Err(ProfileError::Outside { .. })
        ));
        // A link (anywhere) to a dump inside: the dump is read and deleted.
        let dump = s.allowed.join("real.cpuprofile");
        std::fs::write(&dump, "{}").unwrap();
        let outer = s.outside.join("to-dump");
        std::os::unix::fs::symlink(&dump, &outer).unwrap();
        let p = s.read(&outer).await.unwrap();
        assert_eq!(p.payload["data"], "{}");
        assert!(!dump.exists());
    }

    #[tokio::test]
    async fn directories_fifos_and_missing_files_are_refused() {
        let s = Scratch::new("types");
        let dir = s.allowed.join("adir");
        std::fs::create_dir_all(&dir).unwrap();
        let e = s.read(&dir).await.unwrap_err();
        assert!(matches!(e, ProfileError::NotAFile(_)), "{e}");
        assert_eq!(e.reason(), "dump_file is not a regular file");
        assert!(dir.exists(), "never deletes what is not a regular file");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let fifo = s.allowed.join("pipe.heapsnapshot");
            let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            // Refused at once: nothing ever writes to this FIFO.
            let e = s.read(&fifo).await.unwrap_err();
            assert!(matches!(e, ProfileError::NotAFile(_)), "{e}");
            assert!(fifo.symlink_metadata().is_ok());
        }
        let e = s.read(&s.allowed.join("missing")).await.unwrap_err();
        assert!(matches!(e, ProfileError::Io { .. }), "{e}");
        assert_eq!(e.reason(), "dump_file unreadable");
    }

    #[tokio::test]
    async fn over_the_size_limit_is_refused_and_kept() {
        let s = Scratch::new("size");
        let big = s.allowed.join("big.heapprofile");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        let e = s.read(&big).await.unwrap_err();
        assert!(
            matches!(
                e,
                ProfileError::TooLarge {
                    size: 101,
                    max: 100,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.reason(), "dump_file over the size limit");
        assert!(big.exists(), "refused dumps are left in place");
        // Exactly at the limit is fine.
        let fits = s.allowed.join("fits.heapprofile");
        std::fs::write(&fits, vec![b'x'; 100]).unwrap();
        assert!(s.read(&fits).await.is_ok());
        assert!(!fits.exists());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn another_users_file_is_refused_and_kept() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: giving a file to another user needs root");
            return;
        }
        let s = Scratch::new("owner");
        let theirs = s.allowed.join("theirs.heapsnapshot");
        std::fs::write(&theirs, "x").unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = s.read(&theirs).await.unwrap_err();
        assert!(
            matches!(
                e,
                ProfileError::NotOwned {
                    owner: 65534,
                    uid: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.reason(), "dump_file not owned by the agent's user");
        assert!(theirs.exists());
    }

    #[tokio::test]
    async fn bad_meta_touches_nothing() {
        let s = Scratch::new("meta");
        let file = s.allowed.join("meta.cpuprofile");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            read_profile(&file, json!([1]), &s.policy).await,
            Err(ProfileError::BadMeta)
        ));
        assert!(file.exists());
    }

    #[test]
    fn refusals_are_counted_per_reason() {
        let drops = Drops::default();
        let e = ProfileError::NotAFile(PathBuf::from("/tmp/x"));
        report(&e, &drops);
        report(&e, &drops);
        report(&ProfileError::BadMeta, &drops);
        let counts = drops.counts();
        assert_eq!(counts.len(), 2);
        assert_eq!(
            (
                counts[0].channel.as_str(),
                counts[0].reason,
                counts[0].count
            ),
            (DROP_CHANNEL, "dump_file is not a regular file", 2)
        );
        assert_eq!(counts[1].reason, "profile meta not an object");
    }
}
