//! The write gate (a refused send stores nothing and names the home region and epoch; an
//! accepted one is stamped with the epoch it was accepted under) and topic queue growth.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use parking_lot::Mutex;

use super::tests::{START_MS, fifo_message, message, receive_n, request, setup};
use super::*;
use crate::messaging::clock::ManualClock;
use crate::messaging::gate::{RefusalReason, WriteDecision, WriteGate, WriteRefusal};
use crate::messaging::message::PROP_WRITE_EPOCH;
use crate::messaging::topic::TopicMessageType;

/// Refuses the message groups listed, accepts the rest at `epoch`; records what it was asked.
#[derive(Debug, Default)]
struct ListGate {
    refused_groups: Vec<&'static str>,
    epoch: u64,
    asked: Mutex<Vec<(String, String)>>,
}

impl WriteGate for ListGate {
    fn check(&self, topic: &str, message_group: &str) -> WriteDecision {
        self.asked
            .lock()
            .push((topic.to_string(), message_group.to_string()));
        if self.refused_groups.contains(&message_group) {
            WriteDecision::Refuse(WriteRefusal {
                topic: topic.to_string(),
                home_region: "eu-west".to_string(),
                epoch: self.epoch,
                reason: RefusalReason::NotHome,
            })
        } else {
            WriteDecision::Accept { epoch: self.epoch }
        }
    }
}

#[tokio::test]
async fn a_refused_batch_stores_nothing_and_names_the_home() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(4, TopicMessageType::Fifo, clock as Arc<dyn Clock>);
    let gate = Arc::new(ListGate {
        refused_groups: vec!["owned-elsewhere"],
        epoch: 7,
        ..ListGate::default()
    });
    broker.set_write_gate(gate.clone());
    let refused = broker
        .send(vec![
            fifo_message("orders", "m1", "mine"),
            fifo_message("orders", "m2", "owned-elsewhere"),
        ])
        .await
        .unwrap_err();
    match &refused {
        MessagingError::NotWritableHere(refusal) => {
            assert_eq!(refusal.home_region, "eu-west");
            assert_eq!(refusal.epoch, 7);
            assert_eq!(refusal.reason, RefusalReason::NotHome);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(refused.rocketmq_code(), 40300);
    let text = refused.to_string();
    assert!(
        text.contains("eu-west") && text.contains("epoch 7"),
        "{text}"
    );
    assert!(
        !broker.storage().contains_id("m1").unwrap(),
        "nothing of a refused batch is stored"
    );
    assert_eq!(
        gate.asked.lock().clone(),
        vec![
            ("orders".to_string(), "mine".to_string()),
            ("orders".to_string(), "owned-elsewhere".to_string())
        ]
    );

    broker
        .send(vec![fifo_message("orders", "m3", "mine")])
        .await
        .unwrap();
    let got = receive_n(&broker, &request("g", "orders", 32, 1_000), 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0]
            .record
            .properties
            .get(PROP_WRITE_EPOCH)
            .map(String::as_str),
        Some("7"),
        "the epoch the write was accepted under is kept with the message"
    );
}

#[tokio::test]
async fn without_a_gate_nothing_is_stamped() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Normal, clock as Arc<dyn Clock>);
    broker.send(vec![message("orders", "m1")]).await.unwrap();
    let got = receive_n(&broker, &request("g", "orders", 32, 1_000), 1).await;
    assert!(!got[0].record.properties.contains_key(PROP_WRITE_EPOCH));
}

#[tokio::test]
async fn queues_only_grow_and_new_queues_take_sends() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (dir, broker) = setup(2, TopicMessageType::Normal, clock.clone() as Arc<dyn Clock>);
    assert_eq!(
        broker.grow_topic_queues("orders", 2).unwrap().queue_count,
        2
    );
    assert!(matches!(
        broker.grow_topic_queues("orders", 1),
        Err(MessagingError::TopicConflict { .. })
    ));
    assert!(matches!(
        broker.grow_topic_queues("missing", 4),
        Err(MessagingError::TopicNotFound { .. })
    ));
    assert_eq!(
        broker.grow_topic_queues("orders", 6).unwrap().queue_count,
        6
    );
    let mut pinned = message("orders", "q5");
    pinned.queue_id = Some(5);
    broker.send(vec![pinned]).await.unwrap();
    // The change persists.
    let storage = Arc::clone(broker.storage());
    drop(broker);
    let broker = Broker::open(storage, super::tests::test_config(), clock).unwrap();
    assert_eq!(broker.topic("orders").unwrap().queue_count, 6);
    drop(dir);
}

#[tokio::test]
async fn a_retried_send_is_answered_from_the_stored_copy() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(4, TopicMessageType::Normal, clock as Arc<dyn Clock>);
    let first = broker.send(vec![message("orders", "m1")]).await.unwrap();
    super::tests::wait_queue_next(&broker, "orders", first[0].queue_id, first[0].offset + 1).await;
    // The retry (same id), alone and inside a batch with a new message and a repeat.
    let retry = broker.send(vec![message("orders", "m1")]).await.unwrap();
    assert_eq!(retry, first);
    let batch = broker
        .send(vec![
            message("orders", "m2"),
            message("orders", "m1"),
            message("orders", "m2"),
        ])
        .await
        .unwrap();
    assert_eq!(batch[1], first[0]);
    assert_eq!(
        batch[2], batch[0],
        "a repeat within the batch gets the first copy's receipt"
    );
    let got = receive_n(&broker, &request("g", "orders", 32, 1_000), 2).await;
    let mut ids: Vec<String> = got.iter().map(|m| m.record.message_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, vec!["m1", "m2"], "each stored once");
    let stored: u64 = (0..4)
        .map(|queue| {
            broker
                .storage()
                .queue_range("orders", queue)
                .map_or(0, |r| r.next)
        })
        .sum();
    assert_eq!(stored, 2);
}
