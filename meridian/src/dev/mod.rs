//! `meridian dev`: the embedded dev fabric on one machine.
//!
//! Every region of the dev fabric (`us-east`, `eu-west`, `ap-south` on 127.0.0.1, .2, .3; see
//! `topology/src/dev.toml`) runs a cell: its storage, its broker and its RocketMQ 5 gRPC endpoint
//! (with Meridian's admin API on the same port), so that the official RocketMQ clients can
//! produce and consume against any region; and a replicator on the region's `replication` UDP
//! endpoint with a QUIC link to every other region (full mesh, mutual TLS with certificates
//! under `DATA_DIR/pki/`), so a message sent in one region becomes receivable in the others.
//! Unknown topics and consumer groups are created on first use (NORMAL, 4 queues) unless
//! `--no-auto-create-topics` is given. Demo topics and groups are created in each cell;
//! `--topic` and `--group` add more. `DATA_DIR/endpoints.json` lists every endpoint; a line
//! `ready` is printed once every region serves. Ctrl-C or SIGTERM stops it cleanly. Meta and
//! routing join as those layers land; the inter-region links run without added latency.

mod metrics;
mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_cell::Hlc;
use meridian_cell::grpc::{AdminConfig, GrpcConfig, ReplicationStatusSource, serve as serve_grpc};
use meridian_cell::messaging::{Broker, BrokerConfig, GroupConfig, SystemClock, TopicMessageType};
use meridian_cell::storage::{Durability, Storage, StorageConfig};
use meridian_pki::NodeIdentity;
use meridian_replicator::quic::{PeerConfig, Replicator, ReplicatorConfig};
use meridian_topology::{CellConfig, FabricConfig, RegionConfig};
use tokio::sync::watch;

/// Queues of the demo topics.
const DEMO_QUEUES: u32 = 4;
/// Topics every dev cell starts with: name and message type.
const DEMO_TOPICS: [(&str, TopicMessageType); 4] = [
    ("demo-normal", TopicMessageType::Normal),
    ("demo-fifo", TopicMessageType::Fifo),
    ("demo-delay", TopicMessageType::Delay),
    ("demo-txn", TopicMessageType::Transaction),
];
/// Consumer groups every dev cell starts with: name and whether it consumes in FIFO order.
const DEMO_GROUPS: [(&str, bool); 2] = [("demo-group", false), ("demo-fifo-group", true)];

/// Arguments of `meridian dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Directory for all data; reused on restart.
    #[arg(long, default_value = "./meridian-dev-data")]
    data_dir: PathBuf,
    /// Durability of every cell's log, overriding the dev fabric's `sync`: `sync` (fsync before
    /// acknowledging) or `async`.
    #[arg(long)]
    durability: Option<Durability>,
    /// Extra topic in every cell, as NAME:TYPE[:QUEUES] with TYPE one of normal, fifo, delay,
    /// transaction, mixed (repeatable).
    #[arg(long = "topic", value_parser = parse_topic)]
    topics: Vec<(String, TopicMessageType, u32)>,
    /// Extra consumer group in every cell, as NAME or NAME:fifo (repeatable).
    #[arg(long = "group", value_parser = parse_group)]
    groups: Vec<(String, bool)>,
    /// Refuse unknown topics and consumer groups instead of creating them (NORMAL, 4 queues)
    /// on first use; create them with `meridian topic create` / `meridian group create`.
    #[arg(long)]
    no_auto_create_topics: bool,
}

fn parse_topic(text: &str) -> Result<(String, TopicMessageType, u32), String> {
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() {
        return Err(format!(
            "--topic {text:?}: the name is empty; write NAME:TYPE[:QUEUES]"
        ));
    }
    let kind = match parts.next().map(str::trim) {
        Some("normal") => TopicMessageType::Normal,
        Some("fifo") => TopicMessageType::Fifo,
        Some("delay") => TopicMessageType::Delay,
        Some("transaction") => TopicMessageType::Transaction,
        Some("mixed") => TopicMessageType::Mixed,
        other => {
            return Err(format!(
                "--topic {text:?}: type {:?} is not one of normal, fifo, delay, transaction, mixed",
                other.unwrap_or_default()
            ));
        }
    };
    let queues = match parts.next() {
        Some(count) => count
            .trim()
            .parse::<u32>()
            .map_err(|error| format!("--topic {text:?}: queue count {count:?}: {error}"))?,
        None => DEMO_QUEUES,
    };
    if parts.next().is_some() {
        return Err(format!(
            "--topic {text:?}: too many fields; write NAME:TYPE[:QUEUES]"
        ));
    }
    Ok((name.to_string(), kind, queues))
}

fn parse_group(text: &str) -> Result<(String, bool), String> {
    match text.split_once(':') {
        None if !text.trim().is_empty() => Ok((text.trim().to_string(), false)),
        Some((name, "fifo")) if !name.trim().is_empty() => Ok((name.trim().to_string(), true)),
        _ => Err(format!("--group {text:?}: write NAME or NAME:fifo")),
    }
}

pub(crate) fn run(args: DevArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args))
}

/// One running region.
struct RegionCell {
    name: String,
    storage: Arc<Storage>,
    replicator: Arc<Replicator>,
    grpc: tokio::task::JoinHandle<()>,
    metrics: tokio::task::JoinHandle<()>,
}

async fn serve(args: DevArgs) -> anyhow::Result<()> {
    let config = FabricConfig::dev_default(&args.data_dir);
    let fabric = config
        .validate()
        .context("the embedded dev fabric configuration")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let regions = &fabric.config().regions;
    let mut hosts = Vec::with_capacity(regions.len());
    for region in regions {
        let addr = endpoint_addr(&region.replication, "replication", region)?;
        hosts.push(pki::RegionHost {
            name: region.name.as_str().to_string(),
            ip: addr.ip(),
        });
    }
    let (identities, generated) = pki::identities(&args.data_dir, &hosts)?;
    println!(
        "  replication certificates {} {}",
        if generated {
            "issued into"
        } else {
            "loaded from"
        },
        args.data_dir.join("pki").display()
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut cells = Vec::new();
    let mut endpoints = serde_json::Map::new();
    for (region, identity) in regions.iter().zip(&identities) {
        let cell = start_region(
            region,
            regions,
            identity,
            &fabric.config().cell,
            &args,
            shutdown_rx.clone(),
        )
        .await?;
        endpoints.insert(
            cell.name.clone(),
            serde_json::json!({
                "grpc": region.grpc.to_string(),
                "admin": region.grpc.to_string(),
                "metrics": format!("http://{}/metrics", region.metrics),
                "replication": region.replication.to_string(),
                "data_dir": region_dir(region, &args.data_dir),
            }),
        );
        cells.push(cell);
    }
    let endpoints_path = args.data_dir.join("endpoints.json");
    std::fs::write(
        &endpoints_path,
        serde_json::to_vec_pretty(&serde_json::Value::Object(endpoints))?,
    )
    .with_context(|| format!("writing {}", endpoints_path.display()))?;
    print_summary(&args, regions, &endpoints_path);
    println!("ready");
    wait_for_stop().await?;
    println!("stopping");
    let _ = shutdown.send(true);
    // All at once: a replicator that stops first would otherwise see its peers reconnect to
    // it until their own turn came.
    let stopping: Vec<_> = cells
        .iter()
        .map(|cell| {
            let replicator = Arc::clone(&cell.replicator);
            tokio::spawn(async move { replicator.shutdown().await })
        })
        .collect();
    for stop in stopping {
        if let Err(error) = stop.await {
            tracing::warn!(%error, "a replicator's shutdown task failed");
        }
    }
    for cell in cells {
        // The gRPC server drains on the shutdown signal; bound the wait.
        if tokio::time::timeout(Duration::from_secs(5), cell.grpc)
            .await
            .is_err()
        {
            tracing::warn!(region = %cell.name, "gRPC server did not stop within 5 s");
        }
        cell.metrics.abort();
        cell.storage
            .close()
            .with_context(|| format!("closing the storage of region {}", cell.name))?;
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM (what process managers and test harnesses send).
async fn wait_for_stop() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}

fn print_summary(args: &DevArgs, regions: &[RegionConfig], endpoints_path: &Path) {
    let topics: Vec<String> = DEMO_TOPICS
        .iter()
        .map(|(name, _)| name.to_string())
        .chain(args.topics.iter().map(|(name, _, _)| name.clone()))
        .collect();
    let groups: Vec<String> = DEMO_GROUPS
        .iter()
        .map(|(name, _)| name.to_string())
        .chain(args.groups.iter().map(|(name, _)| name.clone()))
        .collect();
    println!("  topics in every region: {}", topics.join(", "));
    println!("  consumer groups in every region: {}", groups.join(", "));
    if args.no_auto_create_topics {
        println!("  unknown topics and groups are refused (--no-auto-create-topics)");
    } else {
        println!(
            "  unknown topics are created on first use as NORMAL with {DEMO_QUEUES} queues, \
             unknown consumer groups likewise (--no-auto-create-topics turns this off)"
        );
    }
    println!("  endpoints written to {}", endpoints_path.display());
    if let [first, second, ..] = regions {
        println!(
            "  try it: send in {} and receive in {} with the official Python client:",
            first.name.as_str(),
            second.name.as_str()
        );
        println!(
            "    ~/.cache/meridian-venv/bin/python conformance/python/send_receive.py \
             --endpoint {} --topic demo-normal --group demo-group --mode produce",
            first.grpc
        );
        println!(
            "    ~/.cache/meridian-venv/bin/python conformance/python/send_receive.py \
             --endpoint {} --topic demo-normal --group demo-group --mode consume",
            second.grpc
        );
        println!(
            "  or with the CLI: meridian send --endpoint {} --topic orders --body hello; \
             meridian receive --endpoint {} --topic orders --group g1",
            first.grpc, second.grpc
        );
    }
}

fn region_dir(region: &RegionConfig, base: &Path) -> PathBuf {
    region
        .data_dir
        .clone()
        .unwrap_or_else(|| base.join(region.name.as_str()))
        .join("cell")
}

fn storage_config(
    region: &RegionConfig,
    cell: &CellConfig,
    args: &DevArgs,
) -> anyhow::Result<StorageConfig> {
    let mut config = StorageConfig::new(region_dir(region, &args.data_dir), region.name.as_str());
    config.durability = args.durability.unwrap_or(match cell.durability {
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

fn open_broker(
    region: &RegionConfig,
    cell: &CellConfig,
    args: &DevArgs,
) -> anyhow::Result<(Arc<Storage>, Arc<Broker>, Durability, PathBuf)> {
    let name = region.name.as_str();
    let config = storage_config(region, cell, args)?;
    let durability = config.durability;
    let dir = config.dir.clone();
    let storage = Arc::new(
        Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500))))
            .with_context(|| format!("opening the cell storage of {name} in {}", dir.display()))?,
    );
    let broker = Broker::open(
        Arc::clone(&storage),
        BrokerConfig::default(),
        Arc::new(SystemClock),
    )
    .with_context(|| format!("opening the broker of {name}"))?;
    for (topic, kind) in DEMO_TOPICS {
        broker
            .create_topic(topic, DEMO_QUEUES, kind)
            .with_context(|| format!("creating demo topic {topic} in {name}"))?;
    }
    for (topic, kind, queues) in &args.topics {
        broker
            .create_topic(topic, *queues, *kind)
            .with_context(|| format!("--topic {topic}"))?;
    }
    for (group, fifo) in DEMO_GROUPS
        .iter()
        .map(|(group, fifo)| (group.to_string(), *fifo))
        .chain(args.groups.iter().cloned())
    {
        broker
            .create_group(GroupConfig::new(group.clone(), fifo))
            .with_context(|| format!("creating consumer group {group} in {name}"))?;
    }
    Ok((storage, broker, durability, dir))
}

/// Starts the replicator of `region`: it listens on the region's `replication` endpoint and
/// links to every other region of the fabric (links retry with backoff until peers are up).
fn start_replicator(
    region: &RegionConfig,
    all: &[RegionConfig],
    identity: &NodeIdentity,
    storage: &Arc<Storage>,
) -> anyhow::Result<Arc<Replicator>> {
    let name = region.name.as_str();
    let listen = endpoint_addr(&region.replication, "replication", region)?;
    let mut config = ReplicatorConfig::with_identity(name, listen, identity)
        .with_context(|| format!("the replication TLS configuration of {name}"))?;
    for peer in all.iter().filter(|peer| peer.name != region.name) {
        config.peers.push(PeerConfig {
            region: peer.name.as_str().to_string(),
            addr: endpoint_addr(&peer.replication, "replication", peer)?,
            server_name: peer.name.as_str().to_string(),
        });
    }
    let replicator = Replicator::start(config, Arc::clone(storage)).with_context(|| {
        format!(
            "starting the replicator of {name} on UDP {listen} (is another `meridian dev` running?)"
        )
    })?;
    Ok(Arc::new(replicator))
}

async fn start_region(
    region: &RegionConfig,
    all: &[RegionConfig],
    identity: &NodeIdentity,
    cell: &CellConfig,
    args: &DevArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<RegionCell> {
    let name = region.name.as_str().to_string();
    let (storage, broker, durability, dir) = open_broker(region, cell, args)?;
    tokio::spawn(Arc::clone(&broker).run(shutdown.clone()));
    let replicator = start_replicator(region, all, identity, &storage)?;
    let region_metrics = metrics::RegionMetrics {
        region: name.clone(),
        storage: Arc::clone(&storage),
        broker: Arc::clone(&broker),
        replicator: Arc::clone(&replicator),
        origins: all
            .iter()
            .filter(|other| other.name != region.name)
            .map(|other| other.name.as_str().to_string())
            .collect(),
    };

    let grpc_addr = endpoint_addr(&region.grpc, "grpc", region)?;
    let listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC endpoint {grpc_addr} of {name}"))?;
    let status_source = region_metrics.clone();
    let grpc_config = GrpcConfig {
        advertised_endpoint: Some(grpc_addr),
        broker_name: format!("{name}-cell"),
        auto_create_topics: (!args.no_auto_create_topics).then_some(DEMO_QUEUES),
        admin: Some(AdminConfig {
            replication_status: Some(ReplicationStatusSource(Arc::new(move || {
                status_source.replication_status()
            }))),
        }),
        ..GrpcConfig::default()
    };
    let grpc_broker = Arc::clone(&broker);
    let region_name = name.clone();
    let grpc = tokio::spawn(async move {
        if let Err(error) = serve_grpc(grpc_broker, listener, grpc_config, shutdown).await {
            tracing::error!(region = %region_name, %error, "gRPC endpoint stopped");
        }
    });

    let metrics_addr = endpoint_addr(&region.metrics, "metrics", region)?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {metrics_addr} of {name}"))?;
    let metrics = tokio::spawn(metrics::serve(metrics_listener, region_metrics));
    let report = storage.recovery_report();
    println!(
        "region {name}: RocketMQ and admin gRPC {grpc_addr}, metrics http://{metrics_addr}/metrics, \
         replication UDP {}, {durability} durability, data {} (recovered in {} ms, re-indexed {} records)",
        region.replication,
        dir.display(),
        report.duration.as_millis(),
        report.reindexed_records
    );
    Ok(RegionCell {
        name,
        storage,
        replicator,
        grpc,
        metrics,
    })
}

fn endpoint_addr(
    endpoint: &meridian_topology::Endpoint,
    what: &str,
    region: &RegionConfig,
) -> anyhow::Result<SocketAddr> {
    let host = endpoint.host();
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, endpoint.port())),
        Err(_) => bail!(
            "region {}: the {what} host {host:?} must be an IP address in dev",
            region.name.as_str()
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_group_flags_parse_or_name_the_problem() {
        assert_eq!(
            parse_topic("orders:fifo:8"),
            Ok(("orders".to_string(), TopicMessageType::Fifo, 8))
        );
        assert_eq!(
            parse_topic("orders:normal"),
            Ok(("orders".to_string(), TopicMessageType::Normal, DEMO_QUEUES))
        );
        assert!(
            parse_topic("orders:queue")
                .unwrap_err()
                .contains("type \"queue\"")
        );
        assert!(
            parse_topic("orders:fifo:x")
                .unwrap_err()
                .contains("queue count")
        );
        assert!(parse_topic(":fifo").unwrap_err().contains("name is empty"));
        assert_eq!(parse_group("g"), Ok(("g".to_string(), false)));
        assert_eq!(parse_group("g:fifo"), Ok(("g".to_string(), true)));
        assert!(parse_group("g:lifo").is_err());
    }
}
