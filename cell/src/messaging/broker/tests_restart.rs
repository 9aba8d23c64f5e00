//! Restart tests: the broker and its storage are closed in the middle of each flow and reopened
//! from disk; nothing pending may be lost, nothing delivered twice that was finished, and FIFO
//! order must hold across the restart.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use super::tests::{
    INVISIBLE_MS, START_MS, fifo_message, ids, message, open_storage, open_storage_in, receive_n,
    request, test_config,
};
use super::*;
use crate::messaging::clock::ManualClock;
use crate::messaging::message::OutgoingMessage;
use crate::messaging::topic::{GroupConfig, TopicMessageType};
use crate::storage::{Durability, MessageType, Storage};

/// Closes the broker and its storage (every `Arc` must be gone) and reopens both.
pub(super) fn restart(broker: Arc<Broker>, dir: &Path, clock: &Arc<ManualClock>) -> Arc<Broker> {
    let storage = Arc::clone(broker.storage());
    drop(broker);
    let storage = Arc::try_unwrap(storage).expect("the broker was the storage's only other owner");
    storage.close().unwrap();
    drop(storage);
    Broker::open(
        open_storage(dir),
        test_config(),
        clock.clone() as Arc<dyn Clock>,
    )
    .unwrap()
}

fn fresh(
    kind: TopicMessageType,
    fifo_group: bool,
) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage(dir.path());
    fresh_on(dir, storage, kind, fifo_group)
}

/// Like [`fresh`], on a storage in `sync` mode: every append is fsynced when it returns, so
/// the done markers of releases and transaction endings are written at once.
fn fresh_sync(kind: TopicMessageType) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Broker>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open_storage_in(dir.path(), Durability::Sync, 200);
    fresh_on(dir, storage, kind, false)
}

fn fresh_on(
    dir: tempfile::TempDir,
    storage: Arc<Storage>,
    kind: TopicMessageType,
    fifo_group: bool,
) -> (tempfile::TempDir, Arc<ManualClock>, Arc<Broker>) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let broker = Broker::open(storage, test_config(), clock.clone() as Arc<dyn Clock>).unwrap();
    broker.create_topic("orders", 2, kind).unwrap();
    broker
        .create_group(GroupConfig::new("g", fifo_group))
        .unwrap();
    (dir, clock, broker)
}

#[tokio::test]
async fn pending_timers_survive_restart_and_release_once() {
    let (dir, clock, broker) = fresh(TopicMessageType::Delay, false);
    let mut sent = Vec::new();
    for index in 0..30u64 {
        let mut delayed = message("orders", &format!("d{index}"));
        delayed.message_type = MessageType::Delay;
        delayed.delivery_timestamp_ms = START_MS + 1_000 + index;
        sent.push(delayed);
    }
    broker.send(sent).await.unwrap();
    // Release the first ten before the restart; the other twenty are pending across it.
    clock.set(START_MS + 1_009);
    super::tests::wait_queue_next(&broker, crate::messaging::names::TIMER_TOPIC, 0, 30).await;
    assert_eq!(broker.release_due_timers().await.unwrap().released, 10);
    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        broker.pending_timers(),
        20,
        "released timers are not re-armed, pending ones are"
    );
    assert_eq!(
        broker.topic("orders").unwrap().message_type,
        TopicMessageType::Delay,
        "topics persist"
    );
    clock.set(START_MS + 2_000);
    assert_eq!(broker.release_due_timers().await.unwrap().released, 20);
    let got = receive_n(&broker, &request("g", "orders", 32, 2_000), 30).await;
    let mut got = ids(&got);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 30, "each delay message delivered exactly once");
    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(broker.pending_timers(), 0);
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty(),
        "acks not needed: still invisible"
    );
}

#[tokio::test]
async fn open_transactions_and_check_counts_survive_restart() {
    let (dir, clock, broker) = fresh(TopicMessageType::Transaction, false);
    let half = |id: &str| OutgoingMessage {
        message_type: MessageType::Transaction,
        ..message("orders", id)
    };
    broker
        .send(vec![half("t1"), half("t2"), half("t3")])
        .await
        .unwrap();
    broker
        .end_transaction("t1", TransactionResolution::Commit)
        .await
        .unwrap();
    clock.advance(broker.config().transactions.first_check_delay_ms);
    super::tests::wait_queue_next(&broker, crate::messaging::names::HALF_TOPIC, 0, 3).await;
    assert_eq!(broker.check_transactions().await.unwrap().len(), 2);
    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        broker.open_transactions(),
        2,
        "t2 and t3 are still open, t1 is not"
    );
    broker
        .end_transaction("t2", TransactionResolution::Commit)
        .await
        .unwrap();
    broker
        .end_transaction("t3", TransactionResolution::Rollback)
        .await
        .unwrap();
    let got = receive_n(&broker, &request("g", "orders", 32, 2_000), 2).await;
    let mut got = ids(&got);
    got.sort();
    assert_eq!(got, ["t1", "t2"]);
    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(broker.open_transactions(), 0);
    assert!(matches!(
        broker
            .end_transaction("t1", TransactionResolution::Commit)
            .await,
        Err(MessagingError::TransactionNotFound { .. })
    ));
}

#[tokio::test]
async fn invisible_messages_stay_invisible_and_handles_stay_valid_across_restart() {
    let (dir, clock, broker) = fresh(TopicMessageType::Normal, false);
    let mut sent = Vec::new();
    for index in 0..3 {
        let mut one = message("orders", &format!("m{index}"));
        one.queue_id = Some(0);
        sent.push(one);
    }
    broker.send(sent).await.unwrap();
    let got = receive_n(&broker, &request("g", "orders", 32, 2_000), 3).await;
    broker
        .ack("g", "orders", &got[0].receipt_handle)
        .await
        .unwrap();
    let broker = restart(broker, dir.path(), &clock);
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty(),
        "still invisible"
    );
    broker
        .ack("g", "orders", &got[1].receipt_handle)
        .await
        .unwrap();
    assert_eq!(
        broker
            .ack("g", "orders", &got[0].receipt_handle)
            .await
            .unwrap_err()
            .rocketmq_code(),
        40013
    );
    clock.advance(INVISIBLE_MS);
    let again = broker
        .receive(&request("g", "orders", 32, 0))
        .await
        .unwrap();
    assert_eq!(ids(&again), ["m2"]);
    assert_eq!(again[0].delivery_attempt, 2);
    assert!(matches!(
        broker.ack("g", "orders", &got[2].receipt_handle).await,
        Err(MessagingError::StaleReceiptHandle { .. })
    ));
    broker
        .ack("g", "orders", &again[0].receipt_handle)
        .await
        .unwrap();
}

#[tokio::test]
async fn fifo_groups_in_flight_keep_their_order_across_restart() {
    let (dir, clock, broker) = fresh(TopicMessageType::Fifo, true);
    broker
        .send(vec![
            fifo_message("orders", "A1", "A"),
            fifo_message("orders", "A2", "A"),
            fifo_message("orders", "A3", "A"),
        ])
        .await
        .unwrap();
    let first = receive_n(&broker, &request("g", "orders", 32, 2_000), 1).await;
    assert_eq!(ids(&first), ["A1"]);
    let broker = restart(broker, dir.path(), &clock);
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty(),
        "A1 still holds group A"
    );
    broker
        .ack("g", "orders", &first[0].receipt_handle)
        .await
        .unwrap();
    let second = broker
        .receive(&request("g", "orders", 32, 0))
        .await
        .unwrap();
    assert_eq!(ids(&second), ["A2"]);
    // Restart with A2 in flight and unacked: it is redelivered before A3.
    let broker = restart(broker, dir.path(), &clock);
    clock.advance(INVISIBLE_MS);
    let again = broker
        .receive(&request("g", "orders", 32, 0))
        .await
        .unwrap();
    assert_eq!(
        (ids(&again), again[0].delivery_attempt),
        (vec!["A2".to_string()], 2)
    );
    broker
        .ack("g", "orders", &again[0].receipt_handle)
        .await
        .unwrap();
    assert_eq!(
        ids(&broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()),
        ["A3"]
    );
}

#[tokio::test]
async fn committed_offsets_and_groups_survive_restart() {
    let (dir, clock, broker) = fresh(TopicMessageType::Normal, false);
    let mut one = message("orders", "m1");
    one.queue_id = Some(1);
    broker.send(vec![one]).await.unwrap();
    super::tests::wait_queue_next(&broker, "orders", 1, 1).await;
    broker.commit_offset("g", "orders", 1, 1, None).unwrap();
    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        broker.committed_offset("g", "orders", 1, None).unwrap(),
        Some(1)
    );
    assert!(!broker.group("g").unwrap().fifo);
    assert_eq!(broker.topics().len(), 1);
}

#[tokio::test]
async fn corrupt_consumer_state_is_reported_not_ignored() {
    let (_dir, _clock, broker) = fresh(TopicMessageType::Normal, false);
    broker
        .storage()
        .put_state(
            crate::storage::CF_CONSUMER_OFFSETS,
            &super::keys::pop_key("g", "orders", 0),
            b"garbage",
        )
        .unwrap();
    let mut one = request("g", "orders", 32, 0);
    one.queue_id = Some(0);
    let error = broker.receive(&one).await.unwrap_err();
    assert!(
        matches!(&error, MessagingError::CorruptState { key, .. } if key == "pop/g/orders/0"),
        "{error}"
    );
    assert_eq!(error.rocketmq_code(), 50000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rebuilds_many_pending_timers() {
    let (dir, clock, broker) = fresh(TopicMessageType::Delay, false);
    let count = 50_000usize;
    for batch in 0..count / 1000 {
        let sent = (batch * 1000..(batch + 1) * 1000)
            .map(|index| {
                let mut delayed = message("orders", &format!("far-{index}"));
                delayed.message_type = MessageType::Delay;
                delayed.delivery_timestamp_ms = START_MS + 3_600_000 + index as u64;
                delayed
            })
            .collect();
        broker.send(sent).await.unwrap();
    }
    let started = std::time::Instant::now();
    let broker = restart(broker, dir.path(), &clock);
    eprintln!(
        "restart with {count} pending timers took {:?}",
        started.elapsed()
    );
    assert_eq!(broker.pending_timers(), count);
}

/// A delay message whose id a later message reuses (a retried send, or a producer reusing ids
/// across topics) is still pending after a restart, and one released before the reuse is not
/// released again.
#[tokio::test]
async fn reused_message_ids_neither_hide_nor_rearm_timers_across_restart() {
    let (dir, clock, broker) = fresh_sync(TopicMessageType::Delay);
    broker
        .create_topic("plain", 1, TopicMessageType::Normal)
        .unwrap();
    let delayed = |id: &str, due_ms: u64| OutgoingMessage {
        message_type: MessageType::Delay,
        delivery_timestamp_ms: due_ms,
        born_host: "10.0.0.7:4000".to_string(),
        ..message("orders", id)
    };
    // "late" sits at the lowest timer offset and pins the restart checkpoint below "early".
    broker
        .send(vec![
            delayed("late", START_MS + 60_000),
            delayed("early", START_MS + 1_000),
            delayed("reused-before", START_MS + 2_000),
        ])
        .await
        .unwrap();
    super::tests::wait_queue_next(&broker, crate::messaging::names::TIMER_TOPIC, 0, 3).await;
    clock.set(START_MS + 1_000);
    assert_eq!(broker.release_due_timers().await.unwrap().released, 1);
    // Both ids are now reused by plain messages: one released, one still pending.
    broker
        .send(vec![
            message("plain", "early"),
            message("plain", "reused-before"),
        ])
        .await
        .unwrap();
    super::tests::wait_queue_next(&broker, "plain", 0, 2).await;

    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        broker.pending_timers(),
        2,
        "\"late\" and \"reused-before\" are pending; \"early\" was released"
    );
    clock.set(START_MS + 60_000);
    assert_eq!(broker.release_due_timers().await.unwrap().released, 2);
    let got = receive_n(&broker, &request("g", "orders", 32, 2_000), 3).await;
    let mut got_ids = ids(&got);
    got_ids.sort();
    assert_eq!(got_ids, ["early", "late", "reused-before"], "each once");
    for received in &got {
        assert_eq!(
            received
                .record
                .properties
                .get(crate::messaging::message::PROP_BORN_HOST)
                .map(String::as_str),
            Some("10.0.0.7:4000"),
            "a released delay message keeps its born host"
        );
    }
}

/// An open transaction whose id a later message reuses is still open after a restart, and one
/// ended before the reuse stays ended.
#[tokio::test]
async fn reused_message_ids_neither_hide_nor_reopen_transactions_across_restart() {
    let (dir, clock, broker) = fresh_sync(TopicMessageType::Transaction);
    broker
        .create_topic("plain", 1, TopicMessageType::Normal)
        .unwrap();
    let half = |id: &str| OutgoingMessage {
        message_type: MessageType::Transaction,
        ..message("orders", id)
    };
    broker
        .send(vec![half("open-long"), half("ended"), half("open-reused")])
        .await
        .unwrap();
    broker
        .end_transaction("ended", TransactionResolution::Rollback)
        .await
        .unwrap();
    broker
        .send(vec![
            message("plain", "ended"),
            message("plain", "open-reused"),
        ])
        .await
        .unwrap();
    super::tests::wait_queue_next(&broker, "plain", 0, 2).await;

    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        broker.open_transactions(),
        2,
        "\"open-long\" and \"open-reused\" are open; \"ended\" is not"
    );
    assert!(matches!(
        broker
            .end_transaction("ended", TransactionResolution::Commit)
            .await,
        Err(MessagingError::TransactionNotFound { .. })
    ));
    broker
        .end_transaction("open-reused", TransactionResolution::Commit)
        .await
        .unwrap();
    let got = receive_n(&broker, &request("g", "orders", 32, 2_000), 1).await;
    assert_eq!(ids(&got), ["open-reused"]);
}

/// In `async` mode a release round's done markers and the checkpoint wait until the log has
/// fsynced the released copies: a power loss must not keep the marker and lose the copy.
#[tokio::test]
async fn release_markers_wait_for_the_fsync_of_the_released_copies() {
    let dir = tempfile::tempdir().unwrap();
    // The flusher would fsync only after an hour: nothing the test appends becomes durable.
    let storage = open_storage_in(dir.path(), Durability::Async, 3_600_000);
    let (dir, clock, broker) = fresh_on(dir, storage, TopicMessageType::Delay, false);
    let delayed = OutgoingMessage {
        message_type: MessageType::Delay,
        delivery_timestamp_ms: START_MS + 1_000,
        ..message("orders", "d1")
    };
    broker.send(vec![delayed]).await.unwrap();
    super::tests::wait_queue_next(&broker, crate::messaging::names::TIMER_TOPIC, 0, 1).await;
    clock.set(START_MS + 1_000);
    assert_eq!(broker.release_due_timers().await.unwrap().released, 1);
    assert_eq!(broker.releases_awaiting_fsync.lock().len(), 1);
    assert!(
        broker
            .get_state(&super::keys::done_key(super::keys::TIMER_DONE_PREFIX, 0))
            .unwrap()
            .is_none(),
        "no done marker before the fsync"
    );
    assert!(
        broker
            .get_state(super::keys::TIMER_FLOOR_KEY)
            .unwrap()
            .and_then(|bytes| super::keys::decode_u64(&bytes))
            .unwrap_or(0)
            == 0,
        "the checkpoint does not pass an unfsynced release"
    );
    // A clean close fsyncs the log; the released copy's stamp then tells the restart.
    let broker = restart(broker, dir.path(), &clock);
    assert_eq!(broker.pending_timers(), 0, "released once, not re-armed");
    let got = receive_n(&broker, &request("g", "orders", 32, 2_000), 1).await;
    assert_eq!(ids(&got), ["d1"]);
}
