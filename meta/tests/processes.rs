//! Meta nodes as real child processes (`meridian-meta-node`) on 127.0.0.1-3 over mutual TLS:
//! the leader is killed with SIGKILL, a new leader serves writes, no acknowledged write is
//! lost, and the killed node restarts from its RocksDB directory and rejoins.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_meta::state::{
    Command, MessageType, Object, ObjectKind, ReplicationMode, TopicSpec, Topology,
};
use meridian_meta::{ClientCredentials, MetaClient, NodeId};
use meridian_pki::{CA_FILE, CERT_FILE, DevCa, KEY_FILE};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout};

const ADMIN_TOKEN: &str = "process-admin";
/// Bound on every wait for the cluster to reach a state (a loaded 2-core machine builds and
/// runs other suites alongside).
const WAIT: Duration = Duration::from_secs(60);

struct NodeProcess {
    child: Child,
    addr: String,
    /// Kept open so the child never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

struct Harness {
    dir: tempfile::TempDir,
    nodes: std::collections::BTreeMap<NodeId, NodeProcess>,
}

impl Harness {
    fn node_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Writes node `id`'s config (listening on `listen`) and starts the process; returns once
    /// it printed its address.
    async fn spawn(&mut self, id: NodeId, listen: &str) {
        let node_dir = self.node_dir(id);
        let tls = node_dir.join("tls");
        let config = format!(
            "node_id = {id}\nlisten = \"{listen}\"\ndata_dir = \"{data}\"\nadmin_token = \
             \"{ADMIN_TOKEN}\"\nbootstrap = {bootstrap}\n\n[tls]\ncert = \"{cert}\"\nkey = \
             \"{key}\"\nca = \"{ca}\"\n",
            data = node_dir.join("data").display(),
            bootstrap = id == 1,
            cert = tls.join(CERT_FILE).display(),
            key = tls.join(KEY_FILE).display(),
            ca = tls.join(CA_FILE).display(),
        );
        let config_path = node_dir.join("meta.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian-meta-node"))
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(WAIT, stdout.read_line(&mut line))
            .await
            .expect("node did not report its address")
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("node {id} printed {line:?}"))
            .to_string();
        self.nodes.insert(
            id,
            NodeProcess {
                child,
                addr,
                _stdout: stdout,
            },
        );
    }

    fn addr(&self, id: NodeId) -> String {
        self.nodes[&id].addr.clone()
    }
}

fn write_identity(ca: &DevCa, dir: &Path, id: NodeId) {
    ca.issue(&format!("meta-{id}"), &[format!("127.0.0.{id}")])
        .unwrap()
        .write_to(&dir.join("tls"))
        .unwrap();
}

fn topic(name: &str) -> Command {
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

fn topic_names(objects: Vec<Object>) -> BTreeSet<String> {
    objects
        .into_iter()
        .filter_map(|object| match object {
            Object::Topic(topic) => Some(topic.spec.name),
            _ => None,
        })
        .collect()
}

/// Polls `condition` every 50 ms until it holds, failing after `WAIT`.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p10_sigkilled_leader_process_is_replaced_and_rejoins_from_disk() {
    let ca = DevCa::generate("meridian process-test CA").unwrap();
    let mut harness = Harness {
        dir: tempfile::TempDir::new().unwrap(),
        nodes: Default::default(),
    };
    for id in 1..=3 {
        write_identity(&ca, &harness.node_dir(id), id);
        harness.spawn(id, &format!("127.0.0.{id}:0")).await;
    }
    let admin = ClientCredentials {
        tls: Some(Arc::new(
            ca.issue("admin", &["admin.meridian".into()]).unwrap(),
        )),
        peer_token: None,
        admin_token: Some(ADMIN_TOKEN.into()),
    };
    let endpoints: Vec<String> = (1..=3).map(|id| harness.addr(id)).collect();
    let client = MetaClient::new(endpoints.clone(), admin.clone())
        .with_request_timeout(Duration::from_secs(3))
        .with_attempts_max(60);

    tracing::info!("node 1 bootstrapped alone; nodes 2 and 3 join through the admin API");
    wait_until("node 1 to lead", || async {
        client
            .status(0)
            .await
            .is_ok_and(|status| status.leader_id == 1)
    })
    .await;
    client.add_learner(2, &harness.addr(2)).await.unwrap();
    client.add_learner(3, &harness.addr(3)).await.unwrap();
    let voters: BTreeSet<NodeId> = [1, 2, 3].into_iter().collect();
    assert_eq!(
        client
            .change_membership(&voters, false)
            .await
            .unwrap()
            .voters,
        voters
    );

    client
        .write(&Command::PutRegion {
            name: "eu".into(),
            zone: "eu-1".into(),
            endpoints: vec![],
        })
        .await
        .unwrap();
    let mut acked = BTreeSet::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        client.write(&topic(&name)).await.unwrap();
        acked.insert(name);
    }

    let leader = client.status(0).await.unwrap().leader_id;
    assert!((1..=3).contains(&leader), "leader {leader}");
    tracing::info!(leader, "SIGKILL the leader process");
    let killed = harness.nodes.remove(&leader).unwrap();
    let killed_addr = killed.addr.clone();
    let mut child = killed.child;
    child.start_kill().unwrap();
    let exit = child.wait().await.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9),
        "{exit:?}"
    );

    let survivors: Vec<String> = harness
        .nodes
        .values()
        .map(|node| node.addr.clone())
        .collect();
    let survivor_client = MetaClient::new(survivors.clone(), admin.clone())
        .with_request_timeout(Duration::from_secs(3))
        .with_attempts_max(60);
    survivor_client.write(&topic("after-0")).await.unwrap();
    acked.insert("after-0".into());
    let new_leader = survivor_client.status(0).await.unwrap().leader_id;
    assert_ne!(new_leader, leader);
    for i in 1..10 {
        let name = format!("after-{i}");
        survivor_client.write(&topic(&name)).await.unwrap();
        acked.insert(name);
    }
    let (revision, objects) = survivor_client.list(ObjectKind::Topics).await.unwrap();
    let listed = topic_names(objects);
    assert!(
        acked.is_subset(&listed),
        "lost: {:?}",
        acked.difference(&listed)
    );

    tracing::info!("restart the killed node from its data directory on its old address");
    harness.spawn(leader, &killed_addr).await;
    assert_eq!(harness.addr(leader), killed_addr);
    let restarted = MetaClient::new(vec![killed_addr], admin.clone())
        .with_request_timeout(Duration::from_secs(3))
        .with_attempts_max(1);
    wait_until("the restarted node to catch up", || async {
        restarted
            .status(0)
            .await
            .is_ok_and(|status| status.revision >= revision && status.leader_id != 0)
    })
    .await;
    // It serves as an entry point again: a write through it is forwarded to the leader and a
    // linearizable read through it sees everything acknowledged.
    let through_restarted = MetaClient::new(vec![harness.addr(leader)], admin)
        .with_request_timeout(Duration::from_secs(3))
        .with_attempts_max(20);
    through_restarted
        .write(&topic("via-restarted"))
        .await
        .unwrap();
    acked.insert("via-restarted".into());
    let (_, objects) = through_restarted.list(ObjectKind::Topics).await.unwrap();
    let listed = topic_names(objects);
    assert!(
        acked.is_subset(&listed),
        "lost: {:?}",
        acked.difference(&listed)
    );

    for node in harness.nodes.values_mut() {
        node.child.start_kill().unwrap();
        node.child.wait().await.unwrap();
    }
}
