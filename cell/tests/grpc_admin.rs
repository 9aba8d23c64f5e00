//! Meridian's admin API (`meridian.admin.v1.Admin`) served beside the RocketMQ service on one
//! port, and the development auto-creation of topics and groups (`GrpcConfig::
//! auto_create_topics`), over real gRPC on loopback against a real cell.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grpc_support;

use grpc_support::*;
use meridian_cell::grpc::{AdminConfig, ReplicationStatus, ReplicationStatusSource};
use meridian_proto::admin::v1::{self as admin, admin_client::AdminClient};

async fn admin_client(cell: &Cell) -> AdminClient<Channel> {
    tokio::time::timeout(
        TEST_TIMEOUT,
        AdminClient::connect(format!("http://{}", cell.addr)),
    )
    .await
    .expect("connecting within the test timeout")
    .unwrap()
}

/// Queries until something is found (at most 200 tries, 10 ms apart).
async fn query_until_found(
    admin: &mut AdminClient<Channel>,
    request: admin::QueryMessageRequest,
) -> Vec<admin::MessageInfo> {
    for _ in 0..200 {
        let found = admin
            .query_message(request.clone())
            .await
            .unwrap()
            .into_inner()
            .messages;
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Vec::new()
}

fn admin_config() -> GrpcConfig {
    GrpcConfig {
        admin: Some(AdminConfig {
            replication_status: Some(ReplicationStatusSource(Arc::new(|| ReplicationStatus {
                origins: vec![("eu-west".to_string(), 42)],
                counters: vec![("applied_records".to_string(), 7)],
                meta_applied_revision: 12,
            }))),
        }),
        ..fast_config()
    }
}

#[tokio::test]
async fn admin_manages_topics_and_groups_and_reports_lag() {
    let cell = Cell::start(admin_config(), broker_config()).await;
    let mut admin = admin_client(&cell).await;

    let created = admin
        .create_topic(admin::CreateTopicRequest {
            name: "billing".into(),
            r#type: admin::TopicType::Fifo as i32,
            queue_count: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.queue_count, 3);
    assert_eq!(created.queues.len(), 3);
    assert_eq!(created.r#type, admin::TopicType::Fifo as i32);
    // Same settings again: fine. Other settings: refused, naming the conflict.
    admin
        .create_topic(admin::CreateTopicRequest {
            name: "billing".into(),
            r#type: admin::TopicType::Fifo as i32,
            queue_count: 3,
        })
        .await
        .unwrap();
    let conflict = admin
        .create_topic(admin::CreateTopicRequest {
            name: "billing".into(),
            r#type: admin::TopicType::Normal as i32,
            queue_count: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(
        conflict.code(),
        tonic::Code::FailedPrecondition,
        "{conflict:?}"
    );
    let bad_name = admin
        .create_topic(admin::CreateTopicRequest {
            name: "bad name".into(),
            r#type: 0,
            queue_count: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_name.code(), tonic::Code::InvalidArgument);
    let missing = admin
        .describe_topic(admin::DescribeTopicRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let listed = admin
        .list_topics(admin::ListTopicsRequest {
            include_system: false,
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.topics.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names.contains(&"billing") && names.contains(&"orders"),
        "{names:?}"
    );
    assert!(names.iter().all(|name| !name.starts_with('%')), "{names:?}");

    // Two messages, one received and acknowledged: lag 1 on the group.
    let mut client = cell.client().await;
    let sent = send(
        &mut client,
        vec![
            message("orders", "m-1", pb::MessageType::Normal, b"one"),
            message("orders", "m-2", pb::MessageType::Normal, b"two"),
        ],
        "RUST",
    )
    .await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    // Queues become visible once the index caught up with the append: poll, bounded.
    let mut stored = 0;
    for _ in 0..200 {
        let described = admin
            .describe_topic(admin::DescribeTopicRequest {
                name: "orders".into(),
            })
            .await
            .unwrap()
            .into_inner();
        stored = described.queues.iter().map(|q| q.next_offset).sum::<u64>();
        if stored == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored, 2);

    let group = admin
        .describe_group(admin::DescribeGroupRequest {
            name: "readers".into(),
            topic: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.lags.iter().map(|lag| lag.lag).sum::<u64>(), 2);

    let mut got = Vec::new();
    for _ in 0..20 {
        let received = receive(&mut client, "readers", "orders", 60_000, None).await;
        got.extend(received.messages);
        if !got.is_empty() {
            break;
        }
    }
    let first = got.first().expect("a message within 20 receives").clone();
    let acked = ack(&mut client, "orders", &[handle(&first)]).await;
    assert_eq!(code(&acked.status), Code::Ok as i32);
    let group = admin
        .describe_group(admin::DescribeGroupRequest {
            name: "readers".into(),
            topic: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let lag: u64 = group.lags.iter().map(|lag| lag.lag).sum();
    let inflight: u64 = group.lags.iter().map(|lag| lag.inflight).sum();
    assert_eq!(lag, 2 - 1, "{group:?}");
    assert_eq!(inflight, u64::try_from(got.len() - 1).unwrap(), "{group:?}");

    // Rewind to the start: everything is to be consumed again.
    admin
        .reset_offset(admin::ResetOffsetRequest {
            group: "readers".into(),
            topic: "orders".into(),
            to: Some(admin::reset_offset_request::To::TimestampMs(0)),
        })
        .await
        .unwrap();
    let group = admin
        .describe_group(admin::DescribeGroupRequest {
            name: "readers".into(),
            topic: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.lags.iter().map(|lag| lag.lag).sum::<u64>(), 2);
    // To the end: nothing left.
    admin
        .reset_offset(admin::ResetOffsetRequest {
            group: "readers".into(),
            topic: "orders".into(),
            to: Some(admin::reset_offset_request::To::Latest(true)),
        })
        .await
        .unwrap();
    let group = admin
        .describe_group(admin::DescribeGroupRequest {
            name: "readers".into(),
            topic: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.lags.iter().map(|lag| lag.lag).sum::<u64>(), 0);
    let no_target = admin
        .reset_offset(admin::ResetOffsetRequest {
            group: "readers".into(),
            topic: "orders".into(),
            to: None,
        })
        .await
        .unwrap_err();
    assert_eq!(no_target.code(), tonic::Code::InvalidArgument);
    assert!(no_target.message().contains("timestamp_ms"));

    admin
        .create_group(admin::CreateGroupRequest {
            name: "auditors".into(),
            fifo: true,
        })
        .await
        .unwrap();
    let auditors = admin
        .describe_group(admin::DescribeGroupRequest {
            name: "auditors".into(),
            topic: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(auditors.fifo);
    assert!(auditors.lags.iter().any(|lag| lag.topic == "billing"));
    cell.stop().await;
}

#[tokio::test]
async fn admin_queries_traces_and_reports_the_region() {
    let cell = Cell::start(admin_config(), broker_config()).await;
    let mut admin = admin_client(&cell).await;
    let mut client = cell.client().await;
    let sent = send(
        &mut client,
        vec![message("orders", "q-1", pb::MessageType::Normal, b"body")],
        "RUST",
    )
    .await;
    assert_eq!(code(&sent.status), Code::Ok as i32);

    // The index runs a moment behind the append (async durability): poll, bounded.
    let by_id = query_until_found(
        &mut admin,
        admin::QueryMessageRequest {
            message_id: "q-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].body, b"body");
    assert_eq!(by_id[0].origin_region, "us-east");
    // The test message carries the key `key-<id>`.
    let by_key = query_until_found(
        &mut admin,
        admin::QueryMessageRequest {
            topic: "orders".into(),
            key: "key-q-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_key.len(), 1);
    let neither = admin
        .query_message(admin::QueryMessageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(neither.code(), tonic::Code::InvalidArgument);

    // Trace events are written after the operation they describe: poll, bounded.
    let mut trace = admin::MessageTraceResponse::default();
    for _ in 0..200 {
        trace = admin
            .message_trace(admin::MessageTraceRequest {
                message_id: "q-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if !trace.events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        trace.events.iter().any(|event| event.kind == "sent"),
        "{trace:?}"
    );

    let status = admin
        .region_status(admin::RegionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.region, "us-east");
    assert!(status.log_end > status.log_start);
    assert!(status.appended_records >= 1);
    assert_eq!(status.origins.len(), 1);
    assert_eq!(status.origins[0].origin_region, "eu-west");
    assert_eq!(status.origins[0].applied_through, 42);
    assert_eq!(status.meta_applied_revision, 12);
    assert_eq!(status.replication_counters.get("applied_records"), Some(&7));
    cell.stop().await;
}

#[tokio::test]
async fn unknown_topics_and_groups_are_created_only_when_enabled() {
    let cell = Cell::start(
        GrpcConfig {
            auto_create_topics: Some(3),
            ..fast_config()
        },
        broker_config(),
    )
    .await;
    let mut client = cell.client().await;
    let route = client
        .query_route(request(
            pb::QueryRouteRequest {
                topic: resource("fresh-route"),
                endpoints: None,
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), Code::Ok as i32);
    assert_eq!(route.message_queues.len(), 3);
    let sent = send(
        &mut client,
        vec![message("fresh-send", "a-1", pb::MessageType::Normal, b"x")],
        "RUST",
    )
    .await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    assert_eq!(
        cell.broker.topic("fresh-send").unwrap().message_type,
        TopicMessageType::Normal
    );
    // A receive by a new group on the new topic creates the group and gets the message.
    let mut got = Vec::new();
    for _ in 0..20 {
        let received = receive(&mut client, "new-group", "fresh-send", 60_000, None).await;
        got.extend(received.messages);
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1);
    assert!(cell.broker.group("new-group").is_ok());
    // System and malformed names are not created.
    let refused = send(
        &mut client,
        vec![message("%SYS%X", "a-2", pb::MessageType::Normal, b"x")],
        "RUST",
    )
    .await;
    assert_ne!(code(&refused.status), Code::Ok as i32);
    assert!(cell.broker.topic("%SYS%X").is_err());
    cell.stop().await;

    // Off (the default): unknown topics are refused as before.
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let sent = send(
        &mut client,
        vec![message("fresh-send", "b-1", pb::MessageType::Normal, b"x")],
        "RUST",
    )
    .await;
    assert_eq!(code(&sent.status), Code::TopicNotFound as i32);
    assert!(cell.broker.topic("fresh-send").is_err());
    cell.stop().await;
}

#[tokio::test]
async fn admin_is_refused_on_a_cell_with_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(
        Storage::open(
            StorageConfig::new(dir.path(), "us-east"),
            Arc::new(Hlc::system(Duration::from_millis(500))),
        )
        .unwrap(),
    );
    let broker = Broker::open(storage, broker_config(), Arc::new(SystemClock)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let config = GrpcConfig {
        auth: Some(AuthConfig {
            users: vec![UserCredential {
                access_key: "AK".into(),
                secret_key: "SK".into(),
                publish_topics: vec![],
                subscribe_groups: vec![],
            }],
        }),
        admin: Some(AdminConfig::default()),
        ..fast_config()
    };
    let error = tokio::time::timeout(TEST_TIMEOUT, serve(broker, listener, config, shutdown_rx))
        .await
        .expect("serve refuses at once")
        .unwrap_err();
    assert!(error.to_string().contains("admin"), "{error}");
}
