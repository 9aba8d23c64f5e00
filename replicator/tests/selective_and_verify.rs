//! Identity checks, selective replication, the verification loop and per-link metrics, between
//! real cells over real QUIC on 127.0.0.x.

mod common;

use std::sync::atomic::Ordering;

use common::{Cell, init_tracing, wait_until};
use meridian_cell::Durability;
use meridian_cell::messaging::FilterKind;
use meridian_cell::storage::NewRecord;
use meridian_pki::DevCa;
use meridian_replicator::link::filter::{DestinationFilter, TopicFilter};
use meridian_replicator::quic::LinkMetricsSnapshot;

fn ca() -> DevCa {
    DevCa::generate("meridian test CA").expect("CA")
}

/// Appends one record per (topic, tags) pair; ids are `<region>-<tag>-<index>`.
async fn produce_mixed(cell: &Cell, tag: &str, records: &[(&str, &str)]) {
    let records = records
        .iter()
        .enumerate()
        .map(|(index, (topic, tags))| NewRecord {
            message_id: format!("{}-{tag}-{index}", cell.region),
            topic: (*topic).into(),
            tags: (*tags).into(),
            body: format!("{tag} {index}").into_bytes(),
            ..NewRecord::default()
        })
        .collect::<Vec<_>>();
    for chunk in records.chunks(50) {
        cell.storage().append(chunk.to_vec()).await.expect("append");
    }
}

fn link(cell: &Cell) -> LinkMetricsSnapshot {
    cell.replicator()
        .link_metrics()
        .pop()
        .expect("one outbound link")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_names_another_region_is_refused() {
    init_tracing();
    let ca = ca();
    let mut replica = Cell::new(&ca, "us", "127.0.0.40", Durability::Sync);
    // A node of the fabric (its certificate is from the right CA) that claims to be region eu
    // while its certificate is issued for "mallory".
    let mut impostor = Cell::new(&ca, "eu", "127.0.0.41", Durability::Sync);
    impostor.identity = ca
        .issue(
            "mallory",
            &["mallory".to_string(), "127.0.0.41".to_string()],
        )
        .expect("issue");
    impostor.produce("claimed", 20).await;
    replica.bind().await;
    let config = impostor.config(&[&replica]);
    impostor.start_with(config).await;
    wait_until(|| {
        impostor
            .replicator()
            .stats()
            .outbound_failures
            .load(Ordering::Relaxed)
            >= 2
    })
    .await;
    let stats = replica.replicator().stats();
    assert!(stats.identity_refusals.load(Ordering::Relaxed) >= 2);
    assert_eq!(stats.inbound_sessions.load(Ordering::Relaxed), 0);
    assert!(replica.records().is_empty(), "nothing was applied");
    let error = impostor
        .replicator()
        .stats()
        .last_outbound_error
        .lock()
        .clone()
        .expect("an error");
    assert!(
        error.contains("IdentityMismatch") && error.contains("not issued for region \"eu\""),
        "{error}"
    );
    impostor.shutdown_replicator().await;
    replica.shutdown_replicator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_keeps_non_matching_records_home_across_a_receiver_restart() {
    init_tracing();
    let ca = ca();
    let mut origin = Cell::new(&ca, "eu", "127.0.0.42", Durability::Sync);
    let mut replica = Cell::new(&ca, "us", "127.0.0.43", Durability::Async);
    replica.bind().await;
    let mut config = origin.config(&[&replica]);
    config.destination_filters.insert(
        "us".into(),
        DestinationFilter::new([
            TopicFilter::parse("orders", FilterKind::Tag, "keep || shared").expect("tag filter"),
            TopicFilter::parse("%SYS%ACK", FilterKind::Tag, "never").expect("tag filter"),
        ]),
    );
    origin.start_with(config).await;

    // Runs of kept and filtered records, system records (always shipped, whatever their
    // filter says) and an unfiltered topic.
    let pattern: Vec<(&str, &str)> = (0..300)
        .map(|index| match index % 6 {
            0 | 1 => ("orders", "keep"),
            2 | 3 => ("orders", "home"),
            4 => ("%SYS%ACK", "home"),
            _ => ("audit", "home"),
        })
        .collect();
    let shipped_of = |records: &[(&str, &str)]| {
        records
            .iter()
            .filter(|(t, g)| *t != "orders" || *g == "keep")
            .count()
    };
    produce_mixed(&origin, "first", &pattern).await;
    let first = shipped_of(&pattern);
    common::wait_for_records(&replica, "eu", first).await;

    // The receiver crashes and restarts on its data dir; records keep coming meanwhile.
    replica.abort_replicator();
    replica.close_storage().await;
    produce_mixed(&origin, "down", &pattern[..120]).await;
    replica.open_storage();
    replica.bind().await;
    produce_mixed(&origin, "after", &pattern[..60]).await;
    let total = first + shipped_of(&pattern[..120]) + shipped_of(&pattern[..60]);
    common::wait_for_records(&replica, "eu", total).await;

    // Exactly the shipped records arrived, once each, in origin order: the last ones arrived
    // after every filtered one was read, so a filtered record can no longer turn up.
    let expected: Vec<String> = origin
        .records()
        .into_iter()
        .map(|(_, record)| record)
        .filter(|record| record.topic != "orders" || record.tags == "keep")
        .map(|record| record.message_id)
        .collect();
    let copies: Vec<String> = replica
        .records_from("eu")
        .into_iter()
        .map(|record| record.message_id)
        .collect();
    assert_eq!(copies, expected);
    assert!(
        replica
            .records_from("eu")
            .iter()
            .all(|record| record.topic != "orders" || record.tags == "keep")
    );

    // Verification compares only what the filter ships: it reaches the origin's log end with
    // no mismatch, and the link's figures say the link is caught up.
    let (_, origin_end) = origin.storage().log_range();
    wait_until(|| {
        let link = link(&origin);
        link.verified_up_to == origin_end && link.lag_bytes == 0
    })
    .await;
    let link = link(&origin);
    assert_eq!(link.link, "eu->us");
    assert_eq!(link.verify_mismatches_total, 0);
    assert_eq!(link.lag_messages, 0);
    assert!(link.shipped_messages_total >= total as u64);
    assert!(
        link.reconnects_total >= 1,
        "the restart made the link reconnect"
    );
    assert!(link.shipped_bytes_total > 0);
    origin.shutdown_replicator().await;
    replica.shutdown_replicator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_lost_in_the_replica_is_reported_with_its_own_range() {
    init_tracing();
    let ca = ca();
    let mut origin = Cell::new(&ca, "eu", "127.0.0.44", Durability::Sync);
    let mut replica = Cell::new(&ca, "us", "127.0.0.45", Durability::Sync);
    replica.bind().await;
    let mut config = origin.config(&[&replica]);
    config.verify_interval_ms = Some(50);
    config.verify.max_range_bytes = 4 << 10;
    origin.start_with(config).await;
    origin.produce("first", 200).await;
    common::wait_for_records(&replica, "eu", 200).await;
    let (_, first_end) = origin.storage().log_range();
    wait_until(|| link(&origin).verified_up_to == first_end).await;

    // Damage: the replica already holds a record with the topic and id of one the origin is
    // about to send (a collision), so deduplication drops the real one: it is lost in the
    // replica (the impostor is the replica's own, not a record from the origin).
    replica
        .storage()
        .append(vec![NewRecord {
            message_id: "eu-second-70".into(),
            topic: "orders".into(),
            ..NewRecord::default()
        }])
        .await
        .expect("append the colliding record");
    origin.produce("second", 150).await;
    common::wait_for_records(&replica, "eu", 349).await;
    wait_until(|| link(&origin).verify_mismatches_total > 0).await;

    let (lost_position, _) = origin
        .records()
        .into_iter()
        .find(|(_, record)| record.message_id == "eu-second-70")
        .expect("the origin holds the record");
    let link = link(&origin);
    let mismatch = link.last_mismatch.expect("a reported range");
    assert!(
        (mismatch.start..mismatch.end).contains(&lost_position),
        "{mismatch:?} does not hold {lost_position}"
    );
    assert_eq!((mismatch.origin_count, mismatch.replica_count), (1, 0));
    // "Verified up to" stopped at the damaged range, after what was checked before it.
    assert!(link.verified_up_to >= first_end);
    assert!(link.verified_up_to <= lost_position);
    // The replica answered from a narrowed scan: far fewer records than one full scan per
    // request would read.
    let scanned = replica
        .replicator()
        .stats()
        .digest_scanned_records
        .load(Ordering::Relaxed);
    let requests = origin
        .replicator()
        .stats()
        .digests_matched
        .load(Ordering::Relaxed)
        + link.verify_mismatches_total;
    assert!(requests > 5);
    assert!(
        scanned < requests * 349 / 2,
        "{scanned} records scanned for {requests} requests"
    );
    origin.shutdown_replicator().await;
    replica.shutdown_replicator().await;
}
