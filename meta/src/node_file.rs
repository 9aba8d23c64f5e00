//! The TOML file that configures one meta node run as its own process
//! (`meridian-meta-node --config FILE`). Example:
//!
//! ```toml
//! node_id = 2
//! listen = "127.0.0.2:7100"        # port 0: the OS picks one; the process prints it
//! data_dir = "/var/lib/meridian/meta-2"
//! expected_rtt_ms = 100            # derives every Raft timer (see `config`)
//! admin_token = "..."              # admin writes need it as `Bearer` credential
//! bootstrap = false                # true on exactly one node of a new cluster
//!
//! [tls]                            # mutual TLS on both ports (the production setting)
//! cert = "/etc/meridian/meta-2/cert.pem"
//! key = "/etc/meridian/meta-2/key.pem"
//! ca = "/etc/meridian/ca.pem"
//! ```
//!
//! Instead of `[tls]`, a development cluster may set `plaintext_peer_token = "..."`: plain-text
//! gRPC with a shared peer token. Exactly one of the two must be present, so plain text is
//! never what a missing section silently means.
//!
//! `bootstrap = true` makes the node, when its data directory holds no cluster yet, the single
//! voter of a new cluster; other nodes join through the admin API (`add_learner`, then
//! `change_membership`). On a restart the flag has no effect.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::auth::{Credentials, PeerAuth};
use crate::config::MetaConfig;
use crate::error::NodeError;
use crate::raft_types::NodeId;

/// The parsed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub node_id: NodeId,
    pub listen: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub expected_rtt_ms: u64,
    pub admin_token: String,
    #[serde(default)]
    pub bootstrap: bool,
    pub tls: Option<TlsFiles>,
    pub plaintext_peer_token: Option<String>,
}

/// Paths of the node's certificate chain, private key and the fabric CA, all PEM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl NodeFile {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::Config {
            field: "config file",
            reason: format!("{}: {source}", path.display()),
        })?;
        Self::parse(&text).map_err(|error| match error {
            NodeError::Config { field, reason } => NodeError::Config {
                field,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, NodeError> {
        let file: Self = toml::from_str(text).map_err(|error| NodeError::Config {
            field: "config file",
            reason: error.to_string(),
        })?;
        match (&file.tls, &file.plaintext_peer_token) {
            (Some(_), None) | (None, Some(_)) => Ok(file),
            (Some(_), Some(_)) => Err(NodeError::Config {
                field: "tls",
                reason: "set either [tls] or plaintext_peer_token, not both".into(),
            }),
            (None, None) => Err(NodeError::Config {
                field: "tls",
                reason: "missing [tls] (cert, key, ca); plain text needs plaintext_peer_token \
                         set explicitly"
                    .into(),
            }),
        }
    }

    /// The node's credentials; certificate files are read and checked here.
    pub fn credentials(&self) -> Result<Credentials, NodeError> {
        let peer =
            match (&self.tls, &self.plaintext_peer_token) {
                (Some(files), _) => PeerAuth::MutualTls(Arc::new(
                    meridian_pki::NodeIdentity::load(&files.cert, &files.key, &files.ca)?,
                )),
                (None, Some(token)) => PeerAuth::PlaintextToken(token.clone()),
                (None, None) => {
                    return Err(NodeError::Config {
                        field: "tls",
                        reason: "missing".into(),
                    });
                }
            };
        Ok(Credentials {
            peer,
            admin_token: self.admin_token.clone(),
        })
    }

    /// Timers derived from `expected_rtt_ms`.
    pub fn meta_config(&self) -> MetaConfig {
        MetaConfig::new(self.node_id, self.expected_rtt_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        node_id = 3
        listen = "127.0.0.3:0"
        data_dir = "/tmp/meta-3"
        admin_token = "a"
    "#;

    #[test]
    fn plain_text_must_be_chosen_explicitly() {
        let missing = NodeFile::parse(BASE).expect_err("no transport chosen");
        assert!(
            missing.to_string().contains("plaintext_peer_token"),
            "{missing}"
        );

        let plain = NodeFile::parse(&format!("{BASE}\nplaintext_peer_token = \"p\"\n"))
            .expect("explicit plain text");
        assert!(matches!(
            plain.credentials().expect("credentials").peer,
            PeerAuth::PlaintextToken(token) if token == "p"
        ));
        assert_eq!(plain.meta_config().node_id, 3);
        assert!(!plain.bootstrap);

        let both = format!(
            "plaintext_peer_token = \"p\"\n{BASE}\n[tls]\ncert = \"c\"\nkey = \"k\"\nca = \"a\"\n"
        );
        assert!(NodeFile::parse(&both).is_err());
    }

    #[test]
    fn unreadable_certificate_files_are_named() {
        let file = NodeFile::parse(&format!(
            "{BASE}\n[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"k\"\nca = \"a\"\n"
        ))
        .expect("parses");
        let error = file.credentials().expect_err("files are missing");
        let chain = format!(
            "{error}: {}",
            std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(chain.contains("/nonexistent/cert.pem"), "{chain}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = NodeFile::parse(&format!(
            "{BASE}\nplaintext_peer_token = \"p\"\nlisten_port = 1\n"
        ))
        .expect_err("typo");
        assert!(error.to_string().contains("listen_port"), "{error}");
    }
}
