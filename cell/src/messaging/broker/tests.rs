//! Broker tests on a real storage in a temporary directory: shared helpers, names and types,
//! limits, the send-receive-ack round trip, invisibility and receipt handles. The other
//! `tests_*` files cover consumption, features and restarts.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::Hlc;
use crate::messaging::clock::{ManualClock, SystemClock};
use crate::messaging::filter::Filter;
use crate::messaging::message::{OutgoingMessage, ReceivedMessage};
use crate::messaging::topic::{GroupConfig, TopicMessageType};
use crate::storage::{Durability, MessageType, StorageConfig};

pub(super) const START_MS: u64 = 1_800_000_000_000;
pub(super) const INVISIBLE_MS: u64 = 30_000;

pub(super) fn open_storage(dir: &Path) -> Arc<Storage> {
    open_storage_in(
        dir,
        Durability::Async,
        StorageConfig::new(dir, "us-east").async_flush_interval_ms,
    )
}

/// A test storage with the given durability and (for `async`) flush interval.
pub(super) fn open_storage_in(
    dir: &Path,
    durability: Durability,
    flush_interval_ms: u64,
) -> Arc<Storage> {
    let mut config = StorageConfig::new(dir, "us-east");
    config.durability = durability;
    config.async_flush_interval_ms = flush_interval_ms;
    config.index_block_cache_bytes = 8 << 20;
    config.index_write_buffer_bytes = 4 << 20;
    Arc::new(Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500)))).unwrap())
}

pub(super) fn test_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.limits.min_invisible_duration_ms = 10;
    config
}

pub(super) fn open_broker(dir: &Path, clock: Arc<dyn Clock>) -> Arc<Broker> {
    Broker::open(open_storage(dir), test_config(), clock).unwrap()
}

pub(super) fn message(topic: &str, id: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.to_string(),
        topic: topic.to_string(),
        body: format!("body of {id}").into_bytes(),
        born_timestamp_ms: START_MS,
        ..OutgoingMessage::default()
    }
}

pub(super) fn fifo_message(topic: &str, id: &str, group: &str) -> OutgoingMessage {
    OutgoingMessage {
        message_type: MessageType::Fifo,
        message_group: group.to_string(),
        ..message(topic, id)
    }
}

pub(super) fn request(
    group: &str,
    topic: &str,
    max_messages: usize,
    long_polling_ms: u64,
) -> ReceiveRequest {
    ReceiveRequest {
        group: group.to_string(),
        topic: topic.to_string(),
        queue_id: None,
        filter: Filter::all(),
        max_messages,
        invisible_duration_ms: INVISIBLE_MS,
        long_polling_ms,
    }
}

/// Receives until `count` messages arrived (bounded rounds, each a long poll).
pub(super) async fn receive_n(
    broker: &Broker,
    request: &ReceiveRequest,
    count: usize,
) -> Vec<ReceivedMessage> {
    let mut out = Vec::new();
    for _ in 0..50 {
        if out.len() >= count {
            break;
        }
        let mut wanted = request.clone();
        wanted.max_messages = (count - out.len()).min(request.max_messages);
        out.extend(broker.receive(&wanted).await.unwrap());
    }
    assert_eq!(out.len(), count, "expected {count} messages");
    out
}

/// Waits (bounded) until a queue's first `next` offsets are readable.
pub(super) async fn wait_queue_next(broker: &Broker, topic: &str, queue_id: u32, next: u64) {
    let mut visible = broker.storage().subscribe();
    for _ in 0..500 {
        if broker
            .storage()
            .queue_range(topic, queue_id)
            .is_some_and(|range| range.next >= next)
        {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(10), visible.changed()).await;
    }
    panic!("{topic}/{queue_id} never reached offset {next}");
}

pub(super) fn ids(messages: &[ReceivedMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|message| message.record.message_id.clone())
        .collect()
}

pub(super) fn setup(
    queues: u32,
    kind: TopicMessageType,
    clock: Arc<dyn Clock>,
) -> (tempfile::TempDir, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path(), clock);
    broker.create_topic("orders", queues, kind).unwrap();
    broker
        .create_group(GroupConfig::new("g", kind == TopicMessageType::Fifo))
        .unwrap();
    (dir, broker)
}

#[tokio::test]
async fn names_types_and_missing_resources_are_refused_clearly() {
    let (_dir, broker) = setup(4, TopicMessageType::Normal, Arc::new(SystemClock));
    let error = broker
        .create_topic("bad topic", 4, TopicMessageType::Normal)
        .unwrap_err();
    assert_eq!(error.rocketmq_code(), 40002);
    assert!(error.to_string().contains("has ' ' at byte 3"), "{error}");
    assert!(matches!(
        broker.create_topic("orders", 8, TopicMessageType::Normal),
        Err(MessagingError::TopicConflict {
            existing_queue_count: 4,
            ..
        })
    ));
    broker
        .create_topic("orders", 4, TopicMessageType::Normal)
        .unwrap();
    assert!(
        broker
            .create_topic("zero", 0, TopicMessageType::Normal)
            .is_err()
    );
    assert_eq!(
        broker
            .create_group(GroupConfig::new("bad/group", false))
            .unwrap_err()
            .rocketmq_code(),
        40003
    );

    let error = broker
        .send(vec![message("nowhere", "m1")])
        .await
        .unwrap_err();
    assert!(matches!(error, MessagingError::TopicNotFound { .. }));
    assert_eq!(error.rocketmq_code(), 40402);
    let error = broker
        .send(vec![fifo_message("orders", "m2", "A")])
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "topic orders accepts Normal messages; a Fifo message was sent"
    );
    assert_eq!(error.rocketmq_code(), 40014);
    let error = broker
        .receive(&request("nobody", "orders", 1, 0))
        .await
        .unwrap_err();
    assert_eq!(error.rocketmq_code(), 40403);
    let mut bad_queue = message("orders", "m3");
    bad_queue.queue_id = Some(9);
    assert!(matches!(
        broker.send(vec![bad_queue]).await,
        Err(MessagingError::QueueNotFound { queue_count: 4, .. })
    ));
    // A refused batch stores nothing, even its valid messages.
    let error = broker
        .send(vec![message("orders", "ok"), message("nowhere", "bad")])
        .await
        .unwrap_err();
    assert!(matches!(error, MessagingError::TopicNotFound { .. }));
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn limits_refuse_with_clear_errors() {
    let (_dir, broker) = setup(1, TopicMessageType::Normal, Arc::new(SystemClock));
    let mut big = message("orders", "big");
    big.body = vec![7; (4 << 20) + 1];
    let error = broker.send(vec![big]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "message body is 4194305 bytes; at most 4194304 bytes are allowed"
    );
    let batch: Vec<OutgoingMessage> = (0..1025)
        .map(|i| message("orders", &format!("b{i}")))
        .collect();
    assert_eq!(broker.send(batch).await.unwrap_err().rocketmq_code(), 41300);
    let mut props = message("orders", "props");
    props.properties.insert("k".into(), "v".repeat(16 << 10));
    assert_eq!(
        broker.send(vec![props]).await.unwrap_err().rocketmq_code(),
        43101
    );
    let mut invisible = request("g", "orders", 1, 0);
    invisible.invisible_duration_ms = 13 * 3600 * 1000;
    assert_eq!(
        broker
            .receive(&invisible)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40011
    );
    assert_eq!(
        broker
            .receive(&request("g", "orders", 33, 0))
            .await
            .unwrap_err()
            .rocketmq_code(),
        40000
    );
    assert_eq!(
        broker
            .receive(&request("g", "orders", 1, 61_000))
            .await
            .unwrap_err()
            .rocketmq_code(),
        40018
    );
}

#[tokio::test]
async fn send_receive_ack_round_trip() {
    let (_dir, broker) = setup(4, TopicMessageType::Normal, Arc::new(SystemClock));
    let sent: Vec<OutgoingMessage> = (0..10)
        .map(|i| message("orders", &format!("m{i}")))
        .collect();
    let receipts = broker.send(sent).await.unwrap();
    assert_eq!(receipts.len(), 10);
    let queues: std::collections::BTreeSet<u32> =
        receipts.iter().map(|receipt| receipt.queue_id).collect();
    assert_eq!(
        queues.len(),
        4,
        "round-robin spreads messages over every queue"
    );
    let received = receive_n(&broker, &request("g", "orders", 32, 2_000), 10).await;
    let mut got = ids(&received);
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(received.iter().all(|message| message.delivery_attempt == 1));
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty(),
        "all invisible"
    );
    for message in &received {
        broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .unwrap();
    }
    let error = broker
        .ack("g", "orders", &received[0].receipt_handle)
        .await
        .unwrap_err();
    assert_eq!(error.rocketmq_code(), 40013);
    assert!(broker.ack("g", "orders", "garbage").await.is_err());
    // Another group gets its own copy of every message.
    broker
        .create_group(GroupConfig::new("other", false))
        .unwrap();
    assert_eq!(
        receive_n(&broker, &request("other", "orders", 32, 2_000), 10)
            .await
            .len(),
        10
    );
}

#[tokio::test]
async fn expired_invisibility_redelivers_and_stale_handles_are_rejected() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Normal, clock.clone());
    broker.send(vec![message("orders", "m1")]).await.unwrap();
    let first = receive_n(&broker, &request("g", "orders", 1, 2_000), 1)
        .await
        .remove(0);
    assert_eq!(first.delivery_attempt, 1);
    assert_eq!(first.invisible_until_ms, START_MS + INVISIBLE_MS);
    clock.advance(INVISIBLE_MS - 1);
    assert!(
        broker
            .receive(&request("g", "orders", 1, 0))
            .await
            .unwrap()
            .is_empty()
    );
    clock.advance(1);
    let second = broker
        .receive(&request("g", "orders", 1, 0))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (second.record.message_id.as_str(), second.delivery_attempt),
        ("m1", 2)
    );
    let error = broker
        .ack("g", "orders", &first.receipt_handle)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            MessagingError::StaleReceiptHandle { current_attempt: 2 }
        ),
        "{error}"
    );
    broker
        .ack("g", "orders", &second.receipt_handle)
        .await
        .unwrap();
    clock.advance(10 * INVISIBLE_MS);
    assert!(
        broker
            .receive(&request("g", "orders", 1, 0))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn change_invisible_duration_replaces_the_handle() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Normal, clock.clone());
    broker.send(vec![message("orders", "m1")]).await.unwrap();
    let first = receive_n(&broker, &request("g", "orders", 1, 2_000), 1)
        .await
        .remove(0);
    let renewed = broker
        .change_invisible_duration("g", "orders", &first.receipt_handle, 2 * INVISIBLE_MS)
        .await
        .unwrap();
    assert_ne!(renewed, first.receipt_handle);
    clock.advance(INVISIBLE_MS + 1);
    assert!(
        broker
            .receive(&request("g", "orders", 1, 0))
            .await
            .unwrap()
            .is_empty(),
        "the longer duration holds"
    );
    assert!(matches!(
        broker.ack("g", "orders", &first.receipt_handle).await,
        Err(MessagingError::StaleReceiptHandle { .. })
    ));
    broker.ack("g", "orders", &renewed).await.unwrap();
    // Only the maximum applies to a change (a nack asks for its short retry backoff).
    let error = broker
        .change_invisible_duration("g", "orders", &renewed, 12 * 3_600_000 + 1)
        .await
        .unwrap_err();
    assert_eq!(error.rocketmq_code(), 40011);
}
