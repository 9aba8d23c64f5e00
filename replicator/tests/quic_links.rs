//! Replication between real cells (storage in temp dirs) over real QUIC on 127.0.0.x with
//! mutual TLS.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Cell, assert_replica_exact, init_tracing, start_mesh, wait_for_records, wait_until};
use meridian_cell::Durability;
use meridian_cell::storage::{NewRecord, Origin, ReplicatedFrom};
use meridian_pki::DevCa;

fn ca() -> DevCa {
    DevCa::generate("meridian test CA").expect("CA")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cells_replicate_both_ways_once_with_origin_and_hlc_kept() {
    init_tracing();
    let ca = ca();
    let mut cells = vec![
        Cell::new(&ca, "eu", "127.0.0.2", Durability::Sync),
        Cell::new(&ca, "us", "127.0.0.3", Durability::Async),
    ];
    cells[0].produce("before", 150).await;
    start_mesh(&mut cells).await;
    cells[1].produce("after", 120).await;
    cells[0].produce("after", 80).await;
    wait_for_records(&cells[1], "eu", 230).await;
    wait_for_records(&cells[0], "us", 120).await;
    assert_replica_exact(&cells[0], &cells[1]);
    assert_replica_exact(&cells[1], &cells[0]);
    // No loops: each cell holds its own records and the other's, nothing more.
    assert_eq!(cells[0].records().len(), 230 + 120);
    assert_eq!(cells[1].records().len(), 120 + 230);
    // The links compared range digests of origin and replica over QUIC, and they matched.
    for cell in &cells {
        wait_until(|| {
            cell.replicator()
                .stats()
                .digests_matched
                .load(Ordering::Relaxed)
                > 0
        })
        .await;
        assert_eq!(
            cell.replicator()
                .stats()
                .digest_mismatches
                .load(Ordering::Relaxed),
            0
        );
    }
    for cell in &mut cells {
        cell.shutdown_replicator().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_cells_in_a_full_mesh_hold_every_record_once() {
    init_tracing();
    let ca = ca();
    let mut cells = vec![
        Cell::new(&ca, "eu", "127.0.0.4", Durability::Sync),
        Cell::new(&ca, "us", "127.0.0.5", Durability::Sync),
        Cell::new(&ca, "ap", "127.0.0.6", Durability::Async),
    ];
    start_mesh(&mut cells).await;
    for round in 0..3 {
        for cell in &cells {
            cell.produce(&format!("r{round}"), 60).await;
        }
    }
    for replica in &cells {
        for origin in &cells {
            wait_for_records(replica, &origin.region, 180).await;
        }
    }
    for replica in &cells {
        assert_eq!(replica.records().len(), 3 * 180);
        for origin in &cells {
            if origin.region != replica.region {
                assert_replica_exact(origin, replica);
            }
        }
    }
    for cell in &mut cells {
        cell.shutdown_replicator().await;
    }
}

/// Starts `origin` → `replica` (one direction) and returns once both run.
async fn start_one_way(origin: &mut Cell, replica: &mut Cell) {
    replica.bind().await;
    let config = origin.config(&[&*replica]);
    origin.start_with(config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_killed_mid_stream_and_restarted_resumes_without_gap_or_duplicate() {
    init_tracing();
    let ca = ca();
    let mut origin = Cell::new(&ca, "eu", "127.0.0.7", Durability::Sync);
    let mut replica = Cell::new(&ca, "us", "127.0.0.8", Durability::Sync);
    start_one_way(&mut origin, &mut replica).await;
    origin.produce("first", 1_500).await;
    wait_for_records(&replica, "eu", 300).await;
    // Kill the receiving side as a crash would: the replicator stops wherever it is and the
    // cell restarts from its files (so only the persisted checkpoint survives).
    replica.abort_replicator();
    replica.close_storage().await;
    origin.produce("while-down", 200).await;
    replica.open_storage();
    replica.bind().await;
    origin.produce("after", 100).await;
    wait_for_records(&replica, "eu", 1_800).await;
    assert_replica_exact(&origin, &replica);
    let stats = origin.replicator().stats();
    assert!(stats.outbound_sessions.load(Ordering::Relaxed) >= 2);
    origin.shutdown_replicator().await;
    replica.shutdown_replicator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_mid_stream_and_restarted_resumes_without_gap_or_duplicate() {
    init_tracing();
    let ca = ca();
    let mut origin = Cell::new(&ca, "eu", "127.0.0.9", Durability::Async);
    let mut replica = Cell::new(&ca, "us", "127.0.0.10", Durability::Sync);
    start_one_way(&mut origin, &mut replica).await;
    origin.produce("first", 1_500).await;
    wait_for_records(&replica, "eu", 300).await;
    origin.abort_replicator();
    origin.close_storage().await;
    origin.open_storage();
    origin.produce("after-restart", 300).await;
    let config = origin.config(&[&replica]);
    origin.start_with(config).await;
    wait_for_records(&replica, "eu", 1_800).await;
    assert_replica_exact(&origin, &replica);
    assert!(
        replica
            .replicator()
            .stats()
            .inbound_sessions
            .load(Ordering::Relaxed)
            >= 2
    );
    origin.shutdown_replicator().await;
    replica.shutdown_replicator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_of_the_receiver_resends_nothing() {
    init_tracing();
    let ca = ca();
    let mut origin = Cell::new(&ca, "eu", "127.0.0.11", Durability::Sync);
    let mut replica = Cell::new(&ca, "us", "127.0.0.12", Durability::Sync);
    start_one_way(&mut origin, &mut replica).await;
    origin.produce("first", 400).await;
    wait_for_records(&replica, "eu", 400).await;
    replica.shutdown_replicator().await;
    replica.close_storage().await;
    replica.open_storage();
    replica.bind().await;
    origin.produce("second", 100).await;
    wait_for_records(&replica, "eu", 500).await;
    assert_replica_exact(&origin, &replica);
    // The checkpoint was written before the graceful stop, so the new session resumed exactly
    // where the old one ended and nothing had to be deduplicated.
    assert_eq!(
        replica
            .replicator()
            .stats()
            .duplicates_dropped
            .load(Ordering::Relaxed),
        0
    );
    origin.shutdown_replicator().await;
    replica.shutdown_replicator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_from_a_foreign_ca_is_refused() {
    init_tracing();
    let ca = ca();
    let foreign = DevCa::generate("another CA").expect("CA");
    let mut replica = Cell::new(&ca, "us", "127.0.0.13", Durability::Sync);
    // The intruder trusts the real CA (so it would accept the replica's certificate) but
    // presents a certificate the real CA never signed.
    let mut intruder = Cell::new(&foreign, "eu", "127.0.0.14", Durability::Sync);
    intruder.identity.ca_pem = ca.cert_pem();
    intruder.produce("intrusion", 20).await;
    start_one_way(&mut intruder, &mut replica).await;
    // And a region with a proper certificate dialling a server whose certificate is foreign.
    let mut impostor_server = Cell::new(&foreign, "ap", "127.0.0.15", Durability::Sync);
    impostor_server.identity.ca_pem = ca.cert_pem();
    let mut honest = Cell::new(&ca, "sa", "127.0.0.16", Durability::Sync);
    honest.produce("honest", 20).await;
    start_one_way(&mut honest, &mut impostor_server).await;

    let started = tokio::time::Instant::now();
    while intruder
        .replicator()
        .stats()
        .outbound_failures
        .load(Ordering::Relaxed)
        < 3
        || honest
            .replicator()
            .stats()
            .outbound_failures
            .load(Ordering::Relaxed)
            < 3
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the links never failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        replica
            .replicator()
            .stats()
            .inbound_sessions
            .load(Ordering::Relaxed),
        0
    );
    assert!(replica.records().is_empty());
    assert_eq!(
        impostor_server
            .replicator()
            .stats()
            .inbound_sessions
            .load(Ordering::Relaxed),
        0
    );
    assert!(impostor_server.records().is_empty());
    for cell in [
        &mut intruder,
        &mut replica,
        &mut honest,
        &mut impostor_server,
    ] {
        cell.shutdown_replicator().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_slipped_into_a_replica_is_reported_by_digest_verification() {
    init_tracing();
    let ca = ca();
    let mut origin = Cell::new(&ca, "eu", "127.0.0.17", Durability::Sync);
    let mut replica = Cell::new(&ca, "us", "127.0.0.18", Durability::Sync);
    start_one_way(&mut origin, &mut replica).await;
    origin.produce("first", 100).await;
    wait_for_records(&replica, "eu", 100).await;
    let stats = || origin.replicator().stats();
    wait_until(|| stats().digests_matched.load(Ordering::Relaxed) > 0).await;
    // Damage the replica: a record claiming to come from eu, at an origin position inside the
    // range the next batches will cover.
    let (_, origin_end) = origin.storage().log_range();
    let template = replica
        .records_from("eu")
        .pop()
        .expect("a replicated record");
    replica
        .storage()
        .append(vec![NewRecord {
            message_id: "forged".into(),
            topic: template.topic.clone(),
            body: b"not from eu".to_vec(),
            replicated: Some(ReplicatedFrom {
                origin: Origin {
                    region: "eu".into(),
                    offset: origin_end + 1,
                },
                hlc: template.hlc,
            }),
            ..NewRecord::default()
        }])
        .await
        .expect("append the forged record");
    origin.produce("second", 50).await;
    wait_for_records(&replica, "eu", 151).await;
    wait_until(|| stats().digest_mismatches.load(Ordering::Relaxed) > 0).await;
    origin.shutdown_replicator().await;
    replica.shutdown_replicator().await;
}
