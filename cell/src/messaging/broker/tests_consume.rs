//! Broker consumption tests: dead letters, nack and backoff, FIFO order, filters, long polling,
//! per-queue pulls, offsets, assignment and resets.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::{
    INVISIBLE_MS, START_MS, fifo_message, ids, message, receive_n, request, setup, wait_queue_next,
};
use super::*;
use crate::messaging::clock::{ManualClock, SystemClock};
use crate::messaging::filter::{Filter, FilterKind};
use crate::messaging::message::{PROP_DLQ_ATTEMPTS, PROP_DLQ_ORIGIN_TOPIC};
use crate::messaging::retry::{Backoff, RetryPolicy};
use crate::messaging::topic::{ConsumptionModel, GroupConfig, TopicMessageType};

#[tokio::test]
async fn last_attempt_goes_to_a_consumable_dead_letter_queue() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Normal, clock.clone());
    let mut group = GroupConfig::new("g", false);
    group.retry = RetryPolicy {
        max_delivery_attempts: 2,
        backoff: Backoff::Fixed(1_000),
    };
    broker.create_group(group).unwrap();
    broker
        .create_group(GroupConfig::new("dlq-reader", false))
        .unwrap();
    broker
        .send(vec![message("orders", "doomed"), message("orders", "fine")])
        .await
        .unwrap();
    let first = receive_n(&broker, &request("g", "orders", 2, 2_000), 2).await;
    let fine = first
        .iter()
        .find(|m| m.record.message_id == "fine")
        .unwrap();
    broker
        .ack("g", "orders", &fine.receipt_handle)
        .await
        .unwrap();
    clock.advance(INVISIBLE_MS);
    let second = broker.receive(&request("g", "orders", 2, 0)).await.unwrap();
    assert_eq!(ids(&second), ["doomed"]);
    assert_eq!(second[0].delivery_attempt, 2);
    clock.advance(INVISIBLE_MS);
    assert!(
        broker
            .receive(&request("g", "orders", 2, 0))
            .await
            .unwrap()
            .is_empty(),
        "dead-lettered, not redelivered"
    );
    let dlq = crate::messaging::names::dlq_topic("g");
    let dead = receive_n(&broker, &request("dlq-reader", &dlq, 32, 2_000), 1).await;
    assert_eq!(ids(&dead), ["doomed"]);
    assert_eq!(
        dead[0]
            .record
            .properties
            .get(PROP_DLQ_ORIGIN_TOPIC)
            .map(String::as_str),
        Some("orders")
    );
    assert_eq!(
        dead[0]
            .record
            .properties
            .get(PROP_DLQ_ATTEMPTS)
            .map(String::as_str),
        Some("2")
    );
    broker
        .ack("dlq-reader", &dlq, &dead[0].receipt_handle)
        .await
        .unwrap();
}

#[tokio::test]
async fn nack_backs_off_and_forward_dead_letters_on_request() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Normal, clock.clone());
    let mut group = GroupConfig::new("g", false);
    group.retry = RetryPolicy {
        max_delivery_attempts: 5,
        backoff: Backoff::Exponential {
            initial_ms: 1_000,
            max_ms: 60_000,
            multiplier: 2,
        },
    };
    broker.create_group(group).unwrap();
    broker
        .send(vec![message("orders", "m1"), message("orders", "m2")])
        .await
        .unwrap();
    let got = receive_n(&broker, &request("g", "orders", 2, 2_000), 2).await;
    assert!(
        !broker
            .nack("g", "orders", &got[0].receipt_handle)
            .await
            .unwrap()
    );
    clock.advance(999);
    assert!(
        broker
            .receive(&request("g", "orders", 2, 0))
            .await
            .unwrap()
            .is_empty(),
        "1 s backoff after attempt 1"
    );
    clock.advance(1);
    let again = broker.receive(&request("g", "orders", 2, 0)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery_attempt, 2);
    broker
        .forward_to_dead_letter("g", "orders", &got[1].receipt_handle)
        .await
        .unwrap();
    assert!(
        broker
            .ack("g", "orders", &got[1].receipt_handle)
            .await
            .is_err(),
        "forwarded means done"
    );
    broker
        .create_group(GroupConfig::new("dlq-reader", false))
        .unwrap();
    let dlq = crate::messaging::names::dlq_topic("g");
    let dead = receive_n(&broker, &request("dlq-reader", &dlq, 32, 2_000), 1).await;
    assert_eq!(dead[0].record.message_id, got[1].record.message_id);
}

#[tokio::test]
async fn fifo_groups_are_strictly_ordered_and_independent() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(2, TopicMessageType::Fifo, clock.clone());
    let sent = vec![
        fifo_message("orders", "A1", "A"),
        fifo_message("orders", "B1", "B"),
        fifo_message("orders", "A2", "A"),
        fifo_message("orders", "A3", "A"),
        fifo_message("orders", "B2", "B"),
    ];
    let receipts = broker.send(sent).await.unwrap();
    assert_eq!(
        receipts[0].queue_id, receipts[2].queue_id,
        "a message group stays in one queue"
    );
    for queue_id in 0..2 {
        let stored = receipts
            .iter()
            .filter(|receipt| receipt.queue_id == queue_id)
            .count();
        wait_queue_next(&broker, "orders", queue_id, stored as u64).await;
    }
    let first = receive_n(&broker, &request("g", "orders", 32, 2_000), 2).await;
    let mut heads = ids(&first);
    heads.sort();
    assert_eq!(heads, ["A1", "B1"], "one message per group in flight");
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty()
    );
    let a1 = first.iter().find(|m| m.record.message_id == "A1").unwrap();
    broker.ack("g", "orders", &a1.receipt_handle).await.unwrap();
    let next = broker
        .receive(&request("g", "orders", 32, 0))
        .await
        .unwrap();
    assert_eq!(ids(&next), ["A2"], "B waits for B1; A moves on");
    // A2 is not acked: it comes back (attempt 2) before A3.
    clock.advance(INVISIBLE_MS);
    let mut again = broker
        .receive(&request("g", "orders", 32, 0))
        .await
        .unwrap();
    again.sort_by(|a, b| a.record.message_id.cmp(&b.record.message_id));
    assert_eq!(ids(&again), ["A2", "B1"]);
    for message in &again {
        assert_eq!(message.delivery_attempt, 2);
        broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .unwrap();
    }
    let mut rest = broker
        .receive(&request("g", "orders", 32, 0))
        .await
        .unwrap();
    rest.sort_by(|a, b| a.record.message_id.cmp(&b.record.message_id));
    assert_eq!(ids(&rest), ["A3", "B2"]);
}

#[tokio::test]
async fn filters_skip_non_matching_messages_for_one_group_only() {
    let (_dir, broker) = setup(1, TopicMessageType::Normal, Arc::new(SystemClock));
    broker
        .create_group(GroupConfig::new("tags", false))
        .unwrap();
    broker.create_group(GroupConfig::new("sql", false)).unwrap();
    let mut sent = Vec::new();
    for (index, tag) in ["TagA", "TagB", "TagC", "TagA"].iter().enumerate() {
        let mut message = message("orders", &format!("m{index}"));
        message.tags = tag.to_string();
        message
            .properties
            .insert("amount".into(), (index * 10).to_string());
        sent.push(message);
    }
    broker.send(sent).await.unwrap();
    let mut tags = request("tags", "orders", 32, 2_000);
    tags.filter = Filter::parse(FilterKind::Tag, "TagA || TagC").unwrap();
    assert_eq!(ids(&receive_n(&broker, &tags, 3).await), ["m0", "m2", "m3"]);
    let mut sql = request("sql", "orders", 32, 2_000);
    sql.filter = Filter::parse(
        FilterKind::Sql92,
        "amount BETWEEN 10 AND 20 AND TAGS <> 'TagC'",
    )
    .unwrap();
    assert_eq!(ids(&receive_n(&broker, &sql, 1).await), ["m1"]);
    assert_eq!(
        receive_n(&broker, &request("g", "orders", 32, 2_000), 4)
            .await
            .len(),
        4,
        "unfiltered group sees all"
    );
    let error = Filter::parse(FilterKind::Sql92, "amount >").unwrap_err();
    assert_eq!(MessagingError::from(error).rocketmq_code(), 40010);
}

#[tokio::test]
async fn long_poll_wakes_on_append_and_times_out_when_idle() {
    let (_dir, broker) = setup(2, TopicMessageType::Normal, Arc::new(SystemClock));
    let started = Instant::now();
    assert!(
        broker
            .receive(&request("g", "orders", 1, 200))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    let waiting = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move {
            let started = Instant::now();
            let got = broker
                .receive(&request("g", "orders", 1, 10_000))
                .await
                .unwrap();
            (got, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    broker.send(vec![message("orders", "late")]).await.unwrap();
    let (got, elapsed) = waiting.await.unwrap();
    assert_eq!(ids(&got), ["late"]);
    assert!(
        elapsed >= Duration::from_millis(150),
        "it waited for the message"
    );
    assert!(
        elapsed < Duration::from_millis(5_000),
        "woken by the append, not by the timeout: {elapsed:?}"
    );
}

#[tokio::test]
async fn pull_offsets_assignment_and_resets() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(4, TopicMessageType::Normal, clock.clone());
    let mut sent = Vec::new();
    for index in 0..8 {
        let mut message = message("orders", &format!("m{index}"));
        message.queue_id = Some(0);
        message.tags = if index % 2 == 0 { "even" } else { "odd" }.to_string();
        sent.push(message);
    }
    broker.send(sent).await.unwrap();
    wait_queue_next(&broker, "orders", 0, 8).await;
    let pulled = broker
        .pull("g", "orders", 0, 0, 32, &Filter::all(), 2_000)
        .await
        .unwrap();
    assert_eq!(
        pulled.next_offset,
        pulled.records.last().unwrap().queue_offset + 1
    );
    let even = Filter::parse(FilterKind::Tag, "even").unwrap();
    let filtered = broker
        .pull("g", "orders", 0, 0, 2, &even, 2_000)
        .await
        .unwrap();
    assert_eq!(
        filtered
            .records
            .iter()
            .map(|r| r.queue_offset)
            .collect::<Vec<_>>(),
        [0, 2]
    );
    assert_eq!(filtered.next_offset, 3);
    assert_eq!(
        broker.committed_offset("g", "orders", 0, None).unwrap(),
        None
    );
    broker.commit_offset("g", "orders", 0, 5, None).unwrap();
    assert_eq!(
        broker.committed_offset("g", "orders", 0, None).unwrap(),
        Some(5)
    );
    assert!(matches!(
        broker.commit_offset("g", "orders", 0, 99, None),
        Err(MessagingError::InvalidOffset { .. })
    ));
    let idle = broker
        .pull("g", "orders", 1, 0, 32, &Filter::all(), 100)
        .await
        .unwrap();
    assert_eq!((idle.records.len(), idle.next_offset), (0, 0));

    broker.reset_offsets_to_latest("g", "orders").await.unwrap();
    assert_eq!(
        broker.committed_offset("g", "orders", 0, None).unwrap(),
        Some(8)
    );
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty(),
        "pop state moved too"
    );
    broker
        .reset_offsets_to_time("g", "orders", 0)
        .await
        .unwrap();
    assert_eq!(
        broker.committed_offset("g", "orders", 0, None).unwrap(),
        Some(0)
    );
    assert_eq!(
        receive_n(&broker, &request("g", "orders", 32, 2_000), 8)
            .await
            .len(),
        8
    );

    // Assignment follows membership.
    broker.heartbeat("g", "c1").unwrap();
    assert_eq!(
        broker.assignment("g", "orders", "c1").unwrap(),
        [0, 1, 2, 3]
    );
    broker.heartbeat("g", "c2").unwrap();
    assert_eq!(broker.assignment("g", "orders", "c1").unwrap(), [0, 1]);
    assert_eq!(broker.assignment("g", "orders", "c2").unwrap(), [2, 3]);
    clock.advance(broker.config().session_timeout_ms + 1);
    broker.heartbeat("g", "c2").unwrap();
    assert_eq!(
        broker.assignment("g", "orders", "c2").unwrap(),
        [0, 1, 2, 3],
        "c1 timed out"
    );
    broker.leave("g", "c2").unwrap();
    assert!(broker.assignment("g", "orders", "c2").unwrap().is_empty());
}

#[tokio::test]
async fn broadcasting_groups_keep_offsets_per_client() {
    let (_dir, broker) = setup(2, TopicMessageType::Normal, Arc::new(SystemClock));
    let mut group = GroupConfig::new("fanout", false);
    group.model = ConsumptionModel::Broadcasting;
    broker.create_group(group).unwrap();
    let mut sent = vec![message("orders", "m1"), message("orders", "m2")];
    for one in &mut sent {
        one.queue_id = Some(0);
    }
    broker.send(sent).await.unwrap();
    wait_queue_next(&broker, "orders", 0, 2).await;
    broker.heartbeat("fanout", "c1").unwrap();
    broker.heartbeat("fanout", "c2").unwrap();
    assert_eq!(broker.assignment("fanout", "orders", "c1").unwrap(), [0, 1]);
    assert_eq!(broker.assignment("fanout", "orders", "c2").unwrap(), [0, 1]);
    broker
        .commit_offset("fanout", "orders", 0, 1, Some("c1"))
        .unwrap();
    assert_eq!(
        broker
            .committed_offset("fanout", "orders", 0, Some("c1"))
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        broker
            .committed_offset("fanout", "orders", 0, Some("c2"))
            .unwrap(),
        None
    );
    assert!(
        broker
            .commit_offset("fanout", "orders", 0, 1, None)
            .is_err(),
        "a client id is required"
    );
}

#[tokio::test]
async fn long_poll_wakes_on_fifo_ack_and_on_invisibility_expiry() {
    let (_dir, broker) = setup(1, TopicMessageType::Fifo, Arc::new(SystemClock));
    broker
        .send(vec![
            fifo_message("orders", "A1", "A"),
            fifo_message("orders", "A2", "A"),
        ])
        .await
        .unwrap();
    let first = receive_n(&broker, &request("g", "orders", 32, 2_000), 1).await;
    assert_eq!(ids(&first), ["A1"]);
    // A2 waits behind A1; a long poll is woken by the ack, well before its timeout.
    let waiting = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move {
            let started = Instant::now();
            (
                broker
                    .receive(&request("g", "orders", 32, 10_000))
                    .await
                    .unwrap(),
                started.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker
        .ack("g", "orders", &first[0].receipt_handle)
        .await
        .unwrap();
    let (got, elapsed) = waiting.await.unwrap();
    assert_eq!(ids(&got), ["A2"]);
    assert!(
        elapsed < Duration::from_millis(5_000),
        "woken by the ack: {elapsed:?}"
    );
    // A2 is not acked: with a short invisibility the same long poll shape gets it back.
    let short = broker
        .change_invisible_duration("g", "orders", &got[0].receipt_handle, 200)
        .await
        .unwrap();
    let started = Instant::now();
    let again = broker
        .receive(&request("g", "orders", 32, 10_000))
        .await
        .unwrap();
    assert_eq!(
        (ids(&again), again[0].delivery_attempt),
        (vec!["A2".to_string()], 2)
    );
    assert!(
        started.elapsed() < Duration::from_millis(5_000),
        "woken at the expiry"
    );
    assert!(
        broker.ack("g", "orders", &short).await.is_err(),
        "the redelivery made it stale"
    );
}

#[tokio::test]
async fn too_many_waiting_polls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = super::tests::test_config();
    config.limits.max_waiting_polls = 1;
    let broker = Broker::open(
        super::tests::open_storage(dir.path()),
        config,
        Arc::new(SystemClock),
    )
    .unwrap();
    broker
        .create_topic("orders", 1, TopicMessageType::Normal)
        .unwrap();
    broker.create_group(GroupConfig::new("g", false)).unwrap();
    let waiting = tokio::spawn({
        let broker = Arc::clone(&broker);
        async move { broker.receive(&request("g", "orders", 1, 2_000)).await }
    });
    for _ in 0..1_000 {
        if broker.waiting_polls() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(broker.waiting_polls(), 1, "the first receive is waiting");
    let refused = broker
        .receive(&request("g", "orders", 1, 1_000))
        .await
        .unwrap_err();
    assert_eq!(refused.rocketmq_code(), 42900);
    assert!(
        broker
            .receive(&request("g", "orders", 1, 0))
            .await
            .unwrap()
            .is_empty(),
        "a poll that does not wait is always admitted"
    );
    assert!(waiting.await.unwrap().unwrap().is_empty());
}
