//! `sync-quorum` topics over real QUIC: a send is acknowledged only once another region of
//! three holds it, so losing the origin region right after the acknowledgement loses nothing;
//! without a reachable majority the send is refused with a clear error.

mod common;

use std::sync::Arc;

use common::{Cell, init_tracing, start_mesh};
use meridian_cell::Durability;
use meridian_cell::messaging::{
    Broker, BrokerConfig, MessagingError, OutgoingMessage, SystemClock, TopicMessageType,
};
use meridian_pki::DevCa;

fn broker_on(cell: &Cell, timeout_ms: u64) -> Arc<Broker> {
    let config = BrokerConfig {
        sync_quorum_timeout_ms: timeout_ms,
        ..BrokerConfig::default()
    };
    let broker = Broker::open(Arc::clone(cell.storage()), config, Arc::new(SystemClock))
        .expect("open the broker");
    broker
        .create_topic("payments", 2, TopicMessageType::Normal)
        .expect("create the topic");
    broker.set_sync_quorum_topics(["payments".to_string()]);
    broker.set_replication_quorum(Arc::new(cell.replicator().quorum()));
    broker
}

fn payment(id: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.to_string(),
        topic: "payments".to_string(),
        body: format!("payment {id}").into_bytes(),
        ..OutgoingMessage::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_sync_quorum_write_survives_the_loss_of_its_origin() {
    init_tracing();
    let ca = DevCa::generate("meridian test CA").expect("CA");
    let mut cells = vec![
        Cell::new(&ca, "eu", "127.0.0.31", Durability::Sync),
        Cell::new(&ca, "us", "127.0.0.32", Durability::Sync),
        Cell::new(&ca, "ap", "127.0.0.33", Durability::Sync),
    ];
    start_mesh(&mut cells).await;
    let broker = broker_on(&cells[0], 30_000);
    for index in 0..20 {
        let id = format!("pay-{index}");
        broker.send(vec![payment(&id)]).await.expect("acknowledged");
        // At the moment of the acknowledgement, not eventually: another region holds it.
        let elsewhere = cells[1..]
            .iter()
            .filter(|cell| cell.storage().read_by_id(&id).expect("read").is_some())
            .count();
        assert!(
            elsewhere >= 1,
            "{id} acknowledged but held by no other region"
        );
    }
    // The origin region dies right after the last acknowledgement: its replicator is aborted
    // mid-flight and its broker and storage are gone.
    drop(broker);
    cells[0].abort_replicator();
    let origin = cells.remove(0);
    drop(origin);
    for index in 0..20 {
        let id = format!("pay-{index}");
        assert!(
            cells
                .iter()
                .any(|cell| cell.storage().read_by_id(&id).expect("read").is_some()),
            "{id} was acknowledged and is lost with its origin region"
        );
    }
    for cell in &mut cells {
        cell.shutdown_replicator().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_majority_a_sync_quorum_write_is_refused() {
    init_tracing();
    let ca = DevCa::generate("meridian test CA").expect("CA");
    let mut cells = vec![
        Cell::new(&ca, "eu", "127.0.0.34", Durability::Sync),
        Cell::new(&ca, "us", "127.0.0.35", Durability::Sync),
        Cell::new(&ca, "ap", "127.0.0.36", Durability::Sync),
    ];
    start_mesh(&mut cells).await;
    let broker = broker_on(&cells[0], 500);
    broker
        .send(vec![payment("before")])
        .await
        .expect("acknowledged while the peers run");
    // Both other regions go away: no majority is reachable.
    for cell in &mut cells[1..] {
        cell.shutdown_replicator().await;
    }
    let error = broker
        .send(vec![payment("during")])
        .await
        .expect_err("no majority, no acknowledgement");
    assert!(
        matches!(error, MessagingError::QuorumNotReached { .. }),
        "{error}"
    );
    assert_eq!(error.rocketmq_code(), 50402);
    let text = error.to_string();
    assert!(
        text.contains("\"payments\"") && text.contains("0 of 1 other regions confirmed"),
        "{text}"
    );
    cells[0].shutdown_replicator().await;
}
