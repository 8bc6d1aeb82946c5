//! The outgoing-traffic inspector (`PM2_AGENT_INSPECT=<port>`): a
//! read-only view, on 127.0.0.1 only, of every packet the agent hands to its
//! transporters (docs/inspector.md).
//!
//! - [`traffic`]: the bounded per-channel recorder the transport hub feeds
//!   ([`crate::transport::hub::Hub::send`]);
//! - [`server`]: the minimal HTTP server of `/`, `/inspector` (the page,
//!   `web/inspector.html`) and `/api/traffic`, behind a random token.
//!
//! The URL with its token goes to `$PM2_HOME/agent-inspect.url` (mode
//! 0600), never to a log or to `getInfos`. A bad setting or a failed bind is
//! logged once and reported in `getInfos.inspect`; the agent runs on.

pub mod server;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use traffic::Traffic;

/// The setting: a port on 127.0.0.1 (`0`: one the system picks).
pub const ENV: &str = "PM2_AGENT_INSPECT";
/// Under `PM2_HOME`: the inspector's URL with its token.
pub const URL_FILE: &str = "agent-inspect.url";

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{ENV} must be a port number (0 to 65535; 0 picks a free port), got {0:?}")]
    BadPort(String),
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    UrlFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `PM2_AGENT_INSPECT`'s value as a port.
pub fn parse_port(value: &str) -> Result<u16, InspectError> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InspectError::BadPort(value.to_owned()));
    }
    v.parse::<u16>()
        .map_err(|_| InspectError::BadPort(value.to_owned()))
}

/// The inspector of a running daemon: serving, or why not.
pub struct Inspector {
    traffic: Option<Arc<Traffic>>,
    infos: Value,
    running: Option<Running>,
}

/// A listening server; stops and removes its URL file when dropped (a clean
/// stop, an error, or the unwinding of a panic alike).
struct Running {
    task: JoinHandle<()>,
    url_file: PathBuf,
    written: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        // Only our own file: never one another agent wrote since.
        if std::fs::read_to_string(&self.url_file).is_ok_and(|s| s == self.written) {
            let _ = std::fs::remove_file(&self.url_file);
        }
    }
}

impl Inspector {
    /// Starts the inspector when `setting` (the variable's value) asks for
    /// it; `None` when it is unset or empty.
    pub async fn start(setting: Option<&str>, pm2_home: &Path) -> Option<Inspector> {
        let setting = setting.filter(|s| !s.trim().is_empty())?;
        let url_file = pm2_home.join(URL_FILE);
        match Self::serve(setting, &url_file).await {
            Ok((traffic, running, url)) => {
                tracing::info!(
                    url = %url,
                    url_file = %url_file.display(),
                    "inspector listening on {url} (URL with token in {})",
                    url_file.display()
                );
                Some(Inspector {
                    traffic: Some(traffic),
                    infos: json!({"url": url, "url_file": url_file.display().to_string()}),
                    running: Some(running),
                })
            }
            Err(e) => {
                tracing::error!(setting = ENV, error = %e, "inspector off");
                Some(Inspector {
                    traffic: None,
                    infos: json!({"error": e.to_string()}),
                    running: None,
                })
            }
        }
    }

    async fn serve(
        setting: &str,
        url_file: &Path,
    ) -> Result<(Arc<Traffic>, Running, String), InspectError> {
        let port = parse_port(setting)?;
        let listener = server::bind(port)
            .await
            .map_err(|source| InspectError::Bind { port, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| InspectError::Bind { port, source })?
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let token = crate::entropy::token_hex_128();
        let written = format!("{url}?token={token}\n");
        write_private(url_file, &written).map_err(|source| InspectError::UrlFile {
            path: url_file.to_owned(),
            source,
        })?;
        let traffic = Arc::new(Traffic::new(traffic::system_clock()));
        let task = server::serve(listener, token, traffic.clone());
        Ok((
            traffic,
            Running {
                task,
                url_file: url_file.to_owned(),
                written,
            },
            url,
        ))
    }

    /// What the transport hub records into: `Some` only while serving.
    pub fn tap(&self) -> Option<Arc<Traffic>> {
        self.traffic.clone()
    }

    /// `getInfos.inspect`: `{url, url_file}` (the URL without its token) or
    /// `{error}`.
    pub fn infos(&self) -> Value {
        self.infos.clone()
    }

    /// Whether the server runs.
    pub fn is_serving(&self) -> bool {
        self.running.is_some()
    }
}

/// Writes `text` to `path` readable by its owner only: a file left by an
/// earlier run is replaced, not reused with its mode.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("0").unwrap(), 0);
        assert_eq!(parse_port("9999").unwrap(), 9999);
        assert_eq!(parse_port(" 65535 ").unwrap(), 65535);
        for bad in ["65536", "-1", "+80", "abc", "80x", "1e3", "8.5", "true", ""] {
            let e = parse_port(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    fn home() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ka-inspect-unit-{}-{:x}",
            std::process::id(),
            crate::entropy::entropy_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn unset_means_no_inspector() {
        let nowhere = std::env::temp_dir().join("ka-inspect-unit-never-created");
        assert!(Inspector::start(None, &nowhere).await.is_none());
        assert!(Inspector::start(Some(" "), &nowhere).await.is_none());
        assert!(!nowhere.exists());
    }

    #[tokio::test]
    async fn serves_writes_a_private_url_file_and_removes_it_when_stopped() {
        let home = home();
        let url_file = home.join(URL_FILE);
        std::fs::write(&url_file, "stale").unwrap();
        let i = Inspector::start(Some("0"), &home).await.unwrap();
        assert!(i.is_serving() && i.tap().is_some());
        let text = std::fs::read_to_string(&url_file).unwrap();
        let infos = i.infos();
        let url = infos["url"].as_str().unwrap();
        assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/'));
        assert_eq!(infos["url_file"], url_file.display().to_string());
        let token = text.trim().strip_prefix(&format!("{url}?token=")).unwrap();
        assert_eq!(token.len(), 32);
        assert!(!infos.to_string().contains(token), "never the token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&url_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(i);
        assert!(!url_file.exists());
        let _ = std::fs::remove_dir_all(&home);
    }

    #[tokio::test]
    async fn a_bad_value_or_a_taken_port_is_reported_not_fatal() {
        let home = home();
        let i = Inspector::start(Some("http"), &home).await.unwrap();
        assert!(!i.is_serving() && i.tap().is_none());
        assert!(i.infos()["error"]
            .as_str()
            .unwrap()
            .contains("PM2_AGENT_INSPECT must be a port number"));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let i = Inspector::start(Some(&port), &home).await.unwrap();
        assert!(!i.is_serving());
        assert!(i.infos()["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("cannot listen on 127.0.0.1:{port}")));
        assert!(!home.join(URL_FILE).exists());
        let _ = std::fs::remove_dir_all(&home);
    }
}
