//! Delay messages: held in the timer topic, released into their real topic when due.
//!
//! Persistence: the timer topic itself is the durable timer store; a checkpoint (`timer/floor`)
//! records the timer-topic offset below which everything is released. A release writes a marker
//! per timer (`timer/done/<offset>`, through the WAL) and stamps the released copy with
//! [`PROP_RELEASED_FROM`]. On start the broker rescans from the checkpoint and re-arms every
//! timer that has neither: the marker covers a message id reused by another message after the
//! release, the stamp covers a crash between the release and its marker, and a message id reused
//! before the release no longer hides a pending timer (the id alone decided this before).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::messaging::error::MessagingError;
use crate::messaging::message::{
    PROP_REAL_QUEUE, PROP_REAL_TOPIC, PROP_RELEASED_FROM, PROP_TXN_CHECK_DELAY_MS,
};
use crate::messaging::names::TIMER_TOPIC;
use crate::storage::{CF_CONSUMER_OFFSETS, NewRecord, Record};

use super::Broker;
use super::keys::{TIMER_DONE_PREFIX, TIMER_FLOOR_KEY, decode_u64, done_key};
use super::trace::TraceKind;

/// Internal-topic offsets the restart checkpoint moves between two removals of the done
/// markers below it.
const MARKER_CLEAR_STRIDE: u64 = 65_536;

/// A restart checkpoint as this process knows it: the stored value, and below which the done
/// markers are removed.
#[derive(Debug, Default)]
pub(super) struct Checkpoint {
    pub(super) stored: u64,
    pub(super) markers_cleared_below: u64,
}

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

/// Turns an internal-topic record (timer or half topic, at `internal_offset`) back into the
/// message it stands for, stamped with where it came from.
pub(super) fn restore_original(record: &Record) -> Option<NewRecord> {
    let mut properties = record.properties.clone();
    let topic = properties.remove(PROP_REAL_TOPIC)?;
    let queue_id = properties.remove(PROP_REAL_QUEUE)?.parse::<u32>().ok()?;
    // Only the routing properties go: the others (the born host, say) belong to the message.
    properties.remove(PROP_TXN_CHECK_DELAY_MS);
    properties.insert(
        PROP_RELEASED_FROM.to_string(),
        record.queue_offset.to_string(),
    );
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

/// Whether `current` (what the record's message id resolves to now) is the copy released from
/// the internal topic `topic` at `offset`.
fn is_released_copy(current: &Record, topic: &str, offset: u64) -> bool {
    current.topic != topic
        && current
            .properties
            .get(PROP_RELEASED_FROM)
            .and_then(|text| text.parse::<u64>().ok())
            == Some(offset)
}

impl Broker {
    /// Visits every record of an internal topic (queue 0) from `floor` that is still pending:
    /// no done marker under `done_prefix`, and its message id does not resolve to its released
    /// copy (see the module comment).
    pub(super) fn rescan_pending(
        &self,
        topic: &str,
        floor: u64,
        done_prefix: &[u8],
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
                // Another region's parked messages are its own to release; they are armed here
                // only by an adoption (see `adopt`).
                if record.origin.region != self.storage.region() {
                    continue;
                }
                if self
                    .get_state(&done_key(done_prefix, record.queue_offset))?
                    .is_some()
                {
                    continue;
                }
                let released =
                    self.storage
                        .read_by_id(&record.message_id)?
                        .is_some_and(|(_, current)| {
                            is_released_copy(&current, topic, record.queue_offset)
                        });
                if !released {
                    pending(record);
                }
            }
        }
        Ok(())
    }

    /// Marks internal-topic offsets as done (released or ended), through the WAL; the consumer
    /// state sync makes them durable.
    pub(super) fn mark_done(
        &self,
        done_prefix: &[u8],
        offsets: &[u64],
    ) -> Result<(), MessagingError> {
        self.put_progress_many(
            offsets
                .iter()
                .map(|offset| (done_key(done_prefix, *offset), [])),
        )
    }

    /// Moves a restart checkpoint up to `floor` and, every [`MARKER_CLEAR_STRIDE`] offsets,
    /// drops the done markers below it, which no restart reads again. Neither write waits for
    /// an fsync: a checkpoint lost to a power loss only makes the next start rescan more, the
    /// markers and stamps tell it what is done, and the WAL replays in order, so the markers
    /// cannot be gone while the older checkpoint is back.
    pub(super) fn store_floor(
        &self,
        floor_key: &[u8],
        done_prefix: &[u8],
        checkpoint: &Mutex<Checkpoint>,
        floor: u64,
    ) -> Result<(), MessagingError> {
        let mut checkpoint = checkpoint.lock();
        if floor <= checkpoint.stored {
            return Ok(());
        }
        self.put_progress(floor_key, &floor.to_le_bytes())?;
        checkpoint.stored = floor;
        // One range delete per stride, not per round: every range delete leaves a tombstone
        // that later reads of the column family must step over until compaction.
        if floor - checkpoint.markers_cleared_below >= MARKER_CLEAR_STRIDE {
            self.storage.delete_state_range_unsynced(
                CF_CONSUMER_OFFSETS,
                &done_key(done_prefix, checkpoint.markers_cleared_below),
                &done_key(done_prefix, floor),
            )?;
            checkpoint.markers_cleared_below = floor;
        }
        Ok(())
    }

    pub(super) fn load_timers(&self) -> Result<(), MessagingError> {
        let floor = self
            .get_state(TIMER_FLOOR_KEY)?
            .and_then(|bytes| decode_u64(&bytes))
            .unwrap_or(0);
        self.timer_checkpoint.lock().stored = floor;
        let mut wheel = self.timers.lock();
        self.rescan_pending(TIMER_TOPIC, floor, TIMER_DONE_PREFIX, |record| {
            wheel.insert(record.delivery_timestamp_ms, record.queue_offset)
        })?;
        if !wheel.is_empty() {
            tracing::info!(pending = wheel.len(), floor, "delay timers restored");
        }
        Ok(())
    }

    /// Holds or resumes delay-message releases (see `BrokerConfig::hold_timers_at_start`).
    pub fn set_timers_held(&self, held: bool) {
        self.timers_held.store(held, Ordering::Release);
        if !held {
            self.background_wake.notify_one();
        }
    }

    /// Delay messages waiting for their delivery time.
    pub fn pending_timers(&self) -> usize {
        self.timers.lock().len()
    }

    /// Releases the delay messages that are due into their topics: one read per run of
    /// consecutive timer offsets, one append (with their trace events) per round.
    pub async fn release_due_timers(&self) -> Result<ReleaseOutcome, MessagingError> {
        if self.timers_held.load(Ordering::Acquire) {
            return Ok(ReleaseOutcome::default());
        }
        let now = self.now_ms();
        let due = self
            .timers
            .lock()
            .pop_due(now, self.config.max_timer_release_batch);
        if due.is_empty() {
            if self.settle_fsynced_releases() {
                let visible_next = self
                    .storage
                    .queue_range(TIMER_TOPIC, 0)
                    .map_or(0, |range| range.next);
                self.advance_timer_floor(visible_next)?;
            }
            return Ok(ReleaseOutcome::default());
        }
        let visible_next = self
            .storage
            .queue_range(TIMER_TOPIC, 0)
            .map_or(0, |range| range.next);
        let mut outcome = ReleaseOutcome::default();
        let mut readable = Vec::with_capacity(due.len());
        for (due_ms, offset) in due {
            if offset >= visible_next {
                self.timers.lock().requeue(due_ms, offset);
                outcome.waiting_for_visibility = true;
            } else {
                readable.push((due_ms, offset));
            }
        }
        let records = match self.read_timer_records(&readable) {
            Ok(records) => records,
            Err(error) => {
                // Every timer taken out of the wheel this round goes back, or it would wait
                // for the next restart to be found again.
                let mut wheel = self.timers.lock();
                for (due_ms, offset) in &readable {
                    wheel.requeue(*due_ms, *offset);
                }
                return Err(error);
            }
        };
        let mut batch = Vec::with_capacity(readable.len() * 2);
        let mut released = Vec::with_capacity(readable.len());
        let mut events = Vec::with_capacity(readable.len());
        for (due_ms, offset) in readable {
            let Some(record) = records.get(&offset) else {
                // Retention removed it before it was due; nothing can be delivered.
                tracing::warn!(offset, "delay message removed by retention before release");
                self.timers.lock().released(offset);
                continue;
            };
            match restore_original(record) {
                Some(original)
                    if matches!(
                        self.storage
                            .contains_copy(&original.topic, &original.message_id),
                        Ok(true)
                    ) =>
                {
                    // Released already, by an adopting region during an outage of this one or
                    // before a restart: the copy replicated here. Releasing again would
                    // deliver it twice. Nothing is appended, so the marker needs no fsync.
                    tracing::info!(offset, message_id = %original.message_id, "delay message already released elsewhere");
                    self.timers.lock().released(offset);
                    if let Err(error) = self.mark_done(TIMER_DONE_PREFIX, &[offset]) {
                        tracing::warn!(%error, offset, "release marker not written");
                    }
                }
                Some(original) => {
                    released.push((offset, due_ms));
                    let late_ms = now.saturating_sub(due_ms);
                    events.push((
                        record.message_id.clone(),
                        TraceKind::Released,
                        format!("{late_ms} ms after due"),
                        0,
                    ));
                    batch.push(original);
                }
                None => {
                    tracing::error!(offset, message_id = %record.message_id, "timer record lacks its destination; dropped");
                    self.timers.lock().released(offset);
                }
            }
        }
        if !batch.is_empty() {
            // The trace events ride in the same append: one fsync per round, not two.
            batch.extend(self.trace_records(events, ""));
            let appended = match self.storage.append(batch).await {
                Ok(appended) => appended,
                Err(error) => {
                    let mut wheel = self.timers.lock();
                    for (offset, due_ms) in &released {
                        wheel.requeue(*due_ms, *offset);
                    }
                    return Err(error.into());
                }
            };
            let offsets: Vec<u64> = released.iter().map(|(offset, _)| *offset).collect();
            {
                // Moved from the wheel to the fsync queue under the wheel's lock, so that the
                // checkpoint, which reads both, never sees these offsets in neither.
                let mut wheel = self.timers.lock();
                for offset in &offsets {
                    wheel.released(*offset);
                }
                let last_position = appended.last().map_or(0, |record| record.position);
                self.releases_awaiting_fsync
                    .lock()
                    .push_back((last_position, offsets));
            }
            outcome.released = released.len();
        }
        self.settle_fsynced_releases();
        self.advance_timer_floor(visible_next)?;
        Ok(outcome)
    }

    /// Writes the done markers of the release rounds the log has fsynced. The released copies
    /// carry their origin, so a marker lost to a crash is recovered at restart; a failed marker
    /// write is only logged. True when a round settled. The queue holds at most
    /// `async_flush_interval_ms` worth of rounds: the log's flusher fsyncs that often.
    fn settle_fsynced_releases(&self) -> bool {
        let durable_end = self.storage.durable_end();
        let mut settled = Vec::new();
        {
            let mut awaiting = self.releases_awaiting_fsync.lock();
            while awaiting
                .front()
                .is_some_and(|(last_position, _)| *last_position < durable_end)
            {
                if let Some((_, offsets)) = awaiting.pop_front() {
                    settled.extend(offsets);
                }
            }
        }
        if settled.is_empty() {
            return false;
        }
        if let Err(error) = self.mark_done(TIMER_DONE_PREFIX, &settled) {
            tracing::warn!(%error, "release markers of delay messages not written");
        }
        true
    }

    /// Reads the timer records at `due`'s offsets, one storage read per run of consecutive
    /// offsets (timers sent together sit together in the timer topic).
    fn read_timer_records(
        &self,
        due: &[(u64, u64)],
    ) -> Result<HashMap<u64, Record>, MessagingError> {
        let mut offsets: Vec<u64> = due.iter().map(|(_, offset)| *offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        let mut records = HashMap::with_capacity(offsets.len());
        let mut run_start = 0;
        while run_start < offsets.len() {
            let mut run_end = run_start + 1;
            while run_end < offsets.len()
                && offsets[run_end] == offsets[run_end - 1] + 1
                && run_end - run_start < self.config.max_read_batch_messages
            {
                run_end += 1;
            }
            let first = offsets[run_start];
            let wanted = run_end - run_start;
            match self.storage.read_queue(
                TIMER_TOPIC,
                0,
                first,
                wanted,
                self.config.max_read_batch_bytes,
            ) {
                Ok(read) => {
                    let last = first + wanted as u64;
                    for record in read {
                        if record.queue_offset >= first && record.queue_offset < last {
                            records.insert(record.queue_offset, record);
                        }
                    }
                }
                Err(crate::error::StorageError::OutOfRange { .. }) => {}
                Err(error) => return Err(error.into()),
            }
            // A byte limit may have cut the read short: the rest of the run is read next.
            let read_through = (first..first + wanted as u64)
                .take_while(|offset| records.contains_key(offset))
                .count();
            // Zero read: retention removed the run's first offset, which is reported missing.
            run_start += read_through.max(1);
        }
        Ok(records)
    }

    /// Persists the restart checkpoint of the timer topic, unless a send is storing a delay
    /// message whose offset could be below it.
    fn advance_timer_floor(&self, visible_next: u64) -> Result<(), MessagingError> {
        if self.timer_sends_in_progress.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let floor = {
            let wheel = self.timers.lock();
            let awaiting_fsync = self
                .releases_awaiting_fsync
                .lock()
                .iter()
                .flat_map(|(_, offsets)| offsets.iter().copied())
                .min();
            [wheel.lowest_pending_offset(), awaiting_fsync]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(visible_next)
        };
        self.store_floor(
            TIMER_FLOOR_KEY,
            TIMER_DONE_PREFIX,
            &self.timer_checkpoint,
            floor,
        )
    }
}
