//! `meridian send` and `meridian receive`: quick tests through the RocketMQ v2
//! `MessagingService`, the protocol the official clients speak, with the generated tonic
//! client. `receive` is a simple consumer: it long-polls, prints what arrived and acknowledges
//! it (unless `--no-ack`), repeating until it has `--count` messages or `--timeout-ms` passed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meridian_proto::rocketmq::v2::{
    self as pb, Code, FilterType, MessageType, messaging_service_client::MessagingServiceClient,
    receive_message_response::Content,
};
use serde_json::json;
use tonic::metadata::MetadataValue;

use super::{Target, connect, print_json};

/// Most receive calls one `receive` makes, whatever the timeout (each long-polls for seconds).
const MAX_RECEIVE_ROUNDS: usize = 1_000;
/// Most items read from one receive stream (a status, up to 32 messages, a timestamp).
const MAX_STREAM_ITEMS: usize = 64;
/// Most messages one `send` sends.
const MAX_SEND_COUNT: u32 = 10_000;
/// Extra time the client gives a receive beyond its long poll, so the server answers first.
const RECEIVE_DEADLINE_MARGIN_MS: u64 = 3_000;

/// Arguments of `meridian send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {
    /// Topic to send to.
    #[arg(long)]
    topic: String,
    /// Message body (UTF-8); with --count N each body gets " <index>" appended.
    #[arg(long, default_value = "hello from meridian")]
    body: String,
    /// How many messages to send.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Tag of every message.
    #[arg(long)]
    tag: Option<String>,
    /// Business key of every message (repeatable).
    #[arg(long = "key")]
    keys: Vec<String>,
}

/// Arguments of `meridian receive`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReceiveArgs {
    /// Topic to receive from.
    #[arg(long)]
    topic: String,
    /// Consumer group.
    #[arg(long)]
    group: String,
    /// Stop once this many messages arrived.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Give up after this long without reaching --count (the messages received so far are
    /// printed, and the command fails).
    #[arg(long, default_value_t = 20_000)]
    timeout_ms: u64,
    /// Long poll of each receive call (the cell clamps it to its own bounds, 5-20 s by default).
    #[arg(long, default_value_t = 5_000)]
    poll_ms: u64,
    /// How long received messages stay invisible to other consumers.
    #[arg(long, default_value_t = 30_000)]
    invisible_ms: u64,
    /// Only messages with this tag (default: all).
    #[arg(long)]
    tag: Option<String>,
    /// Leave the messages unacknowledged (they are delivered again after --invisible-ms).
    #[arg(long)]
    no_ack: bool,
}

type Client = MessagingServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, ClientHeaders>,
>;

/// The headers the protocol requires on every call: a client id and the client language.
#[derive(Clone)]
pub(crate) struct ClientHeaders {
    client_id: MetadataValue<tonic::metadata::Ascii>,
}

impl tonic::service::Interceptor for ClientHeaders {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        metadata.insert(meridian_proto::metadata::CLIENT_ID, self.client_id.clone());
        metadata.insert(
            meridian_proto::metadata::LANGUAGE,
            MetadataValue::from_static("JAVA"),
        );
        Ok(request)
    }
}

async fn client(target: &Target, command: &str) -> anyhow::Result<(Client, String)> {
    let endpoint = target.single(command)?;
    let channel = connect(&endpoint).await?;
    let client_id = format!("meridian-cli-{}-{}", std::process::id(), now_ms());
    let client_id = MetadataValue::try_from(client_id.as_str())
        .context("the client id is not a valid header value")?;
    Ok((
        MessagingServiceClient::with_interceptor(channel, ClientHeaders { client_id }),
        endpoint.label,
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A message id unique per process and call: version byte, process id, time in ns, index.
fn message_id(index: u32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!(
        "01{:08X}{:020X}{:08X}",
        std::process::id(),
        nanos & ((1u128 << 80) - 1),
        index
    )
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1_000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1_000) * 1_000_000).unwrap_or(0),
    }
}

fn refused(status: Option<&pb::Status>) -> Option<String> {
    let status = status?;
    (status.code != Code::Ok as i32).then(|| {
        let name = Code::try_from(status.code).map_or("UNKNOWN", |code| code.as_str_name());
        format!("{name} ({}): {}", status.code, status.message)
    })
}

/// `meridian send`
pub(crate) async fn send(args: SendArgs, target: &Target) -> anyhow::Result<()> {
    if args.count == 0 || args.count > MAX_SEND_COUNT {
        bail!("--count {}: use 1..={MAX_SEND_COUNT}", args.count);
    }
    let (mut client, label) = client(target, "send").await?;
    let mut sent = Vec::with_capacity(args.count as usize);
    for index in 0..args.count {
        let body = if args.count == 1 {
            args.body.clone()
        } else {
            format!("{} {index}", args.body)
        };
        let id = message_id(index);
        let message = pb::Message {
            topic: resource(&args.topic),
            user_properties: Default::default(),
            system_properties: Some(pb::SystemProperties {
                tag: args.tag.clone(),
                keys: args.keys.clone(),
                message_id: id.clone(),
                message_type: MessageType::Normal as i32,
                born_timestamp: Some(prost_types::Timestamp {
                    seconds: i64::try_from(now_ms() / 1_000).unwrap_or(0),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            body: body.into_bytes(),
        };
        let response = client
            .send_message(pb::SendMessageRequest {
                messages: vec![message],
            })
            .await
            .with_context(|| format!("send to {label}"))?
            .into_inner();
        if let Some(reason) = refused(response.status.as_ref()) {
            bail!(
                "send to {label} refused: {reason}{}",
                if reason.contains("TOPIC_NOT_FOUND") {
                    "; create the topic with `meridian topic create` (or run dev without \
                     --no-auto-create-topics)"
                } else {
                    ""
                }
            );
        }
        let offset = response.entries.first().map_or(0, |entry| entry.offset);
        sent.push((id, offset));
    }
    if target.json {
        return print_json(&json!({
            "endpoint": label,
            "topic": args.topic,
            "sent": sent.iter().map(|(id, offset)| json!({"message_id": id, "offset": offset})).collect::<Vec<_>>(),
        }));
    }
    for (id, offset) in &sent {
        println!(
            "{label}: sent {id} to {} (queue offset {offset})",
            args.topic
        );
    }
    Ok(())
}

/// One delivered message, as printed.
struct Delivered {
    message_id: String,
    body: String,
    tag: String,
    keys: Vec<String>,
    queue_id: i32,
    attempt: i32,
    receipt_handle: String,
}

/// `meridian receive`
pub(crate) async fn receive(args: ReceiveArgs, target: &Target) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count 0: ask for at least one message");
    }
    let (mut client, label) = client(target, "receive").await?;
    let started = Instant::now();
    let mut received: Vec<Delivered> = Vec::new();
    for _ in 0..MAX_RECEIVE_ROUNDS {
        if received.len() >= args.count
            || started.elapsed() >= Duration::from_millis(args.timeout_ms)
        {
            break;
        }
        let batch = receive_once(&mut client, &args, &label).await?;
        if !args.no_ack && !batch.is_empty() {
            ack(&mut client, &args, &label, &batch).await?;
        }
        received.extend(batch);
    }
    if target.json {
        print_json(&json!({
            "endpoint": label,
            "topic": args.topic,
            "group": args.group,
            "received": received.iter().map(|message| json!({
                "message_id": message.message_id,
                "body": message.body,
                "tag": message.tag,
                "keys": message.keys,
                "queue_id": message.queue_id,
                "delivery_attempt": message.attempt,
                "acked": !args.no_ack,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for message in &received {
            println!(
                "{label}: received {} (queue {}, attempt {}) body {:?}",
                message.message_id, message.queue_id, message.attempt, message.body
            );
        }
    }
    if received.len() < args.count {
        bail!(
            "receive from {label}: {} of {} messages within --timeout-ms {}; is the topic right, \
             and has the message reached this region yet?",
            received.len(),
            args.count,
            args.timeout_ms
        );
    }
    Ok(())
}

async fn receive_once(
    client: &mut Client,
    args: &ReceiveArgs,
    label: &str,
) -> anyhow::Result<Vec<Delivered>> {
    let filter = match &args.tag {
        Some(tag) => tag.clone(),
        None => "*".to_string(),
    };
    let mut request = tonic::Request::new(pb::ReceiveMessageRequest {
        group: resource(&args.group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(&args.topic),
            id: 0,
            permission: pb::Permission::ReadWrite as i32,
            broker: None,
            accept_message_types: Vec::new(),
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: filter,
        }),
        batch_size: i32::try_from(args.count).unwrap_or(32).clamp(1, 32),
        invisible_duration: Some(duration(args.invisible_ms)),
        auto_renew: false,
        long_polling_timeout: Some(duration(args.poll_ms)),
        attempt_id: None,
    });
    request.set_timeout(Duration::from_millis(
        args.poll_ms.saturating_add(RECEIVE_DEADLINE_MARGIN_MS),
    ));
    let mut stream = client
        .receive_message(request)
        .await
        .with_context(|| format!("receive from {label}"))?
        .into_inner();
    let mut batch = Vec::new();
    for _ in 0..MAX_STREAM_ITEMS {
        let Some(item) = stream
            .message()
            .await
            .with_context(|| format!("receive stream from {label}"))?
        else {
            break;
        };
        match item.content {
            Some(Content::Status(status)) => {
                if status.code == Code::MessageNotFound as i32 {
                    continue;
                }
                if let Some(reason) = refused(Some(&status)) {
                    bail!("receive from {label} refused: {reason}");
                }
            }
            Some(Content::Message(message)) => {
                let system = message.system_properties.unwrap_or_default();
                batch.push(Delivered {
                    message_id: system.message_id,
                    body: String::from_utf8_lossy(&message.body).into_owned(),
                    tag: system.tag.unwrap_or_default(),
                    keys: system.keys,
                    queue_id: system.queue_id,
                    attempt: system.delivery_attempt.unwrap_or(1),
                    receipt_handle: system.receipt_handle.unwrap_or_default(),
                });
            }
            Some(Content::DeliveryTimestamp(_)) | None => {}
        }
    }
    Ok(batch)
}

async fn ack(
    client: &mut Client,
    args: &ReceiveArgs,
    label: &str,
    batch: &[Delivered],
) -> anyhow::Result<()> {
    let response = client
        .ack_message(pb::AckMessageRequest {
            group: resource(&args.group),
            topic: resource(&args.topic),
            entries: batch
                .iter()
                .map(|message| pb::AckMessageEntry {
                    message_id: message.message_id.clone(),
                    receipt_handle: message.receipt_handle.clone(),
                    lite_topic: None,
                })
                .collect(),
        })
        .await
        .with_context(|| format!("ack to {label}"))?
        .into_inner();
    if let Some(reason) = refused(response.status.as_ref()) {
        bail!("ack to {label} refused: {reason}");
    }
    Ok(())
}
