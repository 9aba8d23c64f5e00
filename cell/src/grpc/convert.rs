//! Protocol messages to messaging calls and back: what a producer's `Message` becomes, and
//! what a delivered record looks like on the wire (CONFORMANCE P2, P3, R3).

use std::io::Read;

use md5::{Digest as _, Md5};
use meridian_proto::rocketmq::v2::{
    self as pb, Code, DigestType, Encoding, MessageType as PbMessageType, Resource,
};

use super::status::Refusal;
use crate::messaging::message::{PROP_BORN_HOST, PROP_DLQ_ORIGIN_TOPIC, SYSTEM_PROPERTY_PREFIX};
use crate::messaging::{OutgoingMessage, ReceivedMessage, TopicMessageType};
use crate::storage::{MessageType, Record};

/// The reference proxy caps a producer's orphaned-transaction recovery delay at one hour.
const MAX_TRANSACTION_RECOVERY_MS: u64 = 3_600_000;

/// Milliseconds since the epoch of a protobuf timestamp; negative instants are refused.
pub(crate) fn timestamp_ms(timestamp: &prost_types::Timestamp) -> Option<u64> {
    let seconds = u64::try_from(timestamp.seconds).ok()?;
    let millis = u64::try_from(timestamp.nanos / 1_000_000).ok()?;
    seconds.checked_mul(1_000)?.checked_add(millis)
}

/// A protobuf timestamp for `ms` since the epoch.
pub(crate) fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1_000).unwrap_or(i64::MAX),
        nanos: ((ms % 1_000) * 1_000_000) as i32,
    }
}

/// Milliseconds of a protobuf duration; negative durations are refused.
pub(crate) fn duration_ms(duration: &prost_types::Duration) -> Option<u64> {
    let seconds = u64::try_from(duration.seconds).ok()?;
    let millis = u64::try_from(duration.nanos / 1_000_000).ok()?;
    seconds.checked_mul(1_000)?.checked_add(millis)
}

/// A protobuf duration of `ms`.
pub(crate) fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1_000).unwrap_or(i64::MAX),
        nanos: ((ms % 1_000) * 1_000_000) as i32,
    }
}

/// The name inside a resource, refused when absent or blank with `code`.
pub(crate) fn resource_name(
    resource: Option<&Resource>,
    what: &str,
    code: Code,
) -> Result<String, Refusal> {
    match resource {
        Some(resource) if !resource.name.trim().is_empty() => Ok(resource.name.clone()),
        _ => Err(Refusal::new(code, format!("{what} name is missing"))),
    }
}

pub(crate) fn resource(name: &str) -> Resource {
    Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    }
}

/// The protocol message types a topic accepts (QueryRoute `accept_message_types`).
pub(crate) fn accepted_types(topic_type: TopicMessageType) -> Vec<i32> {
    let all = [
        PbMessageType::Normal,
        PbMessageType::Fifo,
        PbMessageType::Delay,
        PbMessageType::Transaction,
    ];
    let accepted: Vec<PbMessageType> = match topic_type {
        TopicMessageType::Normal => vec![PbMessageType::Normal],
        TopicMessageType::Fifo => vec![PbMessageType::Fifo],
        TopicMessageType::Delay => vec![PbMessageType::Delay],
        TopicMessageType::Transaction => vec![PbMessageType::Transaction],
        TopicMessageType::Mixed => all.to_vec(),
    };
    accepted.into_iter().map(|kind| kind as i32).collect()
}

fn message_type_to_pb(kind: MessageType) -> PbMessageType {
    match kind {
        MessageType::Normal => PbMessageType::Normal,
        MessageType::Fifo => PbMessageType::Fifo,
        MessageType::Delay => PbMessageType::Delay,
        MessageType::Transaction => PbMessageType::Transaction,
    }
}

/// A producer's message as the broker takes it. `max_body_bytes` bounds a decompressed body.
pub(crate) fn outgoing(
    message: pb::Message,
    max_body_bytes: usize,
) -> Result<OutgoingMessage, Refusal> {
    let topic = resource_name(message.topic.as_ref(), "topic", Code::IllegalTopic)?;
    let system = message
        .system_properties
        .ok_or_else(|| Refusal::new(Code::BadRequest, "message has no system properties"))?;
    let message_group = system.message_group.clone().unwrap_or_default();
    let delivery_timestamp_ms = match &system.delivery_timestamp {
        Some(at) => timestamp_ms(at).ok_or_else(|| {
            Refusal::new(
                Code::IllegalDeliveryTime,
                "delivery timestamp is before the epoch",
            )
        })?,
        None => 0,
    };
    let message_type = match PbMessageType::try_from(system.message_type) {
        Ok(PbMessageType::Normal) => MessageType::Normal,
        Ok(PbMessageType::Fifo) => MessageType::Fifo,
        Ok(PbMessageType::Delay) => MessageType::Delay,
        Ok(PbMessageType::Transaction) => MessageType::Transaction,
        // Older clients leave the type out; infer it the way the reference proxy does.
        Ok(PbMessageType::Unspecified) if !message_group.is_empty() => MessageType::Fifo,
        Ok(PbMessageType::Unspecified) if delivery_timestamp_ms > 0 => MessageType::Delay,
        Ok(PbMessageType::Unspecified) => MessageType::Normal,
        Ok(other) => {
            return Err(Refusal::new(
                Code::Unsupported,
                format!("{} messages are not supported", other.as_str_name()),
            ));
        }
        Err(_) => {
            return Err(Refusal::new(
                Code::BadRequest,
                format!("unknown message type {}", system.message_type),
            ));
        }
    };
    let body = decode_body(message.body, system.body_encoding, max_body_bytes)?;
    let transaction_check_delay_ms = system
        .orphaned_transaction_recovery_duration
        .as_ref()
        .and_then(duration_ms)
        .map_or(0, |ms| ms.min(MAX_TRANSACTION_RECOVERY_MS));
    Ok(OutgoingMessage {
        message_id: system.message_id,
        topic,
        // The client's queue choice is only a hint (P3): the cell spreads or hashes itself.
        queue_id: None,
        message_type,
        tags: system.tag.unwrap_or_default(),
        keys: system.keys,
        message_group,
        properties: message.user_properties.into_iter().collect(),
        body,
        born_timestamp_ms: system
            .born_timestamp
            .as_ref()
            .and_then(timestamp_ms)
            .unwrap_or(0),
        born_host: system.born_host,
        delivery_timestamp_ms,
        transaction_check_delay_ms,
    })
}

fn decode_body(body: Vec<u8>, encoding: i32, max_body_bytes: usize) -> Result<Vec<u8>, Refusal> {
    match Encoding::try_from(encoding) {
        Ok(Encoding::Identity | Encoding::Unspecified) => Ok(body),
        Ok(Encoding::Gzip) => {
            let mut decoded = Vec::new();
            // Bounded: one byte more than allowed is enough to know the body is too large.
            let limit = u64::try_from(max_body_bytes)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            flate2::read::GzDecoder::new(body.as_slice())
                .take(limit)
                .read_to_end(&mut decoded)
                .map_err(|error| {
                    Refusal::new(
                        Code::MessageCorrupted,
                        format!("GZIP body cannot be decoded: {error}"),
                    )
                })?;
            if decoded.len() > max_body_bytes {
                return Err(Refusal::new(
                    Code::MessageBodyTooLarge,
                    format!("decompressed body exceeds {max_body_bytes} bytes"),
                ));
            }
            Ok(decoded)
        }
        Err(_) => Err(Refusal::new(
            Code::BadRequest,
            format!("unknown body encoding {encoding}"),
        )),
    }
}

/// How a delivered message is addressed to this consumer.
pub(crate) struct Delivery<'a> {
    pub(crate) receipt_handle: &'a str,
    pub(crate) attempt: u32,
    pub(crate) invisible_duration_ms: u64,
}

/// A received message on the wire.
pub(crate) fn delivered(received: &ReceivedMessage, store_host: &str, now_ms: u64) -> pb::Message {
    let delivery = Delivery {
        receipt_handle: &received.receipt_handle,
        attempt: received.delivery_attempt,
        invisible_duration_ms: received.invisible_until_ms.saturating_sub(now_ms),
    };
    record_message(&received.record, Some(&delivery), store_host)
}

/// A stored record on the wire: every field RS unwraps is set (topic, system properties,
/// receipt handle for deliveries) and the body digest is uppercase MD5 as PY expects.
pub(crate) fn record_message(
    record: &Record,
    delivery: Option<&Delivery<'_>>,
    store_host: &str,
) -> pb::Message {
    let user_properties = record
        .properties
        .iter()
        .filter(|(key, _)| !key.starts_with(SYSTEM_PROPERTY_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let dead_letter_queue = record
        .properties
        .get(PROP_DLQ_ORIGIN_TOPIC)
        .map(|origin_topic| pb::DeadLetterQueue {
            topic: origin_topic.clone(),
            message_id: record.message_id.clone(),
        });
    let system = pb::SystemProperties {
        tag: (!record.tags.is_empty()).then(|| record.tags.clone()),
        keys: record.keys.clone(),
        message_id: record.message_id.clone(),
        body_digest: Some(pb::Digest {
            r#type: DigestType::Md5 as i32,
            checksum: md5_upper_hex(&record.body),
        }),
        body_encoding: Encoding::Identity as i32,
        message_type: message_type_to_pb(record.message_type) as i32,
        born_timestamp: Some(timestamp(record.born_timestamp_ms)),
        born_host: record
            .properties
            .get(PROP_BORN_HOST)
            .cloned()
            .unwrap_or_default(),
        store_timestamp: Some(timestamp(record.store_timestamp_ms)),
        store_host: store_host.to_string(),
        delivery_timestamp: (record.delivery_timestamp_ms > 0)
            .then(|| timestamp(record.delivery_timestamp_ms)),
        receipt_handle: delivery.map(|delivery| delivery.receipt_handle.to_string()),
        queue_id: i32::try_from(record.queue_id).unwrap_or(i32::MAX),
        queue_offset: Some(i64::try_from(record.queue_offset).unwrap_or(i64::MAX)),
        invisible_duration: delivery.map(|delivery| duration(delivery.invisible_duration_ms)),
        delivery_attempt: delivery
            .map(|delivery| i32::try_from(delivery.attempt).unwrap_or(i32::MAX)),
        message_group: (!record.message_group.is_empty()).then(|| record.message_group.clone()),
        trace_context: None,
        orphaned_transaction_recovery_duration: None,
        dead_letter_queue,
        lite_topic: None,
        priority: None,
    };
    pb::Message {
        topic: Some(resource(&record.topic)),
        user_properties,
        system_properties: Some(system),
        body: record.body.clone(),
    }
}

fn md5_upper_hex(body: &[u8]) -> String {
    let digest = Md5::digest(body);
    let mut hex = String::with_capacity(32);
    for byte in digest {
        hex.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 0x0f)]));
    }
    hex
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::storage::Origin;

    fn pb_message(kind: PbMessageType) -> pb::Message {
        pb::Message {
            topic: Some(resource("orders")),
            user_properties: [("k".to_string(), "v".to_string())].into_iter().collect(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("TagA".to_string()),
                keys: vec!["key-1".to_string()],
                message_id: "01AEB14B37817A34A671b4660000000001".to_string(),
                body_encoding: Encoding::Identity as i32,
                message_type: kind as i32,
                born_timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                queue_id: 3,
                ..Default::default()
            }),
            body: b"hello".to_vec(),
        }
    }

    #[test]
    fn producer_message_keeps_its_fields_and_ignores_the_queue_hint() {
        let outgoing = outgoing(pb_message(PbMessageType::Normal), 1024).unwrap();
        assert_eq!(outgoing.topic, "orders");
        assert_eq!(outgoing.message_id, "01AEB14B37817A34A671b4660000000001");
        assert_eq!(outgoing.tags, "TagA");
        assert_eq!(outgoing.keys, vec!["key-1".to_string()]);
        assert_eq!(outgoing.properties.get("k").map(String::as_str), Some("v"));
        assert_eq!(outgoing.born_timestamp_ms, 1_700_000_000_000);
        assert_eq!(outgoing.queue_id, None);
        assert_eq!(outgoing.message_type, MessageType::Normal);
    }

    #[test]
    fn unspecified_type_is_inferred_and_newer_types_are_refused() {
        let mut message = pb_message(PbMessageType::Unspecified);
        message.system_properties.as_mut().unwrap().message_group = Some("g".to_string());
        assert_eq!(
            outgoing(message, 1024).unwrap().message_type,
            MessageType::Fifo
        );
        let refused = outgoing(pb_message(PbMessageType::Lite), 1024).unwrap_err();
        assert_eq!(refused.code, Code::Unsupported);
        let mut unknown = pb_message(PbMessageType::Normal);
        unknown.system_properties.as_mut().unwrap().message_type = 99;
        assert_eq!(outgoing(unknown, 1024).unwrap_err().code, Code::BadRequest);
    }

    #[test]
    fn gzip_bodies_are_decoded_within_the_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[7u8; 4096]).unwrap();
        let compressed = encoder.finish().unwrap();
        let mut message = pb_message(PbMessageType::Normal);
        message.body = compressed.clone();
        message.system_properties.as_mut().unwrap().body_encoding = Encoding::Gzip as i32;
        assert_eq!(
            outgoing(message.clone(), 4096).unwrap().body,
            vec![7u8; 4096]
        );
        assert_eq!(
            outgoing(message.clone(), 4095).unwrap_err().code,
            Code::MessageBodyTooLarge
        );
        message.body = b"not gzip".to_vec();
        assert_eq!(
            outgoing(message, 4096).unwrap_err().code,
            Code::MessageCorrupted
        );
    }

    #[test]
    fn negative_timestamps_are_refused_not_wrapped() {
        let mut message = pb_message(PbMessageType::Delay);
        message
            .system_properties
            .as_mut()
            .unwrap()
            .delivery_timestamp = Some(prost_types::Timestamp {
            seconds: -5,
            nanos: 0,
        });
        assert_eq!(
            outgoing(message, 1024).unwrap_err().code,
            Code::IllegalDeliveryTime
        );
        assert_eq!(timestamp_ms(&timestamp(1_234_567)), Some(1_234_567));
        assert_eq!(duration_ms(&duration(15_250)), Some(15_250));
    }

    #[test]
    fn delivered_message_has_every_field_clients_unwrap() {
        let record = Record {
            kind: crate::storage::RecordKind::Message,
            message_id: "id-1".to_string(),
            topic: "orders".to_string(),
            queue_id: 2,
            queue_offset: 41,
            message_type: MessageType::Fifo,
            tags: "TagA".to_string(),
            keys: vec!["k1".to_string()],
            message_group: "g1".to_string(),
            properties: [
                ("user".to_string(), "1".to_string()),
                (PROP_DLQ_ORIGIN_TOPIC.to_string(), "src".to_string()),
            ]
            .into_iter()
            .collect(),
            body: b"abc".to_vec(),
            born_timestamp_ms: 1_000,
            store_timestamp_ms: 2_000,
            hlc: 0,
            delivery_timestamp_ms: 0,
            origin: Origin {
                region: "r".to_string(),
                offset: 0,
            },
        };
        let received = ReceivedMessage {
            record,
            receipt_handle: "handle".to_string(),
            delivery_attempt: 2,
            invisible_until_ms: 32_000,
        };
        let message = delivered(&received, "127.0.0.1:8081", 2_000);
        let system = message.system_properties.unwrap();
        assert_eq!(message.topic.unwrap().name, "orders");
        assert_eq!(system.receipt_handle.as_deref(), Some("handle"));
        assert_eq!(system.delivery_attempt, Some(2));
        assert_eq!(system.invisible_duration.unwrap().seconds, 30);
        assert_eq!(system.body_encoding, Encoding::Identity as i32);
        // MD5("abc"), uppercase as the Python client compares it.
        assert_eq!(
            system.body_digest.unwrap().checksum,
            "900150983CD24FB0D6963F7D28E17F72"
        );
        assert_eq!(system.message_group.as_deref(), Some("g1"));
        assert_eq!(system.dead_letter_queue.unwrap().topic, "src");
        assert_eq!(
            message.user_properties.len(),
            1,
            "system properties stay inside"
        );
    }
}
