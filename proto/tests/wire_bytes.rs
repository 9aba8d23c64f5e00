//! Encodings checked byte for byte against values worked out by hand from the field numbers in
//! the protocol research, plus prost round trips of the messages the broker handles most.
//!
//! The hand-computed vectors are what catch a wrong field number: a round trip through our own
//! generated code would succeed with any numbering.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use meridian_proto::rocketmq::v2::{
    Broker, ClientType, Code, CustomizedBackoff, DeadLetterQueue, Digest, DigestType, Encoding,
    Endpoints, ExponentialBackoff, FilterExpression, FilterType, Message, MessageQueue,
    MessageType, Permission, Publishing, ReceiveMessageResponse, RecoverOrphanedTransactionCommand,
    Resource, RetryPolicy, SendMessageRequest, Settings, Status, Subscription, SubscriptionEntry,
    SystemProperties, TelemetryCommand, Ua, receive_message_response, retry_policy, settings,
    telemetry_command,
};
use prost::Message as _;
use prost_types::{Duration, Timestamp};

fn resource(name: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: name.to_owned(),
    }
}

/// A message with a few system properties whose numbers need one-byte (12) and two-byte
/// (16, 17) tags.
fn small_delivered_message() -> Message {
    Message {
        topic: Some(resource("t")),
        user_properties: HashMap::from([("k".to_owned(), "v".to_owned())]),
        system_properties: Some(SystemProperties {
            tag: Some("a".to_owned()),
            message_id: "m".to_owned(),
            body_encoding: Encoding::Identity as i32,
            receipt_handle: Some("h".to_owned()),
            delivery_attempt: Some(1),
            message_group: Some("g".to_owned()),
            ..Default::default()
        }),
        body: b"x".to_vec(),
    }
}

/// Worked out by hand (wire type 0 = varint, 2 = length-delimited; tag byte = number << 3 | type):
const SMALL_DELIVERED_MESSAGE_BYTES: &[u8] = &[
    // 1 topic: Resource { 2 name: "t" }
    0x0a, 0x03, 0x12, 0x01, b't', //
    // 2 user_properties: entry { 1 key: "k", 2 value: "v" }
    0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', //
    // 3 system_properties, 18 bytes:
    0x1a, 0x12, //
    0x0a, 0x01, b'a', // 1 tag
    0x1a, 0x01, b'm', // 3 message_id
    0x28, 0x01, // 5 body_encoding = IDENTITY
    0x62, 0x01, b'h', // 12 receipt_handle: (12 << 3 | 2) = 0x62
    0x80, 0x01, 0x01, // 16 delivery_attempt: (16 << 3 | 0) = 128 = varint 80 01
    0x8a, 0x01, 0x01, b'g', // 17 message_group: (17 << 3 | 2) = 138 = varint 8a 01
    // 4 body: "x"
    0x22, 0x01, b'x',
];

#[test]
fn message_with_system_properties_matches_hand_computed_bytes() {
    let encoded = small_delivered_message().encode_to_vec();
    assert_eq!(encoded, SMALL_DELIVERED_MESSAGE_BYTES);
    let decoded = Message::decode(SMALL_DELIVERED_MESSAGE_BYTES).unwrap();
    assert_eq!(decoded, small_delivered_message());
}

#[test]
fn receive_stream_items_match_hand_computed_bytes() {
    // content oneof: 1 status, 2 message, 3 delivery_timestamp.
    let status_item = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(Status {
            code: Code::Ok as i32,
            message: "OK".to_owned(),
        })),
    };
    // Status { 1 code = 20000 (varint a0 9c 01), 2 message = "OK" }
    let status_bytes = [0x08, 0xa0, 0x9c, 0x01, 0x12, 0x02, b'O', b'K'];
    let mut expected = vec![0x0a, 0x08];
    expected.extend_from_slice(&status_bytes);
    assert_eq!(status_item.encode_to_vec(), expected);

    let message_item = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Message(
            small_delivered_message(),
        )),
    };
    let mut expected = vec![0x12, 36];
    expected.extend_from_slice(SMALL_DELIVERED_MESSAGE_BYTES);
    assert_eq!(SMALL_DELIVERED_MESSAGE_BYTES.len(), 36);
    assert_eq!(message_item.encode_to_vec(), expected);

    let timestamp_item = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::DeliveryTimestamp(
            Timestamp {
                seconds: 1,
                nanos: 0,
            },
        )),
    };
    // 3 delivery_timestamp: Timestamp { 1 seconds = 1 }
    assert_eq!(timestamp_item.encode_to_vec(), [0x1a, 0x02, 0x08, 0x01]);
}

#[test]
fn telemetry_settings_reply_matches_hand_computed_bytes() {
    let reply = TelemetryCommand {
        status: Some(Status {
            code: Code::Ok as i32,
            message: "OK".to_owned(),
        }),
        command: Some(telemetry_command::Command::Settings(Settings {
            pub_sub: Some(settings::PubSub::Publishing(Publishing {
                topics: Vec::new(),
                max_body_size: 4 * 1024 * 1024,
                validate_message_type: false,
            })),
            ..Default::default()
        })),
    };
    let expected = [
        0x0a, 0x08, 0x08, 0xa0, 0x9c, 0x01, 0x12, 0x02, b'O', b'K', // 1 status
        0x12, 0x07, // 2 settings
        0x2a, 0x05, // 5 publishing
        0x10, 0x80, 0x80, 0x80, 0x02, // 2 max_body_size = 4194304 = 2^22
    ];
    assert_eq!(reply.encode_to_vec(), expected);
    assert_eq!(TelemetryCommand::decode(&expected[..]).unwrap(), reply);
}

#[test]
fn transaction_recovery_and_route_numbers_match_hand_computed_bytes() {
    let command = TelemetryCommand {
        status: None,
        command: Some(
            telemetry_command::Command::RecoverOrphanedTransactionCommand(
                RecoverOrphanedTransactionCommand {
                    message: None,
                    transaction_id: "x".to_owned(),
                },
            ),
        ),
    };
    // 5 recover_orphaned_transaction_command { 2 transaction_id = "x" }
    assert_eq!(command.encode_to_vec(), [0x2a, 0x03, 0x12, 0x01, b'x']);

    let queue = MessageQueue {
        topic: None,
        id: 2,
        permission: Permission::ReadWrite as i32,
        broker: Some(Broker {
            name: String::new(),
            id: 0,
            endpoints: None,
        }),
        accept_message_types: vec![MessageType::Normal as i32, MessageType::Fifo as i32],
    };
    // 2 id = 2, 3 permission = 4, 4 broker = {} (present, empty), 5 accept types packed [1, 2]
    assert_eq!(
        queue.encode_to_vec(),
        [0x10, 0x02, 0x18, 0x04, 0x22, 0x00, 0x2a, 0x02, 0x01, 0x02]
    );
}

fn full_system_properties() -> SystemProperties {
    SystemProperties {
        tag: Some("TagA".to_owned()),
        keys: vec!["k1".to_owned(), "k2".to_owned()],
        message_id: "01AEB14B37817A34A671b4660000000001".to_owned(),
        body_digest: Some(Digest {
            r#type: DigestType::Md5 as i32,
            checksum: "5D41402ABC4B2A76B9719D911017C592".to_owned(),
        }),
        body_encoding: Encoding::Identity as i32,
        message_type: MessageType::Fifo as i32,
        born_timestamp: Some(Timestamp {
            seconds: 1_795_400_942,
            nanos: 0,
        }),
        born_host: "producer-host".to_owned(),
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
        invisible_duration: Some(Duration {
            seconds: 15,
            nanos: 0,
        }),
        delivery_attempt: Some(2),
        message_group: Some("order-7".to_owned()),
        trace_context: Some("00-trace".to_owned()),
        orphaned_transaction_recovery_duration: Some(Duration {
            seconds: 60,
            nanos: 0,
        }),
        dead_letter_queue: Some(DeadLetterQueue {
            topic: "orig".to_owned(),
            message_id: "orig-id".to_owned(),
        }),
        lite_topic: Some("lite".to_owned()),
        priority: Some(7),
    }
}

#[test]
fn send_message_request_round_trips_with_every_system_property() {
    let request = SendMessageRequest {
        messages: vec![Message {
            topic: Some(Resource {
                resource_namespace: "ns".to_owned(),
                name: "test_topic".to_owned(),
            }),
            user_properties: HashMap::from([
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), String::new()),
            ]),
            system_properties: Some(full_system_properties()),
            body: vec![0, 1, 2, 255],
        }],
    };
    let bytes = request.encode_to_vec();
    let decoded = SendMessageRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded, request);
    let props = decoded.messages[0].system_properties.as_ref().unwrap();
    assert_eq!(props.message_type(), MessageType::Fifo);
    assert_eq!(props.body_encoding(), Encoding::Identity);
}

#[test]
fn explicit_presence_fields_distinguish_unset_from_default() {
    // `optional` fields must keep "set to the default" apart from "absent": the Rust client
    // reads delivery_attempt with unwrap_or(0) and receipt_handle as an Option.
    let props = SystemProperties {
        delivery_attempt: Some(0),
        receipt_handle: Some(String::new()),
        ..Default::default()
    };
    let decoded = SystemProperties::decode(props.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.delivery_attempt, Some(0));
    assert_eq!(decoded.receipt_handle, Some(String::new()));
    let empty = SystemProperties::decode(&[][..]).unwrap();
    assert_eq!(empty.delivery_attempt, None);
    assert_eq!(empty.receipt_handle, None);
}

#[test]
fn receive_message_response_variants_round_trip() {
    let items = [
        receive_message_response::Content::Status(Status::with_code(
            Code::MessageNotFound,
            "no new message",
        )),
        receive_message_response::Content::Message(Message {
            topic: Some(resource("test_topic")),
            user_properties: HashMap::new(),
            system_properties: Some(full_system_properties()),
            body: b"hello".to_vec(),
        }),
        receive_message_response::Content::DeliveryTimestamp(Timestamp {
            seconds: 1_795_400_999,
            nanos: 123_000_000,
        }),
    ];
    for content in items {
        let item = ReceiveMessageResponse {
            content: Some(content),
        };
        let decoded = ReceiveMessageResponse::decode(item.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, item);
    }
    // An item with no oneof arm encodes to nothing; the Rust client unwraps the arm and would
    // panic on it, which is why the server must never emit one.
    assert!(ReceiveMessageResponse::default().encode_to_vec().is_empty());
}

#[test]
fn telemetry_settings_round_trip_for_producer_and_consumer() {
    let producer = TelemetryCommand {
        status: Some(Status::ok()),
        command: Some(telemetry_command::Command::Settings(Settings {
            client_type: Some(ClientType::Producer as i32),
            access_point: Some(Endpoints {
                scheme: meridian_proto::rocketmq::v2::AddressScheme::IPv4 as i32,
                addresses: vec![meridian_proto::rocketmq::v2::Address {
                    host: "127.0.0.1".to_owned(),
                    port: 8081,
                }],
            }),
            backoff_policy: Some(RetryPolicy {
                max_attempts: 3,
                strategy: Some(retry_policy::Strategy::ExponentialBackoff(
                    ExponentialBackoff {
                        initial: Some(Duration {
                            seconds: 0,
                            nanos: 10_000_000,
                        }),
                        max: Some(Duration {
                            seconds: 1,
                            nanos: 0,
                        }),
                        multiplier: 2.0,
                    },
                )),
            }),
            request_timeout: Some(Duration {
                seconds: 3,
                nanos: 0,
            }),
            pub_sub: Some(settings::PubSub::Publishing(Publishing {
                topics: vec![resource("test_topic")],
                max_body_size: 4 * 1024 * 1024,
                validate_message_type: true,
            })),
            user_agent: Some(Ua {
                language: meridian_proto::rocketmq::v2::Language::Rust as i32,
                version: "5.0.0".to_owned(),
                platform: "linux".to_owned(),
                hostname: "vm".to_owned(),
            }),
            metric: Some(meridian_proto::rocketmq::v2::Metric {
                on: false,
                endpoints: None,
            }),
            client_properties: HashMap::new(),
        })),
    };
    let consumer = TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::Settings(Settings {
            client_type: Some(ClientType::SimpleConsumer as i32),
            backoff_policy: Some(RetryPolicy {
                max_attempts: 17,
                strategy: Some(retry_policy::Strategy::CustomizedBackoff(
                    CustomizedBackoff {
                        next: vec![
                            Duration {
                                seconds: 1,
                                nanos: 0,
                            },
                            Duration {
                                seconds: 5,
                                nanos: 0,
                            },
                        ],
                    },
                )),
            }),
            pub_sub: Some(settings::PubSub::Subscription(Subscription {
                group: Some(resource("SimpleConsumerGroup")),
                subscriptions: vec![SubscriptionEntry {
                    topic: Some(resource("test_topic")),
                    expression: Some(FilterExpression {
                        r#type: FilterType::Tag as i32,
                        expression: "test_tag".to_owned(),
                    }),
                }],
                fifo: Some(false),
                receive_batch_size: Some(32),
                long_polling_timeout: Some(Duration {
                    seconds: 20,
                    nanos: 0,
                }),
                lite_subscription_quota: None,
                max_lite_topic_size: None,
            })),
            ..Default::default()
        })),
    };
    for command in [producer, consumer] {
        let decoded = TelemetryCommand::decode(command.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, command);
    }
}
