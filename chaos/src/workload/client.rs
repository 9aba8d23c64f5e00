//! The workload's RocketMQ v2 calls: a thin client over the generated tonic stubs, with the
//! headers the official clients send. Deliberately independent of the SDK, so a drill does not
//! share a bug with the client it may be judging.

use std::time::Duration;

use meridian_proto::metadata::{CLIENT_ID, LANGUAGE};
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::{self as pb, receive_message_response::Content};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

/// RocketMQ's OK.
const CODE_OK: i32 = 20000;
/// How long a receive may take: the cell holds a long poll for 5 to 20 s (it raises shorter
/// requests to 5 s); a caller that gave up earlier would leave the messages the cell handed out
/// at the end invisible for their whole invisible duration.
pub(crate) const RECEIVE_TIMEOUT_MS: u64 = 25_000;

/// One region's endpoint, connected lazily.
#[derive(Debug, Clone)]
pub(crate) struct RegionClient {
    pub(crate) region: String,
    client: MessagingServiceClient<Channel>,
    client_id: String,
}

/// A message received, with what an ack needs.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    pub(crate) id: String,
    pub(crate) attempt: u32,
    pub(crate) handle: String,
}

impl RegionClient {
    pub(crate) fn new(
        region: &str,
        endpoint: &str,
        client_id: &str,
        request_timeout_ms: u64,
    ) -> Result<Self, String> {
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|error| format!("endpoint {endpoint:?} of {region}: {error}"))?
            .connect_timeout(Duration::from_millis(request_timeout_ms))
            .timeout(Duration::from_millis(request_timeout_ms))
            .connect_lazy();
        Ok(RegionClient {
            region: region.to_string(),
            client: MessagingServiceClient::new(channel),
            client_id: client_id.to_string(),
        })
    }

    fn request<T>(&self, body: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        let metadata = request.metadata_mut();
        if let Ok(value) = self.client_id.parse() {
            metadata.insert(CLIENT_ID, value);
        }
        metadata.insert(
            LANGUAGE,
            tonic::metadata::MetadataValue::from_static("JAVA"),
        );
        request
    }

    /// Sends one message; `Ok` only when the cell acknowledged it.
    pub(crate) async fn send(
        &mut self,
        topic: &str,
        id: &str,
        group: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let message = pb::Message {
            topic: Some(resource(topic)),
            user_properties: Default::default(),
            system_properties: Some(pb::SystemProperties {
                message_id: id.to_string(),
                message_group: group.map(str::to_string),
                message_type: if group.is_some() {
                    pb::MessageType::Fifo
                } else {
                    pb::MessageType::Normal
                } as i32,
                body_encoding: pb::Encoding::Identity as i32,
                ..Default::default()
            }),
            body,
        };
        let request = self.request(pb::SendMessageRequest {
            messages: vec![message],
        });
        let response = self
            .client
            .send_message(request)
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        match response.status {
            Some(status) if status.code == CODE_OK => Ok(()),
            Some(status) => Err(format!("code {}: {}", status.code, status.message)),
            None => Err("answer without a status".to_string()),
        }
    }

    /// One long poll for up to `batch` messages of `topic` for `consumer_group`.
    pub(crate) async fn receive(
        &mut self,
        topic: &str,
        consumer_group: &str,
        batch: i32,
        long_poll_ms: u64,
        invisible_ms: u64,
    ) -> Result<Vec<Delivered>, String> {
        let queue = pb::MessageQueue {
            topic: Some(resource(topic)),
            id: -1,
            permission: pb::Permission::ReadWrite as i32,
            broker: None,
            accept_message_types: Vec::new(),
        };
        let request = pb::ReceiveMessageRequest {
            group: Some(resource(consumer_group)),
            message_queue: Some(queue),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".to_string(),
            }),
            batch_size: batch,
            invisible_duration: Some(duration(invisible_ms)),
            auto_renew: false,
            long_polling_timeout: Some(duration(long_poll_ms)),
            attempt_id: None,
        };
        let call = self.request(request);
        let mut stream = self
            .client
            .receive_message(call)
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        let mut delivered = Vec::new();
        while let Some(item) = stream.next().await {
            let item =
                item.map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
            if let Some(Content::Message(message)) = item.content {
                let Some(system) = message.system_properties else {
                    continue;
                };
                delivered.push(Delivered {
                    id: system.message_id,
                    attempt: u32::try_from(system.delivery_attempt.unwrap_or(1)).unwrap_or(1),
                    handle: system.receipt_handle.unwrap_or_default(),
                });
            }
        }
        Ok(delivered)
    }

    /// Acknowledges deliveries in one call; returns the ids the cell confirmed.
    pub(crate) async fn ack(
        &mut self,
        topic: &str,
        consumer_group: &str,
        delivered: &[&Delivered],
    ) -> Result<Vec<String>, String> {
        let request = pb::AckMessageRequest {
            group: Some(resource(consumer_group)),
            topic: Some(resource(topic)),
            entries: delivered
                .iter()
                .map(|delivered| pb::AckMessageEntry {
                    message_id: delivered.id.clone(),
                    receipt_handle: delivered.handle.clone(),
                    lite_topic: None,
                })
                .collect(),
        };
        let response = self
            .client
            .ack_message(self.request(request))
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        Ok(response
            .entries
            .into_iter()
            .filter(|entry| {
                entry
                    .status
                    .as_ref()
                    .is_some_and(|status| status.code == CODE_OK)
            })
            .map(|entry| entry.message_id)
            .collect())
    }
}

fn resource(name: &str) -> pb::Resource {
    pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    }
}

fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}
