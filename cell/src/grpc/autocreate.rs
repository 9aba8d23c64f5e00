//! Development auto-creation of topics and consumer groups (`GrpcConfig::auto_create_topics`),
//! like RocketMQ's `autoCreateTopicEnable`: kept in the gRPC front so the broker's core keeps
//! refusing unknown names. Only valid user names are created; reserved, system and dead-letter
//! names go to the broker unchanged and are refused there as usual.

use crate::messaging::names::{validate_group, validate_topic};
use crate::messaging::{GroupConfig, MessagingError, TopicMessageType};

use super::service::CellService;
use super::status::Refusal;

impl CellService {
    /// Creates `topic` as NORMAL if auto-creation is on and the topic is unknown.
    pub(crate) fn auto_create_topic(&self, topic: &str) -> Result<(), Refusal> {
        let Some(queues) = self.inner.config.auto_create_topics else {
            return Ok(());
        };
        let broker = &self.inner.broker;
        if broker.topic(topic).is_ok() || validate_topic(topic).is_err() {
            return Ok(());
        }
        match broker.create_topic(topic, queues, TopicMessageType::Normal) {
            Ok(_) => {
                tracing::info!(topic, queues, "topic auto-created");
                Ok(())
            }
            // Another request created it first, with whatever settings it chose.
            Err(MessagingError::TopicConflict { .. }) => Ok(()),
            Err(error) => Err(Refusal::from(error)),
        }
    }

    /// Creates consumer group `group` (not FIFO) if auto-creation is on and it is unknown.
    pub(crate) fn auto_create_group(&self, group: &str) -> Result<(), Refusal> {
        if self.inner.config.auto_create_topics.is_none() {
            return Ok(());
        }
        let broker = &self.inner.broker;
        if broker.group(group).is_ok() || validate_group(group).is_err() {
            return Ok(());
        }
        broker
            .create_group(GroupConfig::new(group, false))
            .map_err(Refusal::from)?;
        tracing::info!(group, "consumer group auto-created");
        Ok(())
    }
}
