//! Single-step tests of the sender and receiver state machines.

use super::LinkFailure;
use super::frame::{Entry, Frame, PROTOCOL_VERSION, RefuseCode};
use super::receiver::{Receiver, ReceiverAction, ReceiverConfig};
use super::sender::{LogRecord, Sender, SenderAction, SenderConfig};

fn entry(position: u64, payload_len: usize) -> Entry {
    Entry {
        position,
        hlc: position * 10,
        message_id: format!("m{position}"),
        payload: vec![0; payload_len],
    }
}

fn record(origin: &str, position: u64, payload_len: usize) -> LogRecord {
    LogRecord {
        origin_region: origin.into(),
        entry: entry(position, payload_len),
    }
}

fn drain_sender(sender: &mut Sender) -> Vec<SenderAction> {
    std::iter::from_fn(|| sender.poll_action()).collect()
}

fn drain_receiver(receiver: &mut Receiver) -> Vec<ReceiverAction> {
    std::iter::from_fn(|| receiver.poll_action()).collect()
}

fn hello(source: &str, destination: &str, version: u8) -> Frame {
    Frame::Hello {
        link_id: 9,
        source_region: source.into(),
        destination_region: destination.into(),
        protocol_version: version,
    }
}

/// A sender past the handshake with a window of `bytes` / `entries`, local log ending at 10,000.
fn streaming_sender(resume_at: u64, bytes: u64, entries: u32) -> Sender {
    let mut sender = Sender::new(SenderConfig::default(), 1, "a", "b", 10_000, 0);
    sender.on_frame(
        Frame::Resume {
            positions: vec![("x".into(), 5), ("a".into(), resume_at)],
        },
        1,
    );
    sender.on_frame(
        Frame::Ack {
            applied_through: resume_at,
            window_bytes: bytes,
            window_entries: entries,
        },
        1,
    );
    sender
}

#[test]
fn the_sender_says_hello_and_reads_from_the_resume_position_once_credit_arrives() {
    let mut sender = Sender::new(SenderConfig::default(), 1, "a", "b", 10_000, 0);
    assert!(matches!(
        drain_sender(&mut sender).as_slice(),
        [SenderAction::Send(Frame::Hello {
            protocol_version: PROTOCOL_VERSION,
            ..
        })]
    ));
    sender.on_frame(
        Frame::Resume {
            positions: vec![("a".into(), 300)],
        },
        1,
    );
    // No credit yet: no read.
    assert_eq!(
        drain_sender(&mut sender),
        vec![SenderAction::Resumed { position: 300 }]
    );
    sender.on_frame(
        Frame::Ack {
            applied_through: 300,
            window_bytes: 1000,
            window_entries: 10,
        },
        2,
    );
    assert!(matches!(
        drain_sender(&mut sender).as_slice(),
        [SenderAction::ReadLog {
            from: 300,
            max_entries: 10,
            max_bytes: 1000
        }]
    ));
}

#[test]
fn the_sender_forwards_only_its_own_records_and_keeps_within_the_window() {
    let mut sender = streaming_sender(100, 200, 10);
    drain_sender(&mut sender);
    // Entries take 22 + id + payload bytes: 100 + 22 + 4 = 126 each here.
    sender.on_log_read(
        500,
        vec![
            record("a", 100, 100),
            record("c", 200, 100),
            record("a", 300, 100),
            record("a", 400, 100),
        ],
        3,
    );
    let actions = drain_sender(&mut sender);
    // The first own record fits; the relayed one is skipped; the next own record would pass
    // 200 bytes, so the batch ends where it starts. 74 bytes of window are left: read on.
    let [
        SenderAction::Send(Frame::Batch {
            start,
            end,
            entries,
        }),
        SenderAction::ReadLog {
            from: 300,
            max_bytes: 74,
            ..
        },
    ] = actions.as_slice()
    else {
        panic!("expected a batch and a read, got {actions:?}");
    };
    assert_eq!((*start, *end), (100, 300));
    assert_eq!(
        entries.iter().map(|e| e.position).collect::<Vec<_>>(),
        [100]
    );
    assert_eq!(sender.in_flight(), (126, 1));
    // The record at 300 does not fit what is left: nothing is sent until an ack.
    sender.on_log_read(500, vec![record("a", 300, 100)], 4);
    assert!(drain_sender(&mut sender).is_empty());
    sender.on_local_append(20_000);
    assert!(drain_sender(&mut sender).is_empty());
    sender.on_frame(
        Frame::Ack {
            applied_through: 300,
            window_bytes: 200,
            window_entries: 10,
        },
        5,
    );
    assert_eq!(sender.in_flight(), (0, 0));
    assert!(matches!(
        drain_sender(&mut sender).as_slice(),
        [SenderAction::ReadLog { from: 300, .. }]
    ));
}

#[test]
fn an_entry_larger_than_the_window_goes_alone_on_an_idle_link() {
    let mut sender = streaming_sender(0, 50, 10);
    drain_sender(&mut sender);
    sender.on_log_read(300, vec![record("a", 0, 500), record("a", 200, 10)], 3);
    let actions = drain_sender(&mut sender);
    let [SenderAction::Send(Frame::Batch { end, entries, .. })] = actions.as_slice() else {
        panic!("expected one batch, got {actions:?}");
    };
    assert_eq!((*end, entries.len()), (200, 1));
}

#[test]
fn an_entry_beyond_the_frame_limit_ends_the_link_with_a_clear_failure() {
    let mut sender = streaming_sender(0, u64::MAX, 10);
    drain_sender(&mut sender);
    let too_big = SenderConfig::default().limits.max_frame_bytes;
    sender.on_log_read(100, vec![record("a", 0, too_big)], 3);
    assert!(matches!(
        drain_sender(&mut sender).as_slice(),
        [SenderAction::Close(LinkFailure::EntryTooLarge {
            position: 0,
            ..
        })]
    ));
}

#[test]
fn an_ack_past_what_was_sent_is_a_violation() {
    let mut sender = streaming_sender(0, 1000, 10);
    drain_sender(&mut sender);
    sender.on_frame(
        Frame::Ack {
            applied_through: 1,
            window_bytes: 1000,
            window_entries: 10,
        },
        3,
    );
    let actions = drain_sender(&mut sender);
    assert!(matches!(
        actions.as_slice(),
        [
            SenderAction::Send(Frame::Refuse {
                code: RefuseCode::ProtocolViolation,
                ..
            }),
            SenderAction::Close(LinkFailure::RefusedPeer { .. })
        ]
    ));
}

#[test]
fn the_sender_pings_when_quiet_and_gives_up_after_the_idle_timeout() {
    let config = SenderConfig::default();
    let mut sender = streaming_sender(0, 1000, 10);
    drain_sender(&mut sender);
    sender.on_timer(1 + config.ping_interval_ms);
    assert!(matches!(
        drain_sender(&mut sender).as_slice(),
        [SenderAction::Send(Frame::Ping { .. })]
    ));
    sender.on_timer(1 + config.idle_timeout_ms);
    assert!(matches!(
        drain_sender(&mut sender).as_slice(),
        [SenderAction::Close(LinkFailure::IdleTimeout { .. })]
    ));
}

#[test]
fn a_sender_without_an_answer_times_out_its_handshake() {
    let config = SenderConfig::default();
    let mut sender = Sender::new(config.clone(), 1, "a", "b", 0, 0);
    drain_sender(&mut sender);
    assert_eq!(sender.next_timer_ms(), Some(config.handshake_timeout_ms));
    sender.on_timer(config.handshake_timeout_ms);
    assert!(matches!(
        drain_sender(&mut sender).as_slice(),
        [SenderAction::Close(LinkFailure::HandshakeTimeout { .. })]
    ));
}

fn streaming_receiver(applied: u64, persisted: u64) -> Receiver {
    let config = ReceiverConfig {
        window_bytes: 300,
        window_entries: 3,
        ..ReceiverConfig::default()
    };
    let mut receiver = Receiver::new(config, "b", 0);
    receiver.on_frame(hello("a", "b", PROTOCOL_VERSION), 1);
    assert_eq!(
        drain_receiver(&mut receiver),
        vec![ReceiverAction::LoadProgress {
            source_region: "a".into(),
            link_id: 9
        }]
    );
    receiver.on_progress_loaded(applied, persisted);
    receiver
}

#[test]
fn the_receiver_refuses_a_link_meant_for_another_region_or_version() {
    for frame in [
        hello("a", "c", PROTOCOL_VERSION),
        hello("b", "b", PROTOCOL_VERSION),
        hello("a", "b", PROTOCOL_VERSION + 1),
    ] {
        let mut receiver = Receiver::new(ReceiverConfig::default(), "b", 0);
        receiver.on_frame(frame, 1);
        let actions = drain_receiver(&mut receiver);
        assert!(
            matches!(
                actions.as_slice(),
                [
                    ReceiverAction::Send(Frame::Refuse {
                        code: RefuseCode::WrongRegion | RefuseCode::VersionMismatch,
                        ..
                    }),
                    ReceiverAction::Close(LinkFailure::RefusedPeer { .. })
                ]
            ),
            "{actions:?}"
        );
    }
}

#[test]
fn the_receiver_resumes_applies_in_order_acks_and_checkpoints_after_applying() {
    let mut receiver = streaming_receiver(100, 40);
    let actions = drain_receiver(&mut receiver);
    assert_eq!(
        actions,
        vec![
            ReceiverAction::Send(Frame::Resume {
                positions: vec![("a".into(), 100)]
            }),
            ReceiverAction::Send(Frame::Ack {
                applied_through: 100,
                window_bytes: 300,
                window_entries: 3
            }),
            // Progress in memory was ahead of the checkpoint: it is persisted now.
            ReceiverAction::PersistCheckpoint {
                origin_region: "a".into(),
                position: 100
            },
        ]
    );
    receiver.on_checkpoint_persisted(100);
    receiver.on_frame(
        Frame::Batch {
            start: 100,
            end: 200,
            entries: vec![entry(150, 10)],
        },
        2,
    );
    receiver.on_frame(
        Frame::Batch {
            start: 200,
            end: 250,
            entries: vec![],
        },
        3,
    );
    let actions = drain_receiver(&mut receiver);
    assert_eq!(
        actions,
        vec![ReceiverAction::Apply {
            origin_region: "a".into(),
            start: 100,
            end: 200,
            entries: vec![entry(150, 10)]
        }]
    );
    receiver.on_applied(200);
    let actions = drain_receiver(&mut receiver);
    assert_eq!(
        actions,
        vec![
            ReceiverAction::Send(Frame::Ack {
                applied_through: 200,
                window_bytes: 300,
                window_entries: 3
            }),
            ReceiverAction::PersistCheckpoint {
                origin_region: "a".into(),
                position: 200
            },
            ReceiverAction::Apply {
                origin_region: "a".into(),
                start: 200,
                end: 250,
                entries: vec![]
            },
        ]
    );
}

#[test]
fn the_receiver_ends_a_session_with_a_gap_or_a_window_overrun() {
    let mut receiver = streaming_receiver(100, 100);
    drain_receiver(&mut receiver);
    receiver.on_frame(
        Frame::Batch {
            start: 150,
            end: 200,
            entries: vec![],
        },
        2,
    );
    assert!(matches!(
        drain_receiver(&mut receiver).as_slice(),
        [
            ReceiverAction::Send(Frame::Refuse {
                code: RefuseCode::ProtocolViolation,
                ..
            }),
            ReceiverAction::Close(_)
        ]
    ));

    let mut receiver = streaming_receiver(100, 100);
    drain_receiver(&mut receiver);
    receiver.on_frame(
        Frame::Batch {
            start: 100,
            end: 400,
            entries: vec![entry(100, 10), entry(200, 10)],
        },
        2,
    );
    receiver.on_frame(
        Frame::Batch {
            start: 400,
            end: 600,
            entries: vec![entry(400, 10), entry(500, 10)],
        },
        3,
    );
    let actions = drain_receiver(&mut receiver);
    assert!(
        matches!(
            actions.as_slice(),
            [
                ReceiverAction::Apply { .. },
                ReceiverAction::Send(Frame::Refuse {
                    code: RefuseCode::ProtocolViolation,
                    ..
                }),
                ReceiverAction::Close(_)
            ]
        ),
        "{actions:?}"
    );
}

#[test]
fn the_receiver_answers_pings_and_digest_requests_and_times_out_when_idle() {
    let mut receiver = streaming_receiver(0, 0);
    drain_receiver(&mut receiver);
    receiver.on_frame(Frame::Ping { nonce: 5 }, 2);
    receiver.on_frame(
        Frame::DigestRequest {
            origin_region: "a".into(),
            start: 0,
            end: 10,
        },
        3,
    );
    let actions = drain_receiver(&mut receiver);
    assert_eq!(
        actions,
        vec![
            ReceiverAction::Send(Frame::Pong { nonce: 5 }),
            ReceiverAction::ComputeDigest {
                origin_region: "a".into(),
                start: 0,
                end: 10
            }
        ]
    );
    receiver.answer_digest("a".into(), 0, 10, 2, 77);
    assert!(matches!(
        drain_receiver(&mut receiver).as_slice(),
        [ReceiverAction::Send(Frame::DigestAnswer {
            count: 2,
            digest: 77,
            ..
        })]
    ));
    let idle = ReceiverConfig::default().idle_timeout_ms;
    receiver.on_timer(3 + idle);
    assert!(matches!(
        drain_receiver(&mut receiver).as_slice(),
        [ReceiverAction::Close(LinkFailure::IdleTimeout { .. })]
    ));
}
