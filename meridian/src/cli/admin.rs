//! CLI commands over Meridian's admin API: topics, groups, message query and trace, region
//! status. Each runs against every selected cell and reports per cell; a failure in one cell is
//! reported with its label and makes the command fail after the others ran. `topic create` and
//! `topic list` go through meta instead when the endpoints file names it (see [`super::meta`]).

use anyhow::bail;
use meridian_proto::admin::v1::{self as pb, TopicType, admin_client::AdminClient};
use serde_json::json;

use super::meta::{self, Replication, TopicRequest, TopologyArg, create_in_meta, list_in_meta};
use super::{Endpoint, Target, connect, print_json};

/// `meridian topic ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic (again with the same settings is fine): through meta when the endpoints
    /// file names meta (every region of `--regions` then gets it), otherwise in every selected
    /// cell.
    Create {
        /// Topic name: ASCII letters, digits, `_` and `-`.
        name: String,
        /// normal, fifo, delay, transaction or mixed (mixed only with --cells).
        #[arg(long = "type", default_value = "normal", value_parser = parse_type)]
        kind: TopicType,
        /// Number of queues.
        #[arg(long, default_value_t = 4)]
        queues: u32,
        /// Through meta: the regions that hold the topic, comma-separated (default: all).
        // Its own id: the global `--region` selection's field is also called `regions`, and
        // clap would not propagate a global argument whose id a subcommand already uses.
        #[arg(long = "regions", id = "topic_regions", value_delimiter = ',')]
        topic_regions: Vec<String>,
        /// Through meta: `async` (acknowledged locally) or `sync-quorum` (acknowledged once a
        /// majority of the topic's regions hold the message).
        #[arg(long, value_enum, default_value = "async")]
        replication: Replication,
        /// Through meta: `active-active` (every region accepts writes) or `active-standby`
        /// (only --home does).
        #[arg(long, value_enum, default_value = "active-active")]
        topology: TopologyArg,
        /// Through meta, with --topology active-standby: the region that accepts writes.
        #[arg(long)]
        home: Option<String>,
        /// Create in each selected cell directly, not through meta.
        #[arg(long)]
        cells: bool,
    },
    /// A topic's type and the offset range of each queue.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Every topic: meta's view (regions, replication, topology, home, epoch) when the
    /// endpoints file names meta, otherwise each cell's.
    List {
        /// Include system and dead-letter topics (per cell).
        #[arg(long)]
        all: bool,
        /// List each selected cell's topics, not meta's.
        #[arg(long)]
        cells: bool,
    },
    /// Planned switchover of an active-standby topic's home (through meta): wait until the new
    /// home is within one poll of the old one, fence the old home, wait until the new home
    /// holds everything it acknowledged, move the home. Also the failback after a failover.
    Switchover {
        /// Topic name.
        name: String,
        /// The new home region.
        #[arg(long)]
        to: String,
        /// Give up before the fence, or abort after it (the old home takes writes again), if
        /// the new home has not caught up by then (each phase has this long).
        #[arg(long, default_value_t = meridian_router::switchover::DEFAULT_CATCH_UP_TIMEOUT_MS)]
        timeout_ms: u64,
    },
}

/// `meridian group ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum GroupCommand {
    /// Create (or update) a consumer group in every selected cell.
    Create {
        /// Group name.
        name: String,
        /// Orderly consumption of FIFO topics.
        #[arg(long)]
        fifo: bool,
    },
    /// A group's lag per queue.
    Describe {
        /// Group name.
        name: String,
        /// Only this topic (default: every user topic).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Move a group's position on every queue of a topic, in every selected cell.
    Rewind {
        /// Group name.
        name: String,
        /// Topic name.
        #[arg(long)]
        topic: String,
        /// To the first message stored at or after this time (ms since the Unix epoch).
        #[arg(long, conflicts_with = "latest")]
        to_time_ms: Option<u64>,
        /// Past the last stored message (skip everything).
        #[arg(long)]
        latest: bool,
    },
}

/// `meridian message ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MessageCommand {
    /// Find messages by id, or by topic and business key.
    Query {
        /// Message id (as `send` printed it).
        #[arg(long, conflicts_with_all = ["topic", "key"])]
        id: Option<String>,
        /// Topic, with --key.
        #[arg(long, requires = "key")]
        topic: Option<String>,
        /// Business key, with --topic.
        #[arg(long, requires = "topic")]
        key: Option<String>,
        /// Most messages per cell for a key query.
        #[arg(long, default_value_t = 32)]
        max: u32,
    },
    /// The recorded lifecycle of a message (sent, received, acked, ...) in each cell.
    Trace {
        /// Message id.
        id: String,
    },
}

/// `meridian region ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RegionCommand {
    /// Each cell's region, log range and replication progress.
    Status,
}

fn parse_type(text: &str) -> Result<TopicType, String> {
    match text.to_ascii_lowercase().as_str() {
        "normal" => Ok(TopicType::Normal),
        "fifo" => Ok(TopicType::Fifo),
        "delay" => Ok(TopicType::Delay),
        "transaction" => Ok(TopicType::Transaction),
        "mixed" => Ok(TopicType::Mixed),
        _ => Err(format!(
            "--type {text:?}: use normal, fifo, delay, transaction or mixed"
        )),
    }
}

fn type_name(kind: i32) -> &'static str {
    match TopicType::try_from(kind) {
        Ok(TopicType::Normal) => "normal",
        Ok(TopicType::Fifo) => "fifo",
        Ok(TopicType::Delay) => "delay",
        Ok(TopicType::Transaction) => "transaction",
        Ok(TopicType::Mixed) => "mixed",
        _ => "unknown",
    }
}

/// A status from the admin API as an error that names the cell.
pub(super) fn call_error(endpoint: &Endpoint, status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {} ({:?})",
        endpoint.label,
        status.message(),
        status.code()
    )
}

/// What a command got from every target: the answers, and the cells that failed.
pub(super) struct Answers<T> {
    pub(super) results: Vec<(String, T)>,
    pub(super) failures: Vec<String>,
}

impl<T> Answers<T> {
    /// Fails, after the caller printed the answers, when any cell failed.
    pub(super) fn finish(self) -> anyhow::Result<()> {
        if self.failures.is_empty() {
            return Ok(());
        }
        if !self.results.is_empty() {
            eprintln!("succeeded in: {}", labels(&self.results));
        }
        bail!("{}", self.failures.join("; "))
    }
}

/// Runs `call` against every target, one after the other.
async fn each<T, F, Fut>(target: &Target, mut call: F) -> anyhow::Result<Answers<T>>
where
    F: FnMut(AdminClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for endpoint in target.resolve()? {
        let outcome = match connect(&endpoint).await {
            Ok(channel) => call(AdminClient::new(channel))
                .await
                .map_err(|status| call_error(&endpoint, &status)),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(value) => results.push((endpoint.label.clone(), value)),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    Ok(Answers { results, failures })
}

fn labels<T>(results: &[(String, T)]) -> String {
    results
        .iter()
        .map(|(label, _)| label.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn topic_json(topic: &pb::TopicInfo) -> serde_json::Value {
    json!({
        "name": topic.name,
        "type": type_name(topic.r#type),
        "queue_count": topic.queue_count,
        "queues": topic.queues.iter().map(|queue| json!({
            "queue_id": queue.queue_id,
            "earliest_offset": queue.earliest_offset,
            "next_offset": queue.next_offset,
        })).collect::<Vec<_>>(),
    })
}

fn print_topic(label: &str, topic: &pb::TopicInfo) {
    let messages: u64 = topic
        .queues
        .iter()
        .map(|queue| queue.next_offset - queue.earliest_offset.min(queue.next_offset))
        .sum();
    println!(
        "{label}: {} ({}, {} queues, {messages} retained messages)",
        topic.name,
        type_name(topic.r#type),
        topic.queue_count
    );
}

/// `meridian topic ...`
pub(crate) async fn topic(command: TopicCommand, target: &Target) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            kind,
            queues,
            topic_regions,
            replication,
            topology,
            home,
            cells,
        } => {
            if !cells && let Some(access) = meta::access(target)? {
                let request = TopicRequest {
                    name: &name,
                    kind: type_name(kind as i32),
                    queues,
                    regions: &topic_regions,
                    replication,
                    topology,
                    home: home.as_deref(),
                };
                return create_in_meta(&access, &request, target).await;
            }
            let answers = each(target, |mut client| {
                let request = pb::CreateTopicRequest {
                    name: name.clone(),
                    r#type: kind as i32,
                    queue_count: queues,
                };
                async move { Ok(client.create_topic(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            report_topics(target, results, "created").and_then(|()| answers.finish())
        }
        TopicCommand::Switchover {
            name,
            to,
            timeout_ms,
        } => super::switchover::switchover(&name, &to, timeout_ms, target).await,
        TopicCommand::Describe { name } => {
            let answers = each(target, |mut client| {
                let request = pb::DescribeTopicRequest { name: name.clone() };
                async move { Ok(client.describe_topic(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            if target.json {
                return report_topics(target, results, "").and_then(|()| answers.finish());
            }
            for (label, topic) in results {
                print_topic(label, topic);
                for queue in &topic.queues {
                    println!(
                        "  queue {}: offsets {}..{}",
                        queue.queue_id, queue.earliest_offset, queue.next_offset
                    );
                }
            }
            answers.finish()
        }
        TopicCommand::List { all, cells } => {
            if !cells && let Some(access) = meta::access(target)? {
                return list_in_meta(&access, target).await;
            }
            let answers = each(target, |mut client| {
                let request = pb::ListTopicsRequest {
                    include_system: all,
                };
                async move { Ok(client.list_topics(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            if target.json {
                let value: serde_json::Map<String, serde_json::Value> = results
                    .iter()
                    .map(|(label, list)| {
                        (
                            label.clone(),
                            json!(list.topics.iter().map(topic_json).collect::<Vec<_>>()),
                        )
                    })
                    .collect();
                return print_json(&serde_json::Value::Object(value))
                    .and_then(|()| answers.finish());
            }
            for (label, list) in results {
                for topic in &list.topics {
                    print_topic(label, topic);
                }
            }
            answers.finish()
        }
    }
}

pub(super) fn report_topics(
    target: &Target,
    results: &[(String, pb::TopicInfo)],
    verb: &str,
) -> anyhow::Result<()> {
    if target.json {
        let value: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(label, topic)| (label.clone(), topic_json(topic)))
            .collect();
        return print_json(&serde_json::Value::Object(value));
    }
    for (label, topic) in results {
        print!("{verb} ");
        print_topic(label, topic);
    }
    Ok(())
}

/// `meridian group ...`
pub(crate) async fn group(command: GroupCommand, target: &Target) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create { name, fifo } => {
            let answers = each(target, |mut client| {
                let request = pb::CreateGroupRequest {
                    name: name.clone(),
                    fifo,
                };
                async move { Ok(client.create_group(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            if target.json {
                let value: serde_json::Map<String, serde_json::Value> = results
                    .iter()
                    .map(|(label, group)| {
                        (
                            label.clone(),
                            json!({"name": group.name, "fifo": group.fifo}),
                        )
                    })
                    .collect();
                return print_json(&serde_json::Value::Object(value))
                    .and_then(|()| answers.finish());
            }
            for (label, group) in results {
                println!(
                    "{label}: consumer group {} created{}",
                    group.name,
                    if group.fifo { " (fifo)" } else { "" }
                );
            }
            answers.finish()
        }
        GroupCommand::Describe { name, topic } => {
            let answers = each(target, |mut client| {
                let request = pb::DescribeGroupRequest {
                    name: name.clone(),
                    topic: topic.clone().unwrap_or_default(),
                };
                async move { Ok(client.describe_group(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            if target.json {
                let value: serde_json::Map<String, serde_json::Value> = results
                    .iter()
                    .map(|(label, group)| (label.clone(), group_json(group)))
                    .collect();
                return print_json(&serde_json::Value::Object(value))
                    .and_then(|()| answers.finish());
            }
            for (label, group) in results {
                let total: u64 = group.lags.iter().map(|lag| lag.lag).sum();
                println!(
                    "{label}: group {}{}, lag {total}",
                    group.name,
                    if group.fifo { " (fifo)" } else { "" }
                );
                for lag in group.lags.iter().filter(|lag| lag.next_offset > 0) {
                    println!(
                        "  {} queue {}: consumed {} of {}, lag {}, in flight {}",
                        lag.topic,
                        lag.queue_id,
                        lag.consumed_offset,
                        lag.next_offset,
                        lag.lag,
                        lag.inflight
                    );
                }
            }
            answers.finish()
        }
        GroupCommand::Rewind {
            name,
            topic,
            to_time_ms,
            latest,
        } => {
            let to = match (to_time_ms, latest) {
                (Some(at), false) => pb::reset_offset_request::To::TimestampMs(at),
                (None, true) => pb::reset_offset_request::To::Latest(true),
                _ => bail!("group rewind: give --to-time-ms MS or --latest"),
            };
            let answers = each(target, |mut client| {
                let request = pb::ResetOffsetRequest {
                    group: name.clone(),
                    topic: topic.clone(),
                    to: Some(to),
                };
                async move { Ok(client.reset_offset(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            if target.json {
                return print_json(&json!({ "rewound": labels(results) }))
                    .and_then(|()| answers.finish());
            }
            println!(
                "group {name} on topic {topic} rewound in: {}",
                labels(results)
            );
            answers.finish()
        }
    }
}

fn group_json(group: &pb::GroupInfo) -> serde_json::Value {
    json!({
        "name": group.name,
        "fifo": group.fifo,
        "lag": group.lags.iter().map(|lag| lag.lag).sum::<u64>(),
        "queues": group.lags.iter().map(|lag| json!({
            "topic": lag.topic,
            "queue_id": lag.queue_id,
            "next_offset": lag.next_offset,
            "consumed_offset": lag.consumed_offset,
            "lag": lag.lag,
            "inflight": lag.inflight,
        })).collect::<Vec<_>>(),
    })
}

fn message_json(message: &pb::MessageInfo) -> serde_json::Value {
    json!({
        "message_id": message.message_id,
        "topic": message.topic,
        "queue_id": message.queue_id,
        "queue_offset": message.queue_offset,
        "tag": message.tag,
        "keys": message.keys,
        "message_group": message.message_group,
        "properties": message.properties,
        "body": String::from_utf8_lossy(&message.body),
        "born_timestamp_ms": message.born_timestamp_ms,
        "store_timestamp_ms": message.store_timestamp_ms,
        "origin_region": message.origin_region,
    })
}

/// `meridian message ...`
pub(crate) async fn message(command: MessageCommand, target: &Target) -> anyhow::Result<()> {
    match command {
        MessageCommand::Query {
            id,
            topic,
            key,
            max,
        } => {
            if id.is_none() && key.is_none() {
                bail!("message query: give --id ID, or --topic TOPIC --key KEY");
            }
            let answers = each(target, |mut client| {
                let request = pb::QueryMessageRequest {
                    message_id: id.clone().unwrap_or_default(),
                    topic: topic.clone().unwrap_or_default(),
                    key: key.clone().unwrap_or_default(),
                    max_results: max,
                };
                async move { Ok(client.query_message(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            if target.json {
                let value: serde_json::Map<String, serde_json::Value> = results
                    .iter()
                    .map(|(label, found)| {
                        (
                            label.clone(),
                            json!(found.messages.iter().map(message_json).collect::<Vec<_>>()),
                        )
                    })
                    .collect();
                return print_json(&serde_json::Value::Object(value))
                    .and_then(|()| answers.finish());
            }
            for (label, found) in results {
                if found.messages.is_empty() {
                    println!("{label}: not found");
                }
                for message in &found.messages {
                    println!(
                        "{label}: {} topic {} queue {} offset {} from {} body {:?}",
                        message.message_id,
                        message.topic,
                        message.queue_id,
                        message.queue_offset,
                        message.origin_region,
                        String::from_utf8_lossy(&message.body)
                    );
                }
            }
            answers.finish()
        }
        MessageCommand::Trace { id } => {
            let answers = each(target, |mut client| {
                let request = pb::MessageTraceRequest {
                    message_id: id.clone(),
                };
                async move { Ok(client.message_trace(request).await?.into_inner()) }
            })
            .await?;
            let results = &answers.results;
            if target.json {
                let value: serde_json::Map<String, serde_json::Value> = results
                    .iter()
                    .map(|(label, trace)| {
                        (
                            label.clone(),
                            json!(
                                trace
                                    .events
                                    .iter()
                                    .map(|event| json!({
                                        "kind": event.kind,
                                        "at_ms": event.at_ms,
                                        "group": event.group,
                                        "attempt": event.attempt,
                                        "detail": event.detail,
                                    }))
                                    .collect::<Vec<_>>()
                            ),
                        )
                    })
                    .collect();
                return print_json(&serde_json::Value::Object(value))
                    .and_then(|()| answers.finish());
            }
            for (label, trace) in results {
                if trace.events.is_empty() {
                    println!("{label}: no trace events");
                }
                for event in &trace.events {
                    println!(
                        "{label}: {} {} group {:?} attempt {} {}",
                        event.at_ms, event.kind, event.group, event.attempt, event.detail
                    );
                }
            }
            answers.finish()
        }
    }
}

/// `meridian region status`
pub(crate) async fn region(command: RegionCommand, target: &Target) -> anyhow::Result<()> {
    let RegionCommand::Status = command;
    let answers = each(target, |mut client| async move {
        Ok(client
            .region_status(pb::RegionStatusRequest {})
            .await?
            .into_inner())
    })
    .await?;
    let results = &answers.results;
    if target.json {
        let value: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(label, status)| {
                (
                    label.clone(),
                    json!({
                        "region": status.region,
                        "broker_name": status.broker_name,
                        "log_start": status.log_start,
                        "log_end": status.log_end,
                        "appended_records": status.appended_records,
                        "topic_count": status.topic_count,
                        "replication": {
                            "applied_through": status.origins.iter()
                                .map(|origin| (origin.origin_region.clone(), json!(origin.applied_through)))
                                .collect::<serde_json::Map<_, _>>(),
                            "counters": status.replication_counters,
                        },
                    }),
                )
            })
            .collect();
        return print_json(&serde_json::Value::Object(value)).and_then(|()| answers.finish());
    }
    for (label, status) in results {
        println!(
            "{label}: region {} ({}), log {}..{}, {} records appended, {} topics",
            status.region,
            status.broker_name,
            status.log_start,
            status.log_end,
            status.appended_records,
            status.topic_count
        );
        for origin in &status.origins {
            println!(
                "  from {}: applied through position {}",
                origin.origin_region, origin.applied_through
            );
        }
        let mut counters: Vec<_> = status.replication_counters.iter().collect();
        counters.sort();
        if !counters.is_empty() {
            println!(
                "  replication: {}",
                counters
                    .iter()
                    .map(|(name, value)| format!("{name} {value}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    answers.finish()
}
