//! Validation of topic, consumer group and client names, and the names of system topics.
//!
//! User names follow RocketMQ's rule (`[a-zA-Z0-9_-]`, bounded length); `%` and `|` are kept for
//! the system topics derived from user names (`%DLQ%<group>`) so that no user topic can collide
//! with one.

use crate::messaging::error::MessagingError;

/// Longest topic name, in bytes (RocketMQ's limit).
pub const MAX_TOPIC_NAME_BYTES: usize = 127;
/// Longest consumer group name, in bytes (RocketMQ's limit).
pub const MAX_GROUP_NAME_BYTES: usize = 255;
/// Longest client id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 255;

/// Prefix of dead-letter topics; `%DLQ%<group>` holds what `<group>` gave up on.
pub const DLQ_TOPIC_PREFIX: &str = "%DLQ%";
/// Prefix reserved for the cell's internal topics.
pub const SYSTEM_TOPIC_PREFIX: &str = "%SYS%";
/// Delay messages wait here until their delivery time.
pub const TIMER_TOPIC: &str = "%SYS%TIMER";
/// Transactional half messages wait here until commit or rollback.
pub const HALF_TOPIC: &str = "%SYS%HALF";
/// Rollback markers of transactions (the commit marker is the real message itself).
pub const TXN_OP_TOPIC: &str = "%SYS%TXN_OP";
/// Message trace events, keyed by message id.
pub const TRACE_TOPIC: &str = "%SYS%TRACE";
/// Consumer-state records (acks, attempts, committed offsets) that other regions apply.
pub const CONSUMER_STATE_TOPIC: &str = "%SYS%CSTATE";

/// The dead-letter topic of a consumer group.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_TOPIC_PREFIX}{group}")
}

/// Names reserved by RocketMQ tooling that clients must not create.
const RESERVED_TOPICS: [&str; 3] = ["TBW102", "SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRANS_HALF_TOPIC"];

fn check(field: &'static str, name: &str, max_bytes: usize) -> Result<(), MessagingError> {
    let invalid = |reason: String| MessagingError::InvalidName {
        field,
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("must not be empty".to_string()));
    }
    if name.len() > max_bytes {
        return Err(invalid(format!(
            "is {} bytes; at most {max_bytes} bytes are allowed",
            name.len()
        )));
    }
    if let Some((at, ch)) = name
        .char_indices()
        .find(|(_, ch)| !(ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '-'))
    {
        return Err(invalid(format!(
            "has {ch:?} at byte {at}; only ASCII letters, digits, `_` and `-` are allowed"
        )));
    }
    Ok(())
}

/// Checks a topic name a client wants to create or send to.
pub fn validate_topic(name: &str) -> Result<(), MessagingError> {
    check("topic", name, MAX_TOPIC_NAME_BYTES)?;
    if RESERVED_TOPICS.contains(&name) || name.to_ascii_lowercase().starts_with("rmq_sys_") {
        return Err(MessagingError::InvalidName {
            field: "topic",
            name: name.to_string(),
            reason: "is reserved for the system".to_string(),
        });
    }
    Ok(())
}

/// Checks a topic name a client wants to consume: a user topic or a group's dead-letter topic.
pub fn validate_consumable_topic(name: &str) -> Result<(), MessagingError> {
    match name.strip_prefix(DLQ_TOPIC_PREFIX) {
        Some(group) => validate_group(group).map_err(|_| MessagingError::InvalidName {
            field: "topic",
            name: name.to_string(),
            reason: format!("is not `{DLQ_TOPIC_PREFIX}` followed by a valid consumer group name"),
        }),
        None => validate_topic(name),
    }
}

/// Checks a consumer group name.
pub fn validate_group(name: &str) -> Result<(), MessagingError> {
    check("consumer group", name, MAX_GROUP_NAME_BYTES)
}

/// Checks a client id. Client ids come from SDKs (host names, pids, counters), so `@`, `.` and
/// `:` are allowed besides the name characters, and nothing else.
pub fn validate_client_id(id: &str) -> Result<(), MessagingError> {
    let invalid = |reason: String| MessagingError::InvalidName {
        field: "client id",
        name: id.to_string(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("must not be empty".to_string()));
    }
    if id.len() > MAX_CLIENT_ID_BYTES {
        return Err(invalid(format!(
            "is {} bytes; at most {MAX_CLIENT_ID_BYTES} bytes are allowed",
            id.len()
        )));
    }
    if let Some((at, ch)) = id
        .char_indices()
        .find(|(_, ch)| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '@' | '.' | ':')))
    {
        return Err(invalid(format!(
            "has {ch:?} at byte {at}; only ASCII letters, digits and `_-@.:` are allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_rocketmq_style_names() {
        for name in [
            "orders",
            "Orders_2024-eu",
            "a",
            &"t".repeat(MAX_TOPIC_NAME_BYTES),
        ] {
            validate_topic(name).unwrap();
        }
        validate_group(&"g".repeat(MAX_GROUP_NAME_BYTES)).unwrap();
        validate_client_id("host-1@1234:7.0").unwrap();
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        let cases = [
            ("", "must not be empty"),
            ("has space", "has ' ' at byte 3"),
            ("%DLQ%g", "has '%' at byte 0"),
            ("a|b", "has '|' at byte 1"),
            ("ünï", "has 'ü' at byte 0"),
            ("TBW102", "is reserved"),
            ("rmq_sys_anything", "is reserved"),
        ];
        for (name, reason) in cases {
            let error = validate_topic(name).unwrap_err();
            assert!(
                matches!(&error, MessagingError::InvalidName { field: "topic", reason: why, .. } if why.starts_with(reason)),
                "{name:?}: {error}"
            );
        }
        let long = "t".repeat(MAX_TOPIC_NAME_BYTES + 1);
        let error = validate_topic(&long).unwrap_err().to_string();
        assert!(error.contains("128 bytes; at most 127"), "{error}");
        assert!(validate_group(&"g".repeat(MAX_GROUP_NAME_BYTES + 1)).is_err());
        assert!(validate_group("bad/group").is_err());
        assert!(validate_client_id("bad id").is_err());
    }

    #[test]
    fn dead_letter_topics_are_consumable_but_not_creatable() {
        let dlq = dlq_topic("payments-group");
        validate_consumable_topic(&dlq).unwrap();
        assert!(validate_topic(&dlq).is_err());
        assert!(validate_consumable_topic("%DLQ%").is_err());
        assert!(validate_consumable_topic("%DLQ%bad group").is_err());
        assert!(
            validate_consumable_topic(TIMER_TOPIC).is_err(),
            "internal topics are not consumable"
        );
    }
}
