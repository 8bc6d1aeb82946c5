//! TLS client configuration: rustls with the ring provider, trusting the
//! operating system's store plus extra CA bundles named by
//! `PM2_AGENT_CA_FILE` and `NODE_EXTRA_CA_CERTS` (corporate TLS-inspecting
//! proxies, self-hosted backends), and handshake errors turned into text a
//! user can act on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::CertificateError;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::NetError;

/// Env naming a PEM bundle of extra trusted CAs, specific to this agent.
pub const CA_FILE_ENV: &str = "PM2_AGENT_CA_FILE";
/// Node's own variable for the same thing, honoured because PM2 users
/// already set it for the JS agent.
pub const NODE_EXTRA_CA_ENV: &str = "NODE_EXTRA_CA_CERTS";

/// Appended to "unknown issuer" errors: the fix a user most likely needs.
const UNKNOWN_ISSUER: &str =
    "certificate signed by an unknown authority (add its CA with PM2_AGENT_CA_FILE or NODE_EXTRA_CA_CERTS)";

/// The process-wide client config: OS roots plus the CA files named in the
/// environment, built once (so a bad file is logged once, not per connect).
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| Arc::new(build_config(&extra_ca_paths_from_env())))
        .clone()
}

/// Paths of extra CA bundles from `PM2_AGENT_CA_FILE` then
/// `NODE_EXTRA_CA_CERTS` (both may be set; a duplicate is loaded once).
pub fn extra_ca_paths_from_env() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for var in [CA_FILE_ENV, NODE_EXTRA_CA_ENV] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(v);
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    paths
}

/// A client config trusting the OS store plus every certificate in the PEM
/// files `extra_pem_paths`. Unreadable or certificate-less files are logged
/// with their path and skipped: a typo in an env var must not stop the agent.
pub fn build_config(extra_pem_paths: &[PathBuf]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "could not load some OS trusted certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "OS trust store loaded");
    for path in extra_pem_paths {
        match load_pem_certs(path) {
            Ok(certs) => {
                let (added, ignored) = roots.add_parsable_certificates(certs);
                if ignored > 0 {
                    tracing::warn!(path = %path.display(), ignored, "some CA certificates were not usable");
                }
                tracing::info!(path = %path.display(), added, "extra CA certificates trusted");
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), "ignoring extra CA file: {reason}")
            }
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted CA certificates at all: every TLS connection will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Every `CERTIFICATE` block of a PEM file; an error says why the file gives
/// none (missing, unreadable, malformed, or no certificate in it).
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    // Read it ourselves first so a missing file reads "No such file", not a
    // PEM parser message.
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in it".into());
    }
    Ok(certs)
}

/// TLS handshake with `host` (name or IP literal) over `stream`.
pub async fn wrap<S>(
    stream: S,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<S>, NetError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| NetError::Tls(format!("invalid server name {host:?}")))?;
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| NetError::Tls(classify(&e, host)))
}

/// Turns a handshake failure into a sentence naming the cause.
fn classify(e: &io::Error, host: &str) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                format!("{host}: handshake failure: connection closed during the TLS handshake")
            }
            _ => format!("{host}: handshake failure: {e}"),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!("{host}: {UNKNOWN_ISSUER}"),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("{host}: certificate has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("{host}: certificate is not valid yet (check the system clock)")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "{host}: certificate name mismatch (the certificate is not valid for {host})"
                )
            }
            other => format!("{host}: invalid certificate: {other}"),
        },
        rustls::Error::InvalidMessage(_) => {
            format!(
                "{host}: handshake failure: the server did not answer in TLS (plain HTTP port?)"
            )
        }
        other => format!("{host}: handshake failure: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_loading_reports_why() {
        let dir = std::env::temp_dir().join(format!("km-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        assert!(load_pem_certs(&missing)
            .unwrap_err()
            .contains("No such file"));

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(load_pem_certs(&empty)
            .unwrap_err()
            .contains("no CERTIFICATE"));

        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        let good = dir.join("good.pem");
        std::fs::write(
            &good,
            format!("junk before\n{}{}", ca.cert.pem(), ca.cert.pem()),
        )
        .unwrap();
        let certs = load_pem_certs(&good).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), ca.cert.der().as_ref());

        // Bad paths are skipped, never fatal.
        let _ = build_config(&[missing, empty, good]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn io_errors_are_handshake_failures() {
        let e = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert!(classify(&e, "h").contains("handshake failure"));
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        );
        assert_eq!(classify(&e, "h"), "h: certificate has expired");
    }
}
