//! The RocketMQ gRPC front over real HTTP/2 on 127.0.0.1, driven by the generated tonic client:
//! routes, sending, receiving, acknowledging, invisibility, refusals with the codes each client
//! expects, long polling, assignments, dead letters and FIFO order (`proto/CONFORMANCE.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grpc_support;

use grpc_support::*;

#[tokio::test]
async fn routes_list_every_queue_with_the_endpoint_the_client_dialled() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let endpoints = pb::Endpoints {
        scheme: pb::AddressScheme::IPv4 as i32,
        addresses: vec![pb::Address {
            host: "127.0.0.1".to_string(),
            port: i32::from(cell.addr.port()),
        }],
    };
    let route = client
        .query_route(request(
            pb::QueryRouteRequest {
                topic: resource("orders"),
                endpoints: Some(endpoints.clone()),
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 4);
    for (id, queue) in route.message_queues.iter().enumerate() {
        assert_eq!(queue.id, id as i32);
        assert_eq!(queue.topic.as_ref().unwrap().name, "orders");
        assert_eq!(queue.permission, pb::Permission::ReadWrite as i32);
        let broker = queue.broker.as_ref().unwrap();
        assert_eq!(broker.id, 0);
        assert_eq!(broker.endpoints.as_ref(), Some(&endpoints));
        assert_eq!(
            queue.accept_message_types,
            vec![pb::MessageType::Normal as i32]
        );
    }

    let unknown = client
        .query_route(request(
            pb::QueryRouteRequest {
                topic: resource("missing"),
                endpoints: Some(endpoints.clone()),
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&unknown.status), Code::TopicNotFound as i32);
    assert!(unknown.message_queues.is_empty());
    assert!(unknown.status.unwrap().message.contains("missing"));

    let mut anonymous = tonic::Request::new(pb::QueryRouteRequest {
        topic: resource("orders"),
        endpoints: Some(endpoints),
    });
    anonymous
        .metadata_mut()
        .insert("x-mq-language", "PYTHON".parse().unwrap());
    let refused = client.query_route(anonymous).await.unwrap().into_inner();
    assert_eq!(code(&refused.status), Code::ClientIdRequired as i32);
    cell.stop().await;
}

#[tokio::test]
async fn send_receive_ack_keeps_every_field_and_acked_messages_stay_acked() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let messages = (0..3)
        .map(|i| {
            message(
                "orders",
                &format!("M{i}"),
                pb::MessageType::Normal,
                format!("body-{i}").as_bytes(),
            )
        })
        .collect();
    let sent = send(&mut client, messages, "RUST").await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    assert_eq!(sent.entries.len(), 3, "one entry per message (P1)");
    let ids: Vec<&str> = sent.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["M0", "M1", "M2"]);

    let mut got = receive_at_least(&mut client, "readers", "orders", 30_000, 3).await;
    assert_eq!(got.len(), 3);
    got.sort_by_key(|m| m.system_properties.as_ref().unwrap().message_id.clone());
    for (i, message) in got.iter().enumerate() {
        let system = message.system_properties.as_ref().unwrap();
        assert_eq!(system.message_id, format!("M{i}"));
        assert_eq!(message.body, format!("body-{i}").into_bytes());
        assert_eq!(system.tag.as_deref(), Some("TagA"));
        assert_eq!(system.keys, vec![format!("key-M{i}")]);
        assert_eq!(
            message.user_properties.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(system.delivery_attempt, Some(1));
        assert_eq!(system.body_encoding, pb::Encoding::Identity as i32);
        assert_eq!(
            system.born_timestamp.as_ref().unwrap().seconds,
            1_700_000_000
        );
        assert_eq!(message.topic.as_ref().unwrap().name, "orders");
    }
    let handles: Vec<String> = got.iter().map(handle).collect();
    let acked = ack(&mut client, "orders", &handles).await;
    assert_eq!(code(&acked.status), Code::Ok as i32);
    assert_eq!(acked.entries.len(), 3, "one result per entry (K1)");

    // Nothing left: the long poll ends with MESSAGE_NOT_FOUND, status then timestamp.
    let empty = receive(&mut client, "readers", "orders", 30_000, None).await;
    assert_eq!(empty.status.code, Code::MessageNotFound as i32);
    assert!(empty.messages.is_empty());
    assert_eq!(empty.items, 2);
    cell.stop().await;
}

#[tokio::test]
async fn unacked_message_is_redelivered_and_its_old_handle_refused() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let sent = send(
        &mut client,
        vec![message("orders", "R1", pb::MessageType::Normal, b"again")],
        "RUST",
    )
    .await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let first = receive_at_least(&mut client, "readers", "orders", 200, 1).await;
    assert_eq!(first.len(), 1);
    let old_handle = handle(&first[0]);
    let second = receive_at_least(&mut client, "readers", "orders", 30_000, 1).await;
    assert_eq!(second.len(), 1, "redelivered after its invisible duration");
    let system = second[0].system_properties.as_ref().unwrap();
    assert_eq!(system.message_id, "R1");
    assert_eq!(system.delivery_attempt, Some(2));
    let stale = ack(&mut client, "orders", std::slice::from_ref(&old_handle)).await;
    assert_eq!(code(&stale.status), Code::InvalidReceiptHandle as i32);
    assert_eq!(
        code(&stale.entries[0].status),
        Code::InvalidReceiptHandle as i32
    );
    let fresh = ack(&mut client, "orders", &[handle(&second[0])]).await;
    assert_eq!(code(&fresh.status), Code::Ok as i32);
    cell.stop().await;
}

#[tokio::test]
async fn change_invisible_duration_returns_a_usable_handle_even_on_error() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    send(
        &mut client,
        vec![message("orders", "C1", pb::MessageType::Normal, b"x")],
        "PYTHON",
    )
    .await;
    let got = receive_at_least(&mut client, "readers", "orders", 30_000, 1).await;
    let original = handle(&got[0]);
    let change = |handle: String, seconds: i64| pb::ChangeInvisibleDurationRequest {
        group: resource("readers"),
        topic: resource("orders"),
        receipt_handle: handle,
        invisible_duration: Some(prost_types::Duration { seconds, nanos: 0 }),
        message_id: "C1".to_string(),
        lite_topic: None,
        suspend: None,
    };
    let changed = client
        .change_invisible_duration(request(change(original.clone(), 60), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&changed.status), Code::Ok as i32);
    assert_ne!(changed.receipt_handle, original);
    let refused = client
        .change_invisible_duration(request(change(original.clone(), 60), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&refused.status), Code::InvalidReceiptHandle as i32);
    assert_eq!(
        refused.receipt_handle, original,
        "C1: the old handle comes back"
    );
    let acked = ack(&mut client, "orders", &[changed.receipt_handle]).await;
    assert_eq!(code(&acked.status), Code::Ok as i32);
    cell.stop().await;
}

#[tokio::test]
async fn bad_requests_get_the_codes_each_client_expects() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    // FIFO message into a NORMAL topic.
    let mut fifo = message("orders", "T1", pb::MessageType::Fifo, b"x");
    fifo.system_properties.as_mut().unwrap().message_group = Some("g".to_string());
    let wrong_type = send(&mut client, vec![fifo], "RUST").await;
    assert_eq!(
        code(&wrong_type.status),
        Code::MessagePropertyConflictWithType as i32
    );
    assert_eq!(wrong_type.entries.len(), 1);
    // Body over the limit.
    let big = message(
        "orders",
        "B1",
        pb::MessageType::Normal,
        &vec![1u8; (64 << 10) + 1],
    );
    let too_large = send(&mut client, vec![big], "RUST").await;
    assert_eq!(code(&too_large.status), Code::MessageBodyTooLarge as i32);
    // Empty body: Python knows MESSAGE_BODY_EMPTY, Rust 5.0.0 would panic on it.
    let empty = message("orders", "E1", pb::MessageType::Normal, b"");
    let to_python = send(&mut client, vec![empty.clone()], "PYTHON").await;
    let to_rust = send(&mut client, vec![empty], "RUST").await;
    assert_ne!(code(&to_python.status), Code::Ok as i32);
    assert!(
        [Code::MessageBodyEmpty as i32, Code::BadRequest as i32].contains(&code(&to_python.status))
    );
    assert_eq!(code(&to_rust.status), Code::BadRequest as i32);
    // Unknown topic and unknown group.
    let unknown_topic = send(
        &mut client,
        vec![message("nowhere", "U1", pb::MessageType::Normal, b"x")],
        "RUST",
    )
    .await;
    assert_eq!(code(&unknown_topic.status), Code::TopicNotFound as i32);
    let unknown_group = receive(&mut client, "strangers", "orders", 30_000, None).await;
    assert_eq!(
        unknown_group.status.code,
        Code::ConsumerGroupNotFound as i32
    );
    assert!(unknown_group.status.message.contains("strangers"));
    // A bad filter.
    let bad_filter = receive(
        &mut client,
        "readers",
        "orders",
        30_000,
        Some(pb::FilterExpression {
            r#type: pb::FilterType::Sql as i32,
            expression: "a >".to_string(),
        }),
    )
    .await;
    assert_eq!(bad_filter.status.code, Code::IllegalFilterExpression as i32);
    // A garbage receipt handle.
    let garbage = ack(&mut client, "orders", &["not-a-handle".to_string()]).await;
    assert_eq!(code(&garbage.status), Code::InvalidReceiptHandle as i32);
    cell.stop().await;
}

#[tokio::test]
async fn long_poll_wakes_when_a_matching_message_arrives() {
    let cell = Cell::start(
        GrpcConfig {
            min_long_polling_ms: 5_000,
            ..GrpcConfig::default()
        },
        broker_config(),
    )
    .await;
    let mut consumer = cell.client().await;
    let mut producer = cell.client().await;
    let waiting = tokio::spawn(async move {
        receive(
            &mut consumer,
            "readers",
            "orders",
            30_000,
            Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "TagA || TagB".to_string(),
            }),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(
        &mut producer,
        vec![message("orders", "W1", pb::MessageType::Normal, b"wake")],
        "RUST",
    )
    .await;
    let received = tokio::time::timeout(TEST_TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.status.code, Code::Ok as i32);
    assert_eq!(received.messages.len(), 1);
    assert_eq!(received.messages[0].body, b"wake");
    cell.stop().await;
}

#[tokio::test]
async fn assignments_and_dead_letter_forwarding_follow_the_push_consumer_rules() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    cell.broker
        .create_group(GroupConfig::new("ordered", true))
        .unwrap();
    let mut client = cell.client().await;
    let assignment = |group: &str, topic: &str| pb::QueryAssignmentRequest {
        topic: resource(topic),
        group: resource(group),
        endpoints: None,
    };
    let concurrent = client
        .query_assignment(request(assignment("readers", "orders"), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&concurrent.status), Code::Ok as i32);
    let ids: Vec<i32> = concurrent
        .assignments
        .iter()
        .map(|a| a.message_queue.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids, vec![-1], "G1: one assignment, any queue");
    let ordered = client
        .query_assignment(request(assignment("ordered", "fifo"), "PYTHON"))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i32> = ordered
        .assignments
        .iter()
        .map(|a| a.message_queue.as_ref().unwrap().id)
        .collect();
    assert_eq!(ids, vec![0, 1], "G1: FIFO groups get every queue");

    // D1: forward a received message to the group's DLQ, which is then consumable.
    send(
        &mut client,
        vec![message("orders", "D1", pb::MessageType::Normal, b"poison")],
        "PYTHON",
    )
    .await;
    let got = receive_at_least(&mut client, "readers", "orders", 30_000, 1).await;
    let forwarded = client
        .forward_message_to_dead_letter_queue(request(
            pb::ForwardMessageToDeadLetterQueueRequest {
                group: resource("readers"),
                topic: resource("orders"),
                receipt_handle: handle(&got[0]),
                message_id: "D1".to_string(),
                delivery_attempt: 1,
                max_delivery_attempts: 16,
                lite_topic: None,
            },
            "PYTHON",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&forwarded.status), Code::Ok as i32);
    let dead = receive_at_least(&mut client, "readers", "%DLQ%readers", 30_000, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"poison");
    let dlq = dead[0]
        .system_properties
        .as_ref()
        .unwrap()
        .dead_letter_queue
        .clone()
        .unwrap();
    assert_eq!(dlq.topic, "orders");
    cell.stop().await;
}

#[tokio::test]
async fn fifo_group_gets_the_next_message_of_a_group_only_after_the_ack() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    cell.broker
        .create_group(GroupConfig::new("ordered", true))
        .unwrap();
    let mut client = cell.client().await;
    let messages = (0..3)
        .map(|i| {
            let mut m = message("fifo", &format!("F{i}"), pb::MessageType::Fifo, &[i]);
            m.system_properties.as_mut().unwrap().message_group = Some("order-42".to_string());
            m
        })
        .collect();
    let sent = send(&mut client, messages, "RUST").await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let ordered_receive = |client: &mut MessagingServiceClient<Channel>| {
        let mut client = client.clone();
        async move {
            let body = pb::ReceiveMessageRequest {
                group: resource("ordered"),
                message_queue: Some(pb::MessageQueue {
                    topic: resource("fifo"),
                    id: 0,
                    ..Default::default()
                }),
                filter_expression: None,
                batch_size: 32,
                invisible_duration: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                auto_renew: false,
                long_polling_timeout: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 300_000_000,
                }),
                attempt_id: None,
            };
            let mut stream = client
                .receive_message(request(body, "RUST"))
                .await
                .unwrap()
                .into_inner();
            let mut messages = Vec::new();
            while let Some(item) = stream.next().await {
                if let Some(Content::Message(m)) = item.unwrap().content {
                    messages.push(m);
                }
            }
            messages
        }
    };
    let mut order = Vec::new();
    for _ in 0..30 {
        let got = ordered_receive(&mut client).await;
        assert!(got.len() <= 1, "one message of a group in flight at a time");
        if let Some(m) = got.first() {
            order.push(m.body.clone());
            let acked = client
                .ack_message(request(
                    pb::AckMessageRequest {
                        group: resource("ordered"),
                        topic: resource("fifo"),
                        entries: vec![pb::AckMessageEntry {
                            message_id: String::new(),
                            receipt_handle: handle(m),
                            lite_topic: None,
                        }],
                    },
                    "RUST",
                ))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(code(&acked.status), Code::Ok as i32);
        }
        if order.len() == 3 {
            break;
        }
    }
    assert_eq!(order, vec![vec![0u8], vec![1u8], vec![2u8]]);
    cell.stop().await;
}
