//! Helpers the transporter tests share: an identity, bounded waits, ports.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::common::Identity;

/// Upper bound of every wait: generous, tests never assert timings.
pub const LIMIT: Duration = Duration::from_secs(10);

pub fn identity(secret: &str) -> Identity {
    Identity {
        public_key: "pub".into(),
        secret_key: secret.into(),
        machine_name: "m1".into(),
        pm2_version: "5.0.0".into(),
        agent_version: "1.0.8".into(),
    }
}

pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("timed out")
}

pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A port with nothing listening (yet).
pub async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fast reconnects for tests.
pub fn fast_link() -> crate::transport::link::LinkOptions {
    crate::transport::link::LinkOptions {
        proof_timeout: Duration::from_secs(3),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..Default::default()
    }
}
