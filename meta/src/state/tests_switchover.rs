//! Planned switchover in the state machine: begin (fence the old home), then move or abort,
//! each a compare-and-set that bumps the epoch.

#![allow(clippy::unwrap_used)]

use super::tests::{apply, err, seeded, standby};
use super::*;
use crate::error::MetaError;

#[test]
fn a_switchover_fences_then_moves_and_every_step_bumps_the_epoch() {
    let mut state = seeded();
    let begin = Command::BeginTopicMove {
        topic: "orders".into(),
        new_home: "us".into(),
        expected_epoch: 0,
    };
    assert_eq!(
        apply(&mut state, begin).unwrap().outcome,
        Outcome::Epoch { epoch: 1 }
    );
    let topic = state.topic("orders").unwrap();
    assert_eq!(topic.moving_to.as_deref(), Some("us"));
    assert_eq!(
        topic.spec.topology,
        standby("eu"),
        "the home has not moved yet"
    );
    // A stale begin (epoch 0) is refused; the move itself needs the fenced epoch.
    let stale = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "us".into(),
        expected_epoch: 0,
    };
    assert!(matches!(
        err(apply(&mut state, stale)),
        MetaError::StaleEpoch { current: 1, .. }
    ));
    let commit = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "us".into(),
        expected_epoch: 1,
    };
    assert_eq!(
        apply(&mut state, commit).unwrap().outcome,
        Outcome::Epoch { epoch: 2 }
    );
    let topic = state.topic("orders").unwrap();
    assert_eq!(topic.spec.topology, standby("us"));
    assert_eq!(topic.moving_to, None, "the move ends the switchover");
}

#[test]
fn an_aborted_switchover_unfences_the_old_home() {
    let mut state = seeded();
    apply(
        &mut state,
        Command::BeginTopicMove {
            topic: "orders".into(),
            new_home: "us".into(),
            expected_epoch: 0,
        },
    )
    .unwrap();
    assert_eq!(
        apply(
            &mut state,
            Command::AbortTopicMove {
                topic: "orders".into(),
                expected_epoch: 1,
            }
        )
        .unwrap()
        .outcome,
        Outcome::Epoch { epoch: 2 }
    );
    let topic = state.topic("orders").unwrap();
    assert_eq!(topic.moving_to, None);
    assert_eq!(topic.spec.topology, standby("eu"));
    // Nothing to abort now.
    assert!(matches!(
        err(apply(
            &mut state,
            Command::AbortTopicMove {
                topic: "orders".into(),
                expected_epoch: 2,
            }
        )),
        MetaError::InvalidMove { .. }
    ));
}

#[test]
fn a_switchover_needs_an_active_standby_topic_and_another_region_of_it() {
    let mut state = seeded();
    let to_home = Command::BeginTopicMove {
        topic: "orders".into(),
        new_home: "eu".into(),
        expected_epoch: 0,
    };
    assert!(matches!(
        err(apply(&mut state, to_home)),
        MetaError::InvalidMove { .. }
    ));
    let outside = Command::BeginTopicMove {
        topic: "orders".into(),
        new_home: "ap".into(),
        expected_epoch: 0,
    };
    assert!(matches!(
        err(apply(&mut state, outside)),
        MetaError::HomeNotAmongRegions { .. }
    ));
    let active_active = Command::BeginTopicMove {
        topic: "ledger".into(),
        new_home: "us".into(),
        expected_epoch: 0,
    };
    assert!(matches!(
        err(apply(&mut state, active_active)),
        MetaError::NoHomeToMove { .. }
    ));
    assert_eq!(
        state.topic("orders").unwrap().epoch,
        0,
        "refusals change nothing"
    );
}
