//! The RocketMQ gRPC front's sessions over real HTTP/2 on 127.0.0.1: Telemetry settings and
//! transaction checks, client termination, request signatures and permissions, and TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod grpc_support;

use grpc_support::*;

#[tokio::test]
async fn telemetry_answers_settings_and_carries_transaction_checks() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let (commands, mut replies) = telemetry(&mut client, "test-host@1234#1").await;
    commands.send(producer_settings("txn")).await.unwrap();
    let reply = tokio::time::timeout(TEST_TIMEOUT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code(&reply.status), Code::Ok as i32);
    let Some(Command::Settings(settings)) = reply.command else {
        panic!("the reply carries merged settings");
    };
    let Some(PubSub::Publishing(publishing)) = settings.pub_sub else {
        panic!("publishing settings");
    };
    assert_eq!(
        publishing.max_body_size,
        64 << 10,
        "M3: the send limit the client adopts"
    );
    assert!(settings.backoff_policy.is_some());

    // A half message whose producer never ends it is checked through the stream.
    let sent = send(
        &mut client,
        vec![message("txn", "X1", pb::MessageType::Transaction, b"half")],
        "RUST",
    )
    .await;
    assert_eq!(code(&sent.status), Code::Ok as i32);
    let transaction_id = sent.entries[0].transaction_id.clone();
    assert!(
        !transaction_id.is_empty(),
        "P2: transaction id for TRANSACTION messages"
    );
    let invisible = receive(&mut client, "readers", "txn", 30_000, None).await;
    assert!(invisible.messages.is_empty(), "half messages are invisible");
    let check = tokio::time::timeout(TEST_TIMEOUT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(check.status.is_none(), "M5: commands carry no status");
    let Some(Command::RecoverOrphanedTransactionCommand(recover)) = check.command else {
        panic!("expected a transaction check, got {check:?}");
    };
    assert_eq!(recover.transaction_id, transaction_id);
    let checked = recover.message.unwrap();
    assert_eq!(checked.topic.unwrap().name, "txn");
    assert_eq!(checked.system_properties.unwrap().message_id, "X1");
    assert_eq!(checked.body, b"half");

    let ended = client
        .end_transaction(request(
            pb::EndTransactionRequest {
                topic: resource("txn"),
                message_id: "X1".to_string(),
                transaction_id,
                resolution: pb::TransactionResolution::Commit as i32,
                source: pb::TransactionSource::SourceServerCheck as i32,
                trace_context: String::new(),
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&ended.status), Code::Ok as i32);
    let committed = receive_at_least(&mut client, "readers", "txn", 30_000, 1).await;
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].body, b"half");
    drop(commands);
    cell.stop().await;
}

#[tokio::test]
async fn ending_an_unknown_transaction_is_refused() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let ended = client
        .end_transaction(request(
            pb::EndTransactionRequest {
                topic: resource("txn"),
                message_id: "nope".to_string(),
                transaction_id: "nope".to_string(),
                resolution: pb::TransactionResolution::Rollback as i32,
                source: pb::TransactionSource::SourceClient as i32,
                trace_context: String::new(),
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&ended.status), Code::InvalidTransactionId as i32);
    cell.stop().await;
}

#[tokio::test]
async fn secured_cell_checks_signatures_and_permissions() {
    let config = GrpcConfig {
        auth: Some(AuthConfig {
            users: vec![UserCredential {
                access_key: "AK".to_string(),
                secret_key: "SK".to_string(),
                publish_topics: vec!["orders".to_string()],
                subscribe_groups: vec!["readers".to_string()],
            }],
        }),
        ..fast_config()
    };
    let cell = Cell::start(config, broker_config()).await;
    let mut client = cell.client().await;
    let route = |request| async {
        cell.client()
            .await
            .query_route(request)
            .await
            .unwrap()
            .into_inner()
    };
    let body = || pb::QueryRouteRequest {
        topic: resource("orders"),
        endpoints: None,
    };
    assert_eq!(
        code(&route(request(body(), "RUST")).await.status),
        Code::Unauthorized as i32
    );
    assert_eq!(
        code(&route(signed(body(), "AK", "wrong")).await.status),
        Code::Unauthorized as i32
    );
    assert_eq!(
        code(&route(signed(body(), "other", "SK")).await.status),
        Code::Unauthorized as i32
    );
    let accepted = route(signed(body(), "AK", "SK")).await;
    assert_eq!(code(&accepted.status), Code::Ok as i32);
    // Routes fall back to the listener's address when the client sent no endpoints.
    let endpoints = accepted.message_queues[0]
        .broker
        .as_ref()
        .unwrap()
        .endpoints
        .clone()
        .unwrap();
    assert_eq!(endpoints.addresses[0].port, i32::from(cell.addr.port()));

    let allowed = client
        .send_message(signed(
            pb::SendMessageRequest {
                messages: vec![message("orders", "S1", pb::MessageType::Normal, b"x")],
            },
            "AK",
            "SK",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&allowed.status), Code::Ok as i32);
    let forbidden = client
        .send_message(signed(
            pb::SendMessageRequest {
                messages: vec![message("txn", "S2", pb::MessageType::Transaction, b"x")],
            },
            "AK",
            "SK",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&forbidden.status), Code::Forbidden as i32);
    assert_eq!(
        cell.broker.open_transactions(),
        0,
        "a forbidden send stores nothing"
    );
    cell.stop().await;
}

#[tokio::test]
async fn tls_listener_serves_tls_clients_only() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let config = GrpcConfig {
        tls: Some(TlsPem {
            cert_chain_pem: cert_pem.clone(),
            key_pem: certified.signing_key.serialize_pem(),
        }),
        ..fast_config()
    };
    let cell = Cell::start(config, broker_config()).await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", cell.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = MessagingServiceClient::new(channel);
    let route = client
        .query_route(request(
            pb::QueryRouteRequest {
                topic: resource("orders"),
                endpoints: None,
            },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&route.status), Code::Ok as i32);

    let plain = tokio::time::timeout(
        TEST_TIMEOUT,
        tonic::transport::Endpoint::from_shared(format!("http://{}", cell.addr))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => tokio::time::timeout(
            TEST_TIMEOUT,
            MessagingServiceClient::new(channel).query_route(request(
                pb::QueryRouteRequest {
                    topic: resource("orders"),
                    endpoints: None,
                },
                "RUST",
            )),
        )
        .await
        .unwrap()
        .is_err(),
    };
    assert!(refused, "plain HTTP/2 is not served on a TLS listener");
    cell.stop().await;
}

#[tokio::test]
async fn termination_ends_the_clients_telemetry_streams() {
    let cell = Cell::start(fast_config(), broker_config()).await;
    let mut client = cell.client().await;
    let (commands, mut replies) = telemetry(&mut client, "test-host@1234#1").await;
    commands.send(producer_settings("orders")).await.unwrap();
    let reply = tokio::time::timeout(TEST_TIMEOUT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code(&reply.status), Code::Ok as i32);
    let terminated = client
        .notify_client_termination(request(
            pb::NotifyClientTerminationRequest { group: None },
            "RUST",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(&terminated.status), Code::Ok as i32);
    // The server ends the stream although the client keeps its side open.
    let end = tokio::time::timeout(TEST_TIMEOUT, replies.next())
        .await
        .unwrap();
    assert!(
        end.as_ref().is_none_or(|item| item.is_err()),
        "stream ended: {end:?}"
    );
    drop(commands);
    cell.stop().await;
}

#[tokio::test]
async fn refused_telemetry_caller_gets_the_refusal_in_the_settings_reply() {
    let config = GrpcConfig {
        auth: Some(AuthConfig {
            users: vec![UserCredential {
                access_key: "AK".to_string(),
                secret_key: "SK".to_string(),
                publish_topics: vec!["*".to_string()],
                subscribe_groups: vec!["*".to_string()],
            }],
        }),
        ..fast_config()
    };
    let cell = Cell::start(config, broker_config()).await;
    let mut client = cell.client().await;
    let (commands, mut replies) = telemetry(&mut client, "test-host@1234#1").await;
    commands.send(producer_settings("orders")).await.unwrap();
    let reply = tokio::time::timeout(TEST_TIMEOUT, replies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(code(&reply.status), Code::Unauthorized as i32);
    drop(commands);
    cell.stop().await;
}
