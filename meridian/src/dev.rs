//! `meridian dev`: the embedded dev fabric on one machine.
//!
//! Every region of the dev fabric (`us-east`, `eu-west`, `ap-south` on 127.0.0.1, .2, .3; see
//! `topology/src/dev.toml`) runs a cell: its storage, its broker and its RocketMQ 5 gRPC endpoint,
//! so that the official RocketMQ clients can produce and consume against any region. Demo topics
//! and groups are created in each cell; `--topic` and `--group` add more. Meta, replication
//! between the regions and routing join as those layers land.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_cell::Hlc;
use meridian_cell::grpc::{GrpcConfig, serve as serve_grpc};
use meridian_cell::messaging::{Broker, BrokerConfig, GroupConfig, SystemClock, TopicMessageType};
use meridian_cell::storage::{Durability, Storage, StorageConfig};
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
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut cells = Vec::new();
    let mut endpoints = serde_json::Map::new();
    for region in &fabric.config().regions {
        let cell = start_region(region, &fabric.config().cell, &args, shutdown_rx.clone()).await?;
        endpoints.insert(
            cell.name.clone(),
            serde_json::json!({
                "grpc": region.grpc.to_string(),
                "metrics": format!("http://{}/metrics", region.metrics),
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
    println!("  endpoints written to {}", endpoints_path.display());
    println!("ready");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping");
    let _ = shutdown.send(true);
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

async fn start_region(
    region: &RegionConfig,
    cell: &CellConfig,
    args: &DevArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<RegionCell> {
    let name = region.name.as_str().to_string();
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
    tokio::spawn(Arc::clone(&broker).run(shutdown.clone()));

    let grpc_addr = socket_addr(region.grpc.host(), region.grpc.port(), "grpc", &name)?;
    let listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC endpoint {grpc_addr} of {name}"))?;
    let grpc_config = GrpcConfig {
        advertised_endpoint: Some(grpc_addr),
        broker_name: format!("{name}-cell"),
        ..GrpcConfig::default()
    };
    let grpc_broker = Arc::clone(&broker);
    let region_name = name.clone();
    let grpc = tokio::spawn(async move {
        if let Err(error) = serve_grpc(grpc_broker, listener, grpc_config, shutdown).await {
            tracing::error!(region = %region_name, %error, "gRPC endpoint stopped");
        }
    });

    let metrics_addr = socket_addr(
        region.metrics.host(),
        region.metrics.port(),
        "metrics",
        &name,
    )?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {metrics_addr} of {name}"))?;
    let metrics = tokio::spawn(serve_metrics(
        metrics_listener,
        Arc::clone(&storage),
        Arc::clone(&broker),
        name.clone(),
    ));
    let report = storage.recovery_report();
    println!(
        "region {name}: RocketMQ gRPC {grpc_addr}, metrics http://{metrics_addr}/metrics, \
         {durability} durability, data {} (recovered in {} ms, re-indexed {} records)",
        dir.display(),
        report.duration.as_millis(),
        report.reindexed_records
    );
    Ok(RegionCell {
        name,
        storage,
        grpc,
        metrics,
    })
}

fn socket_addr(host: &str, port: u16, what: &str, region: &str) -> anyhow::Result<SocketAddr> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, port)),
        Err(_) => bail!("region {region}: the {what} host {host:?} must be an IP address in dev"),
    }
}

/// Serves `GET /metrics` in the Prometheus text format.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    storage: Arc<Storage>,
    broker: Arc<Broker>,
    region: String,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let storage = Arc::clone(&storage);
            let broker = Arc::clone(&broker);
            let region = region.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    render_metrics(&storage, &broker, &region),
                )
            }
        }),
    );
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics endpoint stopped");
    }
}

fn render_metrics(storage: &Storage, broker: &Broker, region: &str) -> String {
    let counters = storage.counters();
    let (start, end) = storage.log_range();
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "meridian_storage_appended_records_total",
            "counter",
            "Records appended to the commit log.",
            counters.appended_records.load(Ordering::Relaxed),
        ),
        (
            "meridian_storage_appended_bytes_total",
            "counter",
            "Bytes appended to the commit log.",
            counters.appended_bytes.load(Ordering::Relaxed),
        ),
        (
            "meridian_storage_fsync_total",
            "counter",
            "fsync calls on segment files.",
            counters.fsync_calls.load(Ordering::Relaxed),
        ),
        (
            "meridian_storage_write_calls_total",
            "counter",
            "write calls on segment files.",
            counters.write_calls.load(Ordering::Relaxed),
        ),
        (
            "meridian_storage_log_bytes",
            "gauge",
            "Bytes retained in the commit log.",
            end - start,
        ),
        (
            "meridian_broker_waiting_polls",
            "gauge",
            "Receives and pulls waiting in a long poll.",
            broker.waiting_polls(),
        ),
        (
            "meridian_broker_pending_timers",
            "gauge",
            "Delay messages waiting for their delivery time.",
            broker.pending_timers() as u64,
        ),
        (
            "meridian_broker_open_transactions",
            "gauge",
            "Half messages waiting for commit or rollback.",
            broker.open_transactions() as u64,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{region=\"{region}\"}} {value}\n"
        ));
    }
    out
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
