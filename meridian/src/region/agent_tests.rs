//! The meta agent against a real one-node meta group (plain-text development transport) on
//! 127.0.0.1 and a real broker: it registers, applies topics, keeps following meta after the
//! node it watches stops and restarts on the same data and address, and stops on shutdown.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use meridian_cell::Hlc;
use meridian_cell::messaging::{Broker, BrokerConfig, SystemClock};
use meridian_cell::storage::{Storage, StorageConfig};
use meridian_meta::client::{ClientCredentials, MetaClient};
use meridian_meta::state::{Command, MessageType, ReplicationMode, TopicSpec, Topology};
use meridian_meta::{Credentials, MetaConfig, NodeOptions, PeerAuth, RunningNode, system_clock};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::agent::{self, AgentConfig, AgentStatus};

const PEER_TOKEN: &str = "agent-test-peer";
const ADMIN_TOKEN: &str = "agent-test-admin";
/// Bound of every wait in this test.
const WAIT_MS: u64 = 30_000;

async fn start_node(dir: &Path, listener: TcpListener) -> RunningNode {
    RunningNode::start(node_options(dir), listener)
        .await
        .unwrap()
}

fn node_options(dir: &Path) -> NodeOptions {
    NodeOptions {
        config: MetaConfig::new(1, 0),
        credentials: Credentials {
            peer: PeerAuth::PlaintextToken(PEER_TOKEN.into()),
            admin_token: ADMIN_TOKEN.into(),
        },
        data_dir: dir.join("meta"),
        faults: Arc::default(),
        clock: system_clock(),
    }
}

/// Starts the node again on `addr` and the same data: the stopped node's socket and RocksDB
/// lock may take a moment to be released, so this retries (at most 100 times, 100 ms apart).
async fn restart_node(dir: &Path, addr: SocketAddr) -> RunningNode {
    let mut last = String::new();
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(listener) => match RunningNode::start(node_options(dir), listener).await {
                Ok(running) => return running,
                Err(error) => last = error.to_string(),
            },
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the meta node did not restart on {addr}: {last}");
}

async fn create_topic(node: &RunningNode, name: &str) {
    let spec = TopicSpec {
        name: name.into(),
        queue_count: 3,
        message_type: MessageType::Delay,
        regions: ["solo".to_string()].into(),
        replication: ReplicationMode::Async,
        topology: Topology::ActiveActive,
    };
    // Writes fail until the restarted node elected itself; bounded retries.
    for _ in 0..300 {
        match node
            .node()
            .write(Command::CreateTopic { spec: spec.clone() })
            .await
        {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("meta did not take topic {name} within 300 attempts");
}

async fn wait(
    status: &mut watch::Receiver<AgentStatus>,
    what: &str,
    done: impl Fn(&AgentStatus) -> bool,
) {
    let reached =
        tokio::time::timeout(Duration::from_millis(WAIT_MS), status.wait_for(|s| done(s)))
            .await
            .is_ok_and(|waited| waited.is_ok());
    assert!(
        reached,
        "{what} not reached within {WAIT_MS} ms: {:?}",
        *status.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_registers_applies_and_resumes_after_its_meta_node_restarts() {
    let dir = TempDir::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = start_node(dir.path(), listener).await;
    node.node()
        .initialize(BTreeMap::from([(1, addr.to_string())]))
        .await
        .unwrap();

    let storage = Arc::new(
        Storage::open(
            StorageConfig::new(dir.path().join("cell"), "solo"),
            Arc::new(Hlc::system(Duration::from_millis(500))),
        )
        .unwrap(),
    );
    let broker = Broker::open(
        Arc::clone(&storage),
        BrokerConfig::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let client = MetaClient::new(
        vec![addr.to_string()],
        ClientCredentials {
            tls: None,
            peer_token: Some(PEER_TOKEN.into()),
            admin_token: Some(ADMIN_TOKEN.into()),
        },
    )
    .with_request_timeout(Duration::from_secs(2))
    .with_retry_pause(Duration::from_millis(50), Duration::from_millis(200));
    let config = AgentConfig {
        region: "solo".into(),
        zone: "solo-1a".into(),
        cell_id: "solo-cell".into(),
        region_endpoints: vec![addr.to_string()],
        cell_endpoints: vec!["127.0.0.1:1".into()],
        peers: Vec::new(),
        heartbeat_interval_ms: 100,
        retry_pause_ms_first: 50,
        retry_pause_ms_max: 200,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (task, mut status) =
        agent::spawn(config, Arc::new(client), Arc::clone(&broker), shutdown_rx);
    wait(&mut status, "registration", |s| s.registered).await;
    create_topic(&node, "before").await;
    wait(&mut status, "the first topic", |s| {
        s.topics.contains("before")
    })
    .await;
    assert_eq!(broker.topic("before").unwrap().queue_count, 3);
    wait(&mut status, "a heartbeat", |s| s.heartbeats_accepted > 0).await;

    // The watched node goes away and comes back on the same data and address.
    node.stop().await;
    let node = restart_node(dir.path(), addr).await;
    create_topic(&node, "after").await;
    wait(&mut status, "the topic created after the restart", |s| {
        s.topics.contains("after") && s.topics.contains("before")
    })
    .await;
    assert!(broker.topic("after").is_ok());

    shutdown.send_replace(true);
    tokio::time::timeout(Duration::from_millis(WAIT_MS), task)
        .await
        .expect("the agent stops on shutdown")
        .unwrap();
    node.stop().await;
    storage.close().unwrap();
}
