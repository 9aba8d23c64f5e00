//! Multi-node tests over real gRPC on 127.0.0.1 with RocksDB in temp dirs: failover without
//! losing committed writes, restart from disk, catch-up by snapshot, a cut-off minority,
//! watch resumption across a leader change, membership changes and credentials. Every cluster
//! here runs on mutual TLS with certificates from a `DevCa`, except `t80`, which checks the
//! plain-text development transport.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Cluster, create_topic, put_region};
use meridian_meta::state::{Command, ObjectKind};
use meridian_meta::{ClientError, WatchItem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_leader_killed_new_leader_serves_writes_and_nothing_committed_is_lost() {
    leader_kill_scenario(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_five_nodes_leader_killed_nothing_committed_is_lost() {
    leader_kill_scenario(5).await;
}

async fn leader_kill_scenario(node_count: u64) {
    let mut cluster = Cluster::start(node_count, |_| {}).await;
    let client = cluster.client();
    client.write(&put_region("eu")).await.unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("before-{i}");
        client.write(&create_topic(&name)).await.unwrap();
        acked.push(name);
    }

    tracing::info!("kill the leader; a new one must serve writes");
    let old_leader = cluster.wait_leader(None, Duration::from_secs(5)).await;
    let killed_at = Instant::now();
    cluster.kill(old_leader).await;
    let new_leader = cluster
        .wait_leader(Some(old_leader), Duration::from_secs(5))
        .await;
    assert_ne!(new_leader, old_leader);
    let survivor = cluster.client_of(new_leader, Duration::from_secs(3));
    survivor.write(&create_topic("after-0")).await.unwrap();
    // Speed is the benchmark's business (examples/meta_bench.rs); this only logs it.
    let recovery = killed_at.elapsed();
    tracing::info!(?recovery, "new leader served a write");
    acked.push("after-0".into());
    for i in 1..10 {
        let name = format!("after-{i}");
        client.write(&create_topic(&name)).await.unwrap();
        acked.push(name);
    }

    let (revision, names) = cluster.topic_names(&client).await;
    for name in &acked {
        assert!(names.contains(name), "acknowledged topic {name} lost");
    }

    tracing::info!("restart the old leader from disk; it rejoins and catches up");
    let restarted = cluster.restart(old_leader).await;
    cluster
        .wait_revision(old_leader, revision, Duration::from_secs(10))
        .await;
    let replica_names: BTreeSet<String> = restarted.view().read(|state| {
        state
            .list(ObjectKind::Topics)
            .into_iter()
            .filter_map(|object| match object {
                meridian_meta::state::Object::Topic(topic) => Some(topic.spec.name),
                _ => None,
            })
            .collect()
    });
    assert_eq!(replica_names, names.into_iter().collect());
    // It rejoined as a follower of the current leader and is fully usable as an entry point.
    let via_restarted = cluster.client_of(old_leader, Duration::from_secs(3));
    via_restarted
        .write(&create_topic("via-restarted"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_lagging_node_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, |config| {
        config.snapshot_every_entries = 20;
        config.log_entries_kept_after_snapshot = 0;
    })
    .await;
    let client = cluster.client();
    client.write(&put_region("eu")).await.unwrap();
    let leader = cluster.wait_leader(None, Duration::from_secs(5)).await;
    let lagging = cluster
        .live_ids()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    cluster.kill(lagging).await;

    tracing::info!("write past several snapshots while one follower is down");
    for i in 0..80 {
        client
            .write(&create_topic(&format!("t-{i}")))
            .await
            .unwrap();
    }
    let leader_node = cluster.node(leader);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let purged = leader_node
            .raft()
            .metrics()
            .borrow()
            .purged
            .map(|log_id| log_id.index)
            .unwrap_or(0);
        if purged > 40 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leader never purged its log (purged up to {purged})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revision = leader_node.view().read(|state| state.revision());

    tracing::info!("restart the lagging follower: its log is behind the purge point");
    let node = cluster.restart(lagging).await;
    cluster
        .wait_revision(lagging, revision, Duration::from_secs(15))
        .await;
    let snapshot = node.raft().metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|log_id| log_id.index > 20),
        "follower did not install a snapshot: {snapshot:?}"
    );
    let leader_state = leader_node
        .view()
        .read(|state| state.list(ObjectKind::Topics));
    let follower_state = node.view().read(|state| state.list(ObjectKind::Topics));
    assert_eq!(follower_state, leader_state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_cut_off_minority_cannot_commit_and_refuses_reads() {
    let cluster = Cluster::start(5, |_| {}).await;
    let client = cluster.client();
    client.write(&put_region("eu")).await.unwrap();
    let old_leader = cluster.wait_leader(None, Duration::from_secs(5)).await;

    tracing::info!("cut the leader off from the four others");
    let all: Vec<_> = cluster.live_ids();
    cluster.faults.isolate(old_leader, &all);
    let cut_off = cluster.client_of(old_leader, Duration::from_secs(4));
    let write = cut_off.write(&create_topic("minority")).await;
    assert!(
        write.is_err(),
        "a cut-off leader committed a write: {write:?}"
    );
    let read = cut_off.list(ObjectKind::Topics).await;
    assert!(read.is_err(), "a cut-off node served a read: {read:?}");

    tracing::info!("the majority elects a new leader and serves writes and reads");
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_leader = loop {
        let leader = all.iter().filter(|id| **id != old_leader).find(|id| {
            cluster.node(**id).raft().metrics().borrow().state == openraft::ServerState::Leader
        });
        if let Some(leader) = leader {
            break *leader;
        }
        assert!(Instant::now() < deadline, "majority elected no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let majority = cluster.client_of(new_leader, Duration::from_secs(3));
    majority.write(&create_topic("majority")).await.unwrap();
    let (_, names) = cluster.topic_names(&majority).await;
    assert_eq!(
        names,
        vec!["majority".to_string()],
        "the minority's write must not exist"
    );

    tracing::info!("heal: the old leader steps down and learns the majority's writes");
    cluster.faults.heal();
    let revision = cluster
        .node(new_leader)
        .view()
        .read(|state| state.revision());
    cluster
        .wait_revision(old_leader, revision, Duration::from_secs(10))
        .await;
    assert!(
        cluster
            .node(old_leader)
            .view()
            .read(|state| state.topic("minority").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_watch_resumed_after_leader_change_misses_nothing() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let client = cluster.client();
    let leader = cluster.wait_leader(None, Duration::from_secs(5)).await;
    let leader_index = cluster.addrs.keys().position(|id| *id == leader).unwrap();
    let mut watch = client.watch(leader_index, 0).await.unwrap();
    client.write(&put_region("eu")).await.unwrap();
    for i in 0..10 {
        client
            .write(&create_topic(&format!("w-{i}")))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 11 {
        match tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchItem::Change(change)) => seen.push(change.revision),
            other => panic!("unexpected watch item {other:?}"),
        }
    }

    tracing::info!("kill the leader the watch was on; keep writing through the survivors");
    cluster.kill(leader).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert!(
        !matches!(ended, Ok(Some(WatchItem::Change(_)))),
        "stream should end with the node"
    );
    for i in 10..20 {
        client
            .write(&create_topic(&format!("w-{i}")))
            .await
            .unwrap();
    }
    let new_leader = cluster
        .wait_leader(Some(leader), Duration::from_secs(5))
        .await;
    let resume_at = cluster
        .addrs
        .keys()
        .position(|id| *id == new_leader)
        .unwrap();
    let last = *seen.last().unwrap();
    let mut resumed = client.watch(resume_at, last).await.unwrap();
    let target = cluster
        .node(new_leader)
        .view()
        .read(|state| state.revision());
    while *seen.last().unwrap() < target {
        match tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchItem::Change(change)) => seen.push(change.revision),
            other => panic!("unexpected watch item {other:?}"),
        }
    }
    let expected: Vec<u64> = (1..=target).collect();
    assert_eq!(seen, expected, "watch skipped or repeated a revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t45_watcher_older_than_the_change_log_is_told_to_relist() {
    let cluster = Cluster::start(3, |config| config.change_log_capacity_revisions = 5).await;
    let client = cluster.client();
    client.write(&put_region("eu")).await.unwrap();
    for i in 0..9 {
        client
            .write(&create_topic(&format!("c-{i}")))
            .await
            .unwrap();
    }
    let (revision, topics) = client.list(ObjectKind::Topics).await.unwrap();
    assert_eq!((revision, topics.len()), (10, 9));
    let mut stale = client.watch(0, 2).await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), stale.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item, Some(WatchItem::Compacted { revision: 10 }));
    // Re-listing at revision 10 and watching from there resumes cleanly.
    let mut fresh = client.watch(0, revision).await.unwrap();
    client.write(&create_topic("c-next")).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), fresh.next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchItem::Change(change)) => assert_eq!(change.revision, 11),
        other => panic!("unexpected watch item {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_learner_joins_then_becomes_voter_and_strangers_get_a_clear_error() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let client = cluster.client();
    client.write(&put_region("eu")).await.unwrap();
    let learner = cluster.add_node(4).await;
    let addr = cluster.addrs[&4].to_string();

    tracing::info!("a fresh node is not part of the cluster and says so");
    let stranger = cluster.client_of(4, Duration::from_secs(2));
    match stranger.write(&create_topic("nope")).await {
        Err(ClientError::Exhausted { last, .. }) if matches!(*last, ClientError::Status { .. }) => {
            let ClientError::Status { status, .. } = *last else {
                unreachable!()
            };
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            assert!(
                status.message().contains("not part of the cluster"),
                "{}",
                status.message()
            );
        }
        other => panic!("expected a not-a-member refusal, got {other:?}"),
    }

    tracing::info!("add it as a learner (follows, does not vote), then promote it");
    let membership = client.add_learner(4, &addr).await.unwrap();
    assert!(membership.learners.contains(&4));
    let revision = client
        .write(&create_topic("seen-by-learner"))
        .await
        .unwrap()
        .revision;
    cluster
        .wait_revision(4, revision, Duration::from_secs(10))
        .await;
    assert!(
        learner
            .view()
            .read(|state| state.topic("seen-by-learner").is_some())
    );

    let voters: BTreeSet<u64> = [1, 2, 3, 4].into_iter().collect();
    let membership = client.change_membership(&voters, false).await.unwrap();
    assert_eq!(membership.voters, voters);

    tracing::info!("remove voter 1; the cluster keeps working");
    let voters: BTreeSet<u64> = [2, 3, 4].into_iter().collect();
    let membership = client.change_membership(&voters, false).await.unwrap();
    assert_eq!(membership.voters, voters);
    assert!(!membership.learners.contains(&1));
    cluster.kill(1).await;
    cluster.wait_leader(Some(1), Duration::from_secs(10)).await;
    client.write(&create_topic("after-removal")).await.unwrap();

    tracing::info!("promoting a node that was never added is refused clearly");
    let voters: BTreeSet<u64> = [2, 3, 4, 9].into_iter().collect();
    match client.change_membership(&voters, false).await {
        Err(ClientError::Status { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition);
            assert!(
                status
                    .message()
                    .contains("node 9 is not part of the cluster; add it as a learner"),
                "{}",
                status.message()
            );
        }
        other => panic!("expected a not-a-member refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_rule_violations_come_back_as_clear_errors() {
    let cluster = Cluster::start(3, |_| {}).await;
    let client = cluster.client();
    match client.write(&create_topic("no-region-yet")).await {
        Err(ClientError::Rejected(meridian_meta::MetaError::RegionNotFound { region })) => {
            assert_eq!(region, "eu")
        }
        other => panic!("expected RegionNotFound, got {other:?}"),
    }
    client.write(&put_region("eu")).await.unwrap();
    match client
        .write(&Command::DeleteTopic {
            name: "ghost".into(),
        })
        .await
    {
        Err(ClientError::Rejected(meridian_meta::MetaError::TopicNotFound { topic })) => {
            assert_eq!(topic, "ghost")
        }
        other => panic!("expected TopicNotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_heartbeats_are_batched_into_raft_writes() {
    let cluster = Cluster::start(3, |_| {}).await;
    let client = cluster.client();
    client.write(&put_region("eu")).await.unwrap();
    client
        .write(&Command::PutCell {
            id: "eu-1".into(),
            region: "eu".into(),
            endpoints: vec![],
        })
        .await
        .unwrap();
    let revision = client.list(ObjectKind::Cells).await.unwrap().0;
    let cells = vec!["eu-1".to_string(), "unknown".to_string()];
    assert_eq!(client.heartbeat(&cells).await.unwrap(), 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, objects) = client.list(ObjectKind::Cells).await.unwrap();
        let beat = objects.iter().any(|object| {
            matches!(object, meridian_meta::state::Object::Cell(cell) if cell.last_heartbeat_ms > 0)
        });
        if beat {
            break;
        }
        assert!(Instant::now() < deadline, "heartbeat never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        client.list(ObjectKind::Cells).await.unwrap().0,
        revision,
        "heartbeats take no revision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t80_plaintext_dev_transport_refuses_callers_without_tokens() {
    let cluster = Cluster::start_plaintext(3, |_| {}).await;
    let endpoints = cluster.endpoints();
    let anonymous =
        meridian_meta::MetaClient::new(endpoints.clone(), Default::default()).with_attempts_max(1);
    match anonymous.list(ObjectKind::Topics).await {
        Err(ClientError::Status { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated)
        }
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    let wrong = meridian_meta::ClientCredentials {
        tls: None,
        peer_token: None,
        admin_token: Some("guess".into()),
    };
    let guesser = meridian_meta::MetaClient::new(endpoints.clone(), wrong).with_attempts_max(1);
    match guesser.write(&put_region("eu")).await {
        Err(ClientError::Status { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::Unauthenticated)
        }
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    let peer = meridian_meta::ClientCredentials {
        tls: None,
        peer_token: Some(common::PEER_TOKEN.into()),
        admin_token: None,
    };
    let cell = meridian_meta::MetaClient::new(endpoints, peer).with_attempts_max(1);
    match cell.write(&put_region("eu")).await {
        Err(ClientError::Status { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::PermissionDenied)
        }
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
    // The peer credential is enough for node-facing calls.
    cell.list(ObjectKind::Topics).await.unwrap();

    // Raft traffic without the cluster token is refused too.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addrs[&1]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raft = meridian_meta::pb::raft_service_client::RaftServiceClient::new(channel);
    let status = raft
        .vote(meridian_meta::pb::RaftPayload {
            json: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

/// A transport-level refusal: the call never reached a handler (which would have answered
/// with its own code).
fn assert_refused_in_handshake(result: Result<(), ClientError>, what: &str) {
    let status = match result {
        Err(ClientError::Status { status, .. }) => status,
        Err(ClientError::Exhausted { last, .. }) => match *last {
            ClientError::Status { status, .. } => status,
            other => panic!("{what}: unexpected error {other:?}"),
        },
        other => panic!("{what}: expected a refusal, got {other:?}"),
    };
    assert_transport_refusal(&status, what);
}

/// A status made by the local transport (handshake refused, connection closed by the peer)
/// carries the transport error as its source; one decoded from a handler's reply has none.
fn assert_transport_refusal(status: &tonic::Status, what: &str) {
    let from_transport = std::error::Error::source(status)
        .is_some_and(|source| source.is::<tonic::transport::Error>());
    // The code varies with the moment the connection dies (handshake alert, close right after
    // a TLS 1.3 handshake, garbage on a plain-text h2 stream): Unavailable, Cancelled, Unknown
    // or Internal. What matters is that no handler answered.
    assert!(
        from_transport,
        "{what}: expected a transport refusal, got {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t81_mutual_tls_refuses_foreign_certificates_and_plain_text() {
    use std::sync::Arc;

    use meridian_meta::{ClientCredentials, MetaClient};
    use meridian_pki::DevCa;

    let cluster = Cluster::start(3, |_| {}).await;
    let client = cluster.client();
    client.write(&put_region("eu")).await.unwrap();
    let common::Security::MutualTls { ca, .. } = &cluster.security else {
        unreachable!("Cluster::start runs mutual TLS")
    };
    let foreign = DevCa::generate("someone else's CA").unwrap();
    let quick = |credentials: ClientCredentials, endpoints: Vec<String>| {
        MetaClient::new(endpoints, credentials)
            .with_request_timeout(Duration::from_secs(2))
            .with_attempts_max(3)
            .with_retry_pause(Duration::from_millis(10), Duration::from_millis(10))
    };

    tracing::info!("a caller with a foreign-CA certificate gets no answer, admin token or not");
    let mut intruder = foreign
        .issue("intruder", &["127.0.0.9".to_string()])
        .unwrap();
    // It trusts our CA, so only its own certificate is at fault.
    intruder.ca_pem = ca.cert_pem();
    let intruder = Arc::new(intruder);
    let intruder_client = quick(
        ClientCredentials {
            tls: Some(Arc::clone(&intruder)),
            peer_token: None,
            admin_token: Some(common::ADMIN_TOKEN.into()),
        },
        cluster.endpoints(),
    );
    assert_refused_in_handshake(
        intruder_client
            .write(&create_topic("intruder"))
            .await
            .map(|_| ()),
        "foreign-CA admin write",
    );
    assert_refused_in_handshake(
        intruder_client.list(ObjectKind::Topics).await.map(|_| ()),
        "foreign-CA read",
    );
    // Raft traffic from a foreign-CA "peer" is refused the same way.
    let channel = meridian_meta::auth::endpoint(
        &cluster.addrs[&1].to_string(),
        Some(&intruder),
        Duration::from_secs(2),
    )
    .unwrap()
    .connect_lazy();
    let mut raft = meridian_meta::pb::raft_service_client::RaftServiceClient::new(channel);
    let status = raft
        .vote(meridian_meta::pb::RaftPayload {
            json: b"{}".to_vec(),
        })
        .await
        .expect_err("a foreign-CA peer reached the Raft service");
    assert_transport_refusal(&status, "foreign-CA raft vote");

    tracing::info!("a plain-text caller is refused");
    let plain = quick(
        ClientCredentials {
            tls: None,
            peer_token: Some(common::PEER_TOKEN.into()),
            admin_token: Some(common::ADMIN_TOKEN.into()),
        },
        cluster.endpoints(),
    );
    assert_refused_in_handshake(
        plain.list(ObjectKind::Topics).await.map(|_| ()),
        "plain-text read",
    );

    tracing::info!("a CA-signed peer without the admin token may read, not administer");
    let cell = quick(
        ClientCredentials {
            tls: Some(Arc::new(
                ca.issue("cell-eu-1", &["cell.meridian".to_string()])
                    .unwrap(),
            )),
            peer_token: None,
            admin_token: None,
        },
        cluster.endpoints(),
    );
    let (_, names) = cluster.topic_names(&cell).await;
    assert!(!names.contains(&"intruder".to_string()), "{names:?}");
    match cell.write(&put_region("us")).await {
        Err(ClientError::Status { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::PermissionDenied)
        }
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }

    tracing::info!("a node whose certificate another CA signed is not trusted by our side");
    let impostor_identity = Arc::new(
        foreign
            .issue("meta-9", &[common::node_ip(9), "localhost".into()])
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind((common::node_ip(9), 0))
        .await
        .unwrap();
    let impostor_addr = listener.local_addr().unwrap().to_string();
    let impostor = meridian_meta::RunningNode::start(
        meridian_meta::NodeOptions {
            config: common::test_config(9),
            credentials: meridian_meta::Credentials {
                peer: meridian_meta::PeerAuth::MutualTls(Arc::clone(&impostor_identity)),
                admin_token: common::ADMIN_TOKEN.into(),
            },
            data_dir: cluster.dir.path().join("impostor"),
            faults: Arc::clone(&cluster.faults),
            clock: meridian_meta::system_clock(),
        },
        listener,
    )
    .await
    .unwrap();
    let ours = cluster.admin();
    let ours_to_impostor = quick(ours, vec![impostor_addr.clone()]);
    assert_refused_in_handshake(
        ours_to_impostor.status(0).await.map(|_| ()),
        "our client to a foreign-CA server",
    );
    // Control: the impostor itself is up and answers callers of its own CA.
    let theirs = quick(
        ClientCredentials {
            tls: Some(impostor_identity),
            peer_token: None,
            admin_token: None,
        },
        vec![impostor_addr],
    );
    assert_eq!(theirs.status(0).await.unwrap().node_id, 9);
    impostor.stop().await;
    // The cluster itself is unaffected.
    client.write(&create_topic("still-serving")).await.unwrap();
}
