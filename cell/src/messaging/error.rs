//! Errors of the messaging layer, each mapped to the RocketMQ status code a client expects.

use crate::error::StorageError;
use crate::messaging::filter::FilterError;
use crate::messaging::topic::TopicMessageType;
use crate::storage::MessageType;

/// Why a messaging operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The topic does not exist in this cell.
    #[error("topic {topic} does not exist")]
    TopicNotFound {
        /// The topic.
        topic: String,
    },
    /// A topic of that name exists with other settings.
    #[error(
        "topic {topic} already exists as a {existing:?} topic with {existing_queue_count} queues"
    )]
    TopicConflict {
        /// The topic.
        topic: String,
        /// Its declared type.
        existing: TopicMessageType,
        /// Its queue count.
        existing_queue_count: u32,
    },
    /// The consumer group does not exist in this cell.
    #[error("consumer group {group} does not exist")]
    GroupNotFound {
        /// The group.
        group: String,
    },
    /// The queue id is not one of the topic's queues.
    #[error("topic {topic} has {queue_count} queues; queue {queue_id} does not exist")]
    QueueNotFound {
        /// The topic.
        topic: String,
        /// The queue asked for.
        queue_id: u32,
        /// How many the topic has.
        queue_count: u32,
    },
    /// A message was sent as a type the topic does not accept.
    #[error("topic {topic} accepts {accepted:?} messages; a {sent:?} message was sent")]
    MessageTypeMismatch {
        /// The topic.
        topic: String,
        /// What it accepts.
        accepted: TopicMessageType,
        /// What the producer declared.
        sent: MessageType,
    },
    /// A topic, group or client name is invalid.
    #[error("{field} name {name:?} {reason}")]
    InvalidName {
        /// `topic`, `consumer group` or `client id`.
        field: &'static str,
        /// The name.
        name: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A message field other than body and properties is invalid (id, tag, key, group).
    #[error("message {field} is invalid: {reason}")]
    InvalidMessage {
        /// `message id`, `tag`, `key` or `message group`.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The body is larger than the limit.
    #[error("message body is {size_bytes} bytes; at most {max_bytes} bytes are allowed")]
    MessageTooLarge {
        /// Its size.
        size_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The body is empty.
    #[error("message body is empty")]
    EmptyBody,
    /// Properties are too many or too large.
    #[error("message properties {detail}")]
    PropertiesTooLarge {
        /// Which limit and by how much.
        detail: String,
    },
    /// A user property uses a name the cell reserves for itself.
    #[error("property name {name:?} is reserved for the system")]
    ReservedProperty {
        /// The name.
        name: String,
    },
    /// A batch has too many messages or bytes.
    #[error("batch {detail}")]
    BatchTooLarge {
        /// Which limit and by how much.
        detail: String,
    },
    /// A delay message's delivery time is unusable.
    #[error("delivery timestamp {delivery_timestamp_ms} ms is invalid: {reason}")]
    InvalidDeliveryTime {
        /// The requested time.
        delivery_timestamp_ms: u64,
        /// Why.
        reason: String,
    },
    /// An invisible duration is outside the allowed range.
    #[error("invisible duration {duration_ms} ms is outside [{min_ms}, {max_ms}] ms")]
    InvalidInvisibleDuration {
        /// Requested.
        duration_ms: u64,
        /// Lower bound.
        min_ms: u64,
        /// Upper bound.
        max_ms: u64,
    },
    /// A long-polling timeout or batch size is outside the allowed range.
    #[error("{field} {value} is outside [1, {max}]")]
    InvalidRequest {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The limit.
        max: u64,
    },
    /// A receipt handle could not be decoded, or names a message that is not in flight.
    #[error("receipt handle {handle:?} is invalid: {reason}")]
    InvalidReceiptHandle {
        /// The handle.
        handle: String,
        /// Why.
        reason: &'static str,
    },
    /// The message was redelivered (or its invisibility changed) since this handle was issued;
    /// only the newest handle may ack it.
    #[error(
        "receipt handle is stale: the message was delivered again (attempt {current_attempt}) since it was issued"
    )]
    StaleReceiptHandle {
        /// The attempt the message is on now.
        current_attempt: u32,
    },
    /// A filter expression is invalid.
    #[error(transparent)]
    FilterParse(#[from] FilterError),
    /// No open transaction has this message id.
    #[error("no open transaction for message {message_id}")]
    TransactionNotFound {
        /// The half message's id.
        message_id: String,
    },
    /// An offset is outside the queue.
    #[error("offset {offset} of {topic}/{queue_id} is outside [{earliest}, {next}]")]
    InvalidOffset {
        /// The topic.
        topic: String,
        /// The queue.
        queue_id: u32,
        /// Offset asked for.
        offset: u64,
        /// Earliest retained.
        earliest: u64,
        /// Next to be written.
        next: u64,
    },
    /// Too many requests are waiting (long polls, pending state).
    #[error("too many requests: {detail}")]
    TooManyRequests {
        /// Which limit.
        detail: String,
    },
    /// Persisted messaging state could not be decoded.
    #[error("messaging state under key {key:?} is corrupt: {reason}")]
    CorruptState {
        /// The state key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A send to a `sync-quorum` topic is stored here but not confirmed by a majority of the
    /// topic's regions; it is not acknowledged (a retry with the same message id is safe).
    #[error(
        "topic {topic:?} is sync-quorum and the write was not confirmed by a majority of its \
         regions: {cause}; it is stored in this region and will replicate, retry with the same \
         message id"
    )]
    QuorumNotReached {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        cause: crate::messaging::quorum::QuorumError,
    },
    /// The router does not let this region take the write now (see `messaging::gate`).
    #[error("{0}")]
    NotWritableHere(crate::messaging::gate::WriteRefusal),
    /// A region cannot be adopted (see `Broker::adopt_region`).
    #[error("region {region:?} cannot be adopted: {reason}")]
    InvalidAdoption {
        /// The region named.
        region: String,
        /// Why not.
        reason: String,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MessagingError {
    /// The RocketMQ v2 status code for this error (see `docs` of the proto crate); the gRPC layer
    /// sends it unchanged.
    pub fn rocketmq_code(&self) -> u32 {
        match self {
            MessagingError::TopicNotFound { .. } => 40402,
            MessagingError::GroupNotFound { .. } => 40403,
            MessagingError::QueueNotFound { .. } | MessagingError::InvalidOffset { .. } => 40000,
            MessagingError::TopicConflict { .. } => 42800,
            MessagingError::MessageTypeMismatch { .. } => 40014,
            MessagingError::InvalidName { field: "topic", .. } => 40002,
            MessagingError::InvalidName {
                field: "consumer group",
                ..
            } => 40003,
            MessagingError::InvalidName { .. } => 40017,
            MessagingError::InvalidMessage { field: "tag", .. } => 40004,
            MessagingError::InvalidMessage { field: "key", .. } => 40005,
            MessagingError::InvalidMessage {
                field: "message group",
                ..
            } => 40006,
            MessagingError::InvalidMessage {
                field: "message id",
                ..
            } => 40009,
            MessagingError::InvalidMessage {
                field: "property name",
                ..
            } => 40007,
            MessagingError::InvalidMessage { .. } => 40000,
            MessagingError::MessageTooLarge { .. } => 41301,
            // MESSAGE_BODY_EMPTY; the gRPC layer's `code_for_client` turns it into BAD_REQUEST
            // for clients that predate the code (CONFORMANCE S1).
            MessagingError::EmptyBody => 41302,
            MessagingError::PropertiesTooLarge { .. } => 43101,
            MessagingError::ReservedProperty { .. } => 40007,
            MessagingError::BatchTooLarge { .. } => 41300,
            MessagingError::InvalidDeliveryTime { .. } => 40012,
            MessagingError::InvalidInvisibleDuration { .. } => 40011,
            MessagingError::InvalidRequest {
                field: "long polling timeout",
                ..
            } => 40018,
            MessagingError::InvalidRequest { .. } => 40000,
            MessagingError::InvalidReceiptHandle { .. }
            | MessagingError::StaleReceiptHandle { .. } => 40013,
            MessagingError::FilterParse(_) => 40010,
            MessagingError::TransactionNotFound { .. } => 40008,
            MessagingError::TooManyRequests { .. } => 42900,
            // SLAVE_PERSISTENCE_TIMEOUT: "stored here, replicas did not confirm in time".
            MessagingError::QuorumNotReached { .. } => 50402,
            // FORBIDDEN: known to every client version; the message names the home region and
            // epoch, and the Python client retries it like any error but TOO_MANY_REQUESTS.
            MessagingError::NotWritableHere(_) => 40300,
            MessagingError::InvalidAdoption { .. } => 40000,
            MessagingError::CorruptState { .. } | MessagingError::Storage(_) => 50000,
        }
    }
}
