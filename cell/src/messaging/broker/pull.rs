//! Per-queue (push / pull) consumption: pulling by offset with long polling, committed offsets
//! per (group, topic, queue), queue assignment among live clients, and offset resets.

use std::time::Duration;

use crate::error::StorageError;
use crate::messaging::error::MessagingError;
use crate::messaging::filter::Filter;
use crate::messaging::names;
use crate::messaging::topic::ConsumptionModel;
use crate::storage::Record;

use super::Broker;
use super::keys::{decode_u64, offset_key};
use super::replicated_state::StateEvent;

/// Upper bound on wake-ups of one long-polling pull.
const MAX_PULL_POLL_ROUNDS: usize = 100_000;

/// What a pull returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// Matching records, in queue order.
    pub records: Vec<Record>,
    /// Where the next pull should start (past skipped, non-matching records too).
    pub next_offset: u64,
}

impl Broker {
    /// Reads up to `max_messages` matching records of a queue from `offset`, waiting up to
    /// `long_polling_ms` when there is nothing past it. An offset below what retention kept
    /// starts at the earliest retained record.
    #[allow(clippy::too_many_arguments)]
    pub async fn pull(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_messages: usize,
        filter: &Filter,
        long_polling_ms: u64,
    ) -> Result<PullResult, MessagingError> {
        self.config
            .limits
            .check_receive(max_messages, long_polling_ms)?;
        self.group(group)?;
        let topic = self.consumable_topic(topic)?;
        self.check_queue(&topic, queue_id)?;
        let _poll = self.admit_poll(long_polling_ms)?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(long_polling_ms);
        let mut visible = self.storage.subscribe();
        let mut at = offset;
        for _ in 0..MAX_PULL_POLL_ROUNDS {
            visible.borrow_and_update();
            let records = match self.storage.read_queue(
                &topic.name,
                queue_id,
                at,
                self.config.max_read_batch_messages,
                self.config.max_read_batch_bytes,
            ) {
                Ok(records) => records,
                Err(StorageError::OutOfRange { earliest, .. }) => {
                    at = earliest;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            if let Some(last) = records.last() {
                let next_offset = last.queue_offset + 1;
                let matching: Vec<Record> = records
                    .into_iter()
                    .filter(|record| filter.matches(&record.tags, &record.properties))
                    .take(max_messages)
                    .collect();
                // When the batch is cut by `max_messages`, continue right after the last one.
                let next_offset = if matching.len() == max_messages {
                    matching
                        .last()
                        .map_or(next_offset, |record| record.queue_offset + 1)
                } else {
                    next_offset
                };
                return Ok(PullResult {
                    records: matching,
                    next_offset,
                });
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = visible.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        Ok(PullResult {
            records: Vec::new(),
            next_offset: at,
        })
    }

    /// Stores a group's consumed offset of a queue (for broadcasting groups, per client).
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        client_id: Option<&str>,
    ) -> Result<(), MessagingError> {
        let group = self.group(group)?;
        let topic = self.consumable_topic(topic)?;
        self.check_queue(&topic, queue_id)?;
        let client_id = self.offset_owner(group.model, client_id)?;
        let range = self.storage.queue_range(&topic.name, queue_id);
        let next = range.map_or(0, |range| range.next);
        if offset > next {
            return Err(MessagingError::InvalidOffset {
                topic: topic.name,
                queue_id,
                offset,
                earliest: range.map_or(0, |range| range.earliest),
                next,
            });
        }
        self.put_progress(
            &offset_key(&group.name, &topic.name, queue_id, client_id),
            &offset.to_le_bytes(),
        )?;
        // Per-client offsets of broadcasting groups stay in their region.
        if client_id.is_none() {
            self.emit_state(StateEvent::Committed {
                group: group.name,
                topic: topic.name,
                queue_id,
                offset,
            });
        }
        Ok(())
    }

    /// A group's committed offset of a queue; `None` if it never committed one.
    pub fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        client_id: Option<&str>,
    ) -> Result<Option<u64>, MessagingError> {
        let group = self.group(group)?;
        let topic = self.consumable_topic(topic)?;
        self.check_queue(&topic, queue_id)?;
        let client_id = self.offset_owner(group.model, client_id)?;
        let key = offset_key(&group.name, &topic.name, queue_id, client_id);
        match self.get_state(&key)? {
            Some(bytes) => {
                decode_u64(&bytes)
                    .map(Some)
                    .ok_or_else(|| MessagingError::CorruptState {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: "offset is not 8 bytes",
                    })
            }
            None => Ok(None),
        }
    }

    /// Clustering groups share offsets; broadcasting groups keep one per client.
    fn offset_owner<'a>(
        &self,
        model: ConsumptionModel,
        client_id: Option<&'a str>,
    ) -> Result<Option<&'a str>, MessagingError> {
        match (model, client_id) {
            (ConsumptionModel::Clustering, _) => Ok(None),
            (ConsumptionModel::Broadcasting, Some(client)) => {
                names::validate_client_id(client)?;
                Ok(Some(client))
            }
            (ConsumptionModel::Broadcasting, None) => Err(MessagingError::InvalidName {
                field: "client id",
                name: String::new(),
                reason: "is required for a broadcasting group's offsets".to_string(),
            }),
        }
    }

    /// Records a heartbeat of a per-queue consumer. Returns the group's membership generation,
    /// which changes whenever a client comes or goes (a rebalance).
    pub fn heartbeat(&self, group: &str, client_id: &str) -> Result<u64, MessagingError> {
        self.group(group)?;
        names::validate_client_id(client_id)?;
        let now = self.now_ms();
        let mut members = self.members.lock();
        let membership = members.entry(group.to_string()).or_default();
        membership.expire(now, self.config.session_timeout_ms);
        let max_clients = self.config.limits.max_clients_per_group;
        if !membership.contains(client_id) && membership.len() >= max_clients {
            return Err(MessagingError::TooManyRequests {
                detail: format!("consumer group {group} already has {max_clients} live clients"),
            });
        }
        membership.heartbeat(client_id, now);
        Ok(membership.generation())
    }

    /// A client leaves its group (clean shutdown); its queues go to the others at once.
    pub fn leave(&self, group: &str, client_id: &str) -> Result<(), MessagingError> {
        if let Some(membership) = self.members.lock().get_mut(group) {
            membership.leave(client_id);
        }
        Ok(())
    }

    /// The queues of `topic` a client should consume now. Silent clients are dropped first, so
    /// the answer reflects the live membership.
    pub fn assignment(
        &self,
        group: &str,
        topic: &str,
        client_id: &str,
    ) -> Result<Vec<u32>, MessagingError> {
        let group = self.group(group)?;
        let topic = self.consumable_topic(topic)?;
        let now = self.now_ms();
        let mut members = self.members.lock();
        let membership = members.entry(group.name.clone()).or_default();
        membership.expire(now, self.config.session_timeout_ms);
        Ok(membership.assignment(client_id, topic.queue_count, group.model))
    }

    /// Moves a group's position on every queue of a topic to the first message stored at or
    /// after `timestamp_ms`: committed offsets, and the per-message state (dropping what was in
    /// flight).
    pub async fn reset_offsets_to_time(
        &self,
        group: &str,
        topic: &str,
        timestamp_ms: u64,
    ) -> Result<(), MessagingError> {
        let topic_config = self.consumable_topic(topic)?;
        for queue_id in 0..topic_config.queue_count {
            let offset = self
                .storage
                .seek_by_time(&topic_config.name, queue_id, timestamp_ms)?;
            self.reset_queue(group, &topic_config.name, queue_id, offset)
                .await?;
        }
        Ok(())
    }

    /// Moves a group's position on every queue of a topic past the last stored message.
    pub async fn reset_offsets_to_latest(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<(), MessagingError> {
        let topic_config = self.consumable_topic(topic)?;
        for queue_id in 0..topic_config.queue_count {
            let offset = self
                .storage
                .queue_range(&topic_config.name, queue_id)
                .map_or(0, |range| range.next);
            self.reset_queue(group, &topic_config.name, queue_id, offset)
                .await?;
        }
        Ok(())
    }

    async fn reset_queue(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<(), MessagingError> {
        let config = self.group(group)?;
        if config.model == ConsumptionModel::Clustering {
            self.commit_offset(group, topic, queue_id, offset, None)?;
        }
        self.reset_pop_state(group, topic, queue_id, offset).await
    }
}
