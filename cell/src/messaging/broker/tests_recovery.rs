//! Restart tests written in review: a seeded random FIFO workload with restarts checked against
//! a model (order, attempts, nothing lost, dead letters exact), attempt counts and backoff across
//! restarts, acks and filters across restarts, and offset resets across restarts.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::tests::{
    INVISIBLE_MS, START_MS, fifo_message, ids, message, open_storage, receive_n, request,
    test_config, wait_queue_next,
};
use super::tests_restart::restart;
use super::*;
use crate::messaging::clock::{ManualClock, SystemClock};
use crate::messaging::filter::{Filter, FilterKind};
use crate::messaging::message::{PROP_DLQ_ATTEMPTS, ReceivedMessage};
use crate::messaging::names::dlq_topic;
use crate::messaging::retry::{Backoff, RetryPolicy};
use crate::messaging::topic::{GroupConfig, TopicMessageType};

/// xorshift64*: a seeded generator, so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Arc<Broker> {
    Broker::open(
        open_storage(dir),
        test_config(),
        clock.clone() as Arc<dyn Clock>,
    )
    .unwrap()
}

/// What the test knows about one message.
#[derive(Debug, Default)]
struct Model {
    group: usize,
    seq: usize,
    attempts: u32,
    in_flight: bool,
    invisible_until_ms: u64,
    /// After a nack: not to be delivered before this time (the backoff).
    ready_at_ms: u64,
    handle: String,
    acked: bool,
    dead: bool,
}

impl Model {
    /// Done for ordering purposes at `now_ms`: acked, dead-lettered, or out of attempts with its
    /// last invisibility over (the broker dead-letters it before it delivers from its queue).
    fn finished(&self, now_ms: u64, max_attempts: u32) -> bool {
        self.acked
            || self.dead
            || (self.in_flight
                && self.attempts >= max_attempts
                && self.invisible_until_ms <= now_ms)
    }

    /// Held by the test: delivered, not done, invisibility not over.
    fn in_hand(&self, now_ms: u64) -> bool {
        self.in_flight && !self.acked && !self.dead && self.invisible_until_ms > now_ms
    }
}

const MAX_ATTEMPTS: u32 = 3;
const BACKOFF_MS: u64 = 1_000;
const GROUPS: usize = 4;
const PER_GROUP: usize = 12;

/// Checks one delivery against the model and records it.
fn deliver(models: &mut BTreeMap<String, Model>, got: &ReceivedMessage, now_ms: u64, seed: u64) {
    let id = &got.record.message_id;
    let (group, seq) = {
        let model = &models[id];
        assert!(
            !model.acked && !model.dead,
            "seed {seed}: {id} delivered after it was done"
        );
        assert!(
            !model.in_hand(now_ms),
            "seed {seed}: {id} delivered while invisible"
        );
        assert!(
            now_ms >= model.ready_at_ms,
            "seed {seed}: {id} delivered during its backoff"
        );
        assert_eq!(
            got.delivery_attempt,
            model.attempts + 1,
            "seed {seed}: {id} attempt"
        );
        (model.group, model.seq)
    };
    for (other_id, other) in models.iter_mut() {
        if other.group == group && other.seq < seq {
            assert!(
                other.finished(now_ms, MAX_ATTEMPTS),
                "seed {seed}: {id} delivered while {other_id} of its message group is unfinished: {other:?}"
            );
            if !other.acked {
                other.dead = true;
            }
        }
    }
    let model = models.get_mut(id).unwrap();
    model.attempts = got.delivery_attempt;
    model.in_flight = true;
    model.invisible_until_ms = got.invisible_until_ms;
    model.handle = got.receipt_handle.clone();
}

/// Expiries at the last attempt become dead letters once the clock passed them.
fn settle_expired(models: &mut BTreeMap<String, Model>, now_ms: u64) {
    for model in models.values_mut() {
        if !model.acked && !model.dead && model.finished(now_ms, MAX_ATTEMPTS) {
            model.dead = true;
        }
    }
}

async fn random_fifo_run(seed: u64) {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut broker = open(dir.path(), &clock);
    broker
        .create_topic("orders", 2, TopicMessageType::Fifo)
        .unwrap();
    let mut group = GroupConfig::new("g", true);
    group.retry = RetryPolicy {
        max_delivery_attempts: MAX_ATTEMPTS,
        backoff: Backoff::Fixed(BACKOFF_MS),
    };
    broker.create_group(group).unwrap();
    let mut models = BTreeMap::new();
    let mut sent = Vec::new();
    for seq in 0..PER_GROUP {
        for group in 0..GROUPS {
            let id = format!("G{group}-{seq:02}");
            sent.push(fifo_message("orders", &id, &format!("G{group}")));
            models.insert(
                id,
                Model {
                    group,
                    seq,
                    ..Model::default()
                },
            );
        }
    }
    let receipts = broker.send(sent).await.unwrap();
    for queue_id in 0..2 {
        let stored = receipts.iter().filter(|r| r.queue_id == queue_id).count();
        wait_queue_next(&broker, "orders", queue_id, stored as u64).await;
    }
    let mut restarts = 0;
    for _ in 0..500 {
        let now = clock.now_ms();
        let in_hand: Vec<String> = models
            .iter()
            .filter(|(_, model)| model.in_hand(now))
            .map(|(id, _)| id.clone())
            .collect();
        let pick = |rng: &mut Rng| {
            (!in_hand.is_empty()).then(|| in_hand[rng.below(in_hand.len() as u64) as usize].clone())
        };
        match rng.below(100) {
            0..35 => {
                let mut wanted = request("g", "orders", 1 + rng.below(4) as usize, 0);
                wanted.invisible_duration_ms = INVISIBLE_MS;
                for got in broker.receive(&wanted).await.unwrap() {
                    deliver(&mut models, &got, now, seed);
                }
            }
            35..60 => {
                if let Some(id) = pick(&mut rng) {
                    let handle = models[&id].handle.clone();
                    broker.ack("g", "orders", &handle).await.unwrap();
                    models.get_mut(&id).unwrap().acked = true;
                }
            }
            60..70 => {
                if let Some(id) = pick(&mut rng) {
                    let model = models.get_mut(&id).unwrap();
                    let dead = broker.nack("g", "orders", &model.handle).await.unwrap();
                    assert_eq!(dead, model.attempts >= MAX_ATTEMPTS, "seed {seed}: {id}");
                    model.dead = dead;
                    model.in_flight = false;
                    model.ready_at_ms = now + BACKOFF_MS;
                }
            }
            70..75 => {
                if let Some(id) = pick(&mut rng) {
                    let model = models.get_mut(&id).unwrap();
                    model.handle = broker
                        .change_invisible_duration("g", "orders", &model.handle, INVISIBLE_MS)
                        .await
                        .unwrap();
                    model.invisible_until_ms = now + INVISIBLE_MS;
                }
            }
            75..96 => clock.advance(rng.below(INVISIBLE_MS / 2)),
            _ => {
                broker = restart(broker, dir.path(), &clock);
                restarts += 1;
            }
        }
    }
    // Drain: everything left comes back in order and is acked.
    for _ in 0..400 {
        let now = clock.now_ms();
        settle_expired(&mut models, now);
        if models.values().all(|model| model.acked || model.dead) {
            break;
        }
        let got = broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap();
        for one in &got {
            deliver(&mut models, one, now, seed);
        }
        for one in &got {
            broker
                .ack("g", "orders", &one.receipt_handle)
                .await
                .unwrap();
            models.get_mut(&one.record.message_id).unwrap().acked = true;
        }
        if got.is_empty() {
            clock.advance(INVISIBLE_MS + BACKOFF_MS);
        }
    }
    // One more look at every queue: the broker dead-letters expired last attempts lazily.
    assert!(
        broker
            .receive(&request("g", "orders", 32, 0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        models.values().all(|model| model.acked ^ model.dead),
        "seed {seed}: every message acked or dead-lettered, not both: {models:?}"
    );
    // The dead-letter queue holds exactly the dead ones, once each.
    let dead: BTreeSet<&str> = models
        .iter()
        .filter(|(_, model)| model.dead)
        .map(|(id, _)| id.as_str())
        .collect();
    let dlq = dlq_topic("g");
    if !dead.is_empty() {
        wait_queue_next(&broker, &dlq, 0, dead.len() as u64).await;
    }
    let stored = broker
        .storage()
        .read_queue(&dlq, 0, 0, 1_000, usize::MAX)
        .unwrap_or_default();
    let stored_ids: Vec<&str> = stored.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(
        stored_ids.iter().copied().collect::<BTreeSet<_>>(),
        dead,
        "seed {seed}"
    );
    assert_eq!(stored_ids.len(), dead.len(), "seed {seed}: no duplicates");
    eprintln!(
        "seed {seed}: {restarts} restarts, {} acked, {} dead-lettered",
        models.len() - dead.len(),
        dead.len()
    );
}

#[tokio::test]
async fn random_fifo_workload_with_restarts_keeps_order_and_loses_nothing() {
    for seed in [1, 0x5eed, 0xdead_beef, 42, 7_777] {
        random_fifo_run(seed).await;
    }
}

/// Attempts and backoff are part of the persisted state: a restart neither grants extra
/// deliveries nor shortens a nack's backoff, and the dead letter records every attempt.
#[tokio::test]
async fn attempt_counts_and_backoff_survive_restarts_until_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut broker = open(dir.path(), &clock);
    broker
        .create_topic("orders", 1, TopicMessageType::Normal)
        .unwrap();
    let mut group = GroupConfig::new("g", false);
    group.retry = RetryPolicy {
        max_delivery_attempts: 3,
        backoff: Backoff::Fixed(5_000),
    };
    broker.create_group(group).unwrap();
    broker.create_group(GroupConfig::new("dlq", false)).unwrap();
    broker.send(vec![message("orders", "m")]).await.unwrap();
    let first = receive_n(&broker, &request("g", "orders", 1, 2_000), 1).await;
    assert_eq!(first[0].delivery_attempt, 1);
    broker = restart(broker, dir.path(), &clock);
    clock.advance(INVISIBLE_MS);
    let second = broker.receive(&request("g", "orders", 1, 0)).await.unwrap();
    assert_eq!(second[0].delivery_attempt, 2);
    assert!(
        !broker
            .nack("g", "orders", &second[0].receipt_handle)
            .await
            .unwrap()
    );
    broker = restart(broker, dir.path(), &clock);
    clock.advance(4_999);
    assert!(
        broker
            .receive(&request("g", "orders", 1, 0))
            .await
            .unwrap()
            .is_empty(),
        "still backing off after the restart"
    );
    clock.advance(1);
    let third = broker.receive(&request("g", "orders", 1, 0)).await.unwrap();
    assert_eq!(third[0].delivery_attempt, 3);
    broker = restart(broker, dir.path(), &clock);
    clock.advance(INVISIBLE_MS);
    assert!(
        broker
            .receive(&request("g", "orders", 1, 0))
            .await
            .unwrap()
            .is_empty(),
        "the third attempt was the last"
    );
    broker = restart(broker, dir.path(), &clock);
    let dead = receive_n(&broker, &request("dlq", &dlq_topic("g"), 32, 2_000), 1).await;
    assert_eq!(ids(&dead), ["m"]);
    assert_eq!(
        dead[0]
            .record
            .properties
            .get(PROP_DLQ_ATTEMPTS)
            .map(String::as_str),
        Some("3")
    );
    clock.advance(10 * INVISIBLE_MS);
    assert!(
        broker
            .receive(&request("g", "orders", 1, 0))
            .await
            .unwrap()
            .is_empty(),
        "dead-lettered once, never redelivered"
    );
}

/// Acks and filter skips are durable; only unacked matching messages come back, each once.
#[tokio::test]
async fn acks_and_filter_skips_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut broker = open(dir.path(), &clock);
    broker
        .create_topic("orders", 4, TopicMessageType::Normal)
        .unwrap();
    broker.create_group(GroupConfig::new("g", false)).unwrap();
    broker.create_group(GroupConfig::new("a", false)).unwrap();
    let count = 200usize;
    let sent: Vec<_> = (0..count)
        .map(|index| {
            let mut one = message("orders", &format!("m{index:03}"));
            one.tags = if index.is_multiple_of(3) { "A" } else { "B" }.to_string();
            one
        })
        .collect();
    let receipts = broker.send(sent).await.unwrap();
    for queue_id in 0..4 {
        let stored = receipts.iter().filter(|r| r.queue_id == queue_id).count();
        wait_queue_next(&broker, "orders", queue_id, stored as u64).await;
    }
    let all = receive_n(&broker, &request("g", "orders", 32, 0), count).await;
    let mut kept = BTreeSet::new();
    for one in &all {
        let index: usize = one.record.message_id[1..].parse().unwrap();
        if index.is_multiple_of(2) {
            broker
                .ack("g", "orders", &one.receipt_handle)
                .await
                .unwrap();
        } else {
            kept.insert(one.record.message_id.clone());
        }
    }
    let mut only_a = request("a", "orders", 32, 0);
    only_a.filter = Filter::parse(FilterKind::Tag, "A").unwrap();
    let first_a = receive_n(&broker, &only_a, 20).await;
    for one in &first_a {
        broker
            .ack("a", "orders", &one.receipt_handle)
            .await
            .unwrap();
    }
    broker = restart(broker, dir.path(), &clock);
    clock.advance(INVISIBLE_MS);
    let again = receive_n(&broker, &request("g", "orders", 32, 0), kept.len()).await;
    assert_eq!(
        ids(&again).into_iter().collect::<BTreeSet<_>>(),
        kept,
        "exactly the unacked ones"
    );
    assert!(again.iter().all(|one| one.delivery_attempt == 2));
    let rest_a = receive_n(&broker, &only_a, count.div_ceil(3) - 20).await;
    let mut seen_a: Vec<String> = ids(&first_a);
    seen_a.extend(ids(&rest_a));
    assert!(
        seen_a
            .iter()
            .all(|id| id[1..].parse::<usize>().unwrap().is_multiple_of(3)),
        "only tag A"
    );
    assert_eq!(
        seen_a.iter().collect::<BTreeSet<_>>().len(),
        seen_a.len(),
        "no A message twice"
    );
    assert!(
        broker.receive(&only_a).await.unwrap().is_empty(),
        "skipped B messages stay skipped"
    );
}

/// A reset to a point in time takes effect at once and survives a restart; handles from before
/// the reset stay stale after the restart.
#[tokio::test]
async fn offset_reset_to_a_time_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut broker = open(dir.path(), &clock);
    broker
        .create_topic("orders", 1, TopicMessageType::Normal)
        .unwrap();
    broker.create_group(GroupConfig::new("g", false)).unwrap();
    broker
        .send(
            (0..4)
                .map(|i| message("orders", &format!("old{i}")))
                .collect(),
        )
        .await
        .unwrap();
    wait_queue_next(&broker, "orders", 0, 4).await;
    let old_stored_ms = broker
        .storage()
        .read_queue("orders", 0, 3, 1, usize::MAX)
        .unwrap()[0]
        .store_timestamp_ms;
    // Store times come from the storage's clock; wait (bounded) until it has moved past them.
    for _ in 0..1_000 {
        if SystemClock.now_ms() > old_stored_ms {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    broker
        .send(
            (0..4)
                .map(|i| message("orders", &format!("new{i}")))
                .collect(),
        )
        .await
        .unwrap();
    wait_queue_next(&broker, "orders", 0, 8).await;
    let before = receive_n(&broker, &request("g", "orders", 32, 0), 8).await;
    let cut_ms = broker
        .storage()
        .read_queue("orders", 0, 4, 1, usize::MAX)
        .unwrap()[0]
        .store_timestamp_ms;
    assert!(cut_ms > old_stored_ms);
    broker
        .reset_offsets_to_time("g", "orders", cut_ms)
        .await
        .unwrap();
    broker = restart(broker, dir.path(), &clock);
    assert_eq!(
        broker.committed_offset("g", "orders", 0, None).unwrap(),
        Some(4)
    );
    let after = receive_n(&broker, &request("g", "orders", 32, 0), 4).await;
    assert_eq!(ids(&after), ["new0", "new1", "new2", "new3"]);
    assert!(after.iter().all(|one| one.delivery_attempt == 1));
    for one in &before {
        assert_eq!(
            broker
                .ack("g", "orders", &one.receipt_handle)
                .await
                .unwrap_err()
                .rocketmq_code(),
            40013,
            "{}",
            one.record.message_id
        );
    }
}

/// Broadcasting: every member reads every message through its own offsets, which survive a
/// restart independently.
#[tokio::test]
async fn broadcast_members_each_get_every_message_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut broker = open(dir.path(), &clock);
    broker
        .create_topic("orders", 2, TopicMessageType::Normal)
        .unwrap();
    let mut group = GroupConfig::new("fanout", false);
    group.model = crate::messaging::topic::ConsumptionModel::Broadcasting;
    broker.create_group(group).unwrap();
    let receipts = broker
        .send(
            (0..6)
                .map(|i| message("orders", &format!("m{i}")))
                .collect(),
        )
        .await
        .unwrap();
    for queue_id in 0..2 {
        let stored = receipts.iter().filter(|r| r.queue_id == queue_id).count();
        wait_queue_next(&broker, "orders", queue_id, stored as u64).await;
    }
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for client in ["c1", "c2"] {
        broker.heartbeat("fanout", client).unwrap();
    }
    for round in 0..2 {
        for client in ["c1", "c2"] {
            broker.heartbeat("fanout", client).unwrap();
            for queue_id in broker.assignment("fanout", "orders", client).unwrap() {
                let from = broker
                    .committed_offset("fanout", "orders", queue_id, Some(client))
                    .unwrap()
                    .unwrap_or(0);
                // c2 takes one message per pull, so it is part-way through at the restart.
                let max = if client == "c2" { 1 } else { 32 };
                let pulled = broker
                    .pull("fanout", "orders", queue_id, from, max, &Filter::all(), 0)
                    .await
                    .unwrap();
                for record in &pulled.records {
                    assert!(
                        seen.entry(client)
                            .or_default()
                            .insert(record.message_id.clone()),
                        "{client} got {} twice",
                        record.message_id
                    );
                }
                broker
                    .commit_offset(
                        "fanout",
                        "orders",
                        queue_id,
                        pulled.next_offset,
                        Some(client),
                    )
                    .unwrap();
            }
        }
        if round == 0 {
            broker = restart(broker, dir.path(), &clock);
        }
    }
    // c2 finishes after the restart.
    for _ in 0..10 {
        for queue_id in 0..2 {
            let from = broker
                .committed_offset("fanout", "orders", queue_id, Some("c2"))
                .unwrap()
                .unwrap_or(0);
            let pulled = broker
                .pull("fanout", "orders", queue_id, from, 1, &Filter::all(), 0)
                .await
                .unwrap();
            for record in &pulled.records {
                assert!(
                    seen.entry("c2")
                        .or_default()
                        .insert(record.message_id.clone())
                );
            }
            broker
                .commit_offset("fanout", "orders", queue_id, pulled.next_offset, Some("c2"))
                .unwrap();
        }
    }
    let all: BTreeSet<String> = (0..6).map(|i| format!("m{i}")).collect();
    assert_eq!(seen["c1"], all);
    assert_eq!(seen["c2"], all);
}
