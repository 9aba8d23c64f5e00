//! Adopting a failed region's pending delay messages and open transactions: two brokers on two
//! real storages, replication played by hand as in `tests_replicated`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::tests::{START_MS, message};
use super::tests_replicated::{Region, replicate, wait_until};
use super::*;
use crate::messaging::clock::ManualClock;
use crate::messaging::message::OutgoingMessage;
use crate::messaging::names::{HALF_TOPIC, TIMER_TOPIC};
use crate::messaging::topic::TopicMessageType;
use crate::storage::MessageType;

fn delayed(id: &str, due_ms: u64) -> OutgoingMessage {
    let mut message = message("later", id);
    message.message_type = MessageType::Delay;
    message.delivery_timestamp_ms = due_ms;
    message
}

fn open_with_topics(dir: &std::path::Path, region: &str, clock: &Arc<ManualClock>) -> Region {
    open_configured(dir, region, clock, super::tests::test_config())
}

fn open_configured(
    dir: &std::path::Path,
    region: &str,
    clock: &Arc<ManualClock>,
    config: BrokerConfig,
) -> Region {
    let region = Region::open_with(&dir.join(region), region, clock, 1, config);
    for (topic, kind) in [
        ("later", TopicMessageType::Delay),
        ("txn", TopicMessageType::Transaction),
    ] {
        if region.broker.topic(topic).is_err() {
            region.broker.create_topic(topic, 1, kind).unwrap();
        }
    }
    region
}

/// How many records of `topic` carry `message_id` in this region's log.
fn copies(region: &Region, topic: &str, message_id: &str) -> usize {
    let next = region
        .storage()
        .queue_range(topic, 0)
        .map_or(0, |range| range.next);
    region
        .storage()
        .read_queue(topic, 0, 0, next as usize + 1, usize::MAX)
        .unwrap()
        .iter()
        .filter(|record| record.message_id == message_id)
        .count()
}

async fn wait_internal_visible(region: &Region, topic: &str, count: u64) {
    wait_until("the internal topic is readable", || {
        region
            .storage()
            .queue_range(topic, 0)
            .is_some_and(|range| range.next >= count)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delay_message_fires_once_in_the_adopting_region() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let us = open_with_topics(dir.path(), "us", &clock);
    let eu = open_with_topics(dir.path(), "eu", &clock);
    us.broker
        .send(vec![
            delayed("d1", START_MS + 60_000),
            delayed("d2", START_MS + 120_000),
        ])
        .await
        .unwrap();
    wait_internal_visible(&us, TIMER_TOPIC, 2).await;
    replicate(&us, &eu, |_| true).await;
    wait_internal_visible(&eu, TIMER_TOPIC, 2).await;
    assert_eq!(
        eu.broker.pending_timers(),
        0,
        "another region's parked messages are not armed here"
    );
    // us dies before either is due; a restart of eu still does not arm them.
    us.stop().await;
    eu.stop().await;
    let eu = open_with_topics(dir.path(), "eu", &clock);
    assert_eq!(eu.broker.pending_timers(), 0);

    let outcome = eu.broker.adopt_region("us").unwrap();
    assert_eq!(outcome.timers_armed, 2);
    assert_eq!(eu.broker.pending_timers(), 2);
    assert_eq!(
        eu.broker.adopt_region("us").unwrap().timers_armed,
        0,
        "adopting again arms nothing twice"
    );
    assert!(matches!(
        eu.broker.adopt_region("eu"),
        Err(MessagingError::InvalidAdoption { .. })
    ));

    clock.set(START_MS + 60_000);
    eu.broker.release_due_timers().await.unwrap();
    wait_until("d1 is released in eu", || copies(&eu, "later", "d1") == 1).await;

    // A restart of the adopter keeps the adoption: d2 is armed again, d1 is not.
    eu.stop().await;
    let eu = open_with_topics(dir.path(), "eu", &clock);
    assert_eq!(
        eu.broker
            .adopted_regions()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["us".to_string()]
    );
    assert_eq!(eu.broker.pending_timers(), 1, "only d2 is still pending");

    // us returns with its releases held (d1 is due there too), catches up with eu's released
    // copy of d1, and only then releases: its own timer for d1 sees the copy and releases
    // nothing.
    let held = BrokerConfig {
        hold_timers_at_start: true,
        ..super::tests::test_config()
    };
    let us = open_configured(dir.path(), "us", &clock, held);
    assert_eq!(us.broker.pending_timers(), 2, "us re-arms its own timers");
    assert_eq!(us.broker.release_due_timers().await.unwrap().released, 0);
    replicate(&eu, &us, |_| true).await;
    wait_until("the released copy reached us", || {
        us.storage().contains_copy("later", "d1").unwrap()
    })
    .await;
    us.broker.set_timers_held(false);
    us.broker.release_due_timers().await.unwrap();
    wait_until("us dropped its d1 timer", || {
        us.broker.pending_timers() == 1
    })
    .await;
    assert_eq!(copies(&us, "later", "d1"), 1, "d1 is stored once in us");
    assert_eq!(copies(&eu, "later", "d1"), 1, "d1 is stored once in eu");
    us.stop().await;
    eu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_copy_replicates_even_though_its_parked_copy_shares_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let us = open_with_topics(dir.path(), "us", &clock);
    let eu = open_with_topics(dir.path(), "eu", &clock);
    us.broker
        .send(vec![delayed("d1", START_MS + 1_000)])
        .await
        .unwrap();
    wait_internal_visible(&us, TIMER_TOPIC, 1).await;
    replicate(&us, &eu, |_| true).await;
    clock.set(START_MS + 1_000);
    us.broker.release_due_timers().await.unwrap();
    wait_until("d1 is released in us", || copies(&us, "later", "d1") == 1).await;
    replicate(&us, &eu, |_| true).await;
    wait_until("the released copy reached eu", || {
        copies(&eu, "later", "d1") == 1
    })
    .await;
    assert_eq!(eu.broker.pending_timers(), 0);
    assert_eq!(
        eu.broker.adopt_region("us").unwrap(),
        AdoptionOutcome {
            timers_armed: 0,
            transactions_opened: 0,
            already_ended: 1
        },
        "a released timer is not adopted"
    );
    us.stop().await;
    eu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transactions_of_a_failed_region_are_checked_by_the_adopter() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let us = open_with_topics(dir.path(), "us", &clock);
    let eu = open_with_topics(dir.path(), "eu", &clock);
    let half = |id: &str| {
        let mut message = message("txn", id);
        message.message_type = MessageType::Transaction;
        message
    };
    us.broker
        .send(vec![half("t-open"), half("t-commit"), half("t-rollback")])
        .await
        .unwrap();
    wait_internal_visible(&us, HALF_TOPIC, 3).await;
    us.broker
        .end_transaction("t-commit", TransactionResolution::Commit)
        .await
        .unwrap();
    us.broker
        .end_transaction("t-rollback", TransactionResolution::Rollback)
        .await
        .unwrap();
    wait_until("the commit and the rollback are readable", || {
        us.storage().contains_copy("txn", "t-commit").unwrap()
            && us
                .storage()
                .contains_copy(crate::messaging::names::TXN_OP_TOPIC, "t-rollback")
                .unwrap()
    })
    .await;
    replicate(&us, &eu, |_| true).await;
    wait_until("everything reached eu", || {
        eu.storage().contains_copy("txn", "t-commit").unwrap()
            && eu
                .storage()
                .contains_copy(crate::messaging::names::TXN_OP_TOPIC, "t-rollback")
                .unwrap()
    })
    .await;
    assert_eq!(
        eu.broker.open_transactions(),
        0,
        "not armed before adoption"
    );
    us.stop().await;

    let outcome = eu.broker.adopt_region("us").unwrap();
    assert_eq!(outcome.transactions_opened, 1, "only t-open is still open");
    assert_eq!(outcome.already_ended, 2);
    // The adopter ends it like one of its own: a commit delivers it once.
    eu.broker
        .end_transaction("t-open", TransactionResolution::Commit)
        .await
        .unwrap();
    wait_until("t-open is delivered in eu", || {
        copies(&eu, "txn", "t-open") == 1
    })
    .await;
    assert_eq!(eu.broker.open_transactions(), 0);
    eu.stop().await;
}
