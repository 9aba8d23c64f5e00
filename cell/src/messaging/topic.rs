//! Topic and consumer group settings, and how they are persisted.

use crate::messaging::codec::{Reader, Writer};
use crate::messaging::retry::RetryPolicy;
use crate::storage::MessageType;

/// The message type a topic declares; sends of another type are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicMessageType {
    /// Plain messages.
    Normal,
    /// Ordered within each message group.
    Fifo,
    /// Delivered at a chosen time.
    Delay,
    /// Two-phase (half message, then commit or rollback).
    Transaction,
    /// Any of the four (RocketMQ's `MIXED`); dead-letter topics are mixed.
    Mixed,
}

impl TopicMessageType {
    /// Whether a message of `sent` type may be sent to a topic of this type.
    pub fn accepts(self, sent: MessageType) -> bool {
        matches!(
            (self, sent),
            (TopicMessageType::Mixed, _)
                | (TopicMessageType::Normal, MessageType::Normal)
                | (TopicMessageType::Fifo, MessageType::Fifo)
                | (TopicMessageType::Delay, MessageType::Delay)
                | (TopicMessageType::Transaction, MessageType::Transaction)
        )
    }

    fn to_byte(self) -> u8 {
        match self {
            TopicMessageType::Normal => 0,
            TopicMessageType::Fifo => 1,
            TopicMessageType::Delay => 2,
            TopicMessageType::Transaction => 3,
            TopicMessageType::Mixed => 4,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => TopicMessageType::Normal,
            1 => TopicMessageType::Fifo,
            2 => TopicMessageType::Delay,
            3 => TopicMessageType::Transaction,
            4 => TopicMessageType::Mixed,
            _ => return None,
        })
    }
}

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// Name.
    pub name: String,
    /// Number of queues; queue ids are `0..queue_count`.
    pub queue_count: u32,
    /// Accepted message type.
    pub message_type: TopicMessageType,
}

/// How a consumer group's members share messages when they consume by queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumptionModel {
    /// Each message goes to one member; queues are divided among the live members.
    Clustering,
    /// Every member gets every message; each member keeps its own offsets.
    Broadcasting,
}

/// A consumer group's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Name.
    pub name: String,
    /// Retries and dead-lettering.
    pub retry: RetryPolicy,
    /// Orderly consumption: for FIFO topics, a message group's next message waits until the
    /// previous one is acked or dead-lettered.
    pub fifo: bool,
    /// Queue sharing model for per-queue consumption.
    pub model: ConsumptionModel,
}

impl GroupConfig {
    /// A clustering group with RocketMQ's default retry policy for its kind.
    pub fn new(name: impl Into<String>, fifo: bool) -> Self {
        GroupConfig {
            name: name.into(),
            retry: if fifo {
                RetryPolicy::fifo_default()
            } else {
                RetryPolicy::normal_default()
            },
            fifo,
            model: ConsumptionModel::Clustering,
        }
    }
}

pub(crate) fn encode_topics(topics: &[TopicConfig]) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u32(topics.len() as u32);
    for topic in topics {
        writer.str(&topic.name);
        writer.u32(topic.queue_count);
        writer.u8(topic.message_type.to_byte());
    }
    writer.into_bytes()
}

pub(crate) fn decode_topics(bytes: &[u8]) -> Option<Vec<TopicConfig>> {
    let mut reader = Reader::new(bytes);
    let count = reader.u32()? as usize;
    let mut topics = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let name = reader.string()?;
        let queue_count = reader.u32()?;
        let message_type = TopicMessageType::from_byte(reader.u8()?)?;
        topics.push(TopicConfig {
            name,
            queue_count,
            message_type,
        });
    }
    reader.finish()?;
    Some(topics)
}

pub(crate) fn encode_groups(groups: &[GroupConfig]) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u32(groups.len() as u32);
    for group in groups {
        writer.str(&group.name);
        writer.u8(u8::from(group.fifo));
        writer.u8(match group.model {
            ConsumptionModel::Clustering => 0,
            ConsumptionModel::Broadcasting => 1,
        });
        group.retry.encode(&mut writer);
    }
    writer.into_bytes()
}

pub(crate) fn decode_groups(bytes: &[u8]) -> Option<Vec<GroupConfig>> {
    let mut reader = Reader::new(bytes);
    let count = reader.u32()? as usize;
    let mut groups = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let name = reader.string()?;
        let fifo = reader.u8()? != 0;
        let model = match reader.u8()? {
            0 => ConsumptionModel::Clustering,
            1 => ConsumptionModel::Broadcasting,
            _ => return None,
        };
        let retry = RetryPolicy::decode(&mut reader)?;
        groups.push(GroupConfig {
            name,
            retry,
            fifo,
            model,
        });
    }
    reader.finish()?;
    Some(groups)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::messaging::retry::Backoff;

    #[test]
    fn topic_types_accept_only_their_message_type() {
        assert!(TopicMessageType::Normal.accepts(MessageType::Normal));
        assert!(!TopicMessageType::Normal.accepts(MessageType::Fifo));
        assert!(!TopicMessageType::Fifo.accepts(MessageType::Delay));
        assert!(TopicMessageType::Transaction.accepts(MessageType::Transaction));
        assert!(!TopicMessageType::Delay.accepts(MessageType::Transaction));
        for sent in [
            MessageType::Normal,
            MessageType::Fifo,
            MessageType::Delay,
            MessageType::Transaction,
        ] {
            assert!(TopicMessageType::Mixed.accepts(sent));
        }
    }

    #[test]
    fn settings_round_trip() {
        let topics = vec![
            TopicConfig {
                name: "a".into(),
                queue_count: 8,
                message_type: TopicMessageType::Fifo,
            },
            TopicConfig {
                name: "b".into(),
                queue_count: 1,
                message_type: TopicMessageType::Mixed,
            },
        ];
        assert_eq!(decode_topics(&encode_topics(&topics)).unwrap(), topics);
        let mut custom = GroupConfig::new("g2", false);
        custom.model = ConsumptionModel::Broadcasting;
        custom.retry.backoff = Backoff::Exponential {
            initial_ms: 10,
            max_ms: 1000,
            multiplier: 3,
        };
        let groups = vec![GroupConfig::new("g1", true), custom];
        assert_eq!(decode_groups(&encode_groups(&groups)).unwrap(), groups);
        assert!(
            decode_topics(&[1, 0]).is_none(),
            "truncated state is refused"
        );
    }
}
