//! One region of the fabric in this process: its meta node, its cell, its replicator and the
//! meta agent that connects them. `meridian dev` runs every region of the dev fabric through
//! this module in one process; `meridian start` runs one region (its config's `node.region`).
//!
//! - **Meta**: a voter of the fabric's meta Raft group, whose members are all regions' `meta`
//!   endpoints with node ids 1, 2, ... in the configuration's region order (every process reads
//!   the same file, so every process derives the same ids). The region whose name sorts first
//!   initializes the group with all members the first time it starts (its Raft state is
//!   pristine); the others wait for the leader to reach them, and a restart on existing data
//!   rejoins with what is on disk. Mutual TLS with the region's certificate from the fabric CA;
//!   admin writes also need the admin token.
//! - **Cell**: storage, broker, the RocketMQ 5 gRPC endpoint with Meridian's admin API, and
//!   Prometheus metrics ([`metrics`]). The broker's `sync-quorum` sends wait on the replicator's
//!   quorum.
//! - **Replicator**: the QUIC link to every other region (full mesh, mutual TLS). Its links
//!   start with per-destination filters that withhold the topics a peer is not a region of,
//!   computed from this region's meta replica at start (the replicator has no runtime setter
//!   yet, so later topic changes reach the filters at the next start).
//! - **Meta agent** ([`agent`]): registers the region and cell in meta, heartbeats, and applies
//!   meta's topics and consumer groups to the cell (mapping in [`plan`], sans IO).
//!
//! Data layout under the region's directory: `cell/` (log and broker state), `meta/` (Raft log,
//! vote and snapshots).

pub(crate) mod agent;
#[cfg(test)]
mod agent_tests;
pub(crate) mod metrics;
pub(crate) mod plan;
pub(crate) mod routing;
pub(crate) mod skew;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_cell::Hlc;
use meridian_cell::grpc::{
    AdminConfig, GrpcConfig, GrpcForwarder, ReplicationStatusSource, SendForwarder,
    serve as serve_grpc,
};
use meridian_cell::messaging::{Broker, BrokerConfig, SystemClock};
use meridian_cell::storage::{Durability, Storage, StorageConfig};
use meridian_meta::client::{ClientCredentials, MetaClient};
use meridian_meta::state::ObjectKind;
use meridian_meta::{Credentials, MetaNode, NodeOptions, PeerAuth, RunningNode, system_clock};
use meridian_pki::NodeIdentity;
use meridian_replicator::link::filter::DestinationFilter;
use meridian_replicator::quic::{PeerConfig, Replicator, ReplicatorConfig};
use meridian_topology::{CellConfig, Endpoint, RegionConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub(crate) use agent::AgentStatus;

/// Remote HLC stamps further ahead of this cell's clock are not followed (see `Hlc::observe`).
const HLC_MAX_DELTA: Duration = Duration::from_millis(500);
/// How long the gRPC server may take to drain on stop.
const GRPC_STOP_TIMEOUT_MS: u64 = 5_000;
/// Longest a send forwarded to another region's cell may take.
const FORWARD_TIMEOUT_MS: u64 = 5_000;
/// Meta records cell heartbeats in one Raft write this often: fresh enough that the router's
/// health view (suspect after 750 ms of silence) never sees a live region as silent.
const META_HEARTBEAT_FLUSH_MS: u64 = 200;

/// Everything needed to run one region.
#[derive(Clone)]
pub(crate) struct RegionOptions {
    /// Every region of the fabric, in configuration order (this order fixes meta node ids).
    pub(crate) regions: Vec<RegionConfig>,
    /// Storage settings shared by every cell.
    pub(crate) cell: CellConfig,
    /// The region to run.
    pub(crate) region: String,
    /// The region's own directory (`cell/` and `meta/` go under it).
    pub(crate) data_dir: PathBuf,
    /// The region's certificate from the fabric CA (replication and meta).
    pub(crate) identity: Arc<NodeIdentity>,
    /// The meta admin token.
    pub(crate) admin_token: String,
    /// Overrides `[cell] durability`.
    pub(crate) durability: Option<Durability>,
    /// Queues of topics created on first use; `None` refuses unknown topics.
    pub(crate) auto_create_queues: Option<u32>,
    /// Expected round trip between the farthest meta nodes (derives the Raft timers).
    pub(crate) meta_expected_rtt_ms: u64,
    /// Cell heartbeat period (also the write lease's renewal period).
    pub(crate) heartbeat_interval_ms: u64,
    /// For each region, every region nearest first (the topology's latency map): failover
    /// targets and heirs.
    pub(crate) proximity: BTreeMap<String, Vec<String>>,
    /// Another region's endpoint (`host:port` of its replication, meta or gRPC endpoint) → the
    /// address this region dials instead: a latency or fault proxy in front of it (`meridian
    /// dev`'s latency links, drills' partitions). Peers are still authenticated as themselves:
    /// replication checks the region name in the certificate, and a meta proxy listens on the
    /// peer's own host address so the TLS name still matches.
    pub(crate) dial_via: BTreeMap<String, String>,
    /// Offset of this region's cell clock from the wall clock, ms (clock-skew drills; see
    /// `skew`); 0 runs on the plain system clock.
    pub(crate) clock_offset_ms: i64,
}

impl RegionOptions {
    fn config(&self) -> anyhow::Result<&RegionConfig> {
        self.regions
            .iter()
            .find(|region| region.name.as_str() == self.region)
            .with_context(|| format!("region {} is not in the fabric", self.region))
    }

    /// Meta node id of each region: its position in the configuration, from 1.
    pub(crate) fn meta_members(&self) -> BTreeMap<u64, String> {
        self.regions
            .iter()
            .zip(1u64..)
            .map(|(region, id)| (id, region.meta.to_string()))
            .collect()
    }

    /// The other regions of the fabric, in configuration order.
    pub(crate) fn peers(&self) -> Vec<String> {
        self.regions
            .iter()
            .map(|region| region.name.as_str())
            .filter(|name| *name != self.region)
            .map(str::to_string)
            .collect()
    }

    /// Where this region dials `endpoint` of another region.
    pub(crate) fn dial(&self, endpoint: &str) -> String {
        self.dial_via
            .get(endpoint)
            .cloned()
            .unwrap_or_else(|| endpoint.to_string())
    }

    /// Every region's meta endpoint, this region's first (the agent's watch starts there).
    pub(crate) fn meta_endpoints(&self) -> Vec<String> {
        let mut endpoints: Vec<(bool, String)> = self
            .regions
            .iter()
            .map(|region| {
                (
                    region.name.as_str() != self.region,
                    self.dial(&region.meta.to_string()),
                )
            })
            .collect();
        endpoints.sort_by_key(|(other, _)| *other);
        endpoints
            .into_iter()
            .map(|(_, endpoint)| endpoint)
            .collect()
    }
}

/// For each region of `latency`, every region nearest first.
pub(crate) fn proximity(latency: &meridian_topology::LatencyMap) -> BTreeMap<String, Vec<String>> {
    latency
        .regions()
        .iter()
        .map(|from| {
            (
                from.as_str().to_string(),
                latency
                    .by_proximity(from)
                    .into_iter()
                    .map(|region| region.as_str().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// The cell id this binary registers for `region` (one cell per region).
pub(crate) fn cell_id(region: &str) -> String {
    format!("{region}-cell")
}

/// A running region.
pub(crate) struct RunningRegion {
    name: String,
    storage: Arc<Storage>,
    broker: Arc<Broker>,
    replicator: Arc<Replicator>,
    meta: RunningNode,
    grpc: JoinHandle<()>,
    metrics: JoinHandle<()>,
    agent: JoinHandle<()>,
    /// Lease renewal, route following and the failover driver.
    routing: Vec<JoinHandle<()>>,
    status: watch::Receiver<AgentStatus>,
    shutdown: watch::Sender<bool>,
}

impl RunningRegion {
    /// Opens the cell, starts meta, the replicator, the gRPC and metrics endpoints and the
    /// agent. Prints one line describing the region.
    pub(crate) async fn start(options: &RegionOptions) -> anyhow::Result<Self> {
        let region = options.config()?.clone();
        let name = region.name.as_str().to_string();
        let (shutdown, shutdown_rx) = watch::channel(false);
        // The TCP endpoints are bound first: a port in use is the likeliest failure, and
        // nothing needs undoing yet.
        let grpc_addr = endpoint_addr(&region.grpc, "grpc", &region)?;
        let listener = tokio::net::TcpListener::bind(grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC endpoint {grpc_addr} of {name}"))?;
        let metrics_addr = endpoint_addr(&region.metrics, "metrics", &region)?;
        let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("binding the metrics endpoint {metrics_addr} of {name}"))?;
        let meta = start_meta(options, &region).await?;
        let opened = open_broker(&region, options).and_then(|cell| {
            let filters = initial_filters(meta.node(), options, &name)?;
            let replicator = start_replicator(&region, options, &cell.0, filters)?;
            Ok((cell, replicator))
        });
        let ((storage, broker, durability, dir), replicator) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                // Releases the meta node's storage, so a retry in this process can reopen it.
                meta.stop().await;
                return Err(error);
            }
        };
        tokio::spawn(Arc::clone(&broker).run(shutdown_rx.clone()));
        broker.set_replication_quorum(Arc::new(replicator.quorum()));
        let client = Arc::new(
            MetaClient::new(
                options.meta_endpoints(),
                ClientCredentials {
                    tls: Some(Arc::clone(&options.identity)),
                    peer_token: None,
                    admin_token: Some(options.admin_token.clone()),
                },
            )
            .with_retry_pause(Duration::from_millis(100), Duration::from_secs(1)),
        );
        let agent_config = agent::AgentConfig {
            region: name.clone(),
            zone: region.zone.clone(),
            cell_id: cell_id(&name),
            region_endpoints: vec![
                region.grpc.to_string(),
                region.meta.to_string(),
                region.replication.to_string(),
            ],
            cell_endpoints: vec![region.grpc.to_string()],
            peers: options.peers(),
            heartbeat_interval_ms: options.heartbeat_interval_ms,
            retry_pause_ms_first: 100,
            retry_pause_ms_max: 2_000,
        };
        let (agent, status) = agent::spawn(
            agent_config,
            Arc::clone(&client),
            Arc::clone(&broker),
            shutdown_rx.clone(),
        );
        let router = Arc::new(routing::RegionRouter::new(&name, options.proximity.clone()));
        broker.set_write_gate(Arc::clone(&router) as Arc<dyn meridian_cell::messaging::WriteGate>);
        let routing = vec![
            tokio::spawn(routing::follow_routes(
                Arc::clone(&router),
                status.clone(),
                shutdown_rx.clone(),
            )),
            tokio::spawn(routing::renew_lease(
                Arc::clone(&router),
                Arc::clone(&client),
                options.heartbeat_interval_ms,
                shutdown_rx.clone(),
            )),
            tokio::spawn(routing::drive_failover(
                Arc::clone(&router),
                client,
                meta.node().clone(),
                Arc::clone(&broker),
                shutdown_rx.clone(),
            )),
        ];
        let forwarder = GrpcForwarder::new(
            options
                .regions
                .iter()
                .filter(|other| other.name.as_str() != name)
                .map(|other| {
                    (
                        other.name.as_str().to_string(),
                        options.dial(&other.grpc.to_string()),
                    )
                }),
            FORWARD_TIMEOUT_MS,
        )
        .context("the forwarder to other regions' cells")?;
        let front_stats = Arc::new(meridian_cell::grpc::FrontStats::default());
        let region_metrics = metrics::RegionMetrics {
            region: name.clone(),
            front: Arc::clone(&front_stats),
            router,
            storage: Arc::clone(&storage),
            broker: Arc::clone(&broker),
            replicator: Arc::clone(&replicator),
            meta: meta.node().clone(),
            agent: status.clone(),
            origins: options.peers(),
        };
        let status_source = region_metrics.clone();
        let grpc_config = GrpcConfig {
            advertised_endpoint: Some(grpc_addr),
            broker_name: cell_id(&name),
            auto_create_topics: options.auto_create_queues,
            admin: Some(AdminConfig {
                replication_status: Some(ReplicationStatusSource(Arc::new(move || {
                    status_source.replication_status()
                }))),
            }),
            forwarder: Some(Arc::new(forwarder) as Arc<dyn SendForwarder>),
            stats: front_stats,
            ..GrpcConfig::default()
        };
        let grpc_broker = Arc::clone(&broker);
        let region_name = name.clone();
        let grpc_shutdown = shutdown_rx.clone();
        let grpc = tokio::spawn(async move {
            if let Err(error) = serve_grpc(grpc_broker, listener, grpc_config, grpc_shutdown).await
            {
                tracing::error!(region = %region_name, %error, "gRPC endpoint stopped");
            }
        });
        let metrics = tokio::spawn(metrics::serve(metrics_listener, region_metrics));

        let report = storage.recovery_report();
        println!(
            "region {name}: RocketMQ and admin gRPC {grpc_addr}, meta {}, metrics \
             http://{metrics_addr}/metrics, replication UDP {}, {durability} durability, data {} \
             (recovered in {} ms, re-indexed {} records)",
            region.meta,
            region.replication,
            dir.display(),
            report.duration.as_millis(),
            report.reindexed_records
        );
        Ok(RunningRegion {
            name,
            storage,
            broker,
            replicator,
            meta,
            grpc,
            metrics,
            agent,
            routing,
            status,
            shutdown,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn meta(&self) -> &MetaNode {
        self.meta.node()
    }

    pub(crate) fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    pub(crate) fn replicator(&self) -> &Arc<Replicator> {
        &self.replicator
    }

    /// What the meta agent has applied so far.
    pub(crate) fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Stops everything but the replicator (stop that first with `replicator().shutdown()`, all
    /// regions together in one process, so that peers do not keep reconnecting), then closes
    /// the storage.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_millis(GRPC_STOP_TIMEOUT_MS), self.grpc)
            .await
            .is_err()
        {
            tracing::warn!(region = %self.name, "gRPC server did not stop within {GRPC_STOP_TIMEOUT_MS} ms");
        }
        self.agent.abort();
        for task in self.routing {
            task.abort();
        }
        self.metrics.abort();
        self.meta.stop().await;
        self.storage
            .close()
            .with_context(|| format!("closing the storage of region {}", self.name))
    }
}

/// Starts this region's meta node; the region named first in sort order initializes the group
/// with every member when its Raft state is pristine.
async fn start_meta(options: &RegionOptions, region: &RegionConfig) -> anyhow::Result<RunningNode> {
    let name = region.name.as_str();
    let members = options.meta_members();
    let node_id = members
        .iter()
        .find(|(_, addr)| **addr == region.meta.to_string())
        .map(|(id, _)| *id)
        .with_context(|| format!("region {name} has no meta member"))?;
    let addr = endpoint_addr(&region.meta, "meta", region)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the meta endpoint {addr} of {name}"))?;
    let mut config = meridian_meta::MetaConfig::new(node_id, options.meta_expected_rtt_ms);
    config.dial_via = options.dial_via.clone();
    config.heartbeat_flush_interval_ms = META_HEARTBEAT_FLUSH_MS;
    let node_options = NodeOptions {
        config,
        credentials: Credentials {
            peer: PeerAuth::MutualTls(Arc::clone(&options.identity)),
            admin_token: options.admin_token.clone(),
        },
        data_dir: options.data_dir.join("meta"),
        faults: Arc::default(),
        clock: system_clock(),
    };
    let running = RunningNode::start(node_options, listener)
        .await
        .with_context(|| format!("starting the meta node of {name} on {addr}"))?;
    let initializer = options
        .regions
        .iter()
        .map(|region| region.name.as_str())
        .min()
        .unwrap_or(name);
    if initializer == name {
        let initialized = running
            .node()
            .raft()
            .is_initialized()
            .await
            .map_err(|error| anyhow::anyhow!("reading the meta Raft state of {name}: {error}"))?;
        if !initialized {
            running
                .node()
                .initialize(members)
                .await
                .with_context(|| format!("initializing the meta group from {name}"))?;
            tracing::info!(region = name, "meta group initialized");
        }
    }
    Ok(running)
}

/// The replicator's per-destination filters from the topics this region's meta replica has
/// already applied (after a restart: every topic decided before it went down). The replicator
/// reads filters only when its links start, so topics created later are withheld from their
/// links only after the next start (the agent logs them; see `agent`).
fn initial_filters(
    meta: &MetaNode,
    options: &RegionOptions,
    name: &str,
) -> anyhow::Result<HashMap<String, DestinationFilter>> {
    let (revision, topics) = meta
        .view()
        .read(|state| (state.revision(), state.list(ObjectKind::Topics)));
    let mut mirror = plan::MetaMirror::default();
    mirror.reset(revision, topics);
    let cell_plan = plan::plan(name, &options.peers(), &mirror);
    for (peer, topics) in &cell_plan.withheld_by_peer {
        if !topics.is_empty() {
            tracing::info!(region = name, peer = %peer, ?topics, "replication withholds topics outside the peer's regions");
        }
    }
    plan::destination_filters(&cell_plan).context("building the replication filters")
}

/// The cell's directory under the region's directory.
pub(crate) fn cell_dir(region_dir: &Path) -> PathBuf {
    region_dir.join("cell")
}

fn storage_config(region: &RegionConfig, options: &RegionOptions) -> anyhow::Result<StorageConfig> {
    let cell = &options.cell;
    let mut config = StorageConfig::new(cell_dir(&options.data_dir), region.name.as_str());
    config.durability = options.durability.unwrap_or(match cell.durability {
        meridian_topology::Durability::Sync => Durability::Sync,
        meridian_topology::Durability::Async => Durability::Async,
    });
    config.segment_size_bytes = cell.segment_size_bytes;
    config.group_commit_max_wait_us = cell.group_commit_max_wait_us;
    config.group_commit_max_bytes = usize::try_from(cell.group_commit_max_bytes)
        .context("[cell] group_commit_max_bytes does not fit this machine")?;
    config.async_flush_interval_ms = cell.async_flush_interval_ms;
    config.retention_max_age_ms = Some(cell.retention_max_age_s.saturating_mul(1_000));
    config.retention_max_total_bytes = cell.retention_max_total_bytes;
    Ok(config)
}

type OpenedCell = (Arc<Storage>, Arc<Broker>, Durability, PathBuf);

fn open_broker(region: &RegionConfig, options: &RegionOptions) -> anyhow::Result<OpenedCell> {
    let name = region.name.as_str();
    let config = storage_config(region, options)?;
    let durability = config.durability;
    let dir = config.dir.clone();
    let (hlc, clock): (Hlc, Arc<dyn meridian_cell::messaging::Clock>) =
        if options.clock_offset_ms == 0 {
            (Hlc::system(HLC_MAX_DELTA), Arc::new(SystemClock))
        } else {
            skew::set_offset_ms(options.clock_offset_ms)?;
            tracing::warn!(
                region = name,
                offset_ms = options.clock_offset_ms,
                "the cell runs on a skewed clock"
            );
            (
                Hlc::with_physical_clock(skew::skewed_ntp64, HLC_MAX_DELTA),
                Arc::new(skew::SkewedClock),
            )
        };
    let storage = Arc::new(
        Storage::open(config, Arc::new(hlc))
            .with_context(|| format!("opening the cell storage of {name} in {}", dir.display()))?,
    );
    let broker = Broker::open(Arc::clone(&storage), BrokerConfig::default(), clock)
        .with_context(|| format!("opening the broker of {name}"))?;
    Ok((storage, broker, durability, dir))
}

/// Starts the replicator of `region`: it listens on the region's `replication` endpoint and
/// links to every other region of the fabric (links retry with backoff until peers are up).
fn start_replicator(
    region: &RegionConfig,
    options: &RegionOptions,
    storage: &Arc<Storage>,
    filters: HashMap<String, DestinationFilter>,
) -> anyhow::Result<Arc<Replicator>> {
    let name = region.name.as_str();
    let listen = endpoint_addr(&region.replication, "replication", region)?;
    let mut config = ReplicatorConfig::with_identity(name, listen, &options.identity)
        .with_context(|| format!("the replication TLS configuration of {name}"))?;
    config.destination_filters = filters;
    for peer in options
        .regions
        .iter()
        .filter(|peer| peer.name != region.name)
    {
        config.peers.push(PeerConfig {
            region: peer.name.as_str().to_string(),
            addr: match options.dial_via.get(&peer.replication.to_string()) {
                Some(via) => via.parse().with_context(|| {
                    format!(
                        "the address dialled for {}'s replication, {via:?}",
                        peer.name
                    )
                })?,
                None => endpoint_addr(&peer.replication, "replication", peer)?,
            },
            server_name: peer.name.as_str().to_string(),
        });
    }
    let replicator = Replicator::start(config, Arc::clone(storage)).with_context(|| {
        format!("starting the replicator of {name} on UDP {listen} (is the port in use?)")
    })?;
    Ok(Arc::new(replicator))
}

/// The socket address of an endpoint whose host is an IP address.
pub(crate) fn endpoint_addr(
    endpoint: &Endpoint,
    what: &str,
    region: &RegionConfig,
) -> anyhow::Result<SocketAddr> {
    let host = endpoint.host();
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, endpoint.port())),
        Err(_) => bail!(
            "regions.{}.{what}: the host {host:?} must be an IP address",
            region.name.as_str()
        ),
    }
}
