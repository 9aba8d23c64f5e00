//! Queries: by message id, by key, by store-time range.

use crate::messaging::error::MessagingError;
use crate::messaging::names::{HALF_TOPIC, SYSTEM_TOPIC_PREFIX, TIMER_TOPIC};
use crate::storage::Record;

use super::Broker;
use super::timers::restore_original;

/// Most records one query returns.
pub const MAX_QUERY_RESULTS: usize = 1024;

impl Broker {
    /// The message with an id. A delay message not yet released is returned as it will be
    /// delivered (its real topic); a half message or a rolled-back one is not returned.
    pub fn query_by_id(&self, message_id: &str) -> Result<Option<Record>, MessagingError> {
        let Some((_, record)) = self.storage.read_by_id(message_id)? else {
            return Ok(None);
        };
        if record.topic == TIMER_TOPIC {
            let Some(original) = restore_original(&record) else {
                return Ok(None);
            };
            let mut pending = record;
            pending.topic = original.topic;
            pending.queue_id = original.queue_id;
            pending.properties = original.properties;
            return Ok(Some(pending));
        }
        if record.topic == HALF_TOPIC || record.topic.starts_with(SYSTEM_TOPIC_PREFIX) {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// Messages of a topic carrying a business key, oldest first.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max_results: usize,
    ) -> Result<Vec<Record>, MessagingError> {
        let topic = self.consumable_topic(topic)?;
        Ok(self
            .storage
            .read_by_key(&topic.name, key, max_results.min(MAX_QUERY_RESULTS))?)
    }

    /// Messages of a topic stored in `[begin_ms, end_ms)`, queue by queue, at most
    /// `max_results` in all.
    pub fn query_by_time(
        &self,
        topic: &str,
        begin_ms: u64,
        end_ms: u64,
        max_results: usize,
    ) -> Result<Vec<Record>, MessagingError> {
        let topic = self.consumable_topic(topic)?;
        let max_results = max_results.min(MAX_QUERY_RESULTS);
        let mut out = Vec::new();
        for queue_id in 0..topic.queue_count {
            let mut at = self.storage.seek_by_time(&topic.name, queue_id, begin_ms)?;
            'queue: while out.len() < max_results {
                let records = self.storage.read_queue(
                    &topic.name,
                    queue_id,
                    at,
                    (max_results - out.len()).min(self.config.max_read_batch_messages),
                    self.config.max_read_batch_bytes,
                )?;
                let Some(last) = records.last() else { break };
                at = last.queue_offset + 1;
                for record in records {
                    if record.store_timestamp_ms >= end_ms {
                        break 'queue;
                    }
                    out.push(record);
                }
            }
        }
        Ok(out)
    }
}
