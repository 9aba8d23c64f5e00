//! Tests of other regions' marks on the pop state (sans IO, hand-driven clock).

#![allow(clippy::unwrap_used)]

use super::*;
use crate::messaging::retry::Backoff;

const MAX_MARKS: usize = 100;

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_delivery_attempts: 3,
        backoff: Backoff::Fixed(500),
    }
}

#[test]
fn done_marks_at_the_cursor_move_it_without_reading() {
    let mut queue = PopQueue::new(0, 10);
    // Out of order: 12 waits until 10 and 11 are done too.
    queue.remote_done(12, MAX_MARKS);
    assert_eq!(queue.read_cursor(), 10);
    assert_eq!(queue.remote_marks(), 1);
    queue.remote_done(10, MAX_MARKS);
    assert_eq!(queue.read_cursor(), 11);
    queue.remote_done(11, MAX_MARKS);
    assert_eq!(queue.read_cursor(), 13, "10, 11 and 12 are all done");
    assert_eq!(queue.remote_marks(), 0);
    // Applying the same mark again changes nothing.
    let before = queue.clone();
    queue.remote_done(11, MAX_MARKS);
    assert_eq!(queue, before);
}

#[test]
fn marks_past_the_cursor_apply_when_the_record_is_admitted() {
    let mut queue = PopQueue::new(0, 0);
    queue.remote_attempt(0, 2, 5_000, MAX_MARKS);
    queue.remote_done(2, MAX_MARKS);
    for offset in 0..4 {
        queue.admit(offset, "", true);
    }
    assert_eq!(queue.remote_marks(), 0);
    assert!(queue.entry(2).is_none(), "done in the other region");
    let entry = queue.entry(0).unwrap();
    assert_eq!(entry.attempt, 2);
    assert_eq!(
        entry.state,
        EntryState::InFlight {
            invisible_until_ms: 5_000
        }
    );
    // Invisible as the other region left it: only 1 and 3 are deliverable now.
    let first: Vec<u64> = queue
        .deliver(1_000, 10, 10_000, false)
        .iter()
        .map(|delivery| delivery.offset)
        .collect();
    assert_eq!(first, [1, 3]);
    // After the deadline it comes back with the next attempt.
    queue.expire(5_000, &policy());
    let again = queue.deliver(5_000, 10, 10_000, false);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].offset, 0);
    assert_eq!(again[0].attempt, 3);
}

#[test]
fn marks_on_read_offsets_change_their_entries_and_never_go_back() {
    let mut queue = PopQueue::new(0, 0);
    queue.admit(0, "", true);
    queue.admit(1, "", true);
    queue.remote_attempt(1, 4, 9_000, MAX_MARKS);
    queue.remote_attempt(1, 2, 1_000, MAX_MARKS);
    assert_eq!(
        queue.entry(1).unwrap().attempt,
        4,
        "an older attempt is ignored"
    );
    queue.remote_done(0, MAX_MARKS);
    assert_eq!(queue.ack_floor(), 1);
    // A done message stays done whatever attempt record arrives after.
    queue.remote_attempt(0, 5, 1, MAX_MARKS);
    assert!(queue.entry(0).is_none());
    queue.remote_done(1, MAX_MARKS);
    assert_eq!(queue.ack_floor(), 2);
}

#[test]
fn marks_are_bounded_and_persisted() {
    let mut queue = PopQueue::new(0, 0);
    for offset in 1..=10 {
        queue.remote_done(offset * 2, 4);
    }
    assert_eq!(
        queue.remote_marks(),
        4,
        "the newest marks beyond the bound are dropped"
    );
    queue.remote_attempt(3, 1, 700, 5);
    let decoded = PopQueue::decode(&queue.encode()).unwrap();
    assert_eq!(decoded, queue);
    // Without marks the old format is written, so an older cell still reads the state.
    let plain = PopQueue::new(0, 7);
    assert_eq!(plain.encode()[0], 1);
    assert_eq!(PopQueue::decode(&plain.encode()).unwrap(), plain);
    // A reset drops the marks with everything else.
    queue.reset(50);
    assert_eq!(queue.remote_marks(), 0);
}
