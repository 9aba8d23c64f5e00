//! `meridian dev`: the embedded dev fabric on one machine.
//!
//! Every region of the dev fabric (`us-east`, `eu-west`, `ap-south` on 127.0.0.1, .2, .3; see
//! `topology/src/dev.toml`) runs in this process through [`crate::region`]: its meta node (the
//! three form one meta Raft group), its cell (storage, broker, RocketMQ 5 gRPC endpoint with
//! Meridian's admin API on the same port, metrics), its replicator (QUIC link to every other
//! region) and its meta agent, which applies meta's topics and consumer groups to the cell.
//! Meta, replication and the CLI's meta access use mutual TLS with certificates under
//! `DATA_DIR/pki/` and the admin token in `DATA_DIR/pki/admin-token`.
//!
//! Demo topics and groups (and `--topic`/`--group` ones) are created THROUGH META, in every
//! region, so each cell gets them from its watch; only `mixed` topics, which meta does not
//! model, are created in each cell directly. Unknown topics and consumer groups are still
//! created on first use in the cell that sees them (NORMAL, 4 queues; not recorded in meta)
//! unless `--no-auto-create-topics` is given. `DATA_DIR/endpoints.json` lists every endpoint
//! (with the meta endpoints); `ready` is printed once meta has a leader and every cell holds
//! its topics. Ctrl-C or SIGTERM stops it cleanly. Replication between regions runs through
//! latency proxies with the topology's one-way latencies (`links`); `--no-link-latency` dials
//! directly.

mod links;
mod pki;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_cell::messaging::TopicMessageType;
use meridian_cell::storage::Durability;
use meridian_meta::state::{
    Command, ConsumeOrder, ConsumerGroup, MessageType, Object, ObjectKind, ReplicationMode,
    RetryPolicy as MetaRetryPolicy, TopicSpec, Topology,
};
use meridian_meta::{MetaError, MetaNode, NodeError};
use meridian_topology::{FabricConfig, RegionConfig};

use crate::region::{RegionOptions, RunningRegion, cell_dir, endpoint_addr};

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
    /// Replicate directly over loopback instead of through the proxies that add the modelled
    /// inter-region latency (38, 60 and 95 ms one way).
    #[arg(long)]
    no_link_latency: bool,
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

/// How long the regions may take, after they started, to elect a meta leader and apply the
/// demo topics before `meridian dev` gives up.
const READY_TIMEOUT_MS: u64 = 60_000;
/// Attempts at meta's first read while it elects a leader (paused 50 ms doubling to 1 s).
const SEED_ATTEMPTS_MAX: u32 = 100;
/// Cell heartbeat period of the dev regions.
const HEARTBEAT_INTERVAL_MS: u64 = meridian_router::health::DEFAULT_HEARTBEAT_INTERVAL_MS;

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
    let admin_token = pki::admin_token(&args.data_dir)?;
    println!(
        "  replication certificates {} {} (meta uses them too)",
        if generated {
            "issued into"
        } else {
            "loaded from"
        },
        args.data_dir.join("pki").display()
    );
    let links = if args.no_link_latency {
        links::LinkProxies::none()
    } else {
        links::LinkProxies::start(&fabric).await?
    };
    let mut running = Vec::with_capacity(regions.len());
    let mut endpoints = serde_json::Map::new();
    for (region, identity) in regions.iter().zip(identities) {
        let region_dir = region_dir(region, &args.data_dir);
        let options = RegionOptions {
            regions: regions.clone(),
            cell: fabric.config().cell.clone(),
            region: region.name.as_str().to_string(),
            data_dir: region_dir.clone(),
            identity: Arc::new(identity),
            admin_token: admin_token.clone(),
            durability: args.durability,
            auto_create_queues: (!args.no_auto_create_topics).then_some(DEMO_QUEUES),
            // The dev links run on loopback without added latency.
            meta_expected_rtt_ms: 0,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
            proximity: crate::region::proximity(fabric.latency()),
            dial_via: links.dial_map(region.name.as_str()),
            clock_offset_ms: 0,
        };
        let started = match RunningRegion::start(&options).await {
            Ok(started) => started,
            Err(error) => {
                stop_all(running).await;
                links.shutdown().await;
                return Err(error);
            }
        };
        let identity_dir = pki::identity_dir(&args.data_dir, region.name.as_str());
        endpoints.insert(
            started.name().to_string(),
            serde_json::json!({
                "grpc": region.grpc.to_string(),
                "admin": region.grpc.to_string(),
                "meta": region.meta.to_string(),
                "metrics": format!("http://{}/metrics", region.metrics),
                "replication": region.replication.to_string(),
                "replication_links": links.describe(region.name.as_str()),
                "data_dir": cell_dir(&region_dir),
                "tls_dir": identity_dir,
                "admin_token_file": args.data_dir.join("pki").join(pki::ADMIN_TOKEN_FILE),
            }),
        );
        running.push(started);
    }
    if let Err(error) = seed(&running, &args).await {
        stop_all(running).await;
        links.shutdown().await;
        return Err(error);
    }
    let endpoints_path = args.data_dir.join("endpoints.json");
    std::fs::write(
        &endpoints_path,
        serde_json::to_vec_pretty(&serde_json::Value::Object(endpoints))?,
    )
    .with_context(|| format!("writing {}", endpoints_path.display()))?;
    print_summary(&args, regions, &endpoints_path);
    print_links(&links);
    println!("ready");
    let stopped = wait_for_stop().await;
    println!("stopping");
    stop_all(running).await;
    links.shutdown().await;
    stopped
}

/// Creates the demo and `--topic`/`--group` topics and groups through meta (every region gets
/// them from its watch) and waits until meta has a leader and every cell holds them. Topics of
/// type `mixed`, which meta does not model, are created in each cell directly.
async fn seed(regions: &[RunningRegion], args: &DevArgs) -> anyhow::Result<()> {
    let Some(first) = regions.first() else {
        bail!("the dev fabric has no region");
    };
    let names: BTreeSet<String> = regions.iter().map(|r| r.name().to_string()).collect();
    let mut topics: Vec<(String, TopicMessageType, u32)> = DEMO_TOPICS
        .iter()
        .map(|(name, kind)| (name.to_string(), *kind, DEMO_QUEUES))
        .collect();
    topics.extend(args.topics.iter().cloned());
    let mut through_meta = BTreeSet::new();
    let mut specs = Vec::new();
    for (name, kind, queues) in &topics {
        match meta_type(*kind) {
            Some(message_type) => {
                through_meta.insert(name.clone());
                specs.push(TopicSpec {
                    name: name.clone(),
                    queue_count: *queues,
                    message_type,
                    regions: names.clone(),
                    replication: ReplicationMode::Async,
                    topology: Topology::ActiveActive,
                });
            }
            None => {
                for region in regions {
                    region
                        .broker()
                        .create_topic(name, *queues, *kind)
                        .with_context(|| format!("--topic {name} in {}", region.name()))?;
                }
            }
        }
    }
    let mut groups: Vec<ConsumerGroup> = DEMO_GROUPS
        .iter()
        .map(|(name, fifo)| {
            let topics = if *fifo {
                BTreeSet::from(["demo-fifo".to_string()])
            } else {
                BTreeSet::from([
                    "demo-normal".to_string(),
                    "demo-delay".to_string(),
                    "demo-txn".to_string(),
                ])
            };
            dev_group(name, *fifo, topics)
        })
        .collect();
    groups.extend(
        args.groups
            .iter()
            .map(|(name, fifo)| dev_group(name, *fifo, BTreeSet::new())),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    // Meta refuses topics naming regions it does not know: wait for every agent to register
    // its region (which also proves meta has a leader).
    for region in regions {
        let mut status = region.status();
        let registered = tokio::time::timeout_at(deadline, status.wait_for(|s| s.registered))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if !registered {
            bail!(
                "region {} did not register in meta within {READY_TIMEOUT_MS} ms (status: {:?})",
                region.name(),
                *status.borrow()
            );
        }
    }
    let revision = tokio::time::timeout_at(deadline, seed_meta(first.meta(), specs, groups))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "meta did not elect a leader and take the demo topics within {READY_TIMEOUT_MS} ms"
            )
        })??;
    for region in regions {
        let mut status = region.status();
        let applied = tokio::time::timeout_at(
            deadline,
            status.wait_for(|status| {
                status.applied_revision >= revision && through_meta.is_subset(&status.topics)
            }),
        )
        .await
        .is_ok_and(|waited| waited.is_ok());
        if !applied {
            bail!(
                "region {} did not apply meta's topics within {READY_TIMEOUT_MS} ms (status: {:?})",
                region.name(),
                *status.borrow()
            );
        }
    }
    Ok(())
}

/// Writes the topics and groups into meta (an existing topic is kept as it is, a group is
/// written only when it differs); returns the revision the cells must reach.
async fn seed_meta(
    meta: &MetaNode,
    specs: Vec<TopicSpec>,
    groups: Vec<ConsumerGroup>,
) -> anyhow::Result<u64> {
    // Reads before the first election fail fast; retry them, at most `SEED_ATTEMPTS_MAX` times
    // (and within the caller's deadline).
    let mut pause = Duration::from_millis(50);
    let mut attempts = 0;
    let (_, existing_groups) = loop {
        attempts += 1;
        match meta.list(ObjectKind::ConsumerGroups).await {
            Ok(listed) => break listed,
            Err(error) if attempts >= SEED_ATTEMPTS_MAX => {
                return Err(error).context("listing meta's consumer groups");
            }
            Err(error) => {
                tracing::debug!(%error, "meta not ready yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    };
    for spec in specs {
        let name = spec.name.clone();
        match meta.write(Command::CreateTopic { spec }).await {
            Ok(_) | Err(NodeError::Rejected(MetaError::TopicExists { .. })) => {}
            Err(error) => {
                return Err(error).with_context(|| format!("creating topic {name} in meta"));
            }
        }
    }
    for group in groups {
        if existing_groups.contains(&Object::ConsumerGroup(group.clone())) {
            continue;
        }
        let name = group.name.clone();
        meta.write(Command::PutConsumerGroup { group })
            .await
            .with_context(|| format!("creating consumer group {name} in meta"))?;
    }
    let (revision, _) = meta
        .list(ObjectKind::Topics)
        .await
        .context("listing meta's topics")?;
    Ok(revision)
}

/// Meta's message type for the cell's; `None` for `mixed`, which meta does not model.
fn meta_type(kind: TopicMessageType) -> Option<MessageType> {
    match kind {
        TopicMessageType::Normal => Some(MessageType::Normal),
        TopicMessageType::Fifo => Some(MessageType::Fifo),
        TopicMessageType::Delay => Some(MessageType::Delay),
        TopicMessageType::Transaction => Some(MessageType::Transaction),
        TopicMessageType::Mixed => None,
    }
}

/// A dev consumer group with retries close to RocketMQ's defaults (17 deliveries, 1 s doubling
/// to 2 h; FIFO groups 1 s fixed).
fn dev_group(name: &str, fifo: bool, topics: BTreeSet<String>) -> ConsumerGroup {
    ConsumerGroup {
        name: name.to_string(),
        topics,
        order: if fifo {
            ConsumeOrder::Fifo
        } else {
            ConsumeOrder::Concurrent
        },
        broadcast: false,
        retry: MetaRetryPolicy {
            max_attempts: 17,
            initial_backoff_ms: 1_000,
            max_backoff_ms: if fifo { 1_000 } else { 7_200_000 },
        },
    }
}

/// Stops every region: all replicators at once (one that stopped first would otherwise see
/// its peers reconnect to it until their own turn came), then each region.
async fn stop_all(regions: Vec<RunningRegion>) {
    let stopping: Vec<_> = regions
        .iter()
        .map(|region| {
            let replicator = Arc::clone(region.replicator());
            tokio::spawn(async move { replicator.shutdown().await })
        })
        .collect();
    for stop in stopping {
        if let Err(error) = stop.await {
            tracing::warn!(%error, "a replicator's shutdown task failed");
        }
    }
    for region in regions {
        let name = region.name().to_string();
        if let Err(error) = region.close().await {
            tracing::warn!(region = %name, error = format!("{error:#}"), "closing the region");
        }
    }
}

/// Waits for Ctrl-C or SIGTERM (what process managers and test harnesses send).
pub(crate) async fn wait_for_stop() -> anyhow::Result<()> {
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

fn print_links(links: &links::LinkProxies) {
    if links.is_empty() {
        println!("  replication links dial directly (--no-link-latency)");
        return;
    }
    let described: Vec<String> = links
        .iter()
        .map(|link| format!("{} → {} {} ms", link.from, link.to, link.latency_ms))
        .collect();
    println!(
        "  replication links through latency proxies (one way): {}",
        described.join(", ")
    );
}

fn region_dir(region: &RegionConfig, base: &Path) -> PathBuf {
    region
        .data_dir
        .clone()
        .unwrap_or_else(|| base.join(region.name.as_str()))
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
