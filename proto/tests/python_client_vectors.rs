//! Decodes bytes produced by the official Python client's own generated protobuf classes
//! (`rocketmq-python-client` 5.1.2, `SerializeToString(deterministic=True)`), and checks that
//! our encoding of the same values is byte-identical. Any disagreement on a field number, a
//! type or packing shows up here, against a shipped client rather than our reading of it.
//!
//! The byte arrays were generated once with a throwaway script that built each message with
//! the client's `definition_pb2` / `service_pb2` classes; the values are listed in the
//! `expected_*` builders below.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use meridian_proto::rocketmq::v2::{
    self as pb, Code, Resource, Status, retry_policy, settings, telemetry_command,
};
use prost::Message as _;
use prost_types::{Duration, Timestamp};

/// SendMessageRequest, 253 bytes.
const SEND_MESSAGE_REQUEST: &[u8] = &[
    0x0a, 0xfa, 0x01, 0x0a, 0x10, 0x0a, 0x02, 0x6e, 0x73, 0x12, 0x0a, 0x74, 0x65, 0x73, 0x74, 0x5f,
    0x74, 0x6f, 0x70, 0x69, 0x63, 0x12, 0x0d, 0x0a, 0x05, 0x63, 0x6f, 0x6c, 0x6f, 0x72, 0x12, 0x04,
    0x62, 0x6c, 0x75, 0x65, 0x1a, 0xcf, 0x01, 0x0a, 0x04, 0x54, 0x61, 0x67, 0x41, 0x12, 0x02, 0x6b,
    0x31, 0x12, 0x02, 0x6b, 0x32, 0x1a, 0x22, 0x30, 0x31, 0x30, 0x32, 0x46, 0x43, 0x30, 0x30, 0x30,
    0x30, 0x30, 0x30, 0x30, 0x31, 0x31, 0x43, 0x46, 0x32, 0x30, 0x42, 0x31, 0x35, 0x46, 0x37, 0x45,
    0x32, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x22, 0x24, 0x08, 0x02, 0x12, 0x20, 0x35,
    0x44, 0x34, 0x31, 0x34, 0x30, 0x32, 0x41, 0x42, 0x43, 0x34, 0x42, 0x32, 0x41, 0x37, 0x36, 0x42,
    0x39, 0x37, 0x31, 0x39, 0x44, 0x39, 0x31, 0x31, 0x30, 0x31, 0x37, 0x43, 0x35, 0x39, 0x32, 0x28,
    0x01, 0x30, 0x02, 0x3a, 0x06, 0x08, 0xee, 0xc9, 0x8e, 0xd8, 0x06, 0x42, 0x08, 0x31, 0x30, 0x2e,
    0x30, 0x2e, 0x30, 0x2e, 0x37, 0x4a, 0x08, 0x08, 0xef, 0xc9, 0x8e, 0xd8, 0x06, 0x10, 0x05, 0x52,
    0x06, 0x63, 0x65, 0x6c, 0x6c, 0x2d, 0x61, 0x5a, 0x06, 0x08, 0xa8, 0xca, 0x8e, 0xd8, 0x06, 0x62,
    0x04, 0x72, 0x68, 0x2d, 0x31, 0x68, 0x03, 0x70, 0x2a, 0x7a, 0x02, 0x08, 0x0f, 0x80, 0x01, 0x02,
    0x8a, 0x01, 0x07, 0x6f, 0x72, 0x64, 0x65, 0x72, 0x2d, 0x37, 0x92, 0x01, 0x08, 0x30, 0x30, 0x2d,
    0x74, 0x72, 0x61, 0x63, 0x65, 0x9a, 0x01, 0x02, 0x08, 0x3c, 0xa2, 0x01, 0x0f, 0x0a, 0x04, 0x6f,
    0x72, 0x69, 0x67, 0x12, 0x07, 0x6f, 0x72, 0x69, 0x67, 0x2d, 0x69, 0x64, 0xaa, 0x01, 0x04, 0x6c,
    0x69, 0x74, 0x65, 0xb0, 0x01, 0x07, 0x22, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
];

/// ReceiveMessageRequest, 96 bytes.
const RECEIVE_MESSAGE_REQUEST: &[u8] = &[
    0x0a, 0x03, 0x12, 0x01, 0x67, 0x12, 0x38, 0x0a, 0x0c, 0x12, 0x0a, 0x74, 0x65, 0x73, 0x74, 0x5f,
    0x74, 0x6f, 0x70, 0x69, 0x63, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    0x18, 0x04, 0x22, 0x17, 0x0a, 0x01, 0x62, 0x1a, 0x12, 0x08, 0x01, 0x12, 0x0e, 0x0a, 0x09, 0x31,
    0x32, 0x37, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31, 0x10, 0x91, 0x3f, 0x2a, 0x02, 0x01, 0x03, 0x1a,
    0x08, 0x08, 0x01, 0x12, 0x04, 0x61, 0x7c, 0x7c, 0x62, 0x20, 0x10, 0x2a, 0x02, 0x08, 0x0f, 0x30,
    0x01, 0x3a, 0x02, 0x08, 0x14, 0x42, 0x09, 0x61, 0x74, 0x74, 0x65, 0x6d, 0x70, 0x74, 0x2d, 0x31,
];

/// TelemetryCommand, 113 bytes.
const TELEMETRY_SUBSCRIPTION_SETTINGS: &[u8] = &[
    0x0a, 0x08, 0x08, 0xa0, 0x9c, 0x01, 0x12, 0x02, 0x4f, 0x4b, 0x12, 0x65, 0x08, 0x02, 0x12, 0x13,
    0x08, 0x03, 0x12, 0x0f, 0x0a, 0x0a, 0x6d, 0x71, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65,
    0x10, 0x91, 0x3f, 0x1a, 0x0c, 0x08, 0x11, 0x1a, 0x08, 0x0a, 0x02, 0x08, 0x01, 0x0a, 0x02, 0x08,
    0x05, 0x22, 0x02, 0x08, 0x03, 0x32, 0x23, 0x0a, 0x03, 0x12, 0x01, 0x67, 0x12, 0x10, 0x0a, 0x03,
    0x12, 0x01, 0x74, 0x12, 0x09, 0x08, 0x02, 0x12, 0x05, 0x61, 0x20, 0x3e, 0x20, 0x31, 0x18, 0x01,
    0x20, 0x20, 0x2a, 0x02, 0x08, 0x14, 0x30, 0x0a, 0x38, 0x40, 0x3a, 0x13, 0x08, 0x06, 0x12, 0x05,
    0x35, 0x2e, 0x31, 0x2e, 0x32, 0x1a, 0x05, 0x6c, 0x69, 0x6e, 0x75, 0x78, 0x22, 0x01, 0x68, 0x42,
    0x00,
];

/// ChangeInvisibleDurationRequest, 27 bytes.
const CHANGE_INVISIBLE_DURATION_REQUEST: &[u8] = &[
    0x0a, 0x03, 0x12, 0x01, 0x67, 0x12, 0x03, 0x12, 0x01, 0x74, 0x1a, 0x02, 0x72, 0x68, 0x22, 0x02,
    0x08, 0x1e, 0x2a, 0x01, 0x6d, 0x32, 0x02, 0x6c, 0x74, 0x38, 0x01,
];

/// SendMessageResponse, 31 bytes.
const SEND_MESSAGE_RESPONSE: &[u8] = &[
    0x0a, 0x08, 0x08, 0xa0, 0x9c, 0x01, 0x12, 0x02, 0x4f, 0x4b, 0x12, 0x13, 0x0a, 0x04, 0x08, 0xa0,
    0x9c, 0x01, 0x12, 0x01, 0x6d, 0x1a, 0x02, 0x74, 0x78, 0x20, 0x09, 0x2a, 0x02, 0x72, 0x63,
];

/// AckMessageResponse, 28 bytes.
const ACK_MESSAGE_RESPONSE: &[u8] = &[
    0x0a, 0x0b, 0x08, 0xcd, 0xb8, 0x02, 0x12, 0x05, 0x73, 0x74, 0x61, 0x6c, 0x65, 0x12, 0x0d, 0x0a,
    0x01, 0x6d, 0x12, 0x02, 0x72, 0x68, 0x1a, 0x04, 0x08, 0xcd, 0xb8, 0x02,
];

/// TelemetryCommand, 23 bytes.
const RECOVER_ORPHANED_TRANSACTION: &[u8] = &[
    0x2a, 0x15, 0x0a, 0x0f, 0x0a, 0x03, 0x12, 0x01, 0x74, 0x1a, 0x05, 0x1a, 0x01, 0x6d, 0x30, 0x04,
    0x22, 0x01, 0x78, 0x12, 0x02, 0x74, 0x78,
];

/// SyncLiteSubscriptionRequest, 24 bytes.
const SYNC_LITE_SUBSCRIPTION_REQUEST: &[u8] = &[
    0x08, 0x02, 0x12, 0x03, 0x12, 0x01, 0x74, 0x1a, 0x03, 0x12, 0x01, 0x67, 0x22, 0x01, 0x61, 0x22,
    0x01, 0x62, 0x28, 0x03, 0x32, 0x02, 0x18, 0x05,
];

fn res(name: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    }
}

fn secs(seconds: i64) -> Duration {
    Duration { seconds, nanos: 0 }
}

fn ok_status() -> Status {
    Status::with_code(Code::Ok, "OK")
}

fn expected_send_message_request() -> pb::SendMessageRequest {
    let system_properties = pb::SystemProperties {
        tag: Some("TagA".to_owned()),
        keys: vec!["k1".to_owned(), "k2".to_owned()],
        message_id: "0102FC000000011CF20B15F7E200000000".to_owned(),
        body_digest: Some(pb::Digest {
            r#type: pb::DigestType::Md5 as i32,
            checksum: "5D41402ABC4B2A76B9719D911017C592".to_owned(),
        }),
        body_encoding: pb::Encoding::Identity as i32,
        message_type: pb::MessageType::Fifo as i32,
        born_timestamp: Some(Timestamp {
            seconds: 1_795_400_942,
            nanos: 0,
        }),
        born_host: "10.0.0.7".to_owned(),
        store_timestamp: Some(Timestamp {
            seconds: 1_795_400_943,
            nanos: 5,
        }),
        store_host: "cell-a".to_owned(),
        delivery_timestamp: Some(Timestamp {
            seconds: 1_795_401_000,
            nanos: 0,
        }),
        receipt_handle: Some("rh-1".to_owned()),
        queue_id: 3,
        queue_offset: Some(42),
        invisible_duration: Some(secs(15)),
        delivery_attempt: Some(2),
        message_group: Some("order-7".to_owned()),
        trace_context: Some("00-trace".to_owned()),
        orphaned_transaction_recovery_duration: Some(secs(60)),
        dead_letter_queue: Some(pb::DeadLetterQueue {
            topic: "orig".to_owned(),
            message_id: "orig-id".to_owned(),
        }),
        lite_topic: Some("lite".to_owned()),
        priority: Some(7),
    };
    pb::SendMessageRequest {
        messages: vec![pb::Message {
            topic: Some(Resource {
                resource_namespace: "ns".to_owned(),
                name: "test_topic".to_owned(),
            }),
            user_properties: HashMap::from([("color".to_owned(), "blue".to_owned())]),
            system_properties: Some(system_properties),
            body: b"hello".to_vec(),
        }],
    }
}

fn expected_receive_message_request() -> pb::ReceiveMessageRequest {
    pb::ReceiveMessageRequest {
        group: Some(res("g")),
        message_queue: Some(pb::MessageQueue {
            topic: Some(res("test_topic")),
            id: -1,
            permission: pb::Permission::ReadWrite as i32,
            broker: Some(pb::Broker {
                name: "b".to_owned(),
                id: 0,
                endpoints: Some(pb::Endpoints {
                    scheme: pb::AddressScheme::IPv4 as i32,
                    addresses: vec![pb::Address {
                        host: "127.0.0.1".to_owned(),
                        port: 8081,
                    }],
                }),
            }),
            accept_message_types: vec![
                pb::MessageType::Normal as i32,
                pb::MessageType::Delay as i32,
            ],
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "a||b".to_owned(),
        }),
        batch_size: 16,
        invisible_duration: Some(secs(15)),
        auto_renew: true,
        long_polling_timeout: Some(secs(20)),
        attempt_id: Some("attempt-1".to_owned()),
    }
}

fn expected_telemetry_subscription_settings() -> pb::TelemetryCommand {
    pb::TelemetryCommand {
        status: Some(ok_status()),
        command: Some(telemetry_command::Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::PushConsumer as i32),
            access_point: Some(pb::Endpoints {
                scheme: pb::AddressScheme::DomainName as i32,
                addresses: vec![pb::Address {
                    host: "mq.example".to_owned(),
                    port: 8081,
                }],
            }),
            backoff_policy: Some(pb::RetryPolicy {
                max_attempts: 17,
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    pb::CustomizedBackoff {
                        next: vec![secs(1), secs(5)],
                    },
                )),
            }),
            request_timeout: Some(secs(3)),
            pub_sub: Some(settings::PubSub::Subscription(pb::Subscription {
                group: Some(res("g")),
                subscriptions: vec![pb::SubscriptionEntry {
                    topic: Some(res("t")),
                    expression: Some(pb::FilterExpression {
                        r#type: pb::FilterType::Sql as i32,
                        expression: "a > 1".to_owned(),
                    }),
                }],
                fifo: Some(true),
                receive_batch_size: Some(32),
                long_polling_timeout: Some(secs(20)),
                lite_subscription_quota: Some(10),
                max_lite_topic_size: Some(64),
            })),
            user_agent: Some(pb::Ua {
                language: pb::Language::Python as i32,
                version: "5.1.2".to_owned(),
                platform: "linux".to_owned(),
                hostname: "h".to_owned(),
            }),
            metric: Some(pb::Metric {
                on: false,
                endpoints: None,
            }),
            client_properties: HashMap::new(),
        })),
    }
}

fn expected_change_invisible_duration_request() -> pb::ChangeInvisibleDurationRequest {
    pb::ChangeInvisibleDurationRequest {
        group: Some(res("g")),
        topic: Some(res("t")),
        receipt_handle: "rh".to_owned(),
        invisible_duration: Some(secs(30)),
        message_id: "m".to_owned(),
        lite_topic: Some("lt".to_owned()),
        suspend: Some(true),
    }
}

fn expected_send_message_response() -> pb::SendMessageResponse {
    pb::SendMessageResponse {
        status: Some(ok_status()),
        entries: vec![pb::SendResultEntry {
            status: Some(Status::with_code(Code::Ok, "")),
            message_id: "m".to_owned(),
            transaction_id: "tx".to_owned(),
            offset: 9,
            recall_handle: "rc".to_owned(),
        }],
    }
}

fn expected_ack_message_response() -> pb::AckMessageResponse {
    pb::AckMessageResponse {
        status: Some(Status::with_code(Code::InvalidReceiptHandle, "stale")),
        entries: vec![pb::AckMessageResultEntry {
            message_id: "m".to_owned(),
            receipt_handle: "rh".to_owned(),
            status: Some(Status::with_code(Code::InvalidReceiptHandle, "")),
        }],
    }
}

fn expected_recover_orphaned_transaction() -> pb::TelemetryCommand {
    pb::TelemetryCommand {
        status: None,
        command: Some(
            telemetry_command::Command::RecoverOrphanedTransactionCommand(
                pb::RecoverOrphanedTransactionCommand {
                    message: Some(pb::Message {
                        topic: Some(res("t")),
                        user_properties: HashMap::new(),
                        system_properties: Some(pb::SystemProperties {
                            message_id: "m".to_owned(),
                            message_type: pb::MessageType::Transaction as i32,
                            ..Default::default()
                        }),
                        body: b"x".to_vec(),
                    }),
                    transaction_id: "tx".to_owned(),
                },
            ),
        ),
    }
}

fn expected_sync_lite_subscription_request() -> pb::SyncLiteSubscriptionRequest {
    pb::SyncLiteSubscriptionRequest {
        action: pb::LiteSubscriptionAction::CompleteAdd as i32,
        topic: Some(res("t")),
        group: Some(res("g")),
        lite_topic_set: vec!["a".to_owned(), "b".to_owned()],
        version: Some(3),
        offset_option: Some(pb::OffsetOption {
            offset_type: Some(pb::offset_option::OffsetType::TailN(5)),
        }),
    }
}

/// Decodes `bytes` and compares with `expected`; then checks our encoding is byte-identical.
fn check_identical<M: prost::Message + Default + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    expected: &M,
) {
    let decoded = M::decode(bytes).unwrap();
    assert_eq!(&decoded, expected);
    assert_eq!(expected.encode_to_vec(), bytes);
}

#[test]
fn send_message_request_from_python_decodes_field_by_field() {
    check_identical(SEND_MESSAGE_REQUEST, &expected_send_message_request());
}

#[test]
fn receive_message_request_from_python_decodes_field_by_field() {
    check_identical(RECEIVE_MESSAGE_REQUEST, &expected_receive_message_request());
}

#[test]
fn change_invisible_duration_request_from_python_decodes_field_by_field() {
    check_identical(
        CHANGE_INVISIBLE_DURATION_REQUEST,
        &expected_change_invisible_duration_request(),
    );
}

#[test]
fn responses_we_send_encode_exactly_as_python_expects() {
    check_identical(SEND_MESSAGE_RESPONSE, &expected_send_message_response());
    check_identical(ACK_MESSAGE_RESPONSE, &expected_ack_message_response());
    check_identical(
        RECOVER_ORPHANED_TRANSACTION,
        &expected_recover_orphaned_transaction(),
    );
}

#[test]
fn lite_subscription_request_from_python_decodes_field_by_field() {
    check_identical(
        SYNC_LITE_SUBSCRIPTION_REQUEST,
        &expected_sync_lite_subscription_request(),
    );
}

#[test]
fn telemetry_settings_from_python_decodes_field_by_field() {
    // prost writes a oneof after the struct's plain fields, so `pub_sub` (5, 6) comes after
    // 7 and 8 in our output, while Python writes fields in number order. Parsers accept any
    // order, so compare values and sizes rather than bytes.
    let expected = expected_telemetry_subscription_settings();
    let decoded = pb::TelemetryCommand::decode(TELEMETRY_SUBSCRIPTION_SETTINGS).unwrap();
    assert_eq!(decoded, expected);
    let ours = expected.encode_to_vec();
    assert_eq!(ours.len(), TELEMETRY_SUBSCRIPTION_SETTINGS.len());
    assert_eq!(
        pb::TelemetryCommand::decode(ours.as_slice()).unwrap(),
        expected
    );
}
