//! Three regions in this process on 127.0.0.1-3 (ports picked free by the OS), with a real meta
//! Raft group over mutual TLS, real QUIC replication and real gRPC endpoints: topics created
//! through meta reach exactly the regions they name, a message sent in one region is received
//! in another, and `sync-quorum` topics make every cell's broker wait for the quorum.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meridian_cell::messaging::{Filter, OutgoingMessage, ReceiveRequest};
use meridian_meta::state::{
    Command, ConsumeOrder, ConsumerGroup, MessageType, ReplicationMode, RetryPolicy, TopicSpec,
    Topology,
};
use meridian_pki::DevCa;
use meridian_topology::{CellConfig, Endpoint, RegionConfig, RegionName};
use tempfile::TempDir;

use super::{AgentStatus, RegionOptions, RunningRegion};

/// Bound of every wait in these tests.
const WAIT_MS: u64 = 60_000;

fn free_tcp_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn region_config(name: &str, ip: &str) -> RegionConfig {
    RegionConfig {
        name: RegionName::new(name).unwrap(),
        zone: format!("{name}-1a"),
        grpc: Endpoint::new(ip, free_tcp_port(ip)).unwrap(),
        meta: Endpoint::new(ip, free_tcp_port(ip)).unwrap(),
        replication: Endpoint::new(ip, free_udp_port(ip)).unwrap(),
        metrics: Endpoint::new(ip, free_tcp_port(ip)).unwrap(),
        data_dir: None,
    }
}

struct TestFabric {
    _dir: TempDir,
    regions: Vec<RunningRegion>,
}

impl TestFabric {
    async fn start() -> TestFabric {
        let dir = TempDir::new().unwrap();
        let configs = vec![
            region_config("east", "127.0.0.1"),
            region_config("north", "127.0.0.2"),
            region_config("west", "127.0.0.3"),
        ];
        let ca = DevCa::generate("meridian region test CA").unwrap();
        let mut regions = Vec::new();
        for config in &configs {
            let ip = config.meta.host().to_string();
            let name = config.name.as_str().to_string();
            let identity = ca.issue(&name, &[name.clone(), ip]).unwrap();
            let options = RegionOptions {
                regions: configs.clone(),
                cell: CellConfig::default(),
                region: name.clone(),
                data_dir: dir.path().join(&name),
                identity: Arc::new(identity),
                admin_token: "test-admin-token".into(),
                durability: Some(meridian_cell::storage::Durability::Async),
                auto_create_queues: None,
                meta_expected_rtt_ms: 0,
                heartbeat_interval_ms: 200,
                proximity: ["east", "north", "west"]
                    .iter()
                    .map(|from| {
                        let mut order: Vec<String> = ["east", "north", "west"]
                            .iter()
                            .map(|r| r.to_string())
                            .collect();
                        order.sort_by_key(|region| region != from);
                        (from.to_string(), order)
                    })
                    .collect(),
                dial_via: BTreeMap::new(),
                clock_offset_ms: 0,
            };
            regions.push(RunningRegion::start(&options).await.unwrap());
        }
        TestFabric { _dir: dir, regions }
    }

    fn region(&self, name: &str) -> &RunningRegion {
        self.regions.iter().find(|r| r.name() == name).unwrap()
    }

    async fn write(&self, command: Command) -> u64 {
        // Through the last region's node: a follower or the leader, both must work.
        let meta = self.regions.last().unwrap().meta();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
        loop {
            match meta.write(command.clone()).await {
                Ok(applied) => return applied.revision,
                Err(error) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "meta write failed: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn wait(&self, name: &str, what: &str, done: impl Fn(&AgentStatus) -> bool) {
        let mut status = self.region(name).status();
        let reached =
            tokio::time::timeout(Duration::from_millis(WAIT_MS), status.wait_for(|s| done(s)))
                .await
                .is_ok_and(|waited| waited.is_ok());
        assert!(
            reached,
            "{name}: {what} not reached within {WAIT_MS} ms: {:?}",
            *status.borrow()
        );
    }

    async fn stop(self) {
        for region in &self.regions {
            region.replicator().shutdown().await;
        }
        for region in self.regions {
            region.close().await.unwrap();
        }
    }
}

fn spec(name: &str, regions: &[&str], replication: ReplicationMode) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        queue_count: 2,
        message_type: MessageType::Normal,
        regions: regions.iter().map(|r| r.to_string()).collect(),
        replication,
        topology: Topology::ActiveActive,
    }
}

fn message(id: &str, topic: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.into(),
        topic: topic.into(),
        body: body.as_bytes().to_vec(),
        born_timestamp_ms: 1,
        ..OutgoingMessage::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_from_meta_reach_their_regions_replicate_and_set_sync_quorum() {
    let fabric = TestFabric::start().await;
    for name in ["east", "north", "west"] {
        fabric
            .wait(name, "registration", |status| status.registered)
            .await;
    }

    // (a) A topic of east and north only.
    fabric
        .write(Command::CreateTopic {
            spec: spec("pair", &["east", "north"], ReplicationMode::Async),
        })
        .await;
    let revision = fabric
        .write(Command::PutConsumerGroup {
            group: ConsumerGroup {
                name: "readers".into(),
                topics: BTreeSet::from(["pair".to_string()]),
                order: ConsumeOrder::Concurrent,
                broadcast: false,
                retry: RetryPolicy {
                    max_attempts: 3,
                    initial_backoff_ms: 100,
                    max_backoff_ms: 1_000,
                },
            },
        })
        .await;
    for name in ["east", "north", "west"] {
        fabric
            .wait(name, "the group's revision", |status| {
                status.applied_revision >= revision
            })
            .await;
    }
    for name in ["east", "north"] {
        let status = fabric.region(name).status().borrow().clone();
        assert!(status.topics.contains("pair"), "{name}: {status:?}");
        assert_eq!(
            fabric
                .region(name)
                .broker()
                .topic("pair")
                .unwrap()
                .queue_count,
            2
        );
        assert!(fabric.region(name).broker().group("readers").is_ok());
        assert!(!fabric.region(name).broker().is_sync_quorum("pair"));
    }
    let west = fabric.region("west").status().borrow().clone();
    assert!(!west.topics.contains("pair"), "{west:?}");
    assert!(fabric.region("west").broker().topic("pair").is_err());
    assert!(fabric.region("west").broker().group("readers").is_err());
    // East knows the topic must not ship to west.
    let east = fabric.region("east").status().borrow().clone();
    assert!(east.withheld_by_peer["west"].contains("pair"), "{east:?}");
    assert!(!east.withheld_by_peer["north"].contains("pair"), "{east:?}");

    // A send in east is received in north.
    fabric
        .region("east")
        .broker()
        .send(vec![message("pair-1", "pair", "hello north")])
        .await
        .unwrap();
    let north = fabric.region("north").broker();
    let mut received = None;
    for _ in 0..60 {
        let request = ReceiveRequest {
            group: "readers".into(),
            topic: "pair".into(),
            queue_id: None,
            filter: Filter::all(),
            max_messages: 8,
            invisible_duration_ms: 30_000,
            long_polling_ms: 1_000,
        };
        let messages = north.receive(&request).await.unwrap();
        if let Some(found) = messages
            .into_iter()
            .find(|m| m.record.message_id == "pair-1")
        {
            received = Some(found);
            break;
        }
    }
    let received = received.expect("the message sent in east reached north within 60 polls");
    assert_eq!(received.record.body, b"hello north".to_vec());
    assert_eq!(received.record.origin.region, "east");

    // (b) A sync-quorum topic of all three regions: every cell's sends wait for the quorum,
    // and with every region up a send completes.
    let revision = fabric
        .write(Command::CreateTopic {
            spec: spec(
                "ledger",
                &["east", "north", "west"],
                ReplicationMode::SyncQuorum,
            ),
        })
        .await;
    for name in ["east", "north", "west"] {
        fabric
            .wait(name, "the sync-quorum topic", |status| {
                status.applied_revision >= revision && status.sync_quorum_topics.contains("ledger")
            })
            .await;
        assert!(fabric.region(name).broker().is_sync_quorum("ledger"));
        assert!(!fabric.region(name).broker().is_sync_quorum("pair"));
    }
    let receipts = tokio::time::timeout(
        Duration::from_millis(WAIT_MS),
        fabric
            .region("west")
            .broker()
            .send(vec![message("ledger-1", "ledger", "quorum")]),
    )
    .await
    .expect("a sync-quorum send completes while every region is up")
    .unwrap();
    assert_eq!(receipts.len(), 1);

    // Heartbeats reach meta: the cells' last heartbeat is recorded.
    let meta = fabric.region("east").meta().clone();
    let mut beating = false;
    for _ in 0..100 {
        let cells = meta
            .list(meridian_meta::state::ObjectKind::Cells)
            .await
            .unwrap()
            .1;
        beating = cells.len() == 3
            && cells.iter().all(|cell| {
                matches!(cell, meridian_meta::state::Object::Cell(cell) if cell.last_heartbeat_ms > 0)
            });
        if beating {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(beating, "every cell's heartbeat is recorded in meta");
    fabric.stop().await;
}
