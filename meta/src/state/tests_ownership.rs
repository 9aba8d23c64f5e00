//! Unit tests of FIFO message-group ownership, the change log and snapshot serialisation.

#![allow(clippy::unwrap_used)]

use super::tests::{apply, apply_at, err, group, region, seeded};
use super::*;

fn ledger_key(message_group: &str) -> MessageGroupKey {
    MessageGroupKey {
        topic: "ledger".into(),
        consumer_group: "g".into(),
        message_group: message_group.into(),
    }
}

#[test]
fn message_group_ownership_is_exclusive_until_the_lease_ends() {
    let mut state = seeded();
    apply(
        &mut state,
        Command::PutConsumerGroup {
            group: group("g", &["ledger", "orders"]),
        },
    )
    .unwrap();
    let claim = |owner: &str| Command::ClaimMessageGroup {
        key: ledger_key("acct-1"),
        owner: owner.into(),
        lease_ms: 1_000,
    };
    assert_eq!(
        apply_at(&mut state, 10_000, claim("c1")).unwrap().outcome,
        Outcome::Epoch { epoch: 1 }
    );
    assert!(matches!(
        err(apply_at(&mut state, 10_500, claim("c2"))),
        MetaError::MessageGroupOwned { .. }
    ));
    // Renewal by the owner keeps the epoch and extends the lease.
    assert_eq!(
        apply_at(&mut state, 10_900, claim("c1")).unwrap().outcome,
        Outcome::Epoch { epoch: 1 }
    );
    assert_eq!(
        state
            .message_group(&ledger_key("acct-1"))
            .unwrap()
            .lease_until_ms,
        11_900
    );
    // After the lease, another consumer takes over with a new epoch.
    assert_eq!(
        apply_at(&mut state, 11_900, claim("c2")).unwrap().outcome,
        Outcome::Epoch { epoch: 2 }
    );
    let release = Command::ReleaseMessageGroup {
        key: ledger_key("acct-1"),
        owner: "c1".into(),
    };
    assert!(matches!(
        err(apply(&mut state, release)),
        MetaError::NotMessageGroupOwner { .. }
    ));
    apply(
        &mut state,
        Command::ReleaseMessageGroup {
            key: ledger_key("acct-1"),
            owner: "c2".into(),
        },
    )
    .unwrap();
    assert!(state.message_group(&ledger_key("acct-1")).is_none());
}

#[test]
fn message_groups_only_on_subscribed_fifo_topics() {
    let mut state = seeded();
    apply(
        &mut state,
        Command::PutConsumerGroup {
            group: group("g", &["orders"]),
        },
    )
    .unwrap();
    let not_fifo = MessageGroupKey {
        topic: "orders".into(),
        consumer_group: "g".into(),
        message_group: "m".into(),
    };
    let claim = Command::ClaimMessageGroup {
        key: not_fifo,
        owner: "c1".into(),
        lease_ms: 1_000,
    };
    assert_eq!(
        err(apply(&mut state, claim)),
        MetaError::NotFifoTopic {
            topic: "orders".into()
        }
    );
    let claim = Command::ClaimMessageGroup {
        key: ledger_key("m"),
        owner: "c1".into(),
        lease_ms: 1_000,
    };
    assert!(matches!(
        err(apply(&mut state, claim)),
        MetaError::NotSubscribed { .. }
    ));
    apply(
        &mut state,
        Command::PutConsumerGroup {
            group: group("g", &["orders", "ledger"]),
        },
    )
    .unwrap();
    let too_long = Command::ClaimMessageGroup {
        key: ledger_key("m"),
        owner: "c1".into(),
        lease_ms: 3_600_000,
    };
    assert!(matches!(
        err(apply(&mut state, too_long)),
        MetaError::LimitExceeded { .. }
    ));
    apply(
        &mut state,
        Command::ClaimMessageGroup {
            key: ledger_key("m"),
            owner: "c1".into(),
            lease_ms: 1_000,
        },
    )
    .unwrap();
    // Unsubscribing drops the ownership in the same revision.
    let applied = apply(
        &mut state,
        Command::PutConsumerGroup {
            group: group("g", &["orders"]),
        },
    )
    .unwrap();
    assert!(state.message_group(&ledger_key("m")).is_none());
    let Since::Changes(changes) = state.changes_since(applied.revision - 1, 10) else {
        panic!("expected changes")
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].updates.len(),
        2,
        "group update and ownership drop share one revision"
    );
}

#[test]
fn change_log_resumes_without_gaps_and_reports_compaction() {
    let mut state = State::new(Limits::default(), 3);
    for name in ["r1", "r2", "r3", "r4", "r5"] {
        apply(&mut state, region(name)).unwrap();
    }
    assert_eq!(state.revision(), 5);
    let Since::Changes(changes) = state.changes_since(2, 10) else {
        panic!("revision 3.. is retained")
    };
    assert_eq!(
        changes
            .iter()
            .map(|change| change.revision)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(changes[0].updates[0].key, ObjectKey::Region("r3".into()));
    let Since::Changes(limited) = state.changes_since(2, 2) else {
        panic!("retained")
    };
    assert_eq!(limited.len(), 2);
    assert_eq!(
        state.changes_since(1, 10),
        Since::Compacted {
            current_revision: 5
        }
    );
    assert_eq!(state.changes_since(5, 10), Since::Changes(Vec::new()));
    assert_eq!(state.changes_since(9, 10), Since::Changes(Vec::new()));
}

#[test]
fn state_survives_a_serde_round_trip() {
    let mut state = seeded();
    apply(
        &mut state,
        Command::PutConsumerGroup {
            group: group("g", &["ledger"]),
        },
    )
    .unwrap();
    apply(
        &mut state,
        Command::ClaimMessageGroup {
            key: ledger_key("m"),
            owner: "c1".into(),
            lease_ms: 1_000,
        },
    )
    .unwrap();
    let bytes = serde_json::to_vec(&state).unwrap();
    let restored: State = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(restored, state);
}
