//! Named proxy links described as data (TOML), and the shell that binds and starts them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, UdpSocket};

use crate::error::{ChaosError, Result};
use crate::fault::LinkFaults;
use crate::proxy::{ProxyHandle, TcpProxy, TcpProxyConfig, UdpProxy, UdpProxyConfig};
use crate::schedule::Schedule;

/// Upper bound on links started from one file.
pub const MAX_LINKS: usize = 256;

/// Transport of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    /// Datagrams (QUIC replication).
    Udp,
    /// Byte stream (gRPC, metadata).
    Tcp,
}

/// One proxied link: clients use `listen` instead of `upstream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Name used by schedules and control commands.
    pub name: String,
    /// Transport.
    pub kind: LinkKind,
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Address it forwards to.
    pub upstream: SocketAddr,
    /// Faults at start.
    #[serde(default)]
    pub faults: LinkFaults,
}

/// A file of links: `[[link]]` tables.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksFile {
    /// The links.
    #[serde(default)]
    pub link: Vec<LinkSpec>,
}

impl LinksFile {
    /// Parses and validates (unique names, valid faults, at most [`MAX_LINKS`]).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: Self = toml::from_str(text).map_err(|source| ChaosError::Toml {
            what: "links file",
            source,
        })?;
        if file.link.len() > MAX_LINKS {
            return Err(ChaosError::InvalidSchedule(format!(
                "{} links, at most {MAX_LINKS}",
                file.link.len()
            )));
        }
        let mut names = std::collections::BTreeSet::new();
        for link in &file.link {
            if !names.insert(link.name.as_str()) {
                return Err(ChaosError::InvalidSchedule(format!(
                    "duplicate link name {:?}",
                    link.name
                )));
            }
            link.faults.validate()?;
        }
        Ok(file)
    }
}

/// Binds and starts every link; seeds come from `schedule` so a run can be replayed.
pub async fn start_links(
    links: &[LinkSpec],
    schedule: &Schedule,
) -> Result<BTreeMap<String, ProxyHandle>> {
    let mut handles = BTreeMap::new();
    for link in links {
        let seed = schedule.link_seed(&link.name);
        let handle = match link.kind {
            LinkKind::Udp => {
                let socket = UdpSocket::bind(link.listen)
                    .await
                    .map_err(|e| ChaosError::io(format!("binding udp {}", link.listen), e))?;
                let mut config = UdpProxyConfig::new(link.upstream);
                config.faults = link.faults.clone();
                config.seed = seed;
                UdpProxy::spawn(socket, config)?
            }
            LinkKind::Tcp => {
                let listener = TcpListener::bind(link.listen)
                    .await
                    .map_err(|e| ChaosError::io(format!("binding tcp {}", link.listen), e))?;
                let mut config = TcpProxyConfig::new(link.upstream);
                config.faults = link.faults.clone();
                config.seed = seed;
                TcpProxy::spawn(listener, config)?
            }
        };
        tracing::info!(name = %link.name, kind = ?link.kind, listen = %handle.local_addr(), upstream = %link.upstream, "link proxy started");
        handles.insert(link.name.clone(), handle);
    }
    Ok(handles)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const LINKS: &str = r#"
[[link]]
name = "us-eu-quic"
kind = "udp"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:9"

[[link]]
name = "us-meta"
kind = "tcp"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:9"
faults = { latency_ms = 25 }
"#;

    #[test]
    fn parses_and_rejects_duplicates() {
        let file = LinksFile::from_toml_str(LINKS).unwrap();
        assert_eq!(file.link.len(), 2);
        assert_eq!(file.link[1].kind, LinkKind::Tcp);
        assert_eq!(file.link[1].faults.latency_ms, 25);
        let duplicated = LINKS.replace("us-meta", "us-eu-quic");
        assert!(LinksFile::from_toml_str(&duplicated).is_err());
    }

    #[tokio::test]
    async fn starts_each_link_with_its_faults() {
        let file = LinksFile::from_toml_str(LINKS).unwrap();
        let handles = start_links(&file.link, &Schedule::default()).await.unwrap();
        assert_eq!(handles.len(), 2);
        assert_eq!(handles["us-meta"].control().faults().latency_ms, 25);
        assert_ne!(handles["us-eu-quic"].local_addr().port(), 0);
    }
}
