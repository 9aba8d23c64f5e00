//! Per-message (simple / pop) consumption: receive with long polling, ack, change of invisible
//! duration, nack with backoff, and dead-lettering.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::StorageError;
use crate::messaging::error::MessagingError;
use crate::messaging::filter::Filter;
use crate::messaging::message::{PROP_DLQ_ATTEMPTS, PROP_DLQ_ORIGIN_TOPIC, ReceivedMessage};
use crate::messaging::names;
use crate::messaging::pop::{Delivery, PopQueue, ReceiptHandle};
use crate::messaging::topic::{GroupConfig, TopicConfig, TopicMessageType};
use crate::storage::{NewRecord, Record};

use super::keys::pop_key;
use super::replicated_state::StateEvent;
use super::send::fnv1a;
use super::trace::TraceKind;
use super::{Broker, PopSlot};

/// Upper bound on how often one receive re-checks for messages while long polling; each round
/// waits for an event, so this only guards against a storm of irrelevant wake-ups.
const MAX_LONG_POLL_ROUNDS: usize = 100_000;
/// Upper bound on log reads while filling one queue's state in one receive.
const MAX_FILL_READS_PER_QUEUE: usize = 64;

/// What a receipt handle resolves to: the group, the topic, the decoded handle and the state
/// of its queue.
type HandleTarget = (
    GroupConfig,
    TopicConfig,
    ReceiptHandle,
    Arc<tokio::sync::Mutex<PopSlot>>,
);

/// A receive call.
#[derive(Debug, Clone)]
pub struct ReceiveRequest {
    /// Consumer group.
    pub group: String,
    /// Topic (or a group's dead-letter topic).
    pub topic: String,
    /// A single queue, or `None` for any queue of the topic.
    pub queue_id: Option<u32>,
    /// Which messages the group wants; the others are skipped for this group.
    pub filter: Filter,
    /// Most messages to return.
    pub max_messages: usize,
    /// How long received messages stay invisible to other receives.
    pub invisible_duration_ms: u64,
    /// How long to wait when nothing is available.
    pub long_polling_ms: u64,
}

/// The scope receipt handles of (group, topic) carry: a stable hash, so that handles stay valid
/// across restarts. Names cannot contain a NUL byte, so the joined text is unambiguous.
fn handle_scope(group: &str, topic: &str) -> u32 {
    let hash = fnv1a(&format!("{group}\0{topic}"));
    (hash ^ (hash >> 32)) as u32
}

impl Broker {
    /// The shared consumption state of (group, topic, queue), loaded from storage on first use.
    pub(super) fn pop_slot(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<Arc<tokio::sync::Mutex<PopSlot>>, MessagingError> {
        let key = (group.to_string(), topic.to_string(), queue_id);
        let mut slots = self.pop.lock();
        if let Some(slot) = slots.get(&key) {
            return Ok(Arc::clone(slot));
        }
        let state_key = pop_key(group, topic, queue_id);
        let (queue, persisted_changes) = match self.get_state(&state_key)? {
            Some(bytes) => {
                let queue =
                    PopQueue::decode(&bytes).ok_or_else(|| MessagingError::CorruptState {
                        key: String::from_utf8_lossy(&state_key).into_owned(),
                        reason: "undecodable consumer state",
                    })?;
                let changes = queue.changes();
                (queue, Some(changes))
            }
            None => {
                // A group new to this queue starts at the earliest retained message.
                let start = self
                    .storage
                    .queue_range(topic, queue_id)
                    .map_or(0, |range| range.earliest);
                (PopQueue::new(queue_id, start), None)
            }
        };
        let queue = queue.with_scope(handle_scope(group, topic));
        let slot = Arc::new(tokio::sync::Mutex::new(PopSlot {
            queue,
            persisted_changes,
        }));
        slots.insert(key, Arc::clone(&slot));
        Ok(slot)
    }

    /// Read-only view of a group's per-message consumption of one queue, for lag reports:
    /// `(ack_floor, unfinished)`. Offsets below `ack_floor` are done (acknowledged,
    /// dead-lettered or filtered out); `unfinished` entries were read and are not done yet. A
    /// group that never received from the queue reports the earliest retained offset.
    pub async fn consumption_progress(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<(u64, u64), MessagingError> {
        self.group(group)?;
        let topic = self.consumable_topic(topic)?;
        self.check_queue(&topic, queue_id)?;
        let slot = self.pop_slot(group, &topic.name, queue_id)?;
        let slot = slot.lock().await;
        Ok((
            slot.queue.ack_floor(),
            u64::try_from(slot.queue.unfinished()).unwrap_or(u64::MAX),
        ))
    }

    pub(super) fn persist_slot(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        slot: &mut PopSlot,
    ) -> Result<(), MessagingError> {
        let changes = slot.queue.changes();
        if slot.persisted_changes != Some(changes) {
            self.put_progress(&pop_key(group, topic, queue_id), &slot.queue.encode())?;
            slot.persisted_changes = Some(changes);
        }
        Ok(())
    }

    /// Receives up to `max_messages`, waiting up to `long_polling_ms` for the first one. Returns
    /// an empty list when nothing arrived in time.
    pub async fn receive(
        &self,
        request: &ReceiveRequest,
    ) -> Result<Vec<ReceivedMessage>, MessagingError> {
        self.config
            .limits
            .check_receive(request.max_messages, request.long_polling_ms)?;
        self.config
            .limits
            .check_invisible_duration(request.invisible_duration_ms)?;
        let group = self.group(&request.group)?;
        let topic = self.consumable_topic(&request.topic)?;
        if let Some(queue_id) = request.queue_id {
            self.check_queue(&topic, queue_id)?;
        }
        let _poll = self.admit_poll(request.long_polling_ms)?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(request.long_polling_ms);
        let mut visible = self.storage.subscribe();
        let mut consumer_events = self.consumer_events.subscribe();
        let mut watch_open = true;
        let mut rounds = 0;
        while rounds < MAX_LONG_POLL_ROUNDS {
            rounds += 1;
            // Mark the current versions seen before looking, so a change during the look wakes us.
            visible.borrow_and_update();
            consumer_events.borrow_and_update();
            let seen_ends = self.queue_ends(&topic, request.queue_id);
            let (messages, wakeup_ms) = self.receive_once(request, &group, &topic).await?;
            if !messages.is_empty() {
                return Ok(messages);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let mut until = deadline;
            if let Some(wakeup_ms) = wakeup_ms {
                let wait = Duration::from_millis(wakeup_ms.saturating_sub(self.now_ms()));
                until = until.min(now + wait);
            }
            // The visibility watch fires on every append in the cell (other topics, trace
            // events): look again only when one of this receive's queues grew, instead of
            // re-examining every queue's state on each unrelated append.
            while rounds < MAX_LONG_POLL_ROUNDS {
                rounds += 1;
                tokio::select! {
                    changed = visible.changed(), if watch_open => {
                        // A closed watch (storage shutting down) never fires again.
                        watch_open = changed.is_ok();
                        if self.queue_ends(&topic, request.queue_id) != seen_ends {
                            break;
                        }
                    }
                    _ = consumer_events.changed() => break,
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
        Ok(Vec::new())
    }

    /// The visible end of each queue a receive looks at.
    fn queue_ends(&self, topic: &TopicConfig, queue_id: Option<u32>) -> Vec<u64> {
        let end = |queue_id| {
            self.storage
                .queue_range(&topic.name, queue_id)
                .map_or(0, |range| range.next)
        };
        match queue_id {
            Some(queue_id) => vec![end(queue_id)],
            None => (0..topic.queue_count).map(end).collect(),
        }
    }

    /// One look at the queues; returns what could be delivered and when something might change.
    async fn receive_once(
        &self,
        request: &ReceiveRequest,
        group: &GroupConfig,
        topic: &TopicConfig,
    ) -> Result<(Vec<ReceivedMessage>, Option<u64>), MessagingError> {
        let queue_ids: Vec<u32> = match request.queue_id {
            Some(queue_id) => vec![queue_id],
            None => {
                let start =
                    self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(topic.queue_count);
                (0..topic.queue_count)
                    .map(|index| ((start + u64::from(index)) % u64::from(topic.queue_count)) as u32)
                    .collect()
            }
        };
        let fifo = group.fifo
            && matches!(
                topic.message_type,
                TopicMessageType::Fifo | TopicMessageType::Mixed
            );
        let mut out = Vec::new();
        let mut wakeup: Option<u64> = None;
        for queue_id in queue_ids {
            if out.len() >= request.max_messages {
                break;
            }
            let room = request.max_messages - out.len();
            match self
                .receive_from_queue(request, group, topic, queue_id, fifo, room)
                .await
            {
                Ok((delivered, next)) => {
                    if let Some(next) = next {
                        wakeup = Some(wakeup.map_or(next, |current: u64| current.min(next)));
                    }
                    out.extend(delivered);
                }
                Err(error) if out.is_empty() => return Err(error),
                Err(error) => {
                    // The messages taken from earlier queues are invisible and persisted as in
                    // flight: failing the whole call would hide them from everyone until their
                    // invisibility ends. Hand them out; the failing queue is retried next time.
                    tracing::warn!(%error, group = %group.name, topic = %topic.name, queue_id, "receive from one queue failed; returning what other queues gave");
                    break;
                }
            }
        }
        Ok((out, wakeup))
    }

    /// One look at one queue: dead-letters what ran out of attempts, reads new records and hands
    /// out up to `max_messages`. Returns them and when something in the queue changes next.
    async fn receive_from_queue(
        &self,
        request: &ReceiveRequest,
        group: &GroupConfig,
        topic: &TopicConfig,
        queue_id: u32,
        fifo: bool,
        max_messages: usize,
    ) -> Result<(Vec<ReceivedMessage>, Option<u64>), MessagingError> {
        let slot = self.pop_slot(&group.name, &topic.name, queue_id)?;
        let mut slot = slot.lock().await;
        let now = self.now_ms();
        slot.queue.expire(now, &group.retry);
        for offset in slot.queue.dead_lettering() {
            let attempts = slot.queue.entry(offset).map_or(0, |entry| entry.attempt);
            self.dead_letter(group, topic, queue_id, offset, attempts)
                .await?;
            slot.queue.dead_lettered(offset);
            self.notify_consumers();
            self.emit_done(&group.name, &topic.name, queue_id, offset);
        }
        let mut fresh = self.fill(&mut slot.queue, topic, queue_id, &request.filter)?;
        let deliveries = slot
            .queue
            .deliver(now, max_messages, request.invisible_duration_ms, fifo);
        let mut delivered = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let record = match fresh.remove(&delivery.offset) {
                Some(record) => Some(record),
                None => self.read_one(&topic.name, queue_id, delivery.offset)?,
            };
            match record {
                Some(record) => delivered.push(received(record, &delivery)),
                // Retention removed it; it can never be delivered.
                None => slot.queue.skip_to(delivery.offset + 1),
            }
        }
        // Persisted before the messages are returned: a crash after this point redelivers
        // them when their invisibility ends, never loses them.
        self.persist_slot(&group.name, &topic.name, queue_id, &mut slot)?;
        let wakeup = slot.queue.next_wakeup_ms(now);
        drop(slot);
        for message in &delivered {
            self.emit_state(StateEvent::Attempt {
                group: group.name.clone(),
                topic: topic.name.clone(),
                queue_id,
                offset: message.record.queue_offset,
                attempt: message.delivery_attempt,
                invisible_until_ms: message.invisible_until_ms,
            });
        }
        let events = delivered
            .iter()
            .map(|message| {
                let kind = if message.delivery_attempt > 1 {
                    TraceKind::Redelivered
                } else {
                    TraceKind::Received
                };
                (
                    message.record.message_id.clone(),
                    kind,
                    format!("handle {}", message.receipt_handle),
                    message.delivery_attempt,
                )
            })
            .collect();
        self.trace_many(events, &group.name).await;
        Ok((delivered, wakeup))
    }

    /// Reads records at the state's cursor until it holds enough unfinished entries or the
    /// queue is exhausted; returns the records admitted for delivery.
    fn fill(
        &self,
        queue: &mut PopQueue,
        topic: &TopicConfig,
        queue_id: u32,
        filter: &Filter,
    ) -> Result<HashMap<u64, Record>, MessagingError> {
        let max_unfinished = self.config.limits.max_inflight_per_queue;
        let mut fresh = HashMap::new();
        for _ in 0..MAX_FILL_READS_PER_QUEUE {
            if !queue.wants_records(max_unfinished) {
                break;
            }
            // Cheap check first: most polls of a caught-up queue end here without an index read.
            match self.storage.queue_range(&topic.name, queue_id) {
                None => break,
                Some(range) if range.earliest > queue.read_cursor() => {
                    queue.skip_to(range.earliest)
                }
                Some(range) if range.next <= queue.read_cursor() => break,
                Some(_) => {}
            }
            let want =
                (max_unfinished - queue.unfinished()).min(self.config.max_read_batch_messages);
            let records = match self.storage.read_queue(
                &topic.name,
                queue_id,
                queue.read_cursor(),
                want,
                self.config.max_read_batch_bytes,
            ) {
                Ok(records) => records,
                Err(StorageError::OutOfRange { earliest, .. }) => {
                    queue.skip_to(earliest);
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            if records.is_empty() {
                break;
            }
            for record in records {
                let matches = filter.matches(&record.tags, &record.properties);
                queue.admit(record.queue_offset, &record.message_group, matches);
                if matches {
                    fresh.insert(record.queue_offset, record);
                }
            }
        }
        Ok(fresh)
    }

    /// Appends the message at `offset` to the group's dead-letter topic.
    async fn dead_letter(
        &self,
        group: &GroupConfig,
        topic: &TopicConfig,
        queue_id: u32,
        offset: u64,
        attempts: u32,
    ) -> Result<(), MessagingError> {
        let Some(record) = self.read_one(&topic.name, queue_id, offset)? else {
            // Retention removed it; there is nothing left to keep.
            return Ok(());
        };
        let dlq = self.ensure_dlq_topic(&group.name)?;
        let mut properties = record.properties.clone();
        properties.insert(PROP_DLQ_ORIGIN_TOPIC.to_string(), topic.name.clone());
        properties.insert(PROP_DLQ_ATTEMPTS.to_string(), attempts.to_string());
        let copy = NewRecord {
            message_id: record.message_id.clone(),
            topic: dlq.name.clone(),
            queue_id: 0,
            message_type: record.message_type,
            tags: record.tags.clone(),
            keys: record.keys.clone(),
            message_group: record.message_group.clone(),
            properties,
            body: record.body,
            born_timestamp_ms: record.born_timestamp_ms,
            delivery_timestamp_ms: record.delivery_timestamp_ms,
            replicated: None,
        };
        self.storage.append(vec![copy]).await?;
        tracing::info!(group = %group.name, topic = %topic.name, queue_id, offset, attempts, "message dead-lettered");
        self.trace(
            &record.message_id,
            TraceKind::DeadLettered,
            &group.name,
            attempts,
            &dlq.name,
        )
        .await;
        Ok(())
    }

    /// The slot a receipt handle refers to, after checking group, topic and queue.
    fn handle_slot(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<HandleTarget, MessagingError> {
        let group = self.group(group)?;
        names::validate_consumable_topic(topic)?;
        let topic = self.topic(topic)?;
        let handle = ReceiptHandle::decode(receipt_handle)?;
        if handle.queue_id >= topic.queue_count {
            // Not a client error about queues: the handle was not issued for this topic.
            return Err(MessagingError::InvalidReceiptHandle {
                handle: receipt_handle.to_string(),
                reason: "it names a queue the topic does not have",
            });
        }
        let slot = self.pop_slot(&group.name, &topic.name, handle.queue_id)?;
        Ok((group, topic, handle, slot))
    }

    /// Acknowledges a received message; it will not be delivered to this group again.
    pub async fn ack(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<(), MessagingError> {
        let (group, topic, handle, slot) = self.handle_slot(group, topic, receipt_handle)?;
        let message_id = {
            let mut slot = slot.lock().await;
            slot.queue.ack(&handle)?;
            self.persist_slot(&group.name, &topic.name, handle.queue_id, &mut slot)?;
            if self.config.trace_enabled {
                self.read_one(&topic.name, handle.queue_id, handle.offset)?
                    .map(|record| record.message_id)
            } else {
                None
            }
        };
        self.notify_consumers();
        self.emit_done(&group.name, &topic.name, handle.queue_id, handle.offset);
        if let Some(message_id) = message_id {
            self.trace(
                &message_id,
                TraceKind::Acked,
                &group.name,
                handle.attempt,
                "",
            )
            .await;
        }
        Ok(())
    }

    /// Changes how long a received message stays invisible, from now. Returns the new receipt
    /// handle; the old one becomes stale.
    pub async fn change_invisible_duration(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
        invisible_duration_ms: u64,
    ) -> Result<String, MessagingError> {
        self.config
            .limits
            .check_changed_invisible_duration(invisible_duration_ms)?;
        let (group, topic, handle, slot) = self.handle_slot(group, topic, receipt_handle)?;
        let mut slot = slot.lock().await;
        let delivery =
            slot.queue
                .change_invisible(&handle, self.now_ms(), invisible_duration_ms)?;
        self.persist_slot(&group.name, &topic.name, handle.queue_id, &mut slot)?;
        drop(slot);
        self.notify_consumers();
        self.emit_state(StateEvent::Attempt {
            group: group.name,
            topic: topic.name,
            queue_id: handle.queue_id,
            offset: handle.offset,
            attempt: delivery.attempt,
            invisible_until_ms: delivery.invisible_until_ms,
        });
        Ok(delivery.handle.encode())
    }

    /// The consumer failed to process a message: it is redelivered after the group's backoff,
    /// or dead-lettered if that was its last attempt. Returns whether it was dead-lettered.
    pub async fn nack(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<bool, MessagingError> {
        let (group, topic, handle, slot) = self.handle_slot(group, topic, receipt_handle)?;
        let mut slot = slot.lock().await;
        let dead = slot.queue.nack(&handle, self.now_ms(), &group.retry)?;
        if dead {
            self.dead_letter(
                &group,
                &topic,
                handle.queue_id,
                handle.offset,
                handle.attempt,
            )
            .await?;
            slot.queue.dead_lettered(handle.offset);
        }
        let visible_at_ms = slot
            .queue
            .entry(handle.offset)
            .and_then(|entry| match entry.state {
                crate::messaging::pop::EntryState::Ready { visible_at_ms } => Some(visible_at_ms),
                _ => None,
            });
        self.persist_slot(&group.name, &topic.name, handle.queue_id, &mut slot)?;
        drop(slot);
        self.notify_consumers();
        match (dead, visible_at_ms) {
            (true, _) => self.emit_done(&group.name, &topic.name, handle.queue_id, handle.offset),
            (false, Some(visible_at_ms)) => self.emit_state(StateEvent::Attempt {
                group: group.name,
                topic: topic.name,
                queue_id: handle.queue_id,
                offset: handle.offset,
                attempt: handle.attempt,
                invisible_until_ms: visible_at_ms,
            }),
            (false, None) => {}
        }
        Ok(dead)
    }

    /// Moves a received message to the group's dead-letter queue at the consumer's request
    /// (RocketMQ's ForwardMessageToDeadLetterQueue); it is then done for this group.
    pub async fn forward_to_dead_letter(
        &self,
        group: &str,
        topic: &str,
        receipt_handle: &str,
    ) -> Result<(), MessagingError> {
        let (group, topic, handle, slot) = self.handle_slot(group, topic, receipt_handle)?;
        let mut slot = slot.lock().await;
        if slot.queue.is_finished(&handle) {
            // Idempotent: the PY FIFO push consumer retries this call every second until it
            // gets OK (CONFORMANCE D1), so a retry after a lost answer must not fail forever.
            // The message is done for this group either way.
            return Ok(());
        }
        slot.queue.forward_to_dead_letter(&handle)?;
        self.dead_letter(
            &group,
            &topic,
            handle.queue_id,
            handle.offset,
            handle.attempt,
        )
        .await?;
        slot.queue.dead_lettered(handle.offset);
        self.persist_slot(&group.name, &topic.name, handle.queue_id, &mut slot)?;
        drop(slot);
        self.notify_consumers();
        self.emit_done(&group.name, &topic.name, handle.queue_id, handle.offset);
        Ok(())
    }

    /// Queues a "done" consumer-state event (ack or dead-letter) for other regions.
    fn emit_done(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        self.emit_state(StateEvent::Done {
            group: group.to_string(),
            topic: topic.to_string(),
            queue_id,
            offset,
        });
    }

    /// Resets a group's per-message state of one queue to start at `offset`, dropping what was
    /// in flight (used by offset resets).
    pub(super) async fn reset_pop_state(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<(), MessagingError> {
        let slot = self.pop_slot(group, topic, queue_id)?;
        let mut slot = slot.lock().await;
        slot.queue.reset(offset);
        slot.persisted_changes = None;
        self.persist_slot(group, topic, queue_id, &mut slot)?;
        drop(slot);
        self.notify_consumers();
        Ok(())
    }
}

fn received(record: Record, delivery: &Delivery) -> ReceivedMessage {
    ReceivedMessage {
        record,
        receipt_handle: delivery.handle.encode(),
        delivery_attempt: delivery.attempt,
        invisible_until_ms: delivery.invisible_until_ms,
    }
}
