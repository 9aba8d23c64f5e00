//! The dev fabric's inter-region replication links, each through a chaos UDP proxy that adds
//! the one-way latency of the topology's `[[links]]`, so a laptop sees replication lag, sync-quorum
//! round trips and failover timing of the modelled regions rather than loopback's microseconds.
//!
//! One proxy per dialling direction: region A's replicator dials B through the proxy `A→B`,
//! listening on A's own loopback address; the proxy forwards to B's replication endpoint and
//! delays every datagram, both ways, by the link's latency `A→B` (the dev links are symmetric).
//! Peers are still authenticated by certificate, so the proxy sees only ciphertext. Meta and
//! gRPC are not proxied: the brief's latency is the replication fabric's.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use meridian_chaos::{LinkFaults, ProxyHandle, UdpProxy, UdpProxyConfig};
use meridian_topology::{Fabric, RegionConfig};

use crate::region::endpoint_addr;

/// One running link proxy.
pub(crate) struct LinkProxy {
    /// The dialling region.
    pub(crate) from: String,
    /// The region dialled.
    pub(crate) to: String,
    /// Added one-way delay.
    pub(crate) latency_ms: u64,
    /// The peer's replication endpoint behind the proxy.
    upstream: SocketAddr,
    handle: ProxyHandle,
}

impl LinkProxy {
    /// Where `from` dials `to`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }
}

/// The running proxies, and for each region where it dials each peer.
pub(crate) struct LinkProxies {
    proxies: Vec<LinkProxy>,
}

impl LinkProxies {
    /// Starts a proxy for every ordered pair of regions with the topology's latency. Regions the
    /// latency map does not relate (none in the embedded fabric) are dialled directly.
    pub(crate) async fn start(fabric: &Fabric) -> anyhow::Result<Self> {
        let regions = &fabric.config().regions;
        let mut proxies = Vec::new();
        for from in regions {
            for to in regions.iter().filter(|to| to.name != from.name) {
                let Some(latency_ms) = fabric.latency().one_way_ms(&from.name, &to.name) else {
                    continue;
                };
                proxies.push(start_one(from, to, latency_ms).await?);
            }
        }
        Ok(LinkProxies { proxies })
    }

    /// No proxies: every region dials its peers directly.
    pub(crate) fn none() -> Self {
        LinkProxies {
            proxies: Vec::new(),
        }
    }

    /// Where `region` dials each peer's replication endpoint that has a proxy.
    pub(crate) fn dial_map(&self, region: &str) -> BTreeMap<String, String> {
        self.proxies
            .iter()
            .filter(|proxy| proxy.from == region)
            .map(|proxy| (proxy.upstream.to_string(), proxy.addr().to_string()))
            .collect()
    }

    /// The links of `region`, for `endpoints.json`: peer → proxy address and latency.
    pub(crate) fn describe(&self, region: &str) -> serde_json::Value {
        let links: serde_json::Map<String, serde_json::Value> = self
            .proxies
            .iter()
            .filter(|proxy| proxy.from == region)
            .map(|proxy| {
                (
                    proxy.to.clone(),
                    serde_json::json!({
                        "via": proxy.addr().to_string(),
                        "latency_ms": proxy.latency_ms,
                    }),
                )
            })
            .collect();
        serde_json::Value::Object(links)
    }

    /// Whether any link is proxied.
    pub(crate) fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// Every proxy, for the summary.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &LinkProxy> {
        self.proxies.iter()
    }

    /// Stops every proxy (after the replicators, so their goodbyes still pass).
    pub(crate) async fn shutdown(self) {
        for proxy in self.proxies {
            proxy.handle.shutdown().await;
        }
    }
}

async fn start_one(
    from: &RegionConfig,
    to: &RegionConfig,
    latency_ms: u64,
) -> anyhow::Result<LinkProxy> {
    let upstream = endpoint_addr(&to.replication, "replication", to)?;
    // The proxy listens on the dialling region's own address, so every region's traffic stays on
    // its 127.0.0.x; the port is the kernel's choice.
    let local_ip = endpoint_addr(&from.replication, "replication", from)?.ip();
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .with_context(|| format!("binding the {} → {} link proxy", from.name, to.name))?;
    let mut config = UdpProxyConfig::new(upstream);
    config.faults = LinkFaults {
        latency_ms,
        ..LinkFaults::clean()
    };
    config.upstream_bind_ip = local_ip;
    let handle = UdpProxy::spawn(socket, config)
        .with_context(|| format!("starting the {} → {} link proxy", from.name, to.name))?;
    Ok(LinkProxy {
        from: from.name.as_str().to_string(),
        to: to.name.as_str().to_string(),
        latency_ms,
        upstream,
        handle,
    })
}
