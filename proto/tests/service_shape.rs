//! Checks the compiled descriptor set (what `protox` produced at build time) against the
//! protocol research: every RPC with its streaming kind and types, and the field numbers of
//! the messages the official clients depend on most.

#![allow(clippy::unwrap_used)]

use meridian_proto::descriptor::{self, PACKAGE, SERVICE_NAME};
use prost_types::{DescriptorProto, FileDescriptorSet, ServiceDescriptorProto};

/// (rpc, request, response, client streaming, server streaming), from the research note.
const RPCS: [(&str, &str, &str, bool, bool); 17] = [
    (
        "QueryRoute",
        "QueryRouteRequest",
        "QueryRouteResponse",
        false,
        false,
    ),
    (
        "Heartbeat",
        "HeartbeatRequest",
        "HeartbeatResponse",
        false,
        false,
    ),
    (
        "SendMessage",
        "SendMessageRequest",
        "SendMessageResponse",
        false,
        false,
    ),
    (
        "QueryAssignment",
        "QueryAssignmentRequest",
        "QueryAssignmentResponse",
        false,
        false,
    ),
    (
        "ReceiveMessage",
        "ReceiveMessageRequest",
        "ReceiveMessageResponse",
        false,
        true,
    ),
    (
        "AckMessage",
        "AckMessageRequest",
        "AckMessageResponse",
        false,
        false,
    ),
    (
        "ForwardMessageToDeadLetterQueue",
        "ForwardMessageToDeadLetterQueueRequest",
        "ForwardMessageToDeadLetterQueueResponse",
        false,
        false,
    ),
    (
        "PullMessage",
        "PullMessageRequest",
        "PullMessageResponse",
        false,
        true,
    ),
    (
        "UpdateOffset",
        "UpdateOffsetRequest",
        "UpdateOffsetResponse",
        false,
        false,
    ),
    (
        "GetOffset",
        "GetOffsetRequest",
        "GetOffsetResponse",
        false,
        false,
    ),
    (
        "QueryOffset",
        "QueryOffsetRequest",
        "QueryOffsetResponse",
        false,
        false,
    ),
    (
        "EndTransaction",
        "EndTransactionRequest",
        "EndTransactionResponse",
        false,
        false,
    ),
    (
        "Telemetry",
        "TelemetryCommand",
        "TelemetryCommand",
        true,
        true,
    ),
    (
        "NotifyClientTermination",
        "NotifyClientTerminationRequest",
        "NotifyClientTerminationResponse",
        false,
        false,
    ),
    (
        "ChangeInvisibleDuration",
        "ChangeInvisibleDurationRequest",
        "ChangeInvisibleDurationResponse",
        false,
        false,
    ),
    (
        "RecallMessage",
        "RecallMessageRequest",
        "RecallMessageResponse",
        false,
        false,
    ),
    (
        "SyncLiteSubscription",
        "SyncLiteSubscriptionRequest",
        "SyncLiteSubscriptionResponse",
        false,
        false,
    ),
];

fn fds() -> FileDescriptorSet {
    descriptor::file_descriptor_set().unwrap()
}

fn service(fds: &FileDescriptorSet) -> ServiceDescriptorProto {
    let mut found = fds
        .file
        .iter()
        .filter(|file| file.package() == PACKAGE)
        .flat_map(|file| file.service.iter())
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(found.len(), 1, "exactly one service in the package");
    found.remove(0)
}

fn message<'a>(fds: &'a FileDescriptorSet, name: &str) -> &'a DescriptorProto {
    fds.file
        .iter()
        .filter(|file| file.package() == PACKAGE)
        .flat_map(|file| file.message_type.iter())
        .find(|message| message.name() == name)
        .unwrap_or_else(|| panic!("message {name} not in descriptor set"))
}

#[test]
fn service_is_named_as_the_clients_expect() {
    let fds = fds();
    assert_eq!(format!("{PACKAGE}.{}", service(&fds).name()), SERVICE_NAME);
    assert_eq!(SERVICE_NAME, "apache.rocketmq.v2.MessagingService");
    assert_eq!(
        descriptor::method_path("QueryRoute"),
        "/apache.rocketmq.v2.MessagingService/QueryRoute"
    );
}

#[test]
fn service_has_every_rpc_with_the_right_shape_and_nothing_else() {
    let fds = fds();
    let service = service(&fds);
    let mut names: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = RPCS.iter().map(|rpc| rpc.0).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);

    for (name, request, response, client_streaming, server_streaming) in RPCS {
        let method = service.method.iter().find(|m| m.name() == name).unwrap();
        assert_eq!(
            method.input_type(),
            format!(".{PACKAGE}.{request}"),
            "{name}"
        );
        assert_eq!(
            method.output_type(),
            format!(".{PACKAGE}.{response}"),
            "{name}"
        );
        assert_eq!(
            method.client_streaming(),
            client_streaming,
            "{name} client streaming"
        );
        assert_eq!(
            method.server_streaming(),
            server_streaming,
            "{name} server streaming"
        );
    }
}

/// Field name -> number for the messages whose numbering the official clients depend on
/// most, transcribed from the research note's schema section.
const FIELD_NUMBERS: &[(&str, &[(&str, i32)])] = &[
    (
        "SystemProperties",
        &[
            ("tag", 1),
            ("keys", 2),
            ("message_id", 3),
            ("body_digest", 4),
            ("body_encoding", 5),
            ("message_type", 6),
            ("born_timestamp", 7),
            ("born_host", 8),
            ("store_timestamp", 9),
            ("store_host", 10),
            ("delivery_timestamp", 11),
            ("receipt_handle", 12),
            ("queue_id", 13),
            ("queue_offset", 14),
            ("invisible_duration", 15),
            ("delivery_attempt", 16),
            ("message_group", 17),
            ("trace_context", 18),
            ("orphaned_transaction_recovery_duration", 19),
            ("dead_letter_queue", 20),
            ("lite_topic", 21),
            ("priority", 22),
        ],
    ),
    (
        "Message",
        &[
            ("topic", 1),
            ("user_properties", 2),
            ("system_properties", 3),
            ("body", 4),
        ],
    ),
    (
        "MessageQueue",
        &[
            ("topic", 1),
            ("id", 2),
            ("permission", 3),
            ("broker", 4),
            ("accept_message_types", 5),
        ],
    ),
    (
        "Settings",
        &[
            ("client_type", 1),
            ("access_point", 2),
            ("backoff_policy", 3),
            ("request_timeout", 4),
            ("publishing", 5),
            ("subscription", 6),
            ("user_agent", 7),
            ("metric", 8),
            ("client_properties", 9),
        ],
    ),
    (
        "Subscription",
        &[
            ("group", 1),
            ("subscriptions", 2),
            ("fifo", 3),
            ("receive_batch_size", 4),
            ("long_polling_timeout", 5),
            ("lite_subscription_quota", 6),
            ("max_lite_topic_size", 7),
        ],
    ),
    (
        "TelemetryCommand",
        &[
            ("status", 1),
            ("settings", 2),
            ("thread_stack_trace", 3),
            ("verify_message_result", 4),
            ("recover_orphaned_transaction_command", 5),
            ("print_thread_stack_trace_command", 6),
            ("verify_message_command", 7),
            ("reconnect_endpoints_command", 8),
            ("notify_unsubscribe_lite_command", 9),
        ],
    ),
    (
        "ReceiveMessageRequest",
        &[
            ("group", 1),
            ("message_queue", 2),
            ("filter_expression", 3),
            ("batch_size", 4),
            ("invisible_duration", 5),
            ("auto_renew", 6),
            ("long_polling_timeout", 7),
            ("attempt_id", 8),
        ],
    ),
    (
        "ReceiveMessageResponse",
        &[("status", 1), ("message", 2), ("delivery_timestamp", 3)],
    ),
    (
        "SendResultEntry",
        &[
            ("status", 1),
            ("message_id", 2),
            ("transaction_id", 3),
            ("offset", 4),
            ("recall_handle", 5),
        ],
    ),
    (
        "AckMessageRequest",
        &[("group", 1), ("topic", 2), ("entries", 3)],
    ),
    (
        "AckMessageResultEntry",
        &[("message_id", 1), ("receipt_handle", 2), ("status", 3)],
    ),
    (
        "ChangeInvisibleDurationRequest",
        &[
            ("group", 1),
            ("topic", 2),
            ("receipt_handle", 3),
            ("invisible_duration", 4),
            ("message_id", 5),
            ("lite_topic", 6),
            ("suspend", 7),
        ],
    ),
    (
        "EndTransactionRequest",
        &[
            ("topic", 1),
            ("message_id", 2),
            ("transaction_id", 3),
            ("resolution", 4),
            ("source", 5),
            ("trace_context", 6),
        ],
    ),
];

#[test]
fn key_messages_have_exactly_the_researched_field_numbers() {
    let fds = fds();
    for (name, fields) in FIELD_NUMBERS {
        let descriptor = message(&fds, name);
        let mut actual: Vec<(&str, i32)> = descriptor
            .field
            .iter()
            .map(|field| (field.name(), field.number()))
            .collect();
        actual.sort_unstable_by_key(|(_, number)| *number);
        let mut expected = fields.to_vec();
        expected.sort_unstable_by_key(|(_, number)| *number);
        assert_eq!(actual, expected, "{name}");
    }
}

#[test]
fn oneof_arms_are_grouped_as_the_clients_expect() {
    let fds = fds();
    let cases = [
        ("ReceiveMessageResponse", "content", vec![1, 2, 3]),
        ("TelemetryCommand", "command", vec![2, 3, 4, 5, 6, 7, 8, 9]),
        ("Settings", "pub_sub", vec![5, 6]),
    ];
    for (name, oneof, numbers) in cases {
        let descriptor = message(&fds, name);
        let index = descriptor
            .oneof_decl
            .iter()
            .position(|decl| decl.name() == oneof)
            .unwrap_or_else(|| panic!("{name} has no oneof {oneof}"));
        let members: Vec<i32> = descriptor
            .field
            .iter()
            .filter(|field| {
                field.oneof_index == Some(i32::try_from(index).unwrap()) && !field.proto3_optional()
            })
            .map(|field| field.number())
            .collect();
        assert_eq!(members, numbers, "{name}.{oneof}");
    }
}
