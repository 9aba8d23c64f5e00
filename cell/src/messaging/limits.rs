//! Limits the messaging layer enforces, with RocketMQ 5's defaults.

use crate::messaging::error::MessagingError;

/// Every limit a client request is checked against. Defaults follow the RocketMQ 5 proxy so that
/// official clients see the behaviour they were written for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message body (RocketMQ `maxMessageSize`).
    pub max_message_body_bytes: usize,
    /// Largest total of property names and values of one message.
    pub max_properties_bytes: usize,
    /// Most user properties on one message.
    pub max_property_count: usize,
    /// Most messages in one send call.
    pub max_send_batch_messages: usize,
    /// Most body bytes in one send call.
    pub max_send_batch_bytes: usize,
    /// Longest tag.
    pub max_tag_bytes: usize,
    /// Longest business key.
    pub max_key_bytes: usize,
    /// Most keys on one message.
    pub max_keys_per_message: usize,
    /// Longest message group (RocketMQ refuses 64 bytes and more).
    pub max_message_group_bytes: usize,
    /// Longest message id.
    pub max_message_id_bytes: usize,
    /// Furthest a delivery time may lie in the future.
    pub max_delivery_delay_ms: u64,
    /// Shortest invisible duration on receive and change.
    pub min_invisible_duration_ms: u64,
    /// Longest invisible duration.
    pub max_invisible_duration_ms: u64,
    /// Most messages one receive returns.
    pub max_receive_batch_messages: usize,
    /// Longest a receive may wait for messages.
    pub max_long_polling_ms: u64,
    /// Most messages read from the log but not yet done per (group, topic, queue); reading
    /// stops when this many are in flight or held back by FIFO order.
    pub max_inflight_per_queue: usize,
    /// Most receives and pulls waiting in long polls at once; more are refused with
    /// TOO_MANY_REQUESTS rather than queued without bound.
    pub max_waiting_polls: u64,
    /// Most topics in the cell.
    pub max_topics: usize,
    /// Most queues per topic.
    pub max_queues_per_topic: u32,
    /// Most consumer groups in the cell.
    pub max_groups: usize,
    /// Most live clients per consumer group; heartbeats of further new clients are refused
    /// rather than growing the membership without bound.
    pub max_clients_per_group: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_body_bytes: 4 << 20,
            max_properties_bytes: 16 << 10,
            max_property_count: 128,
            max_send_batch_messages: 1024,
            max_send_batch_bytes: 4 << 20,
            max_tag_bytes: 255,
            max_key_bytes: 1024,
            max_keys_per_message: 64,
            max_message_group_bytes: 63,
            max_message_id_bytes: 128,
            max_delivery_delay_ms: 24 * 3600 * 1000,
            // The RocketMQ 5 proxy's range for receive and change (CONFORMANCE §4: 10 s – 12 h).
            min_invisible_duration_ms: 10_000,
            max_invisible_duration_ms: 12 * 3600 * 1000,
            max_receive_batch_messages: 32,
            max_long_polling_ms: 60_000,
            max_inflight_per_queue: 2048,
            max_waiting_polls: 10_000,
            max_topics: 10_000,
            max_queues_per_topic: 1024,
            max_groups: 10_000,
            max_clients_per_group: 10_000,
        }
    }
}

impl Limits {
    /// Checks an invisible duration.
    pub fn check_invisible_duration(&self, duration_ms: u64) -> Result<(), MessagingError> {
        if duration_ms < self.min_invisible_duration_ms
            || duration_ms > self.max_invisible_duration_ms
        {
            return Err(MessagingError::InvalidInvisibleDuration {
                duration_ms,
                min_ms: self.min_invisible_duration_ms,
                max_ms: self.max_invisible_duration_ms,
            });
        }
        Ok(())
    }

    /// Checks the new invisible duration of a received message. Only the maximum applies: a
    /// consumer that failed a message (the push consumers' nack) asks for its retry backoff,
    /// which may be shorter than the minimum a receive must ask for (the reference proxy checks
    /// the minimum on receive only).
    pub fn check_changed_invisible_duration(&self, duration_ms: u64) -> Result<(), MessagingError> {
        if duration_ms > self.max_invisible_duration_ms {
            return Err(MessagingError::InvalidInvisibleDuration {
                duration_ms,
                min_ms: 0,
                max_ms: self.max_invisible_duration_ms,
            });
        }
        Ok(())
    }

    /// Checks a receive's batch size and long-polling timeout.
    pub fn check_receive(
        &self,
        max_messages: usize,
        long_polling_ms: u64,
    ) -> Result<(), MessagingError> {
        if max_messages == 0 || max_messages > self.max_receive_batch_messages {
            return Err(MessagingError::InvalidRequest {
                field: "batch size",
                value: max_messages as u64,
                max: self.max_receive_batch_messages as u64,
            });
        }
        if long_polling_ms > self.max_long_polling_ms {
            return Err(MessagingError::InvalidRequest {
                field: "long polling timeout",
                value: long_polling_ms,
                max: self.max_long_polling_ms,
            });
        }
        Ok(())
    }
}
