//! Who the agent is, and where the bucket's PM2.io endpoints are.

use std::collections::BTreeMap;

/// The `endpoints` object of a verifyPM2 answer (`web`, `ws`, `push`,
/// `reverse`, possibly more), kept as given.
pub type Endpoints = BTreeMap<String, String>;

/// Who the agent is, as PM2.io sees it (handshake headers, payload fields).
#[derive(Clone)]
pub struct Identity {
    pub public_key: String,
    pub secret_key: String,
    pub machine_name: String,
    /// `PM2_VERSION` or `0.0.0`.
    pub pm2_version: String,
    /// This agent's version, for `User-Agent: PM2 Agent v<version>`.
    pub agent_version: String,
}

impl Identity {
    /// The secret key as the agent shows it to anyone but PM2.io (the
    /// `secret_key` of the IPC message and of `getInfos`): see
    /// [`mask_secret`].
    pub fn masked_secret(&self) -> String {
        mask_secret(&self.secret_key)
    }
}

/// `****` and the last four characters (`****` alone for a key of four
/// characters or fewer, nothing for an empty one): what the CLI prints
/// (`maskSecret` in src/InteractorClient.js), enough to tell keys apart.
pub fn mask_secret(secret: &str) -> String {
    let n = secret.chars().count();
    match n {
        0 => String::new(),
        1..=4 => "****".to_owned(),
        _ => {
            let tail: String = secret.chars().skip(n - 4).collect();
            format!("****{tail}")
        }
    }
}

impl std::fmt::Debug for Identity {
    // The secret key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key)
            .field("machine_name", &self.machine_name)
            .field("pm2_version", &self.pm2_version)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_like_the_cli() {
        assert_eq!(mask_secret("top-secret-key-abcd"), "****abcd");
        assert_eq!(mask_secret("abcde"), "****bcde");
        assert_eq!(mask_secret("abcd"), "****");
        assert_eq!(mask_secret("a"), "****");
        assert_eq!(mask_secret(""), "");
        assert_eq!(mask_secret("ééééé"), "****éééé");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let id = Identity {
            public_key: "pub".into(),
            secret_key: "s3cr3t".into(),
            machine_name: "m".into(),
            pm2_version: "7.0.4".into(),
            agent_version: "0.1.0".into(),
        };
        let s = format!("{id:?}");
        assert!(s.contains("pub") && !s.contains("s3cr3t"), "{s}");
    }
}
