//! Sending: validation, type checks, queue choice, and routing of delay and transactional
//! messages to the internal topics that hold them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::messaging::error::MessagingError;
use crate::messaging::gate::WriteDecision;
use crate::messaging::message::{
    OutgoingMessage, PROP_BORN_HOST, PROP_REAL_QUEUE, PROP_REAL_TOPIC, PROP_TXN_CHECK_DELAY_MS,
    PROP_WRITE_EPOCH, SendReceipt, validate_batch_bytes, validate_batch_count, validate_message,
};
use crate::messaging::names::{self, HALF_TOPIC, TIMER_TOPIC};
use crate::messaging::quorum::QuorumError;
use crate::messaging::topic::TopicConfig;
use crate::storage::{MessageType, NewRecord};

use super::trace::TraceKind;
use super::{Broker, InProgress};

/// Where one message of a send goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Straight to its topic.
    Direct,
    /// To the timer topic until its delivery time.
    Timer,
    /// To the half topic until commit.
    Half,
}

/// A message of a send that is stored already.
#[derive(Debug, Clone)]
enum StoredCopy {
    /// In the log: its receipt and log position.
    Stored(SendReceipt, u64),
    /// Earlier in the same batch, at this index.
    InBatch(usize),
}

/// Turns a record built by [`Broker::send`] back into the message it was built from (the slow
/// path sends the fresh messages of a partly retried batch again).
fn outgoing_again(mut record: NewRecord, route: Route, queue_id: u32) -> OutgoingMessage {
    if route != Route::Direct {
        if let Some(topic) = record.properties.remove(PROP_REAL_TOPIC) {
            record.topic = topic;
        }
        record.properties.remove(PROP_REAL_QUEUE);
    }
    let transaction_check_delay_ms = record
        .properties
        .remove(PROP_TXN_CHECK_DELAY_MS)
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    let born_host = record.properties.remove(PROP_BORN_HOST).unwrap_or_default();
    record.properties.remove(PROP_WRITE_EPOCH);
    OutgoingMessage {
        message_id: record.message_id,
        topic: record.topic,
        queue_id: Some(queue_id),
        message_type: record.message_type,
        tags: record.tags,
        keys: record.keys,
        message_group: record.message_group,
        properties: record.properties,
        body: record.body,
        born_timestamp_ms: record.born_timestamp_ms,
        born_host,
        delivery_timestamp_ms: record.delivery_timestamp_ms,
        transaction_check_delay_ms,
    }
}

/// A stable 64-bit FNV-1a hash: FIFO routing must not change between processes, which rules out
/// the standard library's randomly seeded hasher.
pub(super) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

impl Broker {
    /// Sets the topics whose sends are acknowledged only once a majority of the topic's regions
    /// hold them (`sync-quorum`); every other topic is `async`. Replaces the previous set.
    pub fn set_sync_quorum_topics(&self, topics: impl IntoIterator<Item = String>) {
        *self.sync_quorum_topics.write() = topics.into_iter().collect();
    }

    /// Whether sends to `topic` wait for a quorum.
    pub fn is_sync_quorum(&self, topic: &str) -> bool {
        self.sync_quorum_topics.read().contains(topic)
    }

    /// Sets what `sync-quorum` sends wait on (the replicator's view of its peers).
    pub fn set_replication_quorum(
        &self,
        quorum: Arc<dyn crate::messaging::quorum::ReplicationQuorum>,
    ) {
        *self.quorum.write() = Some(quorum);
    }

    /// Installs the write gate every send asks first (see `messaging::gate`).
    pub fn set_write_gate(&self, gate: Arc<dyn crate::messaging::gate::WriteGate>) {
        *self.write_gate.write() = Some(gate);
    }

    /// What the write gate says of a write for `topic` (and FIFO `message_group`) now;
    /// without a gate, accepted at epoch 0.
    pub fn write_decision(&self, topic: &str, message_group: &str) -> WriteDecision {
        match self.write_gate.read().as_ref() {
            Some(gate) => gate.check(topic, message_group),
            None => WriteDecision::Accept { epoch: 0 },
        }
    }

    /// The write gate's epochs for `messages`, or the refusal of the first one refused. Without
    /// a gate every message is accepted and nothing is stamped.
    fn check_write_gate(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Option<u64>>, MessagingError> {
        let Some(gate) = self.write_gate.read().clone() else {
            return Ok(vec![None; messages.len()]);
        };
        messages
            .iter()
            .map(
                |message| match gate.check(&message.topic, &message.message_group) {
                    WriteDecision::Accept { epoch } => Ok(Some(epoch)),
                    WriteDecision::Refuse(refusal) => Err(MessagingError::NotWritableHere(refusal)),
                },
            )
            .collect()
    }

    /// Waits for a majority of `topic`'s regions to hold this cell's log below `log_end`.
    async fn wait_for_quorum(&self, topic: &str, log_end: u64) -> Result<(), MessagingError> {
        let quorum = self.quorum.read().clone();
        let result = match quorum {
            Some(quorum) => {
                quorum
                    .wait_persisted(log_end, self.config.sync_quorum_timeout_ms)
                    .await
            }
            None => Err(QuorumError::Unreachable(
                "this cell runs no replicator".to_string(),
            )),
        };
        result.map_err(|cause| MessagingError::QuorumNotReached {
            topic: topic.to_string(),
            cause,
        })
    }

    fn choose_queue(
        &self,
        topic: &TopicConfig,
        message: &OutgoingMessage,
    ) -> Result<u32, MessagingError> {
        if let Some(queue_id) = message.queue_id {
            self.check_queue(topic, queue_id)?;
            return Ok(queue_id);
        }
        if message.message_type == MessageType::Fifo {
            // Every message of a group lands in the same queue, which is what keeps it ordered.
            return Ok((fnv1a(&message.message_group) % u64::from(topic.queue_count)) as u32);
        }
        Ok(
            (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(topic.queue_count))
                as u32,
        )
    }

    /// Sends a batch. Every message is checked before anything is stored, so a refused batch
    /// leaves no trace; the accepted batch is appended as one group, in order.
    pub async fn send(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>, MessagingError> {
        validate_batch_count(messages.len(), &self.config.limits)?;
        let now = self.now_ms();
        for message in &messages {
            // A malformed name is ILLEGAL_TOPIC, not TOPIC_NOT_FOUND; internal topics are not
            // valid names, so producers cannot write into them.
            names::validate_consumable_topic(&message.topic)?;
            validate_message(message, &self.config.limits, now)?;
        }
        validate_batch_bytes(&messages, &self.config.limits)?;
        let epochs = self.check_write_gate(&messages)?;
        let mut records = Vec::with_capacity(messages.len());
        let mut routes = Vec::with_capacity(messages.len());
        let mut sync_quorum_topic = None;
        for (message, epoch) in messages.into_iter().zip(epochs) {
            let topic = self.topic(&message.topic)?;
            if sync_quorum_topic.is_none() && self.is_sync_quorum(&topic.name) {
                sync_quorum_topic = Some(topic.name.clone());
            }
            if !topic.message_type.accepts(message.message_type) {
                return Err(MessagingError::MessageTypeMismatch {
                    topic: topic.name,
                    accepted: topic.message_type,
                    sent: message.message_type,
                });
            }
            let queue_id = self.choose_queue(&topic, &message)?;
            let route = match message.message_type {
                MessageType::Delay if message.delivery_timestamp_ms > now => Route::Timer,
                MessageType::Transaction => Route::Half,
                _ => Route::Direct,
            };
            let mut record = NewRecord {
                message_id: message.message_id,
                topic: message.topic,
                queue_id,
                message_type: message.message_type,
                tags: message.tags,
                keys: message.keys,
                message_group: message.message_group,
                properties: message.properties,
                body: message.body,
                born_timestamp_ms: message.born_timestamp_ms,
                delivery_timestamp_ms: message.delivery_timestamp_ms,
                replicated: None,
            };
            if !message.born_host.is_empty() {
                // Validated above; stored as a system property so consumers see it.
                record
                    .properties
                    .insert(PROP_BORN_HOST.to_string(), message.born_host);
            }
            if let Some(epoch) = epoch {
                record
                    .properties
                    .insert(PROP_WRITE_EPOCH.to_string(), epoch.to_string());
            }
            if route != Route::Direct {
                record.properties.insert(
                    PROP_REAL_TOPIC.to_string(),
                    std::mem::take(&mut record.topic),
                );
                record
                    .properties
                    .insert(PROP_REAL_QUEUE.to_string(), queue_id.to_string());
                record.topic = if route == Route::Timer {
                    TIMER_TOPIC
                } else {
                    HALF_TOPIC
                }
                .to_string();
                record.queue_id = 0;
                if route == Route::Half && message.transaction_check_delay_ms > 0 {
                    let delay_ms = message
                        .transaction_check_delay_ms
                        .min(self.config.transactions.max_first_check_delay_ms);
                    record
                        .properties
                        .insert(PROP_TXN_CHECK_DELAY_MS.to_string(), delay_ms.to_string());
                }
            }
            routes.push((route, queue_id));
            records.push(record);
        }
        // A retried send (same message id, same topic) is answered from the stored copy
        // instead of being stored twice: producers retry after timeouts, and the SDK and the
        // forwarding path retry in another region once a failover made it the home.
        let stored_before = self.stored_copies(&records, &routes)?;
        if stored_before.iter().any(Option::is_some) {
            return self
                .send_deduplicated(records, routes, stored_before, sync_quorum_topic)
                .await;
        }
        let has_timers = routes.iter().any(|(route, _)| *route == Route::Timer);
        let has_half = routes.iter().any(|(route, _)| *route == Route::Half);
        // Held across the append so that the restart checkpoints never pass a record that is
        // stored but not yet registered.
        let _timer_guard = has_timers.then(|| InProgress::enter(&self.timer_sends_in_progress));
        let _txn_guard = has_half.then(|| InProgress::enter(&self.txn_sends_in_progress));
        let ids: Vec<(String, u64, u64)> = records
            .iter()
            .map(|record| {
                (
                    record.message_id.clone(),
                    record.delivery_timestamp_ms,
                    self.first_check_delay_ms(record),
                )
            })
            .collect();
        let appended = self.storage.append(records).await?;
        let mut receipts = Vec::with_capacity(appended.len());
        let mut events = Vec::with_capacity(appended.len());
        for (((route, queue_id), (message_id, delivery_ms, check_delay_ms)), stored) in
            routes.into_iter().zip(ids).zip(&appended)
        {
            let transaction_id = match route {
                Route::Direct => {
                    events.push((message_id.clone(), TraceKind::Sent, String::new(), 0));
                    None
                }
                Route::Timer => {
                    self.timers.lock().insert(delivery_ms, stored.queue_offset);
                    events.push((
                        message_id.clone(),
                        TraceKind::Scheduled,
                        format!("due at {delivery_ms} ms"),
                        0,
                    ));
                    None
                }
                Route::Half => {
                    self.txns.lock().open(
                        &message_id,
                        stored.queue_offset,
                        0,
                        now.saturating_add(check_delay_ms),
                    );
                    events.push((message_id.clone(), TraceKind::HalfStored, String::new(), 0));
                    Some(message_id.clone())
                }
            };
            receipts.push(SendReceipt {
                message_id,
                queue_id,
                offset: stored.queue_offset,
                transaction_id,
            });
        }
        if has_timers || has_half {
            self.background_wake.notify_one();
        }
        self.trace_many(events, "").await;
        if let (Some(topic), Some(last)) = (sync_quorum_topic, appended.last()) {
            // Stored and registered here either way: a refused send still replicates, and
            // the producer's retry with the same message id is deduplicated.
            self.wait_for_quorum(&topic, last.position + 1).await?;
        }
        Ok(receipts)
    }

    /// For each record, the copy already stored under its message id in its topic (the
    /// internal topic for delay and half messages; a released delay message counts too), or
    /// the earlier record of the same batch with that id.
    fn stored_copies(
        &self,
        records: &[NewRecord],
        routes: &[(Route, u32)],
    ) -> Result<Vec<Option<StoredCopy>>, MessagingError> {
        let mut seen: std::collections::HashMap<(&str, &str), usize> =
            std::collections::HashMap::new();
        let mut copies = Vec::with_capacity(records.len());
        for (index, (record, (route, queue_id))) in records.iter().zip(routes).enumerate() {
            if let Some(first) = seen.get(&(record.topic.as_str(), record.message_id.as_str())) {
                copies.push(Some(StoredCopy::InBatch(*first)));
                continue;
            }
            seen.insert((record.topic.as_str(), record.message_id.as_str()), index);
            let mut found = self.storage.read_copy(&record.topic, &record.message_id)?;
            if found.is_none() && *route == Route::Timer {
                let real = record.properties.get(PROP_REAL_TOPIC).map(String::as_str);
                if let Some(real) = real {
                    found = self.storage.read_copy(real, &record.message_id)?;
                }
            }
            copies.push(found.map(|(position, stored)| {
                StoredCopy::Stored(
                    SendReceipt {
                        message_id: stored.message_id,
                        queue_id: if *route == Route::Direct {
                            stored.queue_id
                        } else {
                            *queue_id
                        },
                        offset: stored.queue_offset,
                        transaction_id: (*route == Route::Half).then(|| record.message_id.clone()),
                    },
                    position,
                )
            }));
        }
        Ok(copies)
    }

    /// The slow path of [`Self::send`] for a batch holding retried messages: stores only the
    /// new ones (one append, through `send` itself) and answers every message in order.
    async fn send_deduplicated(
        &self,
        records: Vec<NewRecord>,
        routes: Vec<(Route, u32)>,
        stored_before: Vec<Option<StoredCopy>>,
        sync_quorum_topic: Option<String>,
    ) -> Result<Vec<SendReceipt>, MessagingError> {
        let mut fresh = Vec::new();
        for ((record, (route, queue_id)), copy) in
            records.into_iter().zip(routes).zip(&stored_before)
        {
            if copy.is_none() {
                fresh.push(outgoing_again(record, route, queue_id));
            }
        }
        let mut fresh_receipts = if fresh.is_empty() {
            Vec::new()
        } else {
            Box::pin(self.send(fresh)).await?
        }
        .into_iter();
        let mut receipts: Vec<SendReceipt> = Vec::with_capacity(stored_before.len());
        let mut last_position = None;
        for copy in stored_before {
            let receipt = match copy {
                None => fresh_receipts.next().ok_or(MessagingError::CorruptState {
                    key: "send".to_string(),
                    reason: "a fresh message has no receipt",
                })?,
                Some(StoredCopy::Stored(receipt, position)) => {
                    last_position = last_position.max(Some(position));
                    receipt
                }
                Some(StoredCopy::InBatch(first)) => {
                    receipts
                        .get(first)
                        .cloned()
                        .ok_or(MessagingError::CorruptState {
                            key: "send".to_string(),
                            reason: "a repeated message precedes its first copy",
                        })?
                }
            };
            receipts.push(receipt);
        }
        if let (Some(topic), Some(position)) = (sync_quorum_topic, last_position) {
            // A retry is acknowledged under the same promise as the first attempt.
            self.wait_for_quorum(&topic, position + 1).await?;
        }
        Ok(receipts)
    }

    pub(super) fn first_check_delay_ms(&self, record: &NewRecord) -> u64 {
        record
            .properties
            .get(PROP_TXN_CHECK_DELAY_MS)
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(self.config.transactions.first_check_delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    #[test]
    fn fifo_hash_is_stable() {
        // Fixed values: changing the hash would reorder FIFO groups across an upgrade.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
