//! Test harness: N meta nodes in this process, each with its own RocksDB directory and gRPC
//! server on 127.0.0.<id> (ephemeral ports), sharing one `LinkFaults`. By default the nodes
//! speak mutual TLS with certificates from one `DevCa` (node `id` gets a certificate for
//! 127.0.0.<id>); `start_plaintext` runs the development transport with peer tokens.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_meta::state::{Command, ObjectKind};
use meridian_meta::{
    ClientCredentials, Credentials, LinkFaults, MetaClient, MetaConfig, MetaNode, NodeError,
    NodeId, NodeOptions, PeerAuth, RunningNode, system_clock,
};
use meridian_pki::{DevCa, NodeIdentity};
use tempfile::TempDir;
use tokio::net::TcpListener;

pub const PEER_TOKEN: &str = "peer-secret";
pub const ADMIN_TOKEN: &str = "admin-secret";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The loopback address node `id` binds.
pub fn node_ip(id: NodeId) -> String {
    format!("127.0.0.{id}")
}

/// A certificate for node `id`, valid for its loopback address.
pub fn node_identity(ca: &DevCa, id: NodeId) -> Arc<NodeIdentity> {
    Arc::new(
        ca.issue(&format!("meta-{id}"), &[node_ip(id), "localhost".into()])
            .expect("issue node certificate"),
    )
}

/// The transport of a test cluster.
pub enum Security {
    MutualTls {
        ca: Box<DevCa>,
        admin: Arc<NodeIdentity>,
    },
    Plaintext,
}

/// Test timings: the WAN defaults at rtt 0, with shorter request deadlines so refusals come
/// quickly.
pub fn test_config(node_id: NodeId) -> MetaConfig {
    let mut config = MetaConfig::new(node_id, 0);
    config.request_timeout_ms = 2_000;
    config.heartbeat_flush_interval_ms = 100;
    config
}

pub struct Cluster {
    pub dir: TempDir,
    pub faults: Arc<LinkFaults>,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub nodes: BTreeMap<NodeId, Option<RunningNode>>,
    pub security: Security,
    configure: fn(&mut MetaConfig),
}

impl Cluster {
    /// Starts `count` nodes (ids 1..=count) on mutual TLS and initialises them as one voter
    /// set.
    pub async fn start(count: u64, configure: fn(&mut MetaConfig)) -> Self {
        let cluster = Self::start_uninitialized(count, configure).await;
        cluster.initialize().await
    }

    /// As `start`, on plain text with peer tokens.
    pub async fn start_plaintext(count: u64, configure: fn(&mut MetaConfig)) -> Self {
        let cluster = Self::start_with(count, configure, Security::Plaintext).await;
        cluster.initialize().await
    }

    async fn initialize(self) -> Self {
        let cluster = self;
        let members: BTreeMap<NodeId, String> = cluster
            .addrs
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect();
        cluster.node(1).initialize(members).await.unwrap();
        cluster.wait_leader(None, Duration::from_secs(10)).await;
        cluster
    }

    /// Starts `count` nodes on mutual TLS without initialising a cluster.
    pub async fn start_uninitialized(count: u64, configure: fn(&mut MetaConfig)) -> Self {
        let ca = DevCa::generate("meridian test CA").expect("generate CA");
        let admin = Arc::new(
            ca.issue("admin", &["admin.meridian".into()])
                .expect("issue admin certificate"),
        );
        Self::start_with(
            count,
            configure,
            Security::MutualTls {
                ca: Box::new(ca),
                admin,
            },
        )
        .await
    }

    async fn start_with(count: u64, configure: fn(&mut MetaConfig), security: Security) -> Self {
        init_tracing();
        let mut cluster = Self {
            dir: TempDir::new().unwrap(),
            faults: Arc::new(LinkFaults::default()),
            addrs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            security,
            configure,
        };
        for id in 1..=count {
            cluster.add_node(id).await;
        }
        cluster
    }

    /// Starts node `id` on a fresh ephemeral port (not a member until added).
    pub async fn add_node(&mut self, id: NodeId) -> MetaNode {
        let listener = TcpListener::bind((node_ip(id), 0)).await.unwrap();
        self.addrs.insert(id, listener.local_addr().unwrap());
        let running = self.open(id, listener).await.unwrap();
        let node = running.node().clone();
        self.nodes.insert(id, Some(running));
        node
    }

    async fn open(&self, id: NodeId, listener: TcpListener) -> Result<RunningNode, NodeError> {
        let mut config = test_config(id);
        (self.configure)(&mut config);
        let options = NodeOptions {
            config,
            credentials: self.credentials(id),
            data_dir: self.dir.path().join(format!("node-{id}")),
            faults: Arc::clone(&self.faults),
            clock: system_clock(),
        };
        RunningNode::start(options, listener).await
    }

    /// Node `id`'s credentials: its own certificate, or the shared peer token.
    pub fn credentials(&self, id: NodeId) -> Credentials {
        let peer = match &self.security {
            Security::MutualTls { ca, .. } => PeerAuth::MutualTls(node_identity(ca, id)),
            Security::Plaintext => PeerAuth::PlaintextToken(PEER_TOKEN.into()),
        };
        Credentials {
            peer,
            admin_token: ADMIN_TOKEN.into(),
        }
    }

    /// What an admin tool presents: the admin token, plus a certificate under mutual TLS.
    pub fn admin(&self) -> ClientCredentials {
        ClientCredentials {
            tls: match &self.security {
                Security::MutualTls { admin, .. } => Some(Arc::clone(admin)),
                Security::Plaintext => None,
            },
            peer_token: None,
            admin_token: Some(ADMIN_TOKEN.into()),
        }
    }

    pub fn node(&self, id: NodeId) -> MetaNode {
        self.nodes[&id].as_ref().unwrap().node().clone()
    }

    pub fn live_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops node `id` as a crash would look to its peers.
    pub async fn kill(&mut self, id: NodeId) {
        let running = self.nodes.get_mut(&id).unwrap().take().unwrap();
        running.stop().await;
    }

    /// Restarts node `id` from its data directory on its old address. The old database may
    /// take a moment to be released by the stopped Raft tasks, so opening is retried.
    pub async fn restart(&mut self, id: NodeId) -> MetaNode {
        let addr = self.addrs[&id];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = match TcpListener::bind(addr).await {
                Ok(listener) => self
                    .open(id, listener)
                    .await
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match attempt {
                Ok(running) => {
                    let node = running.node().clone();
                    self.nodes.insert(id, Some(running));
                    return node;
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::info!(id, %error, "restart not possible yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("restart of node {id} failed: {error}"),
            }
        }
    }

    /// Waits until every live node except `exclude` agrees on one leader (not `exclude`).
    pub async fn wait_leader(&self, exclude: Option<NodeId>, timeout: Duration) -> NodeId {
        let deadline = Instant::now() + timeout;
        loop {
            let leaders: Vec<Option<NodeId>> = self
                .live_ids()
                .into_iter()
                .filter(|id| Some(*id) != exclude)
                .map(|id| self.node(id).raft().metrics().borrow().current_leader)
                .collect();
            if let Some(Some(leader)) = leaders.first()
                && Some(*leader) != exclude
                && leaders.iter().all(|other| *other == Some(*leader))
                && self.nodes.get(leader).is_some_and(Option::is_some)
                && self.node(*leader).raft().metrics().borrow().state
                    == openraft::ServerState::Leader
            {
                return *leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id` applied at least `revision`.
    pub async fn wait_revision(&self, id: NodeId, revision: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let node = self.node(id);
        while node.view().read(|state| state.revision()) < revision {
            assert!(
                Instant::now() < deadline,
                "node {id} stuck at revision {} < {revision}",
                node.view().read(|state| state.revision())
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.addrs.values().map(ToString::to_string).collect()
    }

    /// An admin client over every node.
    pub fn client(&self) -> MetaClient {
        MetaClient::new(self.endpoints(), self.admin()).with_request_timeout(Duration::from_secs(3))
    }

    /// An admin client pinned to one node, with a single attempt.
    pub fn client_of(&self, id: NodeId, timeout: Duration) -> MetaClient {
        MetaClient::new(vec![self.addrs[&id].to_string()], self.admin())
            .with_request_timeout(timeout)
            .with_attempts_max(1)
    }

    pub async fn topic_names(&self, client: &MetaClient) -> (u64, Vec<String>) {
        let (revision, objects) = client.list(ObjectKind::Topics).await.unwrap();
        let names = objects
            .into_iter()
            .map(|object| match object {
                meridian_meta::state::Object::Topic(topic) => topic.spec.name,
                other => panic!("unexpected object {other:?}"),
            })
            .collect();
        (revision, names)
    }
}

pub fn put_region(name: &str) -> Command {
    Command::PutRegion {
        name: name.into(),
        zone: format!("{name}-1"),
        endpoints: vec![],
    }
}

pub fn create_topic(name: &str) -> Command {
    use meridian_meta::state::{MessageType, ReplicationMode, TopicSpec, Topology};
    Command::CreateTopic {
        spec: TopicSpec {
            name: name.into(),
            queue_count: 4,
            message_type: MessageType::Normal,
            regions: ["eu".to_string()].into_iter().collect(),
            replication: ReplicationMode::Async,
            topology: Topology::ActiveActive,
        },
    }
}
