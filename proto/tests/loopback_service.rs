//! The generated tonic server and client talk to each other over real HTTP/2 on 127.0.0.1:
//! a unary call, the server-streaming ReceiveMessage sequence, and the bidirectional Telemetry
//! stream. Proves the codegen (both sides) is wired up, independent of any broker logic.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::time::Duration;

use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::messaging_service_server::{
    MessagingService, MessagingServiceServer,
};
use meridian_proto::rocketmq::v2::{
    self as pb, Code, Endpoints, MessageQueue, Permission, QueryRouteRequest,
    ReceiveMessageRequest, ReceiveMessageResponse, Resource, Settings, Status, TelemetryCommand,
    receive_message_response::Content, settings::PubSub, telemetry_command::Command,
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response};

/// Upper bound for the whole exchange; loopback calls take milliseconds.
const TEST_TIMEOUT_MS: u64 = 10_000;
/// Capacity of the per-stream reply channel in the test server.
const TELEMETRY_REPLY_CAPACITY: usize = 4;

type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Test double: answers the three RPCs under test the way the conformance notes require and
/// refuses everything else with gRPC UNIMPLEMENTED.
struct TestService;

fn unimplemented<T>(rpc: &str) -> Result<Response<T>, tonic::Status> {
    Err(tonic::Status::unimplemented(format!(
        "{rpc} is not part of this test"
    )))
}

#[tonic::async_trait]
impl MessagingService for TestService {
    async fn query_route(
        &self,
        request: Request<QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, tonic::Status> {
        let request = request.into_inner();
        // Echo the access point as the broker endpoints, as a single-node cell would.
        let queue = MessageQueue {
            topic: request.topic,
            id: 0,
            permission: Permission::ReadWrite as i32,
            broker: Some(pb::Broker {
                name: "cell-a".to_owned(),
                id: 0,
                endpoints: request.endpoints,
            }),
            accept_message_types: vec![pb::MessageType::Normal as i32],
        };
        Ok(Response::new(pb::QueryRouteResponse {
            status: Some(Status::ok()),
            message_queues: vec![queue],
        }))
    }

    type ReceiveMessageStream = ItemStream<ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, tonic::Status> {
        let topic = request.into_inner().message_queue.and_then(|q| q.topic);
        let message = pb::Message {
            topic,
            user_properties: Default::default(),
            system_properties: Some(pb::SystemProperties {
                message_id: "01ABC".to_owned(),
                receipt_handle: Some("rh".to_owned()),
                delivery_attempt: Some(1),
                body_encoding: pb::Encoding::Identity as i32,
                ..Default::default()
            }),
            body: b"hello".to_vec(),
        };
        let items = [
            Content::Status(Status::ok()),
            Content::Message(message),
            Content::DeliveryTimestamp(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
        ]
        .into_iter()
        .map(|content| {
            Ok(ReceiveMessageResponse {
                content: Some(content),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    type TelemetryStream = ItemStream<TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(TELEMETRY_REPLY_CAPACITY);
        tokio::spawn(async move {
            while let Some(Ok(command)) = inbound.next().await {
                if let Some(Command::Settings(settings)) = command.command {
                    let reply = TelemetryCommand {
                        status: Some(Status::ok()),
                        command: Some(Command::Settings(settings)),
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        break;
                    }
                }
            }
        });
        // Returning the response at once sends the headers at once (the Rust client waits
        // for them before it does anything else).
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heartbeat(
        &self,
        _: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, tonic::Status> {
        unimplemented("Heartbeat")
    }

    async fn send_message(
        &self,
        _: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, tonic::Status> {
        unimplemented("SendMessage")
    }

    async fn query_assignment(
        &self,
        _: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, tonic::Status> {
        unimplemented("QueryAssignment")
    }

    async fn ack_message(
        &self,
        _: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, tonic::Status> {
        unimplemented("AckMessage")
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, tonic::Status> {
        unimplemented("ForwardMessageToDeadLetterQueue")
    }

    type PullMessageStream = ItemStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        _: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, tonic::Status> {
        unimplemented("PullMessage")
    }

    async fn update_offset(
        &self,
        _: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, tonic::Status> {
        unimplemented("UpdateOffset")
    }

    async fn get_offset(
        &self,
        _: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, tonic::Status> {
        unimplemented("GetOffset")
    }

    async fn query_offset(
        &self,
        _: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, tonic::Status> {
        unimplemented("QueryOffset")
    }

    async fn end_transaction(
        &self,
        _: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, tonic::Status> {
        unimplemented("EndTransaction")
    }

    async fn notify_client_termination(
        &self,
        _: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, tonic::Status> {
        unimplemented("NotifyClientTermination")
    }

    async fn change_invisible_duration(
        &self,
        _: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, tonic::Status> {
        unimplemented("ChangeInvisibleDuration")
    }

    async fn recall_message(
        &self,
        _: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, tonic::Status> {
        unimplemented("RecallMessage")
    }

    async fn sync_lite_subscription(
        &self,
        _: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, tonic::Status> {
        unimplemented("SyncLiteSubscription")
    }
}

fn topic() -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: "test_topic".to_owned(),
    }
}

async fn exercise(client: &mut MessagingServiceClient<tonic::transport::Channel>) {
    // Unary.
    let access_point = Endpoints {
        scheme: pb::AddressScheme::IPv4 as i32,
        addresses: vec![pb::Address {
            host: "127.0.0.1".to_owned(),
            port: 8081,
        }],
    };
    let route = client
        .query_route(QueryRouteRequest {
            topic: Some(topic()),
            endpoints: Some(access_point.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.status.unwrap().code(), Code::Ok);
    assert_eq!(route.message_queues.len(), 1);
    let queue = route.message_queues[0].clone();
    assert_eq!(queue.broker.as_ref().unwrap().endpoints, Some(access_point));

    // Server streaming: status, message, delivery timestamp, end.
    let mut stream = client
        .receive_message(ReceiveMessageRequest {
            message_queue: Some(queue),
            batch_size: 32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item.unwrap().content.unwrap());
    }
    assert_eq!(items.len(), 3);
    assert!(matches!(&items[0], Content::Status(s) if s.code() == Code::Ok));
    match &items[1] {
        Content::Message(message) => {
            assert_eq!(message.topic, Some(topic()));
            assert_eq!(message.body, b"hello");
        }
        other => panic!("expected a message, got {other:?}"),
    }
    assert!(matches!(&items[2], Content::DeliveryTimestamp(_)));

    // Bidirectional streaming: the client's Settings comes back with status OK.
    let (tx, rx) = tokio::sync::mpsc::channel(TELEMETRY_REPLY_CAPACITY);
    let settings = Settings {
        client_type: Some(pb::ClientType::Producer as i32),
        pub_sub: Some(PubSub::Publishing(pb::Publishing {
            topics: vec![topic()],
            max_body_size: 0,
            validate_message_type: true,
        })),
        ..Default::default()
    };
    tx.send(TelemetryCommand {
        status: None,
        command: Some(Command::Settings(settings.clone())),
    })
    .await
    .unwrap();
    let mut replies = client
        .telemetry(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.next().await.unwrap().unwrap();
    assert_eq!(reply.status.unwrap().code(), Code::Ok);
    assert_eq!(reply.command, Some(Command::Settings(settings)));
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "stream ends after the client closes"
    );

    // An RPC the double refuses surfaces as gRPC UNIMPLEMENTED, not a hang.
    let refused = client
        .heartbeat(pb::HeartbeatRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn generated_client_and_server_interoperate_on_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MessagingServiceServer::new(TestService))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );

    let run = async {
        let mut client = MessagingServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        exercise(&mut client).await;
    };
    tokio::time::timeout(Duration::from_millis(TEST_TIMEOUT_MS), run)
        .await
        .expect("loopback exchange finished in time");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_millis(TEST_TIMEOUT_MS), server)
        .await
        .expect("server stopped in time")
        .unwrap()
        .unwrap();
}
