//! The drill fabric's links between regions, each through a chaos proxy, so partition, heal and
//! degrade steps act on real sockets: for every ordered pair of regions (A dials B) and every
//! service A dials (B's meta over TCP, B's RocketMQ gRPC for forwarded sends over TCP, B's
//! replication over UDP), a proxy listens on B's own host address (so B's certificate still
//! names the address A dials) and forwards to B's endpoint. `meridian start --dial-via` points A
//! at the proxies; clients still reach every region directly.

use std::net::SocketAddr;

use anyhow::Context;
use meridian_chaos::{
    ProxyControl, ProxyHandle, TcpProxy, TcpProxyConfig, UdpProxy, UdpProxyConfig,
};
use meridian_topology::{Endpoint, RegionConfig};

use crate::region::endpoint_addr;

/// Every proxy of the fabric.
pub(crate) struct DrillLinks {
    proxies: Vec<Link>,
}

struct Link {
    from: String,
    to: String,
    /// The endpoint behind the proxy.
    upstream: SocketAddr,
    handle: ProxyHandle,
}

impl DrillLinks {
    /// Starts the proxies between every pair of `regions`.
    pub(crate) async fn start(regions: &[RegionConfig]) -> anyhow::Result<Self> {
        let mut proxies = Vec::new();
        for from in regions {
            for to in regions.iter().filter(|to| to.name != from.name) {
                for (service, endpoint, udp) in [
                    ("meta", &to.meta, false),
                    ("grpc", &to.grpc, false),
                    ("replication", &to.replication, true),
                ] {
                    proxies.push(
                        start_one(from, to, service, endpoint, udp)
                            .await
                            .with_context(|| {
                                format!("the {service} link {} -> {}", from.name, to.name)
                            })?,
                    );
                }
            }
        }
        Ok(DrillLinks { proxies })
    }

    /// `meridian start` arguments that make `region` dial its peers through the proxies.
    pub(crate) fn dial_args(&self, region: &str) -> Vec<String> {
        self.proxies
            .iter()
            .filter(|link| link.from == region)
            .flat_map(|link| {
                [
                    "--dial-via".to_string(),
                    format!("{}={}", link.upstream, link.handle.local_addr()),
                ]
            })
            .collect()
    }

    /// The controls of every link between `region` and the others, both directions.
    pub(crate) fn controls_of(&self, region: &str) -> Vec<ProxyControl> {
        self.proxies
            .iter()
            .filter(|link| link.from == region || link.to == region)
            .map(|link| link.handle.control())
            .collect()
    }

    /// Stops every proxy.
    pub(crate) async fn shutdown(self) {
        for link in self.proxies {
            link.handle.shutdown().await;
        }
    }
}

async fn start_one(
    from: &RegionConfig,
    to: &RegionConfig,
    service: &str,
    endpoint: &Endpoint,
    udp: bool,
) -> anyhow::Result<Link> {
    let upstream = endpoint_addr(endpoint, service, to)?;
    let listen = SocketAddr::new(upstream.ip(), 0);
    let handle = if udp {
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("binding UDP {listen}"))?;
        UdpProxy::spawn(socket, UdpProxyConfig::new(upstream))?
    } else {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding TCP {listen}"))?;
        TcpProxy::spawn(listener, TcpProxyConfig::new(upstream))?
    };
    Ok(Link {
        from: from.name.as_str().to_string(),
        to: to.name.as_str().to_string(),
        upstream,
        handle,
    })
}
