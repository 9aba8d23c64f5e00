//! Messages as producers hand them in and consumers get them, and the checks a send passes.

use std::collections::BTreeMap;

use crate::messaging::error::MessagingError;
use crate::messaging::limits::Limits;
use crate::storage::{MessageType, Record};

/// Prefix of the property names the cell uses for itself; producers may not set them.
pub const SYSTEM_PROPERTY_PREFIX: &str = "__MERIDIAN_";
/// On a delayed or half message: the topic it is for.
pub(crate) const PROP_REAL_TOPIC: &str = "__MERIDIAN_REAL_TOPIC";
/// On a delayed or half message: the queue it is for.
pub(crate) const PROP_REAL_QUEUE: &str = "__MERIDIAN_REAL_QUEUE";
/// On a dead-lettered message: the topic it came from.
pub const PROP_DLQ_ORIGIN_TOPIC: &str = "__MERIDIAN_DLQ_ORIGIN_TOPIC";
/// On a dead-lettered message: how many deliveries it had.
pub const PROP_DLQ_ATTEMPTS: &str = "__MERIDIAN_DLQ_ATTEMPTS";
/// On a message released from the timer topic or committed (or rolled back) from the half
/// topic: the internal-topic offset it came from, so that a restart can tell "released" from
/// "a different message reusing the id".
pub(crate) const PROP_RELEASED_FROM: &str = "__MERIDIAN_RELEASED_FROM";
/// The producer's host as it reported it (RocketMQ's `born_host`), kept for consumers.
pub const PROP_BORN_HOST: &str = "__MERIDIAN_BORN_HOST";
/// The topic's failover epoch under which the write gate accepted the message (only when a
/// gate is installed; see `messaging::gate`).
pub const PROP_WRITE_EPOCH: &str = "__MERIDIAN_WRITE_EPOCH";
/// On a half message: the producer's requested first check delay, ms.
pub(crate) const PROP_TXN_CHECK_DELAY_MS: &str = "__MERIDIAN_TXN_CHECK_DELAY_MS";

/// Longest `born_host` accepted (a host name or an address with a port).
pub const MAX_BORN_HOST_BYTES: usize = 255;

/// A message a producer sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Client-assigned unique id.
    pub message_id: String,
    /// Topic.
    pub topic: String,
    /// Queue to use; `None` lets the cell choose (by message group hash for FIFO, round-robin
    /// otherwise).
    pub queue_id: Option<u32>,
    /// Declared type; must match the topic's.
    pub message_type: MessageType,
    /// Tag; empty for none.
    pub tags: String,
    /// Business keys.
    pub keys: Vec<String>,
    /// FIFO message group; required for FIFO messages.
    pub message_group: String,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// Payload.
    pub body: Vec<u8>,
    /// Producer-side creation time, ms.
    pub born_timestamp_ms: u64,
    /// The producer's host as it reports it; empty for none.
    pub born_host: String,
    /// For DELAY messages: when to deliver, ms since the epoch.
    pub delivery_timestamp_ms: u64,
    /// For TRANSACTION messages: delay before the first check-back, ms (0 for the default).
    pub transaction_check_delay_ms: u64,
}

/// What a send returns per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The message id.
    pub message_id: String,
    /// Queue the message went to.
    pub queue_id: u32,
    /// Its offset there; for delayed and half messages, the offset in the internal topic that
    /// holds them until release.
    pub offset: u64,
    /// For transactional messages, the token to end the transaction with.
    pub transaction_id: Option<String>,
}

/// A message handed to a per-message consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The stored message.
    pub record: Record,
    /// Token for ack and change-invisible-duration.
    pub receipt_handle: String,
    /// 1 for the first delivery.
    pub delivery_attempt: u32,
    /// When it becomes visible again unless acked, ms.
    pub invisible_until_ms: u64,
}

fn invalid(field: &'static str, reason: String) -> MessagingError {
    MessagingError::InvalidMessage { field, reason }
}

fn check_text(field: &'static str, value: &str, max_bytes: usize) -> Result<(), MessagingError> {
    if value.len() > max_bytes {
        return Err(invalid(
            field,
            format!(
                "is {} bytes; at most {max_bytes} bytes are allowed",
                value.len()
            ),
        ));
    }
    if let Some((at, ch)) = value.char_indices().find(|(_, ch)| ch.is_control()) {
        return Err(invalid(
            field,
            format!("has control character {ch:?} at byte {at}"),
        ));
    }
    Ok(())
}

/// Checks one message against the limits and RocketMQ's field rules (type-independent).
pub fn validate_message(
    message: &OutgoingMessage,
    limits: &Limits,
    now_ms: u64,
) -> Result<(), MessagingError> {
    if message.message_id.trim().is_empty() {
        return Err(invalid(
            "message id",
            "must not be empty or blank".to_string(),
        ));
    }
    check_text(
        "message id",
        &message.message_id,
        limits.max_message_id_bytes,
    )?;
    check_text("tag", &message.tags, limits.max_tag_bytes)?;
    check_text("born host", &message.born_host, MAX_BORN_HOST_BYTES)?;
    if message.tags.contains('|') {
        return Err(invalid(
            "tag",
            "must not contain `|` (it separates tags in filter expressions)".to_string(),
        ));
    }
    if message.keys.len() > limits.max_keys_per_message {
        return Err(invalid(
            "key",
            format!(
                "{} keys; at most {} are allowed",
                message.keys.len(),
                limits.max_keys_per_message
            ),
        ));
    }
    for key in &message.keys {
        if key.trim().is_empty() {
            return Err(invalid("key", "must not be empty or blank".to_string()));
        }
        check_text("key", key, limits.max_key_bytes)?;
    }
    check_text(
        "message group",
        &message.message_group,
        limits.max_message_group_bytes,
    )?;
    if message.body.is_empty() {
        return Err(MessagingError::EmptyBody);
    }
    if message.body.len() > limits.max_message_body_bytes {
        return Err(MessagingError::MessageTooLarge {
            size_bytes: message.body.len(),
            max_bytes: limits.max_message_body_bytes,
        });
    }
    if message.properties.len() > limits.max_property_count {
        return Err(MessagingError::PropertiesTooLarge {
            detail: format!(
                "count {} exceeds the limit of {}",
                message.properties.len(),
                limits.max_property_count
            ),
        });
    }
    let properties_bytes: usize = message
        .properties
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if properties_bytes > limits.max_properties_bytes {
        return Err(MessagingError::PropertiesTooLarge {
            detail: format!(
                "take {properties_bytes} bytes; at most {} bytes are allowed",
                limits.max_properties_bytes
            ),
        });
    }
    for name in message.properties.keys() {
        if name.starts_with(SYSTEM_PROPERTY_PREFIX) {
            return Err(MessagingError::ReservedProperty { name: name.clone() });
        }
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(MessagingError::InvalidMessage {
                field: "property name",
                reason: format!("{name:?} is empty or has control characters"),
            });
        }
    }
    match message.message_type {
        MessageType::Fifo if message.message_group.is_empty() => {
            return Err(invalid(
                "message group",
                "is required for FIFO messages".to_string(),
            ));
        }
        // A blank group would be one shared "group" that clients print as nothing; RocketMQ
        // refuses it as an illegal message group.
        MessageType::Fifo if message.message_group.trim().is_empty() => {
            return Err(invalid("message group", "must not be blank".to_string()));
        }
        MessageType::Delay => {
            if message.delivery_timestamp_ms == 0 {
                return Err(MessagingError::InvalidDeliveryTime {
                    delivery_timestamp_ms: 0,
                    reason: "a DELAY message needs a delivery timestamp".to_string(),
                });
            }
            if message.delivery_timestamp_ms > now_ms.saturating_add(limits.max_delivery_delay_ms) {
                return Err(MessagingError::InvalidDeliveryTime {
                    delivery_timestamp_ms: message.delivery_timestamp_ms,
                    reason: format!("it is more than {} ms ahead", limits.max_delivery_delay_ms),
                });
            }
        }
        _ => {}
    }
    if message.message_type != MessageType::Fifo && !message.message_group.is_empty() {
        return Err(MessagingError::InvalidMessage {
            field: "message group",
            reason: format!(
                "only FIFO messages have one; this is a {:?} message",
                message.message_type
            ),
        });
    }
    if message.message_type != MessageType::Delay && message.delivery_timestamp_ms != 0 {
        return Err(MessagingError::InvalidDeliveryTime {
            delivery_timestamp_ms: message.delivery_timestamp_ms,
            reason: format!(
                "only DELAY messages have one; this is a {:?} message",
                message.message_type
            ),
        });
    }
    Ok(())
}

/// Checks the number of messages in a batch (before each message is looked at).
pub fn validate_batch_count(count: usize, limits: &Limits) -> Result<(), MessagingError> {
    if count == 0 || count > limits.max_send_batch_messages {
        return Err(MessagingError::BatchTooLarge {
            detail: format!(
                "has {count} messages; 1 to {} are allowed",
                limits.max_send_batch_messages
            ),
        });
    }
    Ok(())
}

/// Checks the total body bytes of a batch (after each message passed its own checks, so that a
/// single oversized message gets the more precise per-message error).
pub fn validate_batch_bytes(
    messages: &[OutgoingMessage],
    limits: &Limits,
) -> Result<(), MessagingError> {
    let bytes: usize = messages.iter().map(|message| message.body.len()).sum();
    if bytes > limits.max_send_batch_bytes {
        return Err(MessagingError::BatchTooLarge {
            detail: format!(
                "bodies take {bytes} bytes; at most {} bytes are allowed",
                limits.max_send_batch_bytes
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message() -> OutgoingMessage {
        OutgoingMessage {
            message_id: "id-1".into(),
            topic: "t".into(),
            body: b"hello".to_vec(),
            ..OutgoingMessage::default()
        }
    }

    #[test]
    fn accepts_a_plain_message() {
        validate_message(&message(), &Limits::default(), 0).unwrap();
    }

    #[test]
    fn each_limit_refuses_with_a_clear_error() {
        let limits = Limits::default();
        let check = |change: &dyn Fn(&mut OutgoingMessage)| {
            let mut refused = message();
            change(&mut refused);
            validate_message(&refused, &limits, 1_000).unwrap_err()
        };
        let error = check(&|m| m.body = vec![0; limits.max_message_body_bytes + 1]);
        assert!(
            matches!(error, MessagingError::MessageTooLarge { size_bytes, max_bytes: 4_194_304 } if size_bytes == 4_194_305)
        );
        assert!(matches!(
            check(&|m| m.body.clear()),
            MessagingError::EmptyBody
        ));
        let error =
            check(&|m| m.properties = (0..129).map(|i| (format!("p{i}"), String::new())).collect());
        assert!(
            error
                .to_string()
                .contains("count 129 exceeds the limit of 128"),
            "{error}"
        );
        let error = check(&|m| {
            m.properties
                .insert("big".into(), "x".repeat(limits.max_properties_bytes));
        });
        assert!(
            matches!(error, MessagingError::PropertiesTooLarge { .. }),
            "{error}"
        );
        let error = check(&|m| {
            m.properties
                .insert("__MERIDIAN_REAL_TOPIC".into(), "x".into());
        });
        assert!(matches!(error, MessagingError::ReservedProperty { .. }));
        assert_eq!(check(&|m| m.tags = "a|b".into()).rocketmq_code(), 40004);
        assert_eq!(check(&|m| m.message_id = " ".into()).rocketmq_code(), 40009);
        assert_eq!(
            check(&|m| m.keys = vec!["k\n".into()]).rocketmq_code(),
            40005
        );
        let error = check(&|m| m.message_type = MessageType::Fifo);
        assert_eq!(
            error.to_string(),
            "message message group is invalid: is required for FIFO messages"
        );
        let error = check(&|m| {
            m.message_type = MessageType::Fifo;
            m.message_group = "g".repeat(64);
        });
        assert_eq!(error.rocketmq_code(), 40006);
        let error = check(&|m| m.message_type = MessageType::Delay);
        assert!(matches!(error, MessagingError::InvalidDeliveryTime { .. }));
        let error = check(&|m| {
            m.message_type = MessageType::Delay;
            m.delivery_timestamp_ms = 1_000 + limits.max_delivery_delay_ms + 1;
        });
        assert_eq!(error.rocketmq_code(), 40012);
        assert_eq!(
            check(&|m| m.delivery_timestamp_ms = 5).rocketmq_code(),
            40012
        );
    }

    #[test]
    fn batch_limits() {
        let limits = Limits {
            max_send_batch_messages: 2,
            max_send_batch_bytes: 8,
            ..Limits::default()
        };
        validate_batch_count(1, &limits).unwrap();
        assert!(validate_batch_count(0, &limits).is_err());
        let error = validate_batch_count(3, &limits).unwrap_err().to_string();
        assert!(error.contains("3 messages"), "{error}");
        validate_batch_bytes(&[message()], &limits).unwrap();
        let error = validate_batch_bytes(&[message(), message()], &limits)
            .unwrap_err()
            .to_string();
        assert!(error.contains("10 bytes"), "{error}");
    }
}
