//! Broker tests written in review: every status code of CONFORMANCE §4 that the messaging layer
//! produces, receipt handles that must not be accepted, timestamps at the extremes, and the
//! bounds on groups, clients and dead-letter topics. Each bug fixed in review has a test here
//! that failed before the fix.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::tests::{
    INVISIBLE_MS, START_MS, fifo_message, ids, message, open_storage, receive_n, request, setup,
    test_config, wait_queue_next,
};
use super::*;
use crate::messaging::clock::ManualClock;
use crate::messaging::filter::{Filter, FilterKind};
use crate::messaging::message::OutgoingMessage;
use crate::messaging::retry::{Backoff, RetryPolicy};
use crate::messaging::topic::{GroupConfig, TopicMessageType};
use crate::storage::MessageType;

async fn send_code(broker: &Broker, message: OutgoingMessage) -> u32 {
    broker
        .send(vec![message])
        .await
        .unwrap_err()
        .rocketmq_code()
}

fn delayed(topic: &str, id: &str, delivery_timestamp_ms: u64) -> OutgoingMessage {
    OutgoingMessage {
        message_type: MessageType::Delay,
        delivery_timestamp_ms,
        ..message(topic, id)
    }
}

/// The codes of the CONFORMANCE §4 table, each produced by a real call with the broker's
/// default limits (not the test limits).
#[tokio::test]
async fn every_refusal_carries_its_conformance_code() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(
        open_storage(dir.path()),
        BrokerConfig::default(),
        clock.clone(),
    )
    .unwrap();
    broker
        .create_topic("orders", 1, TopicMessageType::Normal)
        .unwrap();
    broker
        .create_topic("fifo", 1, TopicMessageType::Fifo)
        .unwrap();
    broker
        .create_topic("later", 1, TopicMessageType::Delay)
        .unwrap();
    broker.create_group(GroupConfig::new("g", false)).unwrap();

    // Names and existence.
    assert_eq!(
        broker
            .create_topic("bad topic", 1, TopicMessageType::Normal)
            .unwrap_err()
            .rocketmq_code(),
        40002
    );
    assert_eq!(send_code(&broker, message("bad/topic", "m")).await, 40002);
    assert_eq!(
        send_code(&broker, message(crate::messaging::names::TIMER_TOPIC, "m")).await,
        40002,
        "internal topics are not writable"
    );
    assert_eq!(send_code(&broker, message("nowhere", "m")).await, 40402);
    assert_eq!(
        broker
            .create_group(GroupConfig::new("bad group", false))
            .unwrap_err()
            .rocketmq_code(),
        40003
    );
    assert_eq!(
        broker
            .receive(&request("nobody", "orders", 1, 0))
            .await
            .unwrap_err()
            .rocketmq_code(),
        40403
    );
    assert_eq!(
        broker
            .receive(&request("g", "nowhere", 1, 0))
            .await
            .unwrap_err()
            .rocketmq_code(),
        40402
    );

    // Message type and fields.
    assert_eq!(
        send_code(&broker, fifo_message("orders", "m", "A")).await,
        40014
    );
    let mut big = message("orders", "big");
    big.body = vec![1; (4 << 20) + 1];
    assert_eq!(send_code(&broker, big).await, 41301);
    let mut empty = message("orders", "empty");
    empty.body.clear();
    assert_eq!(send_code(&broker, empty).await, 41302);
    let mut many = message("orders", "many");
    many.properties = (0..129).map(|i| (format!("p{i}"), "v".into())).collect();
    assert_eq!(send_code(&broker, many).await, 43101);
    let mut heavy = message("orders", "heavy");
    heavy.properties.insert("k".into(), "v".repeat(16 << 10));
    assert_eq!(send_code(&broker, heavy).await, 43101);
    let mut reserved = message("orders", "reserved");
    reserved
        .properties
        .insert("__MERIDIAN_REAL_TOPIC".into(), "x".into());
    assert_eq!(send_code(&broker, reserved).await, 40007);
    let mut unnamed = message("orders", "unnamed");
    unnamed.properties.insert(String::new(), "x".into());
    assert_eq!(send_code(&broker, unnamed).await, 40007);
    assert_eq!(
        send_code(&broker, fifo_message("fifo", "m", &"g".repeat(64))).await,
        40006
    );
    assert_eq!(
        send_code(&broker, fifo_message("fifo", "m", "   ")).await,
        40006,
        "a blank message group is illegal"
    );
    let mut grouped = message("orders", "grouped");
    grouped.message_group = "A".into();
    assert_eq!(send_code(&broker, grouped).await, 40006);
    assert_eq!(send_code(&broker, message("orders", " ")).await, 40009);
    let mut tagged = message("orders", "tagged");
    tagged.tags = "a|b".into();
    assert_eq!(send_code(&broker, tagged).await, 40004);
    let day_ms = 24 * 3600 * 1000;
    assert_eq!(
        send_code(&broker, delayed("later", "d", START_MS + day_ms + 1)).await,
        40012
    );
    assert_eq!(
        send_code(&broker, delayed("later", "d", u64::MAX)).await,
        40012
    );

    // Receive parameters.
    let mut short = request("g", "orders", 1, 0);
    short.invisible_duration_ms = 9_999;
    assert_eq!(
        broker.receive(&short).await.unwrap_err().rocketmq_code(),
        40011,
        "the proxy's minimum is 10 s"
    );
    short.invisible_duration_ms = 12 * 3600 * 1000 + 1;
    assert_eq!(
        broker.receive(&short).await.unwrap_err().rocketmq_code(),
        40011
    );
    short.invisible_duration_ms = u64::MAX;
    assert_eq!(
        broker.receive(&short).await.unwrap_err().rocketmq_code(),
        40011
    );
    assert_eq!(
        broker
            .receive(&request("g", "orders", 1, 60_001))
            .await
            .unwrap_err()
            .rocketmq_code(),
        40018
    );
    let error = Filter::parse(FilterKind::Sql92, "a >").unwrap_err();
    assert_eq!(MessagingError::from(error).rocketmq_code(), 40010);
    let error = Filter::parse(FilterKind::Tag, "a || ").unwrap_err();
    assert_eq!(MessagingError::from(error).rocketmq_code(), 40010);

    // Receipt handles and transactions.
    broker.send(vec![message("orders", "m1")]).await.unwrap();
    let first = receive_n(&broker, &request("g", "orders", 1, 2_000), 1)
        .await
        .remove(0);
    let renewed = broker
        .change_invisible_duration("g", "orders", &first.receipt_handle, 10_000)
        .await
        .unwrap();
    assert_eq!(
        broker
            .ack("g", "orders", &first.receipt_handle)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40013,
        "stale"
    );
    for bad in ["", "garbage", "m2.0.0.1.1", "m2.7.0.1.1.0"] {
        assert_eq!(
            broker
                .ack("g", "orders", bad)
                .await
                .unwrap_err()
                .rocketmq_code(),
            40013,
            "{bad:?}"
        );
    }
    assert_eq!(
        broker
            .change_invisible_duration("g", "orders", &renewed, 12 * 3_600_000 + 1)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40011
    );
    assert_eq!(
        broker
            .change_invisible_duration("g", "orders", &renewed, u64::MAX)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40011
    );
    broker.ack("g", "orders", &renewed).await.unwrap();
    for unknown_after_ack in [
        broker.ack("g", "orders", &renewed).await,
        broker.nack("g", "orders", &renewed).await.map(|_| ()),
        broker
            .change_invisible_duration("g", "orders", &renewed, 10_000)
            .await
            .map(|_| ()),
    ] {
        assert_eq!(unknown_after_ack.unwrap_err().rocketmq_code(), 40013);
    }
    assert_eq!(
        broker
            .forward_to_dead_letter("g", "orders", "m2.0.5.1.1.0")
            .await
            .unwrap_err()
            .rocketmq_code(),
        40013,
        "a handle for a message never read"
    );
    assert_eq!(
        broker
            .end_transaction("no-such-transaction", TransactionResolution::Commit)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40008
    );
}

/// Before the fix an offset reset restarted the nonce counter, so the first delivery after the
/// reset reissued the exact handle of the first delivery before it, and that stale handle acked
/// the new delivery.
#[tokio::test]
async fn handles_from_before_an_offset_reset_are_stale() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Normal, clock.clone());
    broker.send(vec![message("orders", "m0")]).await.unwrap();
    let before = receive_n(&broker, &request("g", "orders", 1, 2_000), 1)
        .await
        .remove(0);
    broker
        .reset_offsets_to_time("g", "orders", 0)
        .await
        .unwrap();
    let after = receive_n(&broker, &request("g", "orders", 1, 2_000), 1)
        .await
        .remove(0);
    assert_eq!(
        (after.record.message_id.as_str(), after.delivery_attempt),
        ("m0", 1),
        "the reset replays the message as new"
    );
    assert_ne!(before.receipt_handle, after.receipt_handle);
    assert_eq!(
        broker
            .ack("g", "orders", &before.receipt_handle)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40013
    );
    broker
        .ack("g", "orders", &after.receipt_handle)
        .await
        .unwrap();
}

/// Before the fix two groups reading the same queue were issued identical handles, so one
/// group's handle acked the other group's delivery (and a DLQ handle could ack a topic's).
#[tokio::test]
async fn a_handle_is_accepted_only_by_the_group_and_topic_it_was_issued_for() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Normal, clock.clone());
    broker.create_group(GroupConfig::new("h", false)).unwrap();
    broker
        .create_topic("other", 1, TopicMessageType::Normal)
        .unwrap();
    broker
        .send(vec![message("orders", "m0"), message("other", "o0")])
        .await
        .unwrap();
    let of_g = receive_n(&broker, &request("g", "orders", 1, 2_000), 1)
        .await
        .remove(0);
    let of_h = receive_n(&broker, &request("h", "orders", 1, 2_000), 1)
        .await
        .remove(0);
    let other_of_g = receive_n(&broker, &request("g", "other", 1, 2_000), 1)
        .await
        .remove(0);
    assert_ne!(of_g.receipt_handle, of_h.receipt_handle);
    let error = broker
        .ack("h", "orders", &of_g.receipt_handle)
        .await
        .unwrap_err();
    assert_eq!(error.rocketmq_code(), 40013, "{error}");
    assert_eq!(
        broker
            .ack("g", "other", &of_g.receipt_handle)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40013
    );
    assert_eq!(
        broker
            .change_invisible_duration("g", "orders", &other_of_g.receipt_handle, INVISIBLE_MS)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40013
    );
    // Every delivery is still in flight for its own group and acked by its own handle.
    broker
        .ack("h", "orders", &of_h.receipt_handle)
        .await
        .unwrap();
    broker
        .ack("g", "orders", &of_g.receipt_handle)
        .await
        .unwrap();
    broker
        .ack("g", "other", &other_of_g.receipt_handle)
        .await
        .unwrap();
}

/// Before the fix, a failure on a later queue failed the whole receive after earlier queues had
/// already made their messages invisible: nobody got them until the invisibility ran out.
#[tokio::test]
async fn a_failing_queue_does_not_swallow_messages_taken_from_other_queues() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(2, TopicMessageType::Normal, clock.clone());
    let mut one = message("orders", "m0");
    one.queue_id = Some(0);
    broker.send(vec![one]).await.unwrap();
    wait_queue_next(&broker, "orders", 0, 1).await;
    broker
        .storage()
        .put_state(
            crate::storage::CF_CONSUMER_OFFSETS,
            &super::keys::pop_key("g", "orders", 1),
            b"garbage",
        )
        .unwrap();
    let mut got = Vec::new();
    let mut failures = 0;
    // The starting queue rotates, so within a few calls one starts at queue 0.
    for _ in 0..4 {
        match broker.receive(&request("g", "orders", 32, 0)).await {
            Ok(messages) => got.extend(messages),
            Err(error) => {
                assert!(matches!(error, MessagingError::CorruptState { .. }));
                failures += 1;
            }
        }
    }
    assert_eq!(ids(&got), ["m0"], "m0 reached a consumer");
    assert!(failures > 0, "calls that found nothing report the failure");
}

/// Before the fix the dead-letter topic counted against `max_topics`: in a full cell a message
/// out of attempts could not be dead-lettered, and every receive of its queue failed.
#[tokio::test]
async fn dead_lettering_works_in_a_cell_at_its_topic_limit() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.limits.max_topics = 1;
    let broker = Broker::open(open_storage(dir.path()), config, clock.clone()).unwrap();
    broker
        .create_topic("orders", 1, TopicMessageType::Normal)
        .unwrap();
    let mut group = GroupConfig::new("g", false);
    group.retry = RetryPolicy {
        max_delivery_attempts: 1,
        backoff: Backoff::Fixed(1_000),
    };
    broker.create_group(group).unwrap();
    assert_eq!(
        broker
            .create_topic("second", 1, TopicMessageType::Normal)
            .unwrap_err()
            .rocketmq_code(),
        42900
    );
    broker
        .send(vec![message("orders", "doomed"), message("orders", "next")])
        .await
        .unwrap();
    let mut first = request("g", "orders", 1, 2_000);
    first.max_messages = 1;
    let doomed = receive_n(&broker, &first, 1).await.remove(0);
    assert!(
        broker
            .nack("g", "orders", &doomed.receipt_handle)
            .await
            .unwrap(),
        "its only attempt was used: dead-lettered"
    );
    let rest = receive_n(&broker, &request("g", "orders", 32, 2_000), 1).await;
    assert_eq!(ids(&rest), ["next"]);
    let dlq = crate::messaging::names::dlq_topic("g");
    broker.create_group(GroupConfig::new("dlq", false)).unwrap();
    assert_eq!(
        ids(&receive_n(&broker, &request("dlq", &dlq, 32, 2_000), 1).await),
        ["doomed"]
    );
}

#[tokio::test]
async fn consumer_groups_and_live_clients_are_bounded() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.limits.max_groups = 2;
    config.limits.max_clients_per_group = 2;
    let broker = Broker::open(open_storage(dir.path()), config, clock.clone()).unwrap();
    broker.create_group(GroupConfig::new("a", false)).unwrap();
    broker.create_group(GroupConfig::new("b", false)).unwrap();
    broker
        .create_group(GroupConfig::new("a", true))
        .expect("updating an existing group is not a new group");
    assert_eq!(
        broker
            .create_group(GroupConfig::new("c", false))
            .unwrap_err()
            .rocketmq_code(),
        42900
    );
    broker.heartbeat("a", "c1").unwrap();
    broker.heartbeat("a", "c2").unwrap();
    broker
        .heartbeat("a", "c1")
        .expect("a live client's heartbeat is always taken");
    assert_eq!(
        broker.heartbeat("a", "c3").unwrap_err().rocketmq_code(),
        42900
    );
    broker.leave("a", "c2").unwrap();
    broker.heartbeat("a", "c3").unwrap();
    clock.advance(broker.config().session_timeout_ms + 1);
    broker.heartbeat("a", "c4").expect("silent clients expired");
}

/// Client timestamps at the extremes: nothing overflows, nothing panics, and a time in the past
/// means "now".
#[tokio::test]
async fn client_timestamps_at_the_extremes() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Delay, clock.clone());
    broker
        .create_topic("txn", 1, TopicMessageType::Transaction)
        .unwrap();
    let mut past = delayed("orders", "past", 1);
    past.born_timestamp_ms = u64::MAX;
    let mut edge = delayed("orders", "edge", START_MS + 24 * 3600 * 1000);
    edge.born_timestamp_ms = 0;
    broker.send(vec![past, edge]).await.unwrap();
    assert_eq!(broker.pending_timers(), 1, "only the future one waits");
    let past = receive_n(&broker, &request("g", "orders", 32, 2_000), 1)
        .await
        .remove(0);
    assert_eq!(past.record.message_id, "past");
    broker
        .ack("g", "orders", &past.receipt_handle)
        .await
        .unwrap();
    let half = OutgoingMessage {
        message_type: MessageType::Transaction,
        transaction_check_delay_ms: u64::MAX,
        ..message("txn", "t")
    };
    broker.send(vec![half]).await.unwrap();
    clock.set(u64::MAX - 1);
    wait_queue_next(&broker, crate::messaging::names::HALF_TOPIC, 0, 1).await;
    wait_queue_next(&broker, crate::messaging::names::TIMER_TOPIC, 0, 1).await;
    assert_eq!(broker.check_transactions().await.unwrap().len(), 1);
    assert_eq!(broker.release_due_timers().await.unwrap().released, 1);
    let mut late = request("g", "orders", 1, 2_000);
    late.invisible_duration_ms = 12 * 3600 * 1000;
    let edge = receive_n(&broker, &late, 1).await.remove(0);
    assert_eq!(edge.invisible_until_ms, u64::MAX, "saturates, no overflow");
    broker
        .nack("g", "orders", &edge.receipt_handle)
        .await
        .unwrap();
}

/// Waits (bounded) until `count` trace events of a message are readable; returns their kinds.
async fn trace_kinds(broker: &Broker, message_id: &str, count: usize) -> Vec<TraceKind> {
    let mut kinds = Vec::new();
    let mut visible = broker.storage().subscribe();
    for _ in 0..500 {
        kinds = broker
            .query_trace(message_id)
            .unwrap()
            .into_iter()
            .map(|event| event.kind)
            .collect();
        if kinds.len() >= count {
            break;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), visible.changed()).await;
    }
    kinds
}

/// Every lifecycle step of the trace bullet is recorded, in order, and the trace is
/// still there after a restart.
#[tokio::test]
async fn trace_records_every_lifecycle_step_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut broker = Broker::open(open_storage(dir.path()), test_config(), clock.clone()).unwrap();
    broker
        .create_topic("later", 1, TopicMessageType::Delay)
        .unwrap();
    broker
        .create_topic("txn", 1, TopicMessageType::Transaction)
        .unwrap();
    let mut group = GroupConfig::new("g", false);
    group.retry = RetryPolicy {
        max_delivery_attempts: 2,
        backoff: Backoff::Fixed(1_000),
    };
    broker.create_group(group).unwrap();
    broker
        .send(vec![delayed("later", "d", START_MS + 1_000)])
        .await
        .unwrap();
    let half = |id: &str| OutgoingMessage {
        message_type: MessageType::Transaction,
        ..message("txn", id)
    };
    broker
        .send(vec![half("t-commit"), half("t-roll")])
        .await
        .unwrap();
    clock.advance(broker.config().transactions.first_check_delay_ms);
    wait_queue_next(&broker, crate::messaging::names::TIMER_TOPIC, 0, 1).await;
    wait_queue_next(&broker, crate::messaging::names::HALF_TOPIC, 0, 2).await;
    assert_eq!(broker.release_due_timers().await.unwrap().released, 1);
    assert_eq!(broker.check_transactions().await.unwrap().len(), 2);
    broker
        .end_transaction("t-commit", TransactionResolution::Commit)
        .await
        .unwrap();
    broker
        .end_transaction("t-roll", TransactionResolution::Rollback)
        .await
        .unwrap();
    let first = receive_n(&broker, &request("g", "later", 1, 2_000), 1).await;
    assert_eq!(ids(&first), ["d"]);
    clock.advance(INVISIBLE_MS);
    let second = broker.receive(&request("g", "later", 1, 0)).await.unwrap();
    assert!(
        broker
            .nack("g", "later", &second[0].receipt_handle)
            .await
            .unwrap()
    );
    let committed = receive_n(&broker, &request("g", "txn", 1, 2_000), 1).await;
    broker
        .ack("g", "txn", &committed[0].receipt_handle)
        .await
        .unwrap();

    let delay_steps = [
        TraceKind::Scheduled,
        TraceKind::Released,
        TraceKind::Received,
        TraceKind::Redelivered,
        TraceKind::DeadLettered,
    ];
    let commit_steps = [
        TraceKind::HalfStored,
        TraceKind::TransactionChecked,
        TraceKind::Committed,
        TraceKind::Received,
        TraceKind::Acked,
    ];
    let rollback_steps = [
        TraceKind::HalfStored,
        TraceKind::TransactionChecked,
        TraceKind::RolledBack,
    ];
    for _ in 0..2 {
        assert_eq!(trace_kinds(&broker, "d", 5).await, delay_steps);
        assert_eq!(trace_kinds(&broker, "t-commit", 5).await, commit_steps);
        assert_eq!(trace_kinds(&broker, "t-roll", 3).await, rollback_steps);
        let events = broker.query_trace("d").unwrap();
        assert_eq!((events[3].group.as_str(), events[3].attempt), ("g", 2));
        assert_eq!(events[4].detail, dlq_topic_of("g"));
        broker = super::tests_restart::restart(broker, dir.path(), &clock);
    }
}

fn dlq_topic_of(group: &str) -> String {
    crate::messaging::names::dlq_topic(group)
}

/// ForwardMessageToDeadLetterQueue is retried by the PY FIFO push consumer until it gets OK
/// (CONFORMANCE D1): a retry after a lost answer succeeds without a second dead letter, and the
/// group moves on.
#[tokio::test]
async fn forwarding_to_the_dead_letter_queue_is_idempotent() {
    let clock = Arc::new(ManualClock::new(START_MS));
    let (_dir, broker) = setup(1, TopicMessageType::Fifo, clock.clone());
    broker
        .send(vec![
            fifo_message("orders", "A1", "A"),
            fifo_message("orders", "A2", "A"),
        ])
        .await
        .unwrap();
    let first = receive_n(&broker, &request("g", "orders", 32, 2_000), 1)
        .await
        .remove(0);
    for _ in 0..3 {
        broker
            .forward_to_dead_letter("g", "orders", &first.receipt_handle)
            .await
            .unwrap();
    }
    assert_eq!(
        ids(&broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()),
        ["A2"]
    );
    broker.create_group(GroupConfig::new("dlq", false)).unwrap();
    let dlq = crate::messaging::names::dlq_topic("g");
    let dead = receive_n(&broker, &request("dlq", &dlq, 32, 2_000), 1).await;
    assert_eq!(ids(&dead), ["A1"]);
    assert!(
        broker
            .receive(&request("dlq", &dlq, 32, 0))
            .await
            .unwrap()
            .is_empty(),
        "dead-lettered once"
    );
}
