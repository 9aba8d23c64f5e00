//! Consumer state across regions over real QUIC: a broker in each of two cells (real storage
//! in temp dirs, real replicators on 127.0.0.x with mutual TLS). Consumption in "eu" reaches
//! "us" as the `%SYS%CSTATE` records the cell appends, shipped like every other record, and a
//! consumer of the same group in "us" resumes where "eu" left off, across a restart of "us".

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::broker::RunningBroker;
use common::{Cell, init_tracing};
use meridian_cell::Durability;
use meridian_cell::messaging::names::CONSUMER_STATE_TOPIC;
use meridian_cell::messaging::{
    Broker, BrokerConfig, Filter, GroupConfig, OutgoingMessage, ReceiveRequest, ReceivedMessage,
    TopicMessageType,
};
use meridian_pki::DevCa;

const QUEUES: u32 = 4;
const MESSAGES: usize = 100;
/// Upper bound on every wait; reaching it fails the test (a hang guard, not a speed check).
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How long eu's consumer keeps what it received invisible: short, so that us may hand out
/// the unacked half soon after (us honours eu's invisibility).
const EU_INVISIBLE_MS: u64 = 2_000;
/// us's consumer keeps its messages long enough that none comes back during the test.
const US_INVISIBLE_MS: u64 = 120_000;

fn start_broker(cell: &Cell) -> RunningBroker {
    let mut config = BrokerConfig::default();
    config.limits.min_invisible_duration_ms = 10;
    RunningBroker::start(cell, config, |broker| {
        if broker.topic("orders").is_err() {
            broker
                .create_topic("orders", QUEUES, TopicMessageType::Normal)
                .expect("create the topic");
            broker
                .create_group(GroupConfig::new("g", false))
                .expect("create the pop group");
            broker
                .create_group(GroupConfig::new("p", false))
                .expect("create the pull group");
        }
    })
}

fn applied(running: &RunningBroker) -> u64 {
    running
        .broker
        .consumer_state_counters()
        .applied
        .load(Ordering::Relaxed)
}

fn message(id: String, queue_id: u32) -> OutgoingMessage {
    OutgoingMessage {
        body: format!("body of {id}").into_bytes(),
        message_id: id,
        topic: "orders".into(),
        queue_id: Some(queue_id),
        born_timestamp_ms: 1_700_000_000_000,
        ..OutgoingMessage::default()
    }
}

async fn send(broker: &Broker, prefix: &str, count: usize) -> Vec<String> {
    let messages: Vec<OutgoingMessage> = (0..count)
        .map(|index| message(format!("{prefix}-{index}"), (index as u32) % QUEUES))
        .collect();
    for chunk in messages.chunks(10) {
        broker.send(chunk.to_vec()).await.expect("send");
    }
    messages
        .into_iter()
        .map(|message| message.message_id)
        .collect()
}

fn receive_request(invisible_duration_ms: u64) -> ReceiveRequest {
    ReceiveRequest {
        group: "g".into(),
        topic: "orders".into(),
        queue_id: None,
        filter: Filter::all(),
        max_messages: 32,
        invisible_duration_ms,
        long_polling_ms: 1_000,
    }
}

/// Receives until `count` messages arrived; fails past the hang guard.
async fn receive_n(broker: &Broker, invisible_ms: u64, count: usize) -> Vec<ReceivedMessage> {
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "received {} of {count} messages",
            out.len()
        );
        out.extend(
            broker
                .receive(&receive_request(invisible_ms))
                .await
                .expect("receive"),
        );
    }
    out
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < WAIT_LIMIT,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn index_of(id: &str) -> usize {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("numbered id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_in_another_region_resumes_with_acks_and_offsets_across_a_restart() {
    init_tracing();
    let ca = DevCa::generate("meridian test CA").expect("CA");
    let mut eu = Cell::new(&ca, "eu", "127.0.0.91", Durability::Sync);
    let mut us = Cell::new(&ca, "us", "127.0.0.92", Durability::Async);
    let eu_broker = start_broker(&eu);
    let mut us_broker = start_broker(&us);
    // us holds messages of its own first, so every replicated message has another offset there.
    // They are consumed there before eu's arrive.
    let local = send(&us_broker.broker, "us-local", 3 * QUEUES as usize).await;
    for message in receive_n(&us_broker.broker, US_INVISIBLE_MS, local.len()).await {
        us_broker
            .broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .expect("ack in us");
    }
    // us's own state records (a delivery and an ack each) stay home: the link is one-way.
    let us_own_state = 2 * local.len() as u64;
    wait_until("us appended its own state records", || {
        us_broker
            .broker
            .consumer_state_counters()
            .emitted
            .load(Ordering::Relaxed)
            == us_own_state
    })
    .await;
    // eu → us (consumers fail over from eu to us).
    us.bind().await;
    let config = eu.config(&[&us]);
    eu.start_with(config).await;

    let sent = send(&eu_broker.broker, "m", MESSAGES).await;
    let received = receive_n(&eu_broker.broker, EU_INVISIBLE_MS, MESSAGES).await;
    assert_eq!(
        received
            .iter()
            .map(|message| message.record.message_id.clone())
            .collect::<BTreeSet<_>>(),
        sent.iter().cloned().collect::<BTreeSet<_>>()
    );
    let (to_ack, open): (Vec<&ReceivedMessage>, Vec<&ReceivedMessage>) = received
        .iter()
        .partition(|message| index_of(&message.record.message_id).is_multiple_of(2));
    let (first_acks, later_acks) = to_ack.split_at(to_ack.len() / 2);
    for message in first_acks {
        eu_broker
            .broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .expect("ack");
    }
    // A pull consumer of group p consumes the first half of each queue and commits.
    let mut last_consumed = HashMap::new();
    for queue_id in 0..QUEUES {
        let pulled = eu_broker
            .broker
            .pull("p", "orders", queue_id, 0, 32, &Filter::all(), 1_000)
            .await
            .expect("pull");
        assert_eq!(pulled.records.len(), MESSAGES / QUEUES as usize);
        let half = pulled.records.len() / 2;
        let last = &pulled.records[half - 1];
        eu_broker
            .broker
            .commit_offset("p", "orders", queue_id, last.queue_offset + 1, None)
            .expect("commit");
        last_consumed.insert(queue_id, last.message_id.clone());
    }
    // us applies 100 deliveries, the first acks and 4 commits, then restarts in the middle.
    let first_wave = (MESSAGES + first_acks.len()) as u64 + u64::from(QUEUES);
    wait_until("us applied eu's first consumer state", || {
        applied(&us_broker) >= first_wave
    })
    .await;
    us_broker.stop().await;
    us.abort_replicator();
    us.close_storage().await;
    for message in later_acks {
        eu_broker
            .broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .expect("ack");
    }
    us.open_storage();
    us.bind().await;
    us_broker = start_broker(&us);
    let emitted = first_wave + later_acks.len() as u64;
    wait_until("every event of eu became a state record", || {
        eu_broker
            .broker
            .consumer_state_counters()
            .emitted
            .load(Ordering::Relaxed)
            == emitted
    })
    .await;
    wait_until("us holds all of eu's state records", || {
        us.storage()
            .queue_range(CONSUMER_STATE_TOPIC, 0)
            .is_some_and(|range| range.next >= us_own_state + emitted)
    })
    .await;
    wait_until("us applied the acks made while it was down", || {
        applied(&us_broker) >= later_acks.len() as u64
    })
    .await;
    assert_eq!(
        applied(&us_broker),
        later_acks.len() as u64,
        "after the restart only the new records are applied"
    );

    // The consumer in us receives exactly the half eu did not ack (once eu's invisibility of
    // them ran out), with eu's attempt count continued.
    let resumed = receive_n(&us_broker.broker, US_INVISIBLE_MS, open.len()).await;
    let resumed_ids: BTreeSet<String> = resumed
        .iter()
        .map(|message| message.record.message_id.clone())
        .collect();
    let expected: BTreeSet<String> = open
        .iter()
        .map(|message| message.record.message_id.clone())
        .collect();
    assert_eq!(resumed.len(), open.len(), "no message twice");
    assert_eq!(resumed_ids, expected);
    assert!(resumed.iter().all(|message| message.delivery_attempt == 2));
    assert!(
        us_broker
            .broker
            .receive(&receive_request(US_INVISIBLE_MS))
            .await
            .expect("receive")
            .is_empty(),
        "nothing of eu's acked half is delivered in us"
    );

    // Committed offsets point right after the same messages, in us's own offsets.
    for (queue_id, message_id) in &last_consumed {
        let (_, local) = us
            .storage()
            .read_by_id(message_id)
            .expect("read by id")
            .expect("replicated");
        assert!(local.queue_offset > 0);
        assert_eq!(
            us_broker
                .broker
                .committed_offset("p", "orders", *queue_id, None)
                .expect("committed offset"),
            Some(local.queue_offset + 1),
            "queue {queue_id}"
        );
    }
    us_broker.stop().await;
    eu_broker.stop().await;
    eu.shutdown_replicator().await;
    us.shutdown_replicator().await;
}
