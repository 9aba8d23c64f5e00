//! Delay messages: held in the timer topic, released into their real topic when due.
//!
//! Persistence: the timer topic itself is the durable timer store; a checkpoint (`timer/floor`)
//! records the timer-topic offset below which everything is released. On start the broker
//! rescans from the checkpoint and re-arms every timer whose message id still resolves to the
//! timer record: a released message is re-appended under the same id, which moves the id index
//! to the released copy, so "released" needs no separate marker.

use std::sync::atomic::Ordering;

use crate::messaging::error::MessagingError;
use crate::messaging::message::{PROP_REAL_QUEUE, PROP_REAL_TOPIC};
use crate::messaging::names::TIMER_TOPIC;
use crate::storage::{NewRecord, Record};

use super::Broker;
use super::keys::{TIMER_FLOOR_KEY, decode_u64};
use super::trace::TraceKind;

/// Records read per step while rebuilding timers or transactions at start.
const RESCAN_BATCH_MESSAGES: usize = 1024;

/// What one release round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// Messages released into their topics.
    pub released: usize,
    /// A due message is stored but not yet readable; the caller should wait for the indexer.
    pub waiting_for_visibility: bool,
}

/// Turns an internal-topic record back into the message it stands for.
pub(super) fn restore_original(record: &Record) -> Option<NewRecord> {
    let mut properties = record.properties.clone();
    let topic = properties.remove(PROP_REAL_TOPIC)?;
    let queue_id = properties.remove(PROP_REAL_QUEUE)?.parse::<u32>().ok()?;
    properties
        .retain(|name, _| !name.starts_with(crate::messaging::message::SYSTEM_PROPERTY_PREFIX));
    Some(NewRecord {
        message_id: record.message_id.clone(),
        topic,
        queue_id,
        message_type: record.message_type,
        tags: record.tags.clone(),
        keys: record.keys.clone(),
        message_group: record.message_group.clone(),
        properties,
        body: record.body.clone(),
        born_timestamp_ms: record.born_timestamp_ms,
        delivery_timestamp_ms: record.delivery_timestamp_ms,
        replicated: None,
    })
}

impl Broker {
    /// Visits every record of an internal topic (queue 0) from `floor`, calling `pending` for
    /// those whose message id still resolves to that very record.
    pub(super) fn rescan_pending(
        &self,
        topic: &str,
        floor: u64,
        mut pending: impl FnMut(&Record),
    ) -> Result<(), MessagingError> {
        let Some(range) = self.storage.queue_range(topic, 0) else {
            return Ok(());
        };
        let mut at = floor.max(range.earliest);
        while at < range.next {
            let records = self.storage.read_queue(
                topic,
                0,
                at,
                RESCAN_BATCH_MESSAGES,
                self.config.max_read_batch_bytes,
            )?;
            let Some(last) = records.last() else { break };
            at = last.queue_offset + 1;
            for record in &records {
                let current = self.storage.read_by_id(&record.message_id)?;
                if current.is_some_and(|(_, found)| {
                    found.topic == topic && found.queue_offset == record.queue_offset
                }) {
                    pending(record);
                }
            }
        }
        Ok(())
    }

    pub(super) fn load_timers(&self) -> Result<(), MessagingError> {
        let floor = self
            .get_state(TIMER_FLOOR_KEY)?
            .and_then(|bytes| decode_u64(&bytes))
            .unwrap_or(0);
        let mut wheel = self.timers.lock();
        self.rescan_pending(TIMER_TOPIC, floor, |record| {
            wheel.insert(record.delivery_timestamp_ms, record.queue_offset)
        })?;
        if !wheel.is_empty() {
            tracing::info!(pending = wheel.len(), floor, "delay timers restored");
        }
        Ok(())
    }

    /// Delay messages waiting for their delivery time.
    pub fn pending_timers(&self) -> usize {
        self.timers.lock().len()
    }

    /// Releases the delay messages that are due into their topics (one append per batch).
    pub async fn release_due_timers(&self) -> Result<ReleaseOutcome, MessagingError> {
        let now = self.now_ms();
        let due = self
            .timers
            .lock()
            .pop_due(now, self.config.max_timer_release_batch);
        if due.is_empty() {
            return Ok(ReleaseOutcome::default());
        }
        let visible_next = self
            .storage
            .queue_range(TIMER_TOPIC, 0)
            .map_or(0, |range| range.next);
        let mut outcome = ReleaseOutcome::default();
        let mut batch = Vec::with_capacity(due.len());
        let mut released = Vec::with_capacity(due.len());
        let mut due = due.into_iter();
        while let Some((due_ms, offset)) = due.next() {
            if offset >= visible_next {
                self.timers.lock().requeue(due_ms, offset);
                outcome.waiting_for_visibility = true;
                continue;
            }
            let record = match self.read_one(TIMER_TOPIC, 0, offset) {
                Ok(record) => record,
                Err(error) => {
                    // Every timer taken out of the wheel this round goes back, or it would
                    // wait for the next restart to be found again.
                    let mut wheel = self.timers.lock();
                    wheel.requeue(due_ms, offset);
                    for (due_ms, offset) in due.by_ref() {
                        wheel.requeue(due_ms, offset);
                    }
                    for (offset, _, due_ms) in &released {
                        wheel.requeue(*due_ms, *offset);
                    }
                    return Err(error);
                }
            };
            let Some(record) = record else {
                // Retention removed it before it was due; nothing can be delivered.
                tracing::warn!(offset, "delay message removed by retention before release");
                self.timers.lock().released(offset);
                continue;
            };
            match restore_original(&record) {
                Some(original) => {
                    released.push((offset, record.message_id.clone(), due_ms));
                    batch.push(original);
                }
                None => {
                    tracing::error!(offset, message_id = %record.message_id, "timer record lacks its destination; dropped");
                    self.timers.lock().released(offset);
                }
            }
        }
        if !batch.is_empty() {
            if let Err(error) = self.storage.append(batch).await {
                let mut wheel = self.timers.lock();
                for (offset, _, due_ms) in &released {
                    wheel.requeue(*due_ms, *offset);
                }
                return Err(error.into());
            }
            {
                let mut wheel = self.timers.lock();
                for (offset, _, _) in &released {
                    wheel.released(*offset);
                }
            }
            outcome.released = released.len();
            let events = released
                .into_iter()
                .map(|(_, message_id, due_ms)| {
                    let late_ms = now.saturating_sub(due_ms);
                    (
                        message_id,
                        TraceKind::Released,
                        format!("{late_ms} ms after due"),
                        0,
                    )
                })
                .collect();
            self.trace_many(events, "").await;
        }
        self.advance_timer_floor(visible_next)?;
        Ok(outcome)
    }

    /// Persists the restart checkpoint of the timer topic, unless a send is storing a delay
    /// message whose offset could be below it.
    fn advance_timer_floor(&self, visible_next: u64) -> Result<(), MessagingError> {
        if self.timer_sends_in_progress.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let floor = self
            .timers
            .lock()
            .lowest_pending_offset()
            .unwrap_or(visible_next);
        let stored = self
            .get_state(TIMER_FLOOR_KEY)?
            .and_then(|bytes| decode_u64(&bytes))
            .unwrap_or(0);
        if floor > stored {
            self.put_state(TIMER_FLOOR_KEY, &floor.to_le_bytes())?;
        }
        Ok(())
    }
}
