//! Profiles dumped to disk by the app (`axm:reply` whose `data.return` has
//! `heapdump`/`heapprofile`/`cpuprofile` and `dump_file`): the file is read,
//! deleted, and sent on channel `profiling` (`PushInteractor._sendFile`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::js;
use crate::common::Packet;

/// Profiles larger than this are not sent (JS had no limit and would build
/// a string of any size); the file is still deleted.
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Directories, FIFOs, devices, symlinks: reading could block or leak
    /// something that is not a dump, and deleting them is never wanted.
    #[error("profile dump {0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("profile dump {path} is {size} bytes, over the {max} byte limit")]
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

/// Reads the dump (at most `max_bytes`), deletes it, and returns the
/// `profiling` packet: `meta` plus `data` = the file as UTF-8 text. A file
/// that cannot be read is left in place (as in JS); one that is too large is
/// deleted anyway since nobody else will collect it.
pub async fn read_profile(
    path: &Path,
    meta: Value,
    max_bytes: u64,
) -> Result<Packet, ProfileError> {
    use tokio::io::AsyncReadExt;
    let Value::Object(mut payload) = meta else {
        return Err(ProfileError::BadMeta);
    };
    let io = |source| ProfileError::Io {
        path: path.to_owned(),
        source,
    };
    let info = tokio::fs::symlink_metadata(path).await.map_err(io)?;
    if !info.file_type().is_file() {
        return Err(ProfileError::NotAFile(path.to_owned()));
    }
    if info.len() > max_bytes {
        remove(path).await;
        return Err(ProfileError::TooLarge {
            path: path.to_owned(),
            size: info.len(),
            max: max_bytes,
        });
    }
    let mut buf = Vec::with_capacity(info.len() as usize);
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    // The file may still be growing: never read more than the cap.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .await
        .map_err(io)?;
    remove(path).await;
    if buf.len() as u64 > max_bytes {
        return Err(ProfileError::TooLarge {
            path: path.to_owned(),
            size: buf.len() as u64,
            max: max_bytes,
        });
    }
    let text = match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    payload.insert("data".into(), Value::String(text));
    Ok(Packet::new("profiling", Value::Object(payload)))
}

async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
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

    #[tokio::test]
    async fn reads_then_deletes_the_dump() {
        let path = temp("a.cpuprofile");
        std::fs::write(&path, "{\"nodes\":[]}\u{e9}").unwrap();
        let meta = json!({"pm_id": 3, "name": "app", "server_name": "m1", "public_key": "pub", "type": "cpuprofile", "cpuprofile": true});
        let packet = read_profile(&path, meta, MAX_PROFILE_BYTES).await.unwrap();
        assert_eq!(packet.channel, "profiling");
        assert_eq!(
            serde_json::to_string(&packet.payload).unwrap(),
            r#"{"pm_id":3,"name":"app","server_name":"m1","public_key":"pub","type":"cpuprofile","cpuprofile":true,"data":"{\"nodes\":[]}é"}"#
        );
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn too_large_is_an_error_and_still_deleted() {
        let path = temp("big.heapprofile");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let err = read_profile(&path, json!({}), 99).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProfileError::TooLarge {
                    size: 100,
                    max: 99,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!path.exists());
        // Exactly at the limit is fine.
        std::fs::write(&path, vec![b'x'; 99]).unwrap();
        assert!(read_profile(&path, json!({}), 99).await.is_ok());
    }

    #[tokio::test]
    async fn missing_files_directories_and_bad_meta() {
        let missing = temp("missing.heapsnapshot");
        assert!(matches!(
            read_profile(&missing, json!({}), 10).await,
            Err(ProfileError::Io { .. })
        ));
        let dir = temp("adir");
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            read_profile(&dir, json!({}), 10).await,
            Err(ProfileError::NotAFile(_))
        ));
        assert!(dir.exists(), "never deletes what is not a regular file");
        let file = temp("meta.cpuprofile");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            read_profile(&file, json!([1]), 10).await,
            Err(ProfileError::BadMeta)
        ));
        assert!(file.exists());
        std::fs::remove_file(&file).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlinks_are_not_followed_nor_deleted() {
        let target = temp("target.txt");
        std::fs::write(&target, "secret").unwrap();
        let link = temp("link.heapsnapshot");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_profile(&link, json!({}), 100).await,
            Err(ProfileError::NotAFile(_))
        ));
        assert!(target.exists() && link.symlink_metadata().is_ok());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&target).unwrap();
    }
}
