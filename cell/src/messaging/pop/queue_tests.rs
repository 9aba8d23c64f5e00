//! Tests of the pop consumption state machine with a hand-driven clock.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::messaging::retry::Backoff;

const INVISIBLE_MS: u64 = 10_000;

fn policy(max_delivery_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_delivery_attempts,
        backoff: Backoff::Fixed(500),
    }
}

fn queue_with(groups: &[&str]) -> PopQueue {
    let mut queue = PopQueue::new(3, 100);
    for (index, group) in groups.iter().enumerate() {
        queue.admit(100 + index as u64, group, true);
    }
    queue
}

fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|delivery| delivery.offset).collect()
}

#[test]
fn delivers_in_order_and_ack_finishes() {
    let mut queue = queue_with(&["", "", ""]);
    let first = queue.deliver(0, 2, INVISIBLE_MS, false);
    assert_eq!(offsets(&first), [100, 101]);
    assert_eq!(first[0].attempt, 1);
    assert_eq!(first[0].invisible_until_ms, INVISIBLE_MS);
    assert_eq!(first[0].handle.queue_id, 3);
    // In-flight messages are not handed out again while invisible.
    assert_eq!(offsets(&queue.deliver(1, 10, INVISIBLE_MS, false)), [102]);
    assert!(queue.deliver(2, 10, INVISIBLE_MS, false).is_empty());
    queue.ack(&first[1].handle).unwrap();
    assert_eq!(queue.ack_floor(), 100, "offset 100 is still unfinished");
    queue.ack(&first[0].handle).unwrap();
    assert_eq!(queue.ack_floor(), 102);
    // A second ack of the same handle is refused: the message is no longer in flight.
    assert!(matches!(
        queue.ack(&first[0].handle),
        Err(MessagingError::InvalidReceiptHandle { .. })
    ));
}

#[test]
fn expired_invisibility_redelivers_with_next_attempt_and_stales_old_handle() {
    let mut queue = queue_with(&[""]);
    let retry = policy(5);
    let first = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    assert!(queue.expire(INVISIBLE_MS - 1, &retry).is_empty());
    assert!(
        queue
            .deliver(INVISIBLE_MS - 1, 1, INVISIBLE_MS, false)
            .is_empty(),
        "still invisible"
    );
    assert!(queue.expire(INVISIBLE_MS, &retry).is_empty());
    let second = queue
        .deliver(INVISIBLE_MS, 1, INVISIBLE_MS, false)
        .remove(0);
    assert_eq!((second.offset, second.attempt), (100, 2));
    assert!(matches!(
        queue.ack(&first.handle),
        Err(MessagingError::StaleReceiptHandle { current_attempt: 2 })
    ));
    queue.ack(&second.handle).unwrap();
    assert_eq!(queue.unfinished(), 0);
}

#[test]
fn expired_but_not_redelivered_handle_may_still_ack() {
    let mut queue = queue_with(&[""]);
    let first = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    queue.expire(INVISIBLE_MS + 5, &policy(5));
    queue.ack(&first.handle).unwrap();
    assert!(
        queue
            .deliver(INVISIBLE_MS + 6, 1, INVISIBLE_MS, false)
            .is_empty()
    );
}

#[test]
fn last_attempt_goes_to_dead_letter() {
    let mut queue = queue_with(&[""]);
    let retry = policy(2);
    let first = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    assert_eq!(first.attempt, 1);
    assert!(queue.expire(INVISIBLE_MS, &retry).is_empty());
    let second = queue
        .deliver(INVISIBLE_MS, 1, INVISIBLE_MS, false)
        .remove(0);
    assert_eq!(second.attempt, 2);
    assert_eq!(queue.expire(2 * INVISIBLE_MS, &retry), [100]);
    assert_eq!(queue.dead_lettering(), [100]);
    assert!(
        queue
            .deliver(2 * INVISIBLE_MS, 5, INVISIBLE_MS, false)
            .is_empty(),
        "dead-lettering is not delivered"
    );
    assert!(matches!(
        queue.ack(&second.handle),
        Err(MessagingError::InvalidReceiptHandle { .. })
    ));
    queue.dead_lettered(100);
    assert_eq!((queue.unfinished(), queue.ack_floor()), (0, 101));
}

#[test]
fn change_invisible_issues_a_new_handle_and_moves_the_deadline() {
    let mut queue = queue_with(&[""]);
    let first = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    let changed = queue
        .change_invisible(&first.handle, 5_000, 60_000)
        .unwrap();
    assert_eq!((changed.attempt, changed.invisible_until_ms), (1, 65_000));
    assert_ne!(changed.handle, first.handle);
    assert!(matches!(
        queue.ack(&first.handle),
        Err(MessagingError::StaleReceiptHandle { .. })
    ));
    queue.expire(INVISIBLE_MS, &policy(5));
    assert!(
        queue
            .deliver(INVISIBLE_MS, 1, INVISIBLE_MS, false)
            .is_empty(),
        "the old deadline no longer applies"
    );
    assert_eq!(queue.next_wakeup_ms(INVISIBLE_MS), Some(65_000));
    queue.ack(&changed.handle).unwrap();
}

#[test]
fn nack_backs_off_then_dead_letters_on_last_attempt() {
    let mut queue = queue_with(&[""]);
    let retry = policy(2);
    let first = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    assert!(!queue.nack(&first.handle, 100, &retry).unwrap());
    assert!(
        queue.deliver(599, 1, INVISIBLE_MS, false).is_empty(),
        "backoff of 500 ms not over"
    );
    let second = queue.deliver(600, 1, INVISIBLE_MS, false).remove(0);
    assert_eq!(second.attempt, 2);
    assert!(queue.nack(&second.handle, 700, &retry).unwrap());
    assert_eq!(queue.dead_lettering(), [100]);
}

#[test]
fn fifo_holds_a_group_until_the_previous_message_is_done() {
    // Offsets 100..=104 in groups A, B, A, B, C.
    let mut queue = queue_with(&["A", "B", "A", "B", "C"]);
    let retry = policy(2);
    let first = queue.deliver(0, 10, INVISIBLE_MS, true);
    assert_eq!(
        offsets(&first),
        [100, 101, 104],
        "one message per group; groups proceed in parallel"
    );
    assert!(queue.deliver(1, 10, INVISIBLE_MS, true).is_empty());
    queue.ack(&first[1].handle).unwrap();
    queue.ack(&first[2].handle).unwrap();
    let b_next = queue.deliver(2, 10, INVISIBLE_MS, true);
    assert_eq!(offsets(&b_next), [103], "B advances without waiting for A");
    queue.ack(&b_next[0].handle).unwrap();
    // A's head expires and is redelivered before A's next message.
    assert!(queue.expire(INVISIBLE_MS, &retry).is_empty());
    let again = queue.deliver(INVISIBLE_MS, 10, INVISIBLE_MS, true);
    assert_eq!(offsets(&again), [100]);
    assert_eq!(again[0].attempt, 2);
    // Its last attempt expires: while it is being dead-lettered, A still waits.
    assert_eq!(queue.expire(2 * INVISIBLE_MS, &retry), [100]);
    assert!(
        queue
            .deliver(2 * INVISIBLE_MS, 10, INVISIBLE_MS, true)
            .is_empty()
    );
    queue.dead_lettered(100);
    assert_eq!(
        offsets(&queue.deliver(2 * INVISIBLE_MS, 10, INVISIBLE_MS, true)),
        [102]
    );
}

#[test]
fn non_fifo_mode_ignores_groups_and_filtered_records_finish_at_once() {
    let mut queue = PopQueue::new(0, 0);
    queue.admit(0, "A", true);
    queue.admit(1, "A", false);
    queue.admit(2, "A", true);
    assert_eq!(queue.read_cursor(), 3);
    assert_eq!(offsets(&queue.deliver(0, 10, INVISIBLE_MS, false)), [0, 2]);
    assert!(queue.wants_records(3));
    assert!(!queue.wants_records(2));
}

#[test]
fn persisted_state_round_trips_and_keeps_handles_valid() {
    let mut queue = queue_with(&["A", "A", "B", ""]);
    let retry = policy(3);
    let delivered = queue.deliver(0, 10, INVISIBLE_MS, true);
    let _ = queue.nack(&delivered[1].handle, 5, &retry).unwrap();
    let mut restored = PopQueue::decode(&queue.encode()).unwrap();
    assert_eq!(restored, queue);
    // A handle issued before the restart still acks, and new nonces never repeat old ones.
    restored.ack(&delivered[0].handle).unwrap();
    let next = restored.deliver(10, 10, INVISIBLE_MS, true);
    assert!(
        next.iter()
            .all(|d| d.handle.nonce > delivered.iter().map(|d| d.handle.nonce).max().unwrap())
    );
    assert!(PopQueue::decode(&queue.encode()[..10]).is_none());
    let mut garbage = queue.encode();
    garbage.push(0);
    assert!(PopQueue::decode(&garbage).is_none());
}

#[test]
fn retention_skip_drops_vanished_entries() {
    let mut queue = queue_with(&["", "", ""]);
    queue.skip_to(102);
    assert_eq!(queue.ack_floor(), 102);
    queue.skip_to(200);
    assert_eq!((queue.read_cursor(), queue.unfinished()), (200, 0));
}

#[test]
fn reset_keeps_the_nonce_counter_so_old_handles_stay_stale() {
    let mut queue = queue_with(&["", ""]);
    let before = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    queue.reset(100);
    queue.admit(100, "", true);
    let after = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    assert_eq!((after.offset, after.attempt), (before.offset, 1));
    assert_ne!(after.handle, before.handle);
    assert!(matches!(
        queue.ack(&before.handle),
        Err(MessagingError::StaleReceiptHandle { .. })
    ));
    queue.ack(&after.handle).unwrap();
}

#[test]
fn handles_of_another_scope_or_queue_are_refused() {
    let mut queue = PopQueue::new(3, 100).with_scope(7);
    queue.admit(100, "", true);
    let delivery = queue.deliver(0, 1, INVISIBLE_MS, false).remove(0);
    assert_eq!(delivery.handle.scope, 7);
    for foreign in [
        ReceiptHandle {
            scope: 8,
            ..delivery.handle
        },
        ReceiptHandle {
            queue_id: 4,
            ..delivery.handle
        },
    ] {
        assert!(matches!(
            queue.ack(&foreign),
            Err(MessagingError::InvalidReceiptHandle { .. })
        ));
    }
    let renewed = queue
        .change_invisible(&delivery.handle, 1, INVISIBLE_MS)
        .unwrap();
    assert_eq!(renewed.handle.scope, 7, "a renewed handle keeps its scope");
    queue.ack(&renewed.handle).unwrap();
}

#[test]
fn the_change_count_moves_exactly_when_the_persisted_content_may_change() {
    let retry = policy(2);
    let mut queue = queue_with(&["A", "A"]);
    let mut last = queue.changes();
    let mut moved = |queue: &PopQueue| {
        let now = queue.changes();
        let moved = now != last;
        last = now;
        moved
    };
    assert!(!moved(&queue));
    let first = queue.deliver(0, 10, INVISIBLE_MS, true);
    assert_eq!(first.len(), 1);
    assert!(moved(&queue), "a delivery");
    assert!(queue.deliver(1, 10, INVISIBLE_MS, true).is_empty());
    assert!(queue.expire(1, &retry).is_empty());
    let _ = queue.next_wakeup_ms(1);
    let _ = queue.encode();
    assert!(!moved(&queue), "looking changes nothing");
    assert!(queue.expire(INVISIBLE_MS, &retry).is_empty());
    assert!(moved(&queue), "an expiry");
    let second = queue.deliver(INVISIBLE_MS, 1, INVISIBLE_MS, true).remove(0);
    assert!(moved(&queue));
    assert!(queue.nack(&second.handle, INVISIBLE_MS, &retry).unwrap());
    assert!(moved(&queue), "a nack to dead-lettering");
    queue.dead_lettered(second.offset);
    assert!(moved(&queue), "a dead letter confirmed");
    let third = queue.deliver(INVISIBLE_MS, 1, INVISIBLE_MS, true).remove(0);
    assert!(moved(&queue));
    queue.ack(&third.handle).unwrap();
    assert!(moved(&queue), "an ack");
    queue.skip_to(0);
    assert!(!moved(&queue), "a skip below everything");
    queue.admit(102, "", false);
    assert!(moved(&queue), "a filtered record moves the cursor");
    queue.reset(50);
    assert!(moved(&queue), "a reset");
}

mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Admit { group: u8, matches: bool },
        Deliver { max: usize },
        Ack { pick: usize },
        Nack { pick: usize },
        Advance { by_ms: u64 },
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, proptest::bool::weighted(0.9))
                .prop_map(|(group, matches)| Op::Admit { group, matches }),
            (1usize..4).prop_map(|max| Op::Deliver { max }),
            any::<usize>().prop_map(|pick| Op::Ack { pick }),
            any::<usize>().prop_map(|pick| Op::Nack { pick }),
            (0u64..25_000).prop_map(|by_ms| Op::Advance { by_ms }),
            Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Whatever happens, a FIFO group never has two messages out at once, a message is
        /// first delivered only after every older message of its group is finished, and the
        /// state survives encoding.
        #[test]
        fn fifo_order_holds_under_any_interleaving(ops in proptest::collection::vec(op(), 1..120)) {
            let retry = RetryPolicy { max_delivery_attempts: 3, backoff: Backoff::Fixed(1_000) };
            let mut queue = PopQueue::new(0, 0);
            let mut now = 0u64;
            let mut next_offset = 0u64;
            let mut group_of: BTreeMap<u64, u8> = BTreeMap::new();
            let mut finished: BTreeSet<u64> = BTreeSet::new();
            let mut outstanding: Vec<Delivery> = Vec::new();
            for op in ops {
                match op {
                    Op::Admit { group, matches } => {
                        queue.admit(next_offset, &format!("g{group}"), matches);
                        if matches {
                            group_of.insert(next_offset, group);
                        } else {
                            finished.insert(next_offset);
                        }
                        next_offset += 1;
                    }
                    Op::Deliver { max } => {
                        for offset in queue.expire(now, &retry) {
                            queue.dead_lettered(offset);
                            finished.insert(offset);
                        }
                        for delivery in queue.deliver(now, max, INVISIBLE_MS, true) {
                            let group = group_of[&delivery.offset];
                            for (older, older_group) in group_of.range(..delivery.offset) {
                                prop_assert!(
                                    *older_group != group || finished.contains(older),
                                    "offset {} delivered while older {} of its group is unfinished",
                                    delivery.offset,
                                    older
                                );
                            }
                            prop_assert!(!finished.contains(&delivery.offset));
                            outstanding.push(delivery);
                        }
                    }
                    Op::Ack { pick } if !outstanding.is_empty() => {
                        let delivery = outstanding.remove(pick % outstanding.len());
                        if queue.ack(&delivery.handle).is_ok() {
                            finished.insert(delivery.offset);
                        }
                    }
                    Op::Nack { pick } if !outstanding.is_empty() => {
                        let delivery = outstanding.remove(pick % outstanding.len());
                        if let Ok(true) = queue.nack(&delivery.handle, now, &retry) {
                            queue.dead_lettered(delivery.offset);
                            finished.insert(delivery.offset);
                        }
                    }
                    Op::Ack { .. } | Op::Nack { .. } => {}
                    Op::Advance { by_ms } => now += by_ms,
                    Op::Restart => {
                        let restored = PopQueue::decode(&queue.encode());
                        prop_assert_eq!(restored.as_ref(), Some(&queue));
                        if let Some(restored) = restored {
                            queue = restored;
                        }
                    }
                }
                // At most one message per group is in flight or being dead-lettered.
                let mut busy = BTreeSet::new();
                for (offset, group) in &group_of {
                    if let Some(entry) = queue.entry(*offset)
                        && !matches!(entry.state, EntryState::Ready { .. })
                    {
                        prop_assert!(busy.insert(*group), "group {} has two messages out", group);
                    }
                }
                prop_assert_eq!(queue.ack_floor(), (0..next_offset).find(|o| !finished.contains(o)).unwrap_or(next_offset));
            }
        }
    }
}
