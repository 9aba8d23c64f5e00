//! Shared fixture of the gRPC front tests: a cell (storage, broker, gRPC front) on
//! 127.0.0.1:0 and the generated tonic client with the headers official clients send.

// Each test binary uses a different part of this module.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub use std::collections::HashMap;
pub use std::sync::Arc;
pub use std::time::Duration;

pub use hmac::{Hmac, Mac};
pub use meridian_cell::grpc::{AuthConfig, GrpcConfig, TlsPem, UserCredential, serve};
pub use meridian_cell::messaging::txn::TransactionPolicy;
pub use meridian_cell::messaging::{
    Broker, BrokerConfig, GroupConfig, SystemClock, TopicMessageType,
};
pub use meridian_cell::{Durability, Hlc, Storage, StorageConfig};
pub use meridian_proto::metadata::Authorization;
pub use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
pub use meridian_proto::rocketmq::v2::{
    self as pb, Code, receive_message_response::Content, settings::PubSub,
    telemetry_command::Command,
};
pub use sha1::Sha1;
pub use tokio::sync::{mpsc, watch};
pub use tokio_stream::StreamExt;
pub use tokio_stream::wrappers::ReceiverStream;
pub use tonic::transport::Channel;

/// Bound on every wait in these tests; loopback calls take milliseconds.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Cell {
    pub addr: std::net::SocketAddr,
    pub broker: Arc<Broker>,
    pub shutdown: watch::Sender<bool>,
    pub server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Cell {
    pub async fn start(config: GrpcConfig, broker_config: BrokerConfig) -> Cell {
        Self::start_in("us-east", config, broker_config).await
    }

    /// A cell of `region`.
    pub async fn start_in(region: &str, config: GrpcConfig, broker_config: BrokerConfig) -> Cell {
        let dir = tempfile::tempdir().unwrap();
        let mut storage_config = StorageConfig::new(dir.path(), region);
        storage_config.durability = Durability::Async;
        storage_config.index_block_cache_bytes = 8 << 20;
        storage_config.index_write_buffer_bytes = 4 << 20;
        let storage = Arc::new(
            Storage::open(
                storage_config,
                Arc::new(Hlc::system(Duration::from_millis(500))),
            )
            .unwrap(),
        );
        let broker = Broker::open(storage, broker_config, Arc::new(SystemClock)).unwrap();
        broker
            .create_topic("orders", 4, TopicMessageType::Normal)
            .unwrap();
        broker
            .create_topic("fifo", 2, TopicMessageType::Fifo)
            .unwrap();
        broker
            .create_topic("txn", 1, TopicMessageType::Transaction)
            .unwrap();
        broker
            .create_group(GroupConfig::new("readers", false))
            .unwrap();
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(broker.clone().run(shutdown_rx.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_broker = broker.clone();
        let server = tokio::spawn(async move {
            serve(server_broker, listener, config, shutdown_rx)
                .await
                .unwrap();
        });
        Cell {
            addr,
            broker,
            shutdown,
            server,
            _dir: dir,
        }
    }

    pub async fn client(&self) -> MessagingServiceClient<Channel> {
        MessagingServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(TEST_TIMEOUT, self.server)
            .await
            .unwrap()
            .unwrap();
    }
}

pub fn fast_config() -> GrpcConfig {
    GrpcConfig {
        min_long_polling_ms: 100,
        long_polling_reserve_ms: 200,
        ..GrpcConfig::default()
    }
}

pub fn broker_config() -> BrokerConfig {
    let mut config = BrokerConfig::default();
    config.limits.min_invisible_duration_ms = 10;
    config.limits.max_message_body_bytes = 64 << 10;
    config.transactions = TransactionPolicy {
        first_check_delay_ms: 300,
        check_interval_ms: 300,
        ..TransactionPolicy::default()
    };
    config
}

/// A request with the headers an official client sends.
pub fn request<T>(body: T, language: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    let metadata = request.metadata_mut();
    metadata.insert("x-mq-client-id", "test-host@1234#1".parse().unwrap());
    metadata.insert("x-mq-language", language.parse().unwrap());
    metadata.insert("x-mq-date-time", "20261123T015254Z".parse().unwrap());
    request
}

pub fn signed<T>(body: T, access_key: &str, secret: &str) -> tonic::Request<T> {
    let mut request = request(body, "RUST");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b"20261123T015254Z");
    let header = Authorization::render(access_key, &mac.finalize().into_bytes());
    request
        .metadata_mut()
        .insert("authorization", header.parse().unwrap());
    request
}

pub fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

pub fn message(topic: &str, id: &str, kind: pb::MessageType, body: &[u8]) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        user_properties: HashMap::from([("region".to_string(), "eu".to_string())]),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".to_string()),
            keys: vec![format!("key-{id}")],
            message_id: id.to_string(),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: kind as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }),
        body: body.to_vec(),
    }
}

pub async fn send(
    client: &mut MessagingServiceClient<Channel>,
    messages: Vec<pb::Message>,
    language: &str,
) -> pb::SendMessageResponse {
    client
        .send_message(request(pb::SendMessageRequest { messages }, language))
        .await
        .unwrap()
        .into_inner()
}

pub fn code(status: &Option<pb::Status>) -> i32 {
    status.as_ref().map_or(0, |status| status.code)
}

pub struct Received {
    pub status: pb::Status,
    pub messages: Vec<pb::Message>,
    pub items: usize,
}

pub async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    invisible_ms: u64,
    filter: Option<pb::FilterExpression>,
) -> Received {
    let body = pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(topic),
            id: 0,
            ..Default::default()
        }),
        filter_expression: filter,
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: (invisible_ms / 1000) as i64,
            nanos: ((invisible_ms % 1000) * 1_000_000) as i32,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        attempt_id: None,
    };
    let mut stream =
        tokio::time::timeout(TEST_TIMEOUT, client.receive_message(request(body, "RUST")))
            .await
            .unwrap()
            .unwrap()
            .into_inner();
    let mut status = None;
    let mut messages = Vec::new();
    let mut items = 0;
    let mut saw_timestamp = false;
    while let Some(item) = tokio::time::timeout(TEST_TIMEOUT, stream.next())
        .await
        .unwrap()
    {
        items += 1;
        match item
            .unwrap()
            .content
            .expect("every item has its content (R2)")
        {
            Content::Status(s) => {
                assert!(status.is_none(), "exactly one status item");
                status = Some(s);
            }
            Content::Message(m) => messages.push(m),
            Content::DeliveryTimestamp(_) => saw_timestamp = true,
        }
    }
    assert!(
        saw_timestamp,
        "the stream ends with a delivery timestamp (R1)"
    );
    Received {
        status: status.expect("a status item"),
        messages,
        items,
    }
}

/// Receives until at least `count` messages arrived (bounded number of long polls; the index
/// runs slightly behind appends and redeliveries wait for their invisibility to expire).
pub async fn receive_at_least(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    invisible_ms: u64,
    count: usize,
) -> Vec<pb::Message> {
    const MAX_ROUNDS: usize = 20;
    let mut got = Vec::new();
    for _ in 0..MAX_ROUNDS {
        got.extend(
            receive(client, group, topic, invisible_ms, None)
                .await
                .messages,
        );
        if got.len() >= count {
            break;
        }
    }
    got
}

pub fn handle(message: &pb::Message) -> String {
    message
        .system_properties
        .as_ref()
        .and_then(|system| system.receipt_handle.clone())
        .expect("delivered messages carry a receipt handle")
}

pub async fn ack(
    client: &mut MessagingServiceClient<Channel>,
    topic: &str,
    handles: &[String],
) -> pb::AckMessageResponse {
    let body = pb::AckMessageRequest {
        group: resource("readers"),
        topic: resource(topic),
        entries: handles
            .iter()
            .map(|handle| pb::AckMessageEntry {
                message_id: "id".to_string(),
                receipt_handle: handle.clone(),
                lite_topic: None,
            })
            .collect(),
    };
    client
        .ack_message(request(body, "RUST"))
        .await
        .unwrap()
        .into_inner()
}

/// Opens a Telemetry stream and returns its command sender and the response stream.
pub async fn telemetry(
    client: &mut MessagingServiceClient<Channel>,
    client_id: &str,
) -> (
    mpsc::Sender<pb::TelemetryCommand>,
    tonic::Streaming<pb::TelemetryCommand>,
) {
    let (sender, receiver) = mpsc::channel(8);
    let mut call = tonic::Request::new(ReceiverStream::new(receiver));
    call.metadata_mut()
        .insert("x-mq-client-id", client_id.parse().unwrap());
    call.metadata_mut()
        .insert("x-mq-language", "RUST".parse().unwrap());
    // M1: the call completes (headers arrive) before the client sends anything.
    let responses = tokio::time::timeout(TEST_TIMEOUT, client.telemetry(call))
        .await
        .expect("Telemetry response headers are sent at once")
        .unwrap()
        .into_inner();
    (sender, responses)
}

pub fn producer_settings(topic: &str) -> pb::TelemetryCommand {
    pb::TelemetryCommand {
        status: None,
        command: Some(Command::Settings(pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(PubSub::Publishing(pb::Publishing {
                topics: vec![resource(topic).unwrap()],
                max_body_size: 0,
                validate_message_type: false,
            })),
            ..Default::default()
        })),
    }
}
