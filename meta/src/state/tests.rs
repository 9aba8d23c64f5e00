//! Unit tests of the state machine: every validation, the compare-and-set epoch rule, the
//! revision counter and the change log.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use super::*;

pub(super) fn request(command: Command) -> Request {
    Request {
        issued_at_ms: 1_000,
        command,
    }
}

pub(super) fn apply(state: &mut State, command: Command) -> CommandResult {
    state.apply(&request(command))
}

pub(super) fn apply_at(state: &mut State, issued_at_ms: u64, command: Command) -> CommandResult {
    state.apply(&Request {
        issued_at_ms,
        command,
    })
}

pub(super) fn region(name: &str) -> Command {
    Command::PutRegion {
        name: name.into(),
        zone: format!("{name}-a"),
        endpoints: vec![format!("{name}.example:8080")],
    }
}

pub(super) fn regions(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

pub(super) fn topic_spec(
    name: &str,
    region_names: &[&str],
    replication: ReplicationMode,
    topology: Topology,
) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        queue_count: 8,
        message_type: MessageType::Normal,
        regions: regions(region_names),
        replication,
        topology,
    }
}

pub(super) fn standby(home: &str) -> Topology {
    Topology::ActiveStandby { home: home.into() }
}

pub(super) fn group(name: &str, topics: &[&str]) -> ConsumerGroup {
    ConsumerGroup {
        name: name.into(),
        topics: regions(topics),
        order: ConsumeOrder::Fifo,
        broadcast: false,
        retry: RetryPolicy {
            max_attempts: 16,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
        },
    }
}

/// Three regions, a standby topic homed in `eu`, and an active-active FIFO topic.
pub(super) fn seeded() -> State {
    let mut state = State::new(Limits::default(), 100);
    for name in ["eu", "us", "ap"] {
        apply(&mut state, region(name)).unwrap();
    }
    let spec = topic_spec(
        "orders",
        &["eu", "us"],
        ReplicationMode::SyncQuorum,
        standby("eu"),
    );
    apply(&mut state, Command::CreateTopic { spec }).unwrap();
    let mut fifo = topic_spec(
        "ledger",
        &["eu", "us", "ap"],
        ReplicationMode::Async,
        Topology::ActiveActive,
    );
    fifo.message_type = MessageType::Fifo;
    apply(&mut state, Command::CreateTopic { spec: fifo }).unwrap();
    state
}

pub(super) fn err(result: CommandResult) -> MetaError {
    result.expect_err("command should be rejected")
}

#[test]
fn revision_advances_once_per_accepted_command_and_not_on_rejection() {
    let mut state = State::new(Limits::default(), 100);
    assert_eq!(state.revision(), 0);
    assert_eq!(apply(&mut state, region("eu")).unwrap().revision, 1);
    assert_eq!(apply(&mut state, region("us")).unwrap().revision, 2);
    let before = state.clone();
    err(apply(
        &mut state,
        Command::DeleteRegion {
            name: "nowhere".into(),
        },
    ));
    assert_eq!(state, before, "a rejected command changes nothing");
}

#[test]
fn topic_in_unknown_region_is_rejected() {
    let mut state = seeded();
    let spec = topic_spec(
        "t",
        &["eu", "mars"],
        ReplicationMode::Async,
        Topology::ActiveActive,
    );
    assert_eq!(
        err(apply(&mut state, Command::CreateTopic { spec })),
        MetaError::RegionNotFound {
            region: "mars".into()
        }
    );
}

#[test]
fn home_region_must_be_among_the_topics_regions() {
    let mut state = seeded();
    let spec = topic_spec("t", &["eu", "us"], ReplicationMode::Async, standby("ap"));
    assert_eq!(
        err(apply(&mut state, Command::CreateTopic { spec })),
        MetaError::HomeNotAmongRegions {
            topic: "t".into(),
            home: "ap".into()
        }
    );
}

#[test]
fn sync_quorum_needs_two_regions() {
    let mut state = seeded();
    let spec = topic_spec(
        "t",
        &["eu"],
        ReplicationMode::SyncQuorum,
        Topology::ActiveActive,
    );
    assert_eq!(
        err(apply(&mut state, Command::CreateTopic { spec })),
        MetaError::SyncQuorumTooFewRegions {
            topic: "t".into(),
            count: 1,
            min: 2
        }
    );
    let spec = topic_spec("t", &["eu"], ReplicationMode::Async, Topology::ActiveActive);
    apply(&mut state, Command::CreateTopic { spec }).unwrap();
}

#[test]
fn topic_shape_rules() {
    let mut state = seeded();
    let mut spec = topic_spec("t", &["eu"], ReplicationMode::Async, Topology::ActiveActive);
    spec.queue_count = 0;
    assert!(matches!(
        err(apply(
            &mut state,
            Command::CreateTopic { spec: spec.clone() }
        )),
        MetaError::QueueCountOutOfRange { .. }
    ));
    spec.queue_count = 1_025;
    assert!(matches!(
        err(apply(
            &mut state,
            Command::CreateTopic { spec: spec.clone() }
        )),
        MetaError::QueueCountOutOfRange { .. }
    ));
    spec.queue_count = 4;
    spec.regions.clear();
    assert_eq!(
        err(apply(&mut state, Command::CreateTopic { spec })),
        MetaError::TopicWithoutRegions { topic: "t".into() }
    );
    let spec = topic_spec(
        "bad name",
        &["eu"],
        ReplicationMode::Async,
        Topology::ActiveActive,
    );
    assert!(matches!(
        err(apply(&mut state, Command::CreateTopic { spec })),
        MetaError::InvalidName { .. }
    ));
    let spec = topic_spec(
        "orders",
        &["eu"],
        ReplicationMode::Async,
        Topology::ActiveActive,
    );
    assert_eq!(
        err(apply(&mut state, Command::CreateTopic { spec })),
        MetaError::TopicExists {
            topic: "orders".into()
        }
    );
}

#[test]
fn writes_to_a_missing_topic_are_rejected() {
    let mut state = seeded();
    let spec = topic_spec(
        "ghost",
        &["eu"],
        ReplicationMode::Async,
        Topology::ActiveActive,
    );
    let missing = MetaError::TopicNotFound {
        topic: "ghost".into(),
    };
    assert_eq!(
        err(apply(
            &mut state,
            Command::UpdateTopic {
                spec,
                expected_epoch: 0
            }
        )),
        missing
    );
    assert_eq!(
        err(apply(
            &mut state,
            Command::DeleteTopic {
                name: "ghost".into()
            }
        )),
        missing
    );
    let move_home = Command::MoveTopicHome {
        topic: "ghost".into(),
        new_home: "eu".into(),
        expected_epoch: 0,
    };
    assert_eq!(err(apply(&mut state, move_home)), missing);
    assert_eq!(
        err(apply(
            &mut state,
            Command::PutConsumerGroup {
                group: group("g", &["ghost"])
            }
        )),
        missing
    );
}

#[test]
fn failover_is_compare_and_set_and_a_stale_actor_cannot_move_the_topic_back() {
    let mut state = seeded();
    // Two actors read epoch 0; the first fails the topic over to `us`.
    let first = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "us".into(),
        expected_epoch: 0,
    };
    assert_eq!(
        apply(&mut state, first).unwrap().outcome,
        Outcome::Epoch { epoch: 1 }
    );
    // The second, still holding epoch 0, tries to move it back to `eu`.
    let stale = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "eu".into(),
        expected_epoch: 0,
    };
    assert_eq!(
        err(apply(&mut state, stale)),
        MetaError::StaleEpoch {
            object: "topic `orders`".into(),
            expected: 0,
            current: 1
        }
    );
    assert_eq!(state.topic("orders").unwrap().spec.topology, standby("us"));
    // A guess ahead of the current epoch is refused too.
    let ahead = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "eu".into(),
        expected_epoch: 7,
    };
    assert!(matches!(
        err(apply(&mut state, ahead)),
        MetaError::StaleEpoch { current: 1, .. }
    ));
    // With the current epoch a deliberate move back succeeds and bumps the epoch again.
    let back = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "eu".into(),
        expected_epoch: 1,
    };
    assert_eq!(
        apply(&mut state, back).unwrap().outcome,
        Outcome::Epoch { epoch: 2 }
    );
}

#[test]
fn failover_target_must_be_an_active_region_of_the_topic() {
    let mut state = seeded();
    let outside = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "ap".into(),
        expected_epoch: 0,
    };
    assert!(matches!(
        err(apply(&mut state, outside)),
        MetaError::HomeNotAmongRegions { .. }
    ));
    apply(
        &mut state,
        Command::SetRegionStatus {
            name: "us".into(),
            status: RegionStatus::Failed,
            expected_epoch: 0,
        },
    )
    .unwrap();
    let to_failed = Command::MoveTopicHome {
        topic: "orders".into(),
        new_home: "us".into(),
        expected_epoch: 0,
    };
    assert!(matches!(
        err(apply(&mut state, to_failed)),
        MetaError::RegionNotActive { .. }
    ));
    let active_active = Command::MoveTopicHome {
        topic: "ledger".into(),
        new_home: "eu".into(),
        expected_epoch: 0,
    };
    assert_eq!(
        err(apply(&mut state, active_active)),
        MetaError::NoHomeToMove {
            topic: "ledger".into()
        }
    );
}

#[test]
fn topic_update_is_compare_and_set_and_bumps_the_epoch_only_on_topology_change() {
    let mut state = seeded();
    let mut spec = state.topic("orders").unwrap().spec.clone();
    spec.queue_count = 16;
    let applied = apply(
        &mut state,
        Command::UpdateTopic {
            spec: spec.clone(),
            expected_epoch: 0,
        },
    )
    .unwrap();
    assert_eq!(
        applied.outcome,
        Outcome::Epoch { epoch: 0 },
        "a queue-count change is not a failover"
    );
    spec.topology = standby("us");
    assert_eq!(
        apply(
            &mut state,
            Command::UpdateTopic {
                spec: spec.clone(),
                expected_epoch: 0
            }
        )
        .unwrap()
        .outcome,
        Outcome::Epoch { epoch: 1 }
    );
    assert!(matches!(
        err(apply(
            &mut state,
            Command::UpdateTopic {
                spec: spec.clone(),
                expected_epoch: 0
            }
        )),
        MetaError::StaleEpoch { .. }
    ));
    spec.message_type = MessageType::Fifo;
    assert!(matches!(
        err(apply(
            &mut state,
            Command::UpdateTopic {
                spec,
                expected_epoch: 1
            }
        )),
        MetaError::MessageTypeChange { .. }
    ));
}

#[test]
fn region_status_is_compare_and_set() {
    let mut state = seeded();
    let drain = Command::SetRegionStatus {
        name: "eu".into(),
        status: RegionStatus::Draining,
        expected_epoch: 0,
    };
    assert_eq!(
        apply(&mut state, drain.clone()).unwrap().outcome,
        Outcome::Epoch { epoch: 1 }
    );
    assert!(matches!(
        err(apply(&mut state, drain)),
        MetaError::StaleEpoch {
            expected: 0,
            current: 1,
            ..
        }
    ));
    assert_eq!(state.region("eu").unwrap().status, RegionStatus::Draining);
    // A draining region cannot become a new topic's home.
    let spec = topic_spec("t", &["eu", "us"], ReplicationMode::Async, standby("eu"));
    assert!(matches!(
        err(apply(&mut state, Command::CreateTopic { spec })),
        MetaError::RegionNotActive { .. }
    ));
}

#[test]
fn regions_in_use_cannot_be_deleted() {
    let mut state = seeded();
    apply(
        &mut state,
        Command::PutCell {
            id: "ap-1".into(),
            region: "ap".into(),
            endpoints: vec![],
        },
    )
    .unwrap();
    assert!(matches!(
        err(apply(
            &mut state,
            Command::DeleteRegion { name: "ap".into() }
        )),
        MetaError::RegionInUse { .. }
    ));
    apply(&mut state, Command::DeleteCell { id: "ap-1".into() }).unwrap();
    // `ap` still hosts the `ledger` topic.
    assert!(matches!(
        err(apply(
            &mut state,
            Command::DeleteRegion { name: "ap".into() }
        )),
        MetaError::RegionInUse { .. }
    ));
    apply(
        &mut state,
        Command::DeleteTopic {
            name: "ledger".into(),
        },
    )
    .unwrap();
    apply(&mut state, Command::DeleteRegion { name: "ap".into() }).unwrap();
    assert!(state.region("ap").is_none());
}

#[test]
fn cells_need_an_existing_region_and_cannot_move() {
    let mut state = seeded();
    let orphan = Command::PutCell {
        id: "c1".into(),
        region: "mars".into(),
        endpoints: vec![],
    };
    assert_eq!(
        err(apply(&mut state, orphan)),
        MetaError::RegionNotFound {
            region: "mars".into()
        }
    );
    apply(
        &mut state,
        Command::PutCell {
            id: "c1".into(),
            region: "eu".into(),
            endpoints: vec![],
        },
    )
    .unwrap();
    let moved = Command::PutCell {
        id: "c1".into(),
        region: "us".into(),
        endpoints: vec![],
    };
    assert!(matches!(
        err(apply(&mut state, moved)),
        MetaError::CellInOtherRegion { .. }
    ));
    let endpoints = (0..17).map(|i| format!("h{i}:1")).collect();
    let crowded = Command::PutCell {
        id: "c2".into(),
        region: "eu".into(),
        endpoints,
    };
    assert!(matches!(
        err(apply(&mut state, crowded)),
        MetaError::LimitExceeded { .. }
    ));
}

#[test]
fn heartbeats_move_forward_only_report_unknown_cells_and_take_no_revision() {
    let mut state = seeded();
    apply(
        &mut state,
        Command::PutCell {
            id: "c1".into(),
            region: "eu".into(),
            endpoints: vec![],
        },
    )
    .unwrap();
    let revision = state.revision();
    let beats = vec![
        CellBeat {
            cell: "c1".into(),
            at_ms: 5_000,
        },
        CellBeat {
            cell: "gone".into(),
            at_ms: 5_000,
        },
    ];
    let applied = apply_at(&mut state, 6_000, Command::RecordHeartbeats { beats }).unwrap();
    assert_eq!(
        applied.outcome,
        Outcome::Heartbeats {
            recorded: 1,
            unknown_cells: vec!["gone".into()]
        }
    );
    assert_eq!(applied.revision, revision);
    assert_eq!(state.cell("c1").unwrap().last_heartbeat_ms, 5_000);
    // An older, delayed batch does not move the time back.
    apply_at(
        &mut state,
        7_000,
        Command::RecordHeartbeats {
            beats: vec![CellBeat {
                cell: "c1".into(),
                at_ms: 4_000,
            }],
        },
    )
    .unwrap();
    assert_eq!(state.cell("c1").unwrap().last_heartbeat_ms, 5_000);
    // A beat dated after the batch stamp is capped at the stamp.
    apply_at(
        &mut state,
        8_000,
        Command::RecordHeartbeats {
            beats: vec![CellBeat {
                cell: "c1".into(),
                at_ms: 99_000,
            }],
        },
    )
    .unwrap();
    assert_eq!(state.cell("c1").unwrap().last_heartbeat_ms, 8_000);
    assert_eq!(state.revision(), revision);
}

#[test]
fn consumer_group_retry_policy_rules() {
    let mut state = seeded();
    let mut bad = group("g", &["orders"]);
    bad.retry.max_attempts = 0;
    assert!(matches!(
        err(apply(
            &mut state,
            Command::PutConsumerGroup { group: bad.clone() }
        )),
        MetaError::InvalidRetryPolicy { .. }
    ));
    bad.retry.max_attempts = 65;
    assert!(matches!(
        err(apply(
            &mut state,
            Command::PutConsumerGroup { group: bad.clone() }
        )),
        MetaError::InvalidRetryPolicy { .. }
    ));
    bad.retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: 10_000,
        max_backoff_ms: 1_000,
    };
    assert!(matches!(
        err(apply(&mut state, Command::PutConsumerGroup { group: bad })),
        MetaError::InvalidRetryPolicy { .. }
    ));
    let mut broadcast = group("g", &["orders"]);
    broadcast.order = ConsumeOrder::Concurrent;
    broadcast.broadcast = true;
    apply(
        &mut state,
        Command::PutConsumerGroup {
            group: broadcast.clone(),
        },
    )
    .unwrap();
    assert_eq!(state.consumer_group("g"), Some(&broadcast));
    assert_eq!(
        err(apply(
            &mut state,
            Command::DeleteTopic {
                name: "orders".into()
            }
        )),
        MetaError::TopicInUse {
            topic: "orders".into(),
            group: "g".into()
        }
    );
}

#[test]
fn users_need_existing_resources() {
    let mut state = seeded();
    let mut user = User {
        name: "alice".into(),
        credential_digest: "sha256:abc".into(),
        permissions: vec![Permission {
            resource: Resource::Topic("ghost".into()),
            actions: [Action::Publish].into_iter().collect(),
        }],
    };
    assert_eq!(
        err(apply(&mut state, Command::PutUser { user: user.clone() })),
        MetaError::TopicNotFound {
            topic: "ghost".into()
        }
    );
    user.permissions[0].resource = Resource::Topic("orders".into());
    apply(&mut state, Command::PutUser { user }).unwrap();
    assert!(state.user("alice").is_some());
    apply(
        &mut state,
        Command::DeleteUser {
            name: "alice".into(),
        },
    )
    .unwrap();
    assert_eq!(
        err(apply(
            &mut state,
            Command::DeleteUser {
                name: "alice".into()
            }
        )),
        MetaError::UserNotFound {
            user: "alice".into()
        }
    );
}
