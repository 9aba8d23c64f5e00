//! A pending delay message fires once, in the surviving region that adopts its dead origin,
//! over real QUIC between three cells (real storage, brokers and replicators on 127.0.0.x);
//! the released copy reaches the third region although its parked copy there shares the id.

mod common;

use std::time::Duration;

use common::broker::RunningBroker;
use common::{Cell, init_tracing, start_mesh, wait_until};
use meridian_cell::Durability;
use meridian_cell::messaging::names::TIMER_TOPIC;
use meridian_cell::messaging::{
    BrokerConfig, Filter, GroupConfig, OutgoingMessage, ReceiveRequest, TopicMessageType,
};
use meridian_cell::storage::MessageType;
use meridian_pki::DevCa;

/// Bound on every wait; reaching it fails the test (a hang guard, not a speed check).
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How far ahead the delay message is due: long enough to stop its origin first.
const DELAY_MS: u64 = 4_000;

fn start_broker(cell: &Cell) -> RunningBroker {
    RunningBroker::start(cell, BrokerConfig::default(), |broker| {
        broker
            .create_topic("later", 1, TopicMessageType::Delay)
            .expect("create the topic");
        broker
            .create_group(GroupConfig::new("g", false))
            .expect("create the group");
    })
}

fn copies_in(cell: &Cell, topic: &str, id: &str) -> usize {
    let next = cell
        .storage()
        .queue_range(topic, 0)
        .map_or(0, |range| range.next);
    cell.storage()
        .read_queue(topic, 0, 0, next as usize + 1, usize::MAX)
        .expect("read")
        .iter()
        .filter(|record| record.message_id == id)
        .count()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delay_message_fires_once_in_the_adopting_region() {
    init_tracing();
    let ca = DevCa::generate("meridian test CA").expect("CA");
    let mut cells = vec![
        Cell::new(&ca, "us", "127.0.0.101", Durability::Sync),
        Cell::new(&ca, "eu", "127.0.0.102", Durability::Sync),
        Cell::new(&ca, "ap", "127.0.0.103", Durability::Sync),
    ];
    let brokers: Vec<RunningBroker> = cells.iter().map(start_broker).collect();
    start_mesh(&mut cells).await;

    let due_ms = now_ms() + DELAY_MS;
    brokers[0]
        .broker
        .send(vec![OutgoingMessage {
            message_id: "d1".into(),
            topic: "later".into(),
            message_type: MessageType::Delay,
            delivery_timestamp_ms: due_ms,
            body: b"fire once".to_vec(),
            born_timestamp_ms: 1_700_000_000_000,
            ..OutgoingMessage::default()
        }])
        .await
        .expect("send the delay message");
    // The parked copy reaches both other regions; neither arms it.
    for cell in &cells[1..] {
        tokio::time::timeout(
            WAIT_LIMIT,
            wait_until(|| copies_in(cell, TIMER_TOPIC, "d1") == 1),
        )
        .await
        .expect("the parked copy replicates");
    }
    assert_eq!(brokers[1].broker.pending_timers(), 0);
    assert_eq!(brokers[2].broker.pending_timers(), 0);

    // us dies before the message is due: its broker and its links stop.
    let mut brokers = brokers.into_iter();
    let us_broker = brokers.next().expect("us");
    let eu_broker = brokers.next().expect("eu");
    let ap_broker = brokers.next().expect("ap");
    cells[0].abort_replicator();
    us_broker.stop().await;
    assert!(now_ms() < due_ms, "us stopped before the message was due");

    // eu adopts us (the failover decision of the router); ap does not.
    let outcome = eu_broker.broker.adopt_region("us").expect("adopt");
    assert_eq!(outcome.timers_armed, 1);

    // It fires once, in eu, and the released copy reaches ap: exactly one copy each.
    let request = ReceiveRequest {
        group: "g".into(),
        topic: "later".into(),
        queue_id: None,
        filter: Filter::all(),
        max_messages: 32,
        invisible_duration_ms: 60_000,
        long_polling_ms: 1_000,
    };
    for (cell, broker) in [(&cells[1], &eu_broker), (&cells[2], &ap_broker)] {
        tokio::time::timeout(
            WAIT_LIMIT,
            wait_until(|| copies_in(cell, "later", "d1") == 1),
        )
        .await
        .unwrap_or_else(|_| panic!("{} never got the released copy", cell.region));
        let received = broker.broker.receive(&request).await.expect("receive");
        assert_eq!(
            received
                .iter()
                .map(|message| message.record.message_id.as_str())
                .collect::<Vec<_>>(),
            vec!["d1"],
            "{}",
            cell.region
        );
        assert!(now_ms() >= due_ms, "not before it was due");
    }
    // Nothing fires a second time: no timer is left anywhere, one copy each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(eu_broker.broker.pending_timers(), 0);
    assert_eq!(ap_broker.broker.pending_timers(), 0);
    assert_eq!(copies_in(&cells[1], "later", "d1"), 1);
    assert_eq!(copies_in(&cells[2], "later", "d1"), 1);
    eu_broker.stop().await;
    ap_broker.stop().await;
    for cell in &mut cells[1..] {
        cell.shutdown_replicator().await;
    }
}
