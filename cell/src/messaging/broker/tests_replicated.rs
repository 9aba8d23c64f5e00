//! Consumer state across regions, broker level: two brokers on two real storages ("eu" and
//! "us") in one test, each running its background tasks. Replication is played by hand: the
//! records one region stored itself are appended to the other with `ReplicatedFrom`, as the
//! replicator does, so the tests choose what arrives when. The QUIC path is covered in
//! `replicator/tests/consumer_state.rs`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::replicated_state::APPLIED_KEY;
use super::tests::{INVISIBLE_MS, START_MS, ids, message, receive_n, request, test_config};
use super::*;
use crate::clock::Hlc;
use crate::messaging::clock::ManualClock;
use crate::messaging::filter::Filter;
use crate::messaging::names::CONSUMER_STATE_TOPIC;
use crate::messaging::topic::{GroupConfig, TopicMessageType};
use crate::storage::{Durability, NewRecord, ReplicatedFrom, StorageConfig};

/// Upper bound on the rounds of any wait below (each round waits 10 ms or for an event); past
/// it the test fails with a message instead of hanging.
const MAX_WAIT_ROUNDS: usize = 3_000;

/// One region: a broker with its background tasks running.
pub(super) struct Region {
    pub(super) broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// State records other regions' logs gave this one (through [`replicate`]).
    state_received: std::sync::atomic::AtomicU64,
}

impl Region {
    pub(super) fn open(dir: &Path, region: &str, clock: &Arc<ManualClock>, queues: u32) -> Self {
        Self::open_with(dir, region, clock, queues, test_config())
    }

    pub(super) fn open_with(
        dir: &Path,
        region: &str,
        clock: &Arc<ManualClock>,
        queues: u32,
        broker_config: BrokerConfig,
    ) -> Self {
        let mut config = StorageConfig::new(dir, region);
        config.durability = Durability::Async;
        config.index_block_cache_bytes = 8 << 20;
        config.index_write_buffer_bytes = 4 << 20;
        let hlc = Arc::new(Hlc::system(Duration::from_millis(500)));
        let storage = Arc::new(Storage::open(config, hlc).unwrap());
        let clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
        let broker = Broker::open(storage, broker_config, clock).unwrap();
        if broker.topic("orders").is_err() {
            broker
                .create_topic("orders", queues, TopicMessageType::Normal)
                .unwrap();
            broker.create_group(GroupConfig::new("g", false)).unwrap();
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(&broker).run(shutdown_rx));
        // After a restart the log already holds replicated state records.
        let state_received = broker
            .storage()
            .queue_range(CONSUMER_STATE_TOPIC, 0)
            .map_or(0, |range| range.next);
        Region {
            broker,
            shutdown,
            task,
            state_received: state_received.into(),
        }
    }

    /// Stops the background tasks and closes the storage, as a restart of the cell would.
    pub(super) async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap();
        let storage = Arc::clone(self.broker.storage());
        drop(self.broker);
        storage.close().unwrap();
        assert_eq!(
            Arc::strong_count(&storage),
            1,
            "someone still holds the storage"
        );
    }

    pub(super) fn storage(&self) -> &Storage {
        self.broker.storage()
    }

    fn counters(&self) -> &ConsumerStateCounters {
        self.broker.consumer_state_counters()
    }
}

/// Waits (bounded) until `condition` holds.
pub(super) async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..MAX_WAIT_ROUNDS {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Appends to `to` what `from` stored itself and `to` lacks, keeping origin and HLC stamp,
/// in `from`'s log order (what a replication link does). Returns how many were copied.
pub(super) async fn replicate(
    from: &Region,
    to: &Region,
    wanted: impl Fn(&Record) -> bool,
) -> usize {
    // Appends are acknowledged before they are readable (async mode): wait until every state
    // record `from` appended is readable, and with it every message before it in the log.
    let emitted = from.counters().emitted.load(Ordering::Relaxed)
        + from.state_received.load(Ordering::Relaxed);
    wait_until("the state records are readable", || {
        from.storage()
            .queue_range(CONSUMER_STATE_TOPIC, 0)
            .map_or(0, |range| range.next)
            >= emitted
    })
    .await;
    let (mut at, end) = from.storage().log_range();
    let mut copies = Vec::new();
    while at < end {
        let batch = from.storage().read_log(at, 1024, 4 << 20).unwrap();
        let Some((last, len, _)) = batch.last() else {
            break;
        };
        at = last + u64::from(*len);
        for (_, _, record) in batch {
            if record.origin.region != from.storage().region()
                || !wanted(&record)
                || to
                    .storage()
                    .contains_copy(&record.topic, &record.message_id)
                    .unwrap()
            {
                continue;
            }
            copies.push(NewRecord {
                message_id: record.message_id.clone(),
                topic: record.topic.clone(),
                queue_id: record.queue_id,
                message_type: record.message_type,
                tags: record.tags.clone(),
                keys: record.keys.clone(),
                message_group: record.message_group.clone(),
                properties: record.properties.clone(),
                body: record.body.clone(),
                born_timestamp_ms: record.born_timestamp_ms,
                delivery_timestamp_ms: record.delivery_timestamp_ms,
                replicated: Some(ReplicatedFrom {
                    origin: record.origin.clone(),
                    hlc: record.hlc,
                }),
            });
        }
    }
    let count = copies.len();
    let states = copies
        .iter()
        .filter(|copy| copy.topic == CONSUMER_STATE_TOPIC)
        .count() as u64;
    to.state_received.fetch_add(states, Ordering::Relaxed);
    for chunk in copies.chunks(256) {
        to.storage().append(chunk.to_vec()).await.unwrap();
    }
    count
}

fn is_state(record: &Record) -> bool {
    record.topic == CONSUMER_STATE_TOPIC
}

/// Waits until the applier of `region` has gone through the first `count` state records of
/// its log (its own and replicated ones).
async fn wait_applied_all(region: &Region, count: u64) {
    wait_until("the applier read every state record", || {
        let applied = region
            .broker
            .get_state(APPLIED_KEY)
            .unwrap()
            .map_or(0, |bytes| keys::decode_u64(&bytes).unwrap());
        applied >= count
    })
    .await;
}

async fn send_all(region: &Region, prefix: &str, count: usize) -> Vec<String> {
    let messages: Vec<_> = (0..count)
        .map(|index| message("orders", &format!("{prefix}-{index}")))
        .collect();
    region.broker.send(messages).await.unwrap();
    (0..count)
        .map(|index| format!("{prefix}-{index}"))
        .collect()
}

fn no_wait(group: &str) -> ReceiveRequest {
    request(group, "orders", 32, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_record_wakes_a_waiting_receive() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let us = Region::open(dir.path(), "us", &clock, 1);
    let waiting = tokio::spawn({
        let broker = Arc::clone(&us.broker);
        async move { broker.receive(&request("g", "orders", 8, 20_000)).await }
    });
    wait_until("the receive waits in its long poll", || {
        us.broker.waiting_polls() == 1
    })
    .await;
    let record = NewRecord {
        message_id: "eu-1".into(),
        topic: "orders".into(),
        body: b"from eu".to_vec(),
        replicated: Some(ReplicatedFrom {
            origin: crate::storage::Origin {
                region: "eu".into(),
                offset: 4_096,
            },
            hlc: 77,
        }),
        ..NewRecord::default()
    };
    us.storage().append(vec![record]).await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the long poll was not woken by the replicated record")
        .unwrap()
        .unwrap();
    assert_eq!(ids(&received), ["eu-1"]);
    assert_eq!(received[0].record.origin.region, "eu");
    // Pull sees it as well.
    let pulled = us
        .broker
        .pull("g", "orders", 0, 0, 8, &Filter::all(), 0)
        .await
        .unwrap();
    assert_eq!(pulled.records.len(), 1);
    us.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_and_attempts_in_one_region_carry_over_to_the_other() {
    let (eu_dir, us_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(START_MS));
    let eu = Region::open(eu_dir.path(), "eu", &clock, 2);
    let us = Region::open(us_dir.path(), "us", &clock, 2);
    let sent = send_all(&eu, "m", 20).await;
    let received = receive_n(&eu.broker, &request("g", "orders", 32, 1_000), 20).await;
    let mut acked = Vec::new();
    let mut open = Vec::new();
    for message in &received {
        let index: usize = message.record.message_id[2..].parse().unwrap();
        if index.is_multiple_of(2) {
            eu.broker
                .ack("g", "orders", &message.receipt_handle)
                .await
                .unwrap();
            acked.push(message.record.message_id.clone());
        } else {
            open.push(message.record.message_id.clone());
        }
    }
    // 20 deliveries and 10 acks.
    wait_until("eu appended its 30 state records", || {
        eu.counters().emitted.load(Ordering::Relaxed) == 30
    })
    .await;
    assert_eq!(eu.counters().dropped.load(Ordering::Relaxed), 0);
    let copied = replicate(&eu, &us, |_| true).await;
    assert!(
        copied >= 50,
        "20 messages and 30 state records, copied {copied}"
    );
    wait_applied_all(&us, 30).await;
    assert_eq!(us.counters().applied.load(Ordering::Relaxed), 30);
    // The open ones are invisible in us as they are in eu; the acked ones are done.
    assert!(us.broker.receive(&no_wait("g")).await.unwrap().is_empty());
    clock.advance(INVISIBLE_MS + 1);
    let mut resumed = receive_n(&us.broker, &request("g", "orders", 32, 1_000), 10).await;
    assert!(
        us.broker.receive(&no_wait("g")).await.unwrap().is_empty(),
        "nothing beyond the unacked half"
    );
    resumed.sort_by(|a, b| a.record.message_id.cmp(&b.record.message_id));
    let mut expected = open.clone();
    expected.sort();
    assert_eq!(ids(&resumed), expected);
    assert!(
        resumed.iter().all(|message| message.delivery_attempt == 2),
        "the failover consumer continues with eu's attempt count"
    );
    assert_eq!(acked.len() + open.len(), sent.len());
    // us's own consumption goes back to eu the same way, and eu applies it.
    for message in &resumed {
        us.broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .unwrap();
    }
    wait_until("us appended its state records", || {
        us.counters().emitted.load(Ordering::Relaxed) == 20
    })
    .await;
    replicate(&us, &eu, |_| true).await;
    wait_applied_all(&eu, 50).await;
    assert_eq!(eu.counters().applied.load(Ordering::Relaxed), 20);
    clock.advance(2 * INVISIBLE_MS);
    assert!(
        eu.broker.receive(&no_wait("g")).await.unwrap().is_empty(),
        "eu saw us ack the rest"
    );
    eu.stop().await;
    us.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_record_ahead_of_its_message_waits_for_it() {
    let (eu_dir, us_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(START_MS));
    let eu = Region::open(eu_dir.path(), "eu", &clock, 1);
    let us = Region::open(us_dir.path(), "us", &clock, 1);
    send_all(&eu, "w", 4).await;
    for message in receive_n(&eu.broker, &request("g", "orders", 32, 1_000), 4).await {
        eu.broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .unwrap();
    }
    wait_until("eu appended its 8 state records", || {
        eu.counters().emitted.load(Ordering::Relaxed) == 8
    })
    .await;
    // The state records arrive first (as from a third region whose link is faster).
    assert_eq!(replicate(&eu, &us, is_state).await, 8);
    wait_applied_all(&us, 8).await;
    assert_eq!(us.counters().applied.load(Ordering::Relaxed), 0);
    // They wait, persisted, until their messages arrive.
    assert!(
        us.broker
            .get_state(super::replicated_state::WAITING_KEY)
            .unwrap()
            .is_some_and(|bytes| bytes.len() > 8)
    );
    replicate(&eu, &us, |_| true).await;
    wait_until("the waiting records applied", || {
        us.counters().applied.load(Ordering::Relaxed) == 8
    })
    .await;
    clock.advance(2 * INVISIBLE_MS);
    assert!(us.broker.receive(&no_wait("g")).await.unwrap().is_empty());
    eu.stop().await;
    us.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_translate_to_local_offsets_by_message_id() {
    let (eu_dir, us_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(START_MS));
    let eu = Region::open(eu_dir.path(), "eu", &clock, 1);
    let us = Region::open(us_dir.path(), "us", &clock, 1);
    // us holds 5 messages of its own first, so the same message has another offset there.
    send_all(&us, "local", 5).await;
    send_all(&eu, "c", 10).await;
    let pulled = eu
        .broker
        .pull("g", "orders", 0, 0, 32, &Filter::all(), 1_000)
        .await
        .unwrap();
    assert_eq!(pulled.records.len(), 10);
    eu.broker.commit_offset("g", "orders", 0, 7, None).unwrap();
    wait_until("eu appended the commit", || {
        eu.counters().emitted.load(Ordering::Relaxed) == 1
    })
    .await;
    replicate(&eu, &us, |_| true).await;
    wait_until("us applied the commit", || {
        us.counters().applied.load(Ordering::Relaxed) == 1
    })
    .await;
    // eu consumed c-0..c-6; in us they sit at 5..=11, so us resumes at 12.
    assert_eq!(
        us.broker.committed_offset("g", "orders", 0, None).unwrap(),
        Some(12)
    );
    let next = us
        .broker
        .pull("g", "orders", 0, 12, 1, &Filter::all(), 0)
        .await
        .unwrap();
    assert_eq!(next.records[0].message_id, "c-7");
    // A commit further back (a reset in eu) does not move us back.
    eu.broker.commit_offset("g", "orders", 0, 2, None).unwrap();
    wait_until("eu appended the second commit", || {
        eu.counters().emitted.load(Ordering::Relaxed) == 2
    })
    .await;
    replicate(&eu, &us, |_| true).await;
    wait_until("us applied the second commit", || {
        us.counters().applied.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(
        us.broker.committed_offset("g", "orders", 0, None).unwrap(),
        Some(12)
    );
    eu.stop().await;
    us.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_region_resumes_applying_where_it_stopped() {
    let (eu_dir, us_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(START_MS));
    let eu = Region::open(eu_dir.path(), "eu", &clock, 2);
    let us = Region::open(us_dir.path(), "us", &clock, 2);
    send_all(&eu, "r", 10).await;
    let received = receive_n(&eu.broker, &request("g", "orders", 32, 1_000), 10).await;
    for message in &received[..5] {
        eu.broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .unwrap();
    }
    wait_until("eu appended 15 state records", || {
        eu.counters().emitted.load(Ordering::Relaxed) == 15
    })
    .await;
    replicate(&eu, &us, |_| true).await;
    wait_applied_all(&us, 15).await;
    assert_eq!(us.counters().applied.load(Ordering::Relaxed), 15);
    us.stop().await;
    // eu goes on while us is down.
    for message in &received[5..] {
        eu.broker
            .ack("g", "orders", &message.receipt_handle)
            .await
            .unwrap();
    }
    wait_until("eu appended 5 more", || {
        eu.counters().emitted.load(Ordering::Relaxed) == 20
    })
    .await;
    let us = Region::open(us_dir.path(), "us", &clock, 2);
    replicate(&eu, &us, |_| true).await;
    wait_applied_all(&us, 20).await;
    assert_eq!(
        us.counters().applied.load(Ordering::Relaxed),
        5,
        "only the records that arrived after the restart are applied"
    );
    clock.advance(2 * INVISIBLE_MS);
    assert!(
        us.broker.receive(&no_wait("g")).await.unwrap().is_empty(),
        "all ten are done in us"
    );
    eu.stop().await;
    us.stop().await;
}
