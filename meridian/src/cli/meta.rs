//! The CLI's access to meta: where the meta endpoints are and what to present to them.
//!
//! An endpoints.json written by `meridian dev` (this version or later) names, per region, its
//! `meta` endpoint, its certificate directory `tls_dir` (`cert.pem`, `key.pem`, `ca.pem` from
//! the dev CA) and the `admin_token_file`. With those, `meridian topic create|list` go through
//! meta (mutual TLS with a region's certificate plus the admin token); without them (an
//! `--endpoint` target, or an older file) they talk to each cell as before.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_meta::MetaError;
use meridian_meta::client::{ClientCredentials, ClientError, MetaClient};
use meridian_meta::state::{
    Command as MetaCommand, MessageType, Object, ObjectKind, ReplicationMode, Topic, TopicSpec,
    Topology,
};
use meridian_pki::{CA_FILE, CERT_FILE, KEY_FILE, NodeIdentity};
use meridian_proto::admin::v1::{self as pb, admin_client::AdminClient};
use serde_json::json;

use super::admin::{Answers, call_error, report_topics};
use super::{DEFAULT_ENDPOINTS_FILE, Endpoint, Target, connect, print_json};

/// How often `topic create` through meta polls a cell for the new topic (100 ms apart).
const TOPIC_APPLY_POLLS: u32 = 300;

/// How long one meta call may take before the client tries the next endpoint.
const META_REQUEST_TIMEOUT_MS: u64 = 5_000;

/// Where meta is and how to authenticate to it.
pub(crate) struct MetaAccess {
    /// Every region of the endpoints file (meta topics name regions).
    pub(crate) regions: Vec<String>,
    pub(crate) client: MetaClient,
}

/// What one region's entry says about meta.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MetaEntry {
    region: String,
    meta: String,
    tls_dir: PathBuf,
    admin_token_file: PathBuf,
}

/// The meta entries of an endpoints file, sorted by region; `None` when any region lacks them.
fn meta_entries(text: &str) -> anyhow::Result<Option<Vec<MetaEntry>>> {
    let value: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let Some(regions) = value.as_object() else {
        bail!("expected an object of regions, as `meridian dev` writes");
    };
    let mut entries = Vec::with_capacity(regions.len());
    for (region, entry) in regions {
        let field = |name: &str| entry.get(name).and_then(|value| value.as_str());
        let (Some(meta), Some(tls_dir), Some(token)) =
            (field("meta"), field("tls_dir"), field("admin_token_file"))
        else {
            return Ok(None);
        };
        entries.push(MetaEntry {
            region: region.clone(),
            meta: meta.to_string(),
            tls_dir: PathBuf::from(tls_dir),
            admin_token_file: PathBuf::from(token),
        });
    }
    entries.sort_by(|a, b| a.region.cmp(&b.region));
    Ok((!entries.is_empty()).then_some(entries))
}

/// Meta access from the target's endpoints file, if it has what is needed.
pub(crate) fn access(target: &Target) -> anyhow::Result<Option<MetaAccess>> {
    if !target.endpoints.is_empty() {
        return Ok(None);
    }
    let path = target
        .endpoints_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ENDPOINTS_FILE));
    let Ok(text) = std::fs::read_to_string(&path) else {
        // The per-cell path reports the unreadable file with its own wording.
        return Ok(None);
    };
    let Some(entries) =
        meta_entries(&text).with_context(|| format!("--endpoints-file {}", path.display()))?
    else {
        return Ok(None);
    };
    let first = &entries[0];
    let identity = load_identity(&first.tls_dir)?;
    let token = std::fs::read_to_string(&first.admin_token_file)
        .with_context(|| {
            format!(
                "reading the admin token {} named in {}",
                first.admin_token_file.display(),
                path.display()
            )
        })?
        .trim()
        .to_string();
    let client = MetaClient::new(
        entries.iter().map(|entry| entry.meta.clone()).collect(),
        ClientCredentials {
            tls: Some(Arc::new(identity)),
            peer_token: None,
            admin_token: Some(token),
        },
    )
    .with_request_timeout(Duration::from_millis(META_REQUEST_TIMEOUT_MS));
    Ok(Some(MetaAccess {
        regions: entries.into_iter().map(|entry| entry.region).collect(),
        client,
    }))
}

fn load_identity(dir: &Path) -> anyhow::Result<NodeIdentity> {
    NodeIdentity::load(
        &dir.join(CERT_FILE),
        &dir.join(KEY_FILE),
        &dir.join(CA_FILE),
    )
    .with_context(|| format!("loading the certificate in {}", dir.display()))
}

/// `--replication`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Replication {
    Async,
    SyncQuorum,
}

/// `--topology`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TopologyArg {
    ActiveActive,
    ActiveStandby,
}

/// Meta's message type for a `--type` name; `mixed` has no meta equivalent.
pub(crate) fn message_type(name: &str) -> anyhow::Result<MessageType> {
    Ok(match name {
        "normal" => MessageType::Normal,
        "fifo" => MessageType::Fifo,
        "delay" => MessageType::Delay,
        "transaction" => MessageType::Transaction,
        other => bail!(
            "--type {other}: meta topics are normal, fifo, delay or transaction; create a mixed \
             topic per cell with --cells"
        ),
    })
}

/// The flags of `meridian topic create` that shape a meta topic.
pub(crate) struct TopicRequest<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) queues: u32,
    /// Empty: every region.
    pub(crate) regions: &'a [String],
    pub(crate) replication: Replication,
    pub(crate) topology: TopologyArg,
    pub(crate) home: Option<&'a str>,
}

/// What the user asked for, as a meta topic spec; errors name the flag.
pub(crate) fn topic_spec(
    request: &TopicRequest<'_>,
    known_regions: &[String],
) -> anyhow::Result<TopicSpec> {
    let TopicRequest {
        name,
        kind,
        queues,
        regions,
        replication,
        topology,
        home,
    } = *request;
    let regions: BTreeSet<String> = if regions.is_empty() {
        known_regions.iter().cloned().collect()
    } else {
        regions
            .iter()
            .map(|region| region.trim().to_string())
            .collect()
    };
    if let Some(unknown) = regions
        .iter()
        .find(|region| !known_regions.contains(region))
    {
        bail!(
            "--regions {unknown}: not a region of the fabric ({})",
            known_regions.join(", ")
        );
    }
    let topology = match (topology, home) {
        (TopologyArg::ActiveActive, None) => Topology::ActiveActive,
        (TopologyArg::ActiveActive, Some(_)) => {
            bail!("--home applies to --topology active-standby only")
        }
        (TopologyArg::ActiveStandby, None) => {
            bail!("--topology active-standby needs --home REGION")
        }
        (TopologyArg::ActiveStandby, Some(home)) => {
            if !regions.contains(home) {
                bail!("--home {home}: not among the topic's regions");
            }
            Topology::ActiveStandby {
                home: home.to_string(),
            }
        }
    };
    Ok(TopicSpec {
        name: name.to_string(),
        queue_count: queues,
        message_type: message_type(kind)?,
        regions,
        replication: match replication {
            Replication::Async => ReplicationMode::Async,
            Replication::SyncQuorum => ReplicationMode::SyncQuorum,
        },
        topology,
    })
}

/// Creates the topic in meta (an existing topic with the same spec is fine), waits until each
/// selected cell among its regions holds it (every region applies it from its meta watch), and
/// reports those cells as the per-cell path does.
pub(super) async fn create_in_meta(
    access: &MetaAccess,
    request: &TopicRequest<'_>,
    target: &Target,
) -> anyhow::Result<()> {
    let spec = topic_spec(request, &access.regions)?;
    let name = spec.name.clone();
    match access
        .client
        .write(&MetaCommand::CreateTopic { spec: spec.clone() })
        .await
    {
        Ok(_) => {}
        Err(ClientError::Rejected(MetaError::TopicExists { .. })) => {
            let (_, topics) = access.client.list(ObjectKind::Topics).await?;
            let same = topics
                .iter()
                .any(|object| matches!(object, Object::Topic(topic) if topic.spec == spec));
            if !same {
                bail!("topic {name} already exists in meta with other settings");
            }
        }
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!(
                "creating topic {name} in meta (give --cells to create it in each cell instead)"
            )));
        }
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for endpoint in target.resolve()? {
        if !spec.regions.contains(&endpoint.label) {
            continue;
        }
        match wait_for_topic(&endpoint, &name).await {
            Ok(topic) => results.push((endpoint.label.clone(), topic)),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    let answers = Answers { results, failures };
    report_topics(target, &answers.results, "created").and_then(|()| answers.finish())
}

/// Polls a cell until it holds `topic` (bounded: `TOPIC_APPLY_POLLS` times, 100 ms apart).
async fn wait_for_topic(endpoint: &Endpoint, topic: &str) -> anyhow::Result<pb::TopicInfo> {
    let mut client = AdminClient::new(connect(endpoint).await?);
    let mut last = None;
    for _ in 0..TOPIC_APPLY_POLLS {
        let request = pb::DescribeTopicRequest {
            name: topic.to_string(),
        };
        match client.describe_topic(request).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) => last = Some(status),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    match last {
        Some(status) => Err(call_error(endpoint, &status).context(format!(
            "topic {topic} is in meta but the cell did not apply it within {TOPIC_APPLY_POLLS} polls"
        ))),
        None => bail!("{}: no answer", endpoint.label),
    }
}

/// Meta's topics with their regions, replication, topology, home and epoch.
pub(super) async fn list_in_meta(access: &MetaAccess, target: &Target) -> anyhow::Result<()> {
    let (revision, objects) = access.client.list(ObjectKind::Topics).await?;
    let topics: Vec<&Topic> = objects
        .iter()
        .filter_map(|object| match object {
            Object::Topic(topic) => Some(topic),
            _ => None,
        })
        .collect();
    if target.json {
        let list: Vec<serde_json::Value> =
            topics.iter().map(|topic| meta_topic_json(topic)).collect();
        return print_json(&json!({ "revision": revision, "topics": list }));
    }
    for topic in topics {
        let value = meta_topic_json(topic);
        println!(
            "{}: {}, {} queues, regions {}, {}, {}{}, epoch {}",
            topic.spec.name,
            value["type"].as_str().unwrap_or_default(),
            topic.spec.queue_count,
            topic
                .spec
                .regions
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
            value["replication"].as_str().unwrap_or_default(),
            value["topology"].as_str().unwrap_or_default(),
            value["home"]
                .as_str()
                .map(|home| format!(" (home {home})"))
                .unwrap_or_default(),
            topic.epoch,
        );
        if let Some(target_region) = &topic.moving_to {
            println!("  moving to {target_region}");
        }
    }
    Ok(())
}

fn meta_topic_json(topic: &Topic) -> serde_json::Value {
    let spec = &topic.spec;
    let (topology, home) = match &spec.topology {
        Topology::ActiveActive => ("active-active", None),
        Topology::ActiveStandby { home } => ("active-standby", Some(home.clone())),
    };
    json!({
        "name": spec.name,
        "type": match spec.message_type {
            MessageType::Normal => "normal",
            MessageType::Fifo => "fifo",
            MessageType::Delay => "delay",
            MessageType::Transaction => "transaction",
        },
        "queue_count": spec.queue_count,
        "regions": spec.regions,
        "replication": match spec.replication {
            ReplicationMode::Async => "async",
            ReplicationMode::SyncQuorum => "sync-quorum",
        },
        "topology": topology,
        "home": home,
        "moving_to": topic.moving_to,
        "epoch": topic.epoch,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn endpoints_files_without_meta_fall_back_to_cells() {
        assert_eq!(
            meta_entries(r#"{"a": {"grpc": "127.0.0.1:1"}}"#).unwrap(),
            None
        );
        let entries = meta_entries(
            r#"{"b": {"meta": "127.0.0.2:2", "tls_dir": "/p/b", "admin_token_file": "/p/t"},
                "a": {"meta": "127.0.0.1:2", "tls_dir": "/p/a", "admin_token_file": "/p/t"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(entries[0].region, "a");
        assert_eq!(entries[1].meta, "127.0.0.2:2");
    }

    #[test]
    fn topic_flags_map_to_a_spec_or_name_the_flag() {
        let spec = topic_spec(
            &TopicRequest {
                name: "t",
                kind: "fifo",
                queues: 8,
                regions: &[],
                replication: Replication::SyncQuorum,
                topology: TopologyArg::ActiveActive,
                home: None,
            },
            &known(),
        )
        .unwrap();
        assert_eq!(spec.regions.len(), 3);
        assert_eq!(spec.replication, ReplicationMode::SyncQuorum);
        assert_eq!(spec.message_type, MessageType::Fifo);
        let standby = topic_spec(
            &TopicRequest {
                name: "t",
                kind: "normal",
                queues: 4,
                regions: &["a".into(), "b".into()],
                replication: Replication::Async,
                topology: TopologyArg::ActiveStandby,
                home: Some("b"),
            },
            &known(),
        )
        .unwrap();
        assert_eq!(
            standby.topology,
            Topology::ActiveStandby { home: "b".into() }
        );
        let error = |regions: &[String], topology, home| {
            let request = TopicRequest {
                name: "t",
                kind: "normal",
                queues: 4,
                regions,
                replication: Replication::Async,
                topology,
                home,
            };
            topic_spec(&request, &known()).unwrap_err().to_string()
        };
        assert!(error(&["z".into()], TopologyArg::ActiveActive, None).contains("--regions z"));
        assert!(error(&[], TopologyArg::ActiveStandby, None).contains("--home"));
        assert!(error(&["a".into()], TopologyArg::ActiveStandby, Some("b")).contains("--home b"));
        assert!(
            message_type("mixed")
                .unwrap_err()
                .to_string()
                .contains("--cells")
        );
    }
}
