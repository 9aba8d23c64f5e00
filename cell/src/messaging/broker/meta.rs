//! Topics and consumer groups: creation, lookup and persistence.

use crate::messaging::error::MessagingError;
use crate::messaging::names::{self, DLQ_TOPIC_PREFIX};
use crate::messaging::topic::{self, GroupConfig, TopicConfig, TopicMessageType};

use super::Broker;
use super::keys::{GROUPS_KEY, TOPICS_KEY};

impl Broker {
    pub(super) fn load_meta(&self) -> Result<(), MessagingError> {
        if let Some(bytes) = self.get_state(TOPICS_KEY)? {
            let topics = topic::decode_topics(&bytes).ok_or(MessagingError::CorruptState {
                key: "meta/topics".into(),
                reason: "undecodable topic list",
            })?;
            *self.topics.write() = topics
                .into_iter()
                .map(|config| (config.name.clone(), config))
                .collect();
        }
        if let Some(bytes) = self.get_state(GROUPS_KEY)? {
            let groups = topic::decode_groups(&bytes).ok_or(MessagingError::CorruptState {
                key: "meta/groups".into(),
                reason: "undecodable group list",
            })?;
            *self.groups.write() = groups
                .into_iter()
                .map(|config| (config.name.clone(), config))
                .collect();
        }
        Ok(())
    }

    fn persist_topics(&self) -> Result<(), MessagingError> {
        let mut topics: Vec<TopicConfig> = self.topics.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        self.put_state(TOPICS_KEY, &topic::encode_topics(&topics))
    }

    fn persist_groups(&self) -> Result<(), MessagingError> {
        let mut groups: Vec<GroupConfig> = self.groups.read().values().cloned().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        self.put_state(GROUPS_KEY, &topic::encode_groups(&groups))
    }

    /// Creates a topic; creating it again with the same settings is a no-op, with other settings
    /// a [`MessagingError::TopicConflict`].
    pub fn create_topic(
        &self,
        name: &str,
        queue_count: u32,
        message_type: TopicMessageType,
    ) -> Result<TopicConfig, MessagingError> {
        names::validate_topic(name)?;
        self.check_queue_count(queue_count)?;
        self.create_topic_unchecked(name, queue_count, message_type, true)
    }

    /// `enforce_max_topics` is false for dead-letter topics: there is at most one per group, and
    /// refusing one would leave a message stuck between its last attempt and its dead-letter
    /// queue, failing every receive of its queue.
    fn create_topic_unchecked(
        &self,
        name: &str,
        queue_count: u32,
        message_type: TopicMessageType,
        enforce_max_topics: bool,
    ) -> Result<TopicConfig, MessagingError> {
        let _write = self.meta_write.lock();
        if let Some(existing) = self.topics.read().get(name) {
            if existing.queue_count == queue_count && existing.message_type == message_type {
                return Ok(existing.clone());
            }
            return Err(MessagingError::TopicConflict {
                topic: name.to_string(),
                existing: existing.message_type,
                existing_queue_count: existing.queue_count,
            });
        }
        if enforce_max_topics && self.topics.read().len() >= self.config.limits.max_topics {
            return Err(MessagingError::TooManyRequests {
                detail: format!(
                    "the cell already has the maximum of {} topics",
                    self.config.limits.max_topics
                ),
            });
        }
        let config = TopicConfig {
            name: name.to_string(),
            queue_count,
            message_type,
        };
        self.topics.write().insert(name.to_string(), config.clone());
        if let Err(error) = self.persist_topics() {
            self.topics.write().remove(name);
            return Err(error);
        }
        tracing::info!(topic = name, queue_count, ?message_type, "topic created");
        Ok(config)
    }

    fn check_queue_count(&self, queue_count: u32) -> Result<(), MessagingError> {
        let max = self.config.limits.max_queues_per_topic;
        if queue_count == 0 || queue_count > max {
            return Err(MessagingError::InvalidRequest {
                field: "queue count",
                value: u64::from(queue_count),
                max: u64::from(max),
            });
        }
        Ok(())
    }

    /// Raises a topic's queue count (a metadata change applied from meta, say). Queues only
    /// grow: shrinking would strand the messages of the removed queues. Asking for the current
    /// count is a no-op.
    pub fn grow_topic_queues(
        &self,
        name: &str,
        queue_count: u32,
    ) -> Result<TopicConfig, MessagingError> {
        self.check_queue_count(queue_count)?;
        let _write = self.meta_write.lock();
        let existing = self.topic(name)?;
        if queue_count == existing.queue_count {
            return Ok(existing);
        }
        if queue_count < existing.queue_count {
            return Err(MessagingError::TopicConflict {
                topic: name.to_string(),
                existing: existing.message_type,
                existing_queue_count: existing.queue_count,
            });
        }
        let grown = TopicConfig {
            queue_count,
            ..existing.clone()
        };
        self.topics.write().insert(name.to_string(), grown.clone());
        if let Err(error) = self.persist_topics() {
            self.topics.write().insert(name.to_string(), existing);
            return Err(error);
        }
        tracing::info!(topic = name, queue_count, "topic queues grown");
        Ok(grown)
    }

    /// The dead-letter topic of a group, created on first use (one queue, any message type).
    pub(super) fn ensure_dlq_topic(&self, group: &str) -> Result<TopicConfig, MessagingError> {
        let name = names::dlq_topic(group);
        if let Some(existing) = self.topics.read().get(&name) {
            return Ok(existing.clone());
        }
        self.create_topic_unchecked(&name, 1, TopicMessageType::Mixed, false)
    }

    /// Looks a topic up.
    pub fn topic(&self, name: &str) -> Result<TopicConfig, MessagingError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| MessagingError::TopicNotFound {
                topic: name.to_string(),
            })
    }

    /// Every topic, sorted by name (dead-letter topics included).
    pub fn topics(&self) -> Vec<TopicConfig> {
        let mut topics: Vec<TopicConfig> = self.topics.read().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }

    /// A topic a consumer may read: a user topic or a dead-letter topic (which exists once
    /// something was dead-lettered, and reads as empty before).
    pub(super) fn consumable_topic(&self, name: &str) -> Result<TopicConfig, MessagingError> {
        names::validate_consumable_topic(name)?;
        match self.topic(name) {
            Ok(config) => Ok(config),
            Err(_) if name.starts_with(DLQ_TOPIC_PREFIX) => {
                let group = &name[DLQ_TOPIC_PREFIX.len()..];
                self.group(group)?;
                self.ensure_dlq_topic(group)
            }
            Err(error) => Err(error),
        }
    }

    /// Creates or updates a consumer group.
    pub fn create_group(&self, config: GroupConfig) -> Result<(), MessagingError> {
        names::validate_group(&config.name)?;
        config
            .retry
            .validate()
            .map_err(|reason| MessagingError::InvalidName {
                field: "consumer group",
                name: config.name.clone(),
                reason: format!("has an invalid retry policy: {reason}"),
            })?;
        let _write = self.meta_write.lock();
        let max_groups = self.config.limits.max_groups;
        {
            let groups = self.groups.read();
            if !groups.contains_key(&config.name) && groups.len() >= max_groups {
                return Err(MessagingError::TooManyRequests {
                    detail: format!(
                        "the cell already has the maximum of {max_groups} consumer groups"
                    ),
                });
            }
        }
        let previous = self
            .groups
            .write()
            .insert(config.name.clone(), config.clone());
        if let Err(error) = self.persist_groups() {
            let mut groups = self.groups.write();
            match previous {
                Some(previous) => groups.insert(config.name.clone(), previous),
                None => groups.remove(&config.name),
            };
            return Err(error);
        }
        Ok(())
    }

    /// Looks a group up.
    pub fn group(&self, name: &str) -> Result<GroupConfig, MessagingError> {
        self.groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| MessagingError::GroupNotFound {
                group: name.to_string(),
            })
    }

    pub(super) fn check_queue(
        &self,
        topic: &TopicConfig,
        queue_id: u32,
    ) -> Result<(), MessagingError> {
        if queue_id >= topic.queue_count {
            return Err(MessagingError::QueueNotFound {
                topic: topic.name.clone(),
                queue_id,
                queue_count: topic.queue_count,
            });
        }
        Ok(())
    }
}
