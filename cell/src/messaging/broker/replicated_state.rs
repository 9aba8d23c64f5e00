//! Consumer state across regions: this cell's consumption changes go into the log as
//! HLC-stamped records of [`CONSUMER_STATE_TOPIC`], which the replicator ships like any other
//! record; the same topic's records from other regions are applied to this cell's state.
//!
//! **Emitting.** Acks, dead-letters, deliveries (with their attempt and invisibility), changes
//! of invisibility, nacks and committed offsets put a small [`StateEvent`] on a bounded channel
//! (`max_pending_state_events`) with `try_send`: the consumer's call never waits for the state
//! record. One task takes whatever has queued (up to `max_state_batch_events`), resolves each
//! event's queue offset to the message id and origin of the record there, and appends the lot
//! as one group; the next batch forms while that append runs (group commit, no timer). A full
//! channel drops the event and counts it: a lost state record means a redelivery after a
//! failover, never a lost message.
//!
//! **Applying.** A second task tails the topic's queue 0 in this cell's log from the position
//! persisted under [`APPLIED_KEY`], skips this cell's own records and applies the others by
//! message id (looked up in the storage's message-id index, so local offsets may differ):
//! - done (ack or dead-letter): the offset is done for the group here
//!   ([`crate::messaging::pop::PopQueue::remote_done`]);
//! - attempt: the offset keeps the other region's attempt count and invisibility
//!   ([`crate::messaging::pop::PopQueue::remote_attempt`]);
//! - committed offset: the message named is the last one the group consumed there; the group's
//!   committed offset here becomes the first local offset after that message, and never moves
//!   back (a reset in another region is not replicated).
//!
//! A record naming a message this cell does not hold yet waits (at most
//! `max_waiting_state_records`, oldest dropped first) and is retried whenever the log grows. The
//! applier's position and the waiting records are written together after the state they
//! changed, so a restart resumes there; applying twice is harmless anyway (marks only move
//! forward).

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::error::StorageError;
use crate::messaging::codec::{Reader, Writer};
use crate::messaging::error::MessagingError;
use crate::messaging::names::CONSUMER_STATE_TOPIC;
use crate::storage::{NewRecord, Record};

use super::keys::{decode_u64, offset_key};
use super::{Broker, PopKey};

/// Where the applier stands in [`CONSUMER_STATE_TOPIC`] queue 0 (next queue offset to apply).
pub(crate) const APPLIED_KEY: &[u8] = b"cstate/applied";
/// The state records that wait for their message to arrive.
pub(crate) const WAITING_KEY: &[u8] = b"cstate/waiting";
/// Upper bound on read-and-apply rounds per wake-up of the applier, so that it checks for
/// shutdown between long stretches of backlog.
const MAX_APPLY_ROUNDS_PER_WAKE: usize = 64;
/// Version byte of a state record's body.
const RECORD_VERSION: u8 = 1;

/// One consumption change to replicate, as the broker's hot path knows it (by local offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateEvent {
    /// Acked or dead-lettered.
    Done {
        group: String,
        topic: String,
        queue_id: u32,
        offset: u64,
    },
    /// Delivered, its invisibility changed or nacked: attempt count and when it may be
    /// delivered again.
    Attempt {
        group: String,
        topic: String,
        queue_id: u32,
        offset: u64,
        attempt: u32,
        invisible_until_ms: u64,
    },
    /// A clustering group's committed offset of a queue (the next offset to consume).
    Committed {
        group: String,
        topic: String,
        queue_id: u32,
        offset: u64,
    },
}

/// What a state record says, as it travels between regions (by message id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateRecord {
    pub(crate) kind: StateKind,
    pub(crate) group: String,
    pub(crate) topic: String,
    /// The message acted on; for a committed offset the last message consumed.
    pub(crate) message_id: String,
    /// Where that message was first stored (for diagnostics; lookups go by id).
    pub(crate) origin_region: String,
    pub(crate) origin_offset: u64,
    pub(crate) attempt: u32,
    pub(crate) invisible_until_ms: u64,
}

/// Kinds of state records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateKind {
    Done,
    Attempt,
    Committed,
}

impl StateKind {
    fn to_byte(self) -> u8 {
        match self {
            StateKind::Done => 1,
            StateKind::Attempt => 2,
            StateKind::Committed => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(StateKind::Done),
            2 => Some(StateKind::Attempt),
            3 => Some(StateKind::Committed),
            _ => None,
        }
    }
}

impl StateRecord {
    fn write(&self, writer: &mut Writer) {
        writer.u8(self.kind.to_byte());
        writer.str(&self.group);
        writer.str(&self.topic);
        writer.str(&self.message_id);
        writer.str(&self.origin_region);
        writer.u64(self.origin_offset);
        writer.u32(self.attempt);
        writer.u64(self.invisible_until_ms);
    }

    fn read(reader: &mut Reader<'_>) -> Option<Self> {
        Some(StateRecord {
            kind: StateKind::from_byte(reader.u8()?)?,
            group: reader.string()?,
            topic: reader.string()?,
            message_id: reader.string()?,
            origin_region: reader.string()?,
            origin_offset: reader.u64()?,
            attempt: reader.u32()?,
            invisible_until_ms: reader.u64()?,
        })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.u8(RECORD_VERSION);
        self.write(&mut writer);
        writer.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        if reader.u8()? != RECORD_VERSION {
            return None;
        }
        let record = Self::read(&mut reader)?;
        reader.finish()?;
        Some(record)
    }
}

/// The broker's share of consumer-state replication.
pub(crate) struct ReplicatedState {
    events: mpsc::Sender<StateEvent>,
    /// Taken by the emitter task when the broker runs.
    receiver: Mutex<Option<mpsc::Receiver<StateEvent>>>,
    sequence: AtomicU64,
    counters: ConsumerStateCounters,
}

/// Counters of consumer-state replication, for metrics and tests.
#[derive(Debug, Default)]
pub struct ConsumerStateCounters {
    /// State records appended by this cell.
    pub emitted: AtomicU64,
    /// Events dropped because the channel was full or their message was gone.
    pub dropped: AtomicU64,
    /// Other regions' state records applied here.
    pub applied: AtomicU64,
    /// Other regions' state records dropped (undecodable, waiting set full, other topic).
    pub discarded: AtomicU64,
}

impl ReplicatedState {
    pub(crate) fn new(max_pending_state_events: usize, first_sequence: u64) -> Self {
        let (events, receiver) = mpsc::channel(max_pending_state_events.max(1));
        ReplicatedState {
            events,
            receiver: Mutex::new(Some(receiver)),
            sequence: AtomicU64::new(first_sequence),
            counters: ConsumerStateCounters::default(),
        }
    }
}

impl Broker {
    /// Counters of consumer-state replication.
    pub fn consumer_state_counters(&self) -> &ConsumerStateCounters {
        &self.replicated.counters
    }

    /// Queues a consumption change for replication without waiting (see the module doc).
    pub(super) fn emit_state(&self, event: StateEvent) {
        if !self.config.replicate_consumer_state {
            return;
        }
        if self.replicated.events.try_send(event).is_err() {
            self.replicated
                .counters
                .dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs the emitter and the applier until `shutdown` turns true.
    pub(super) async fn run_consumer_state(&self, shutdown: watch::Receiver<bool>) {
        let receiver = self.replicated.receiver.lock().take();
        let emit = async {
            if let Some(receiver) = receiver {
                self.emit_consumer_state(receiver, shutdown.clone()).await;
            }
        };
        tokio::join!(emit, self.apply_consumer_state(shutdown.clone()));
    }

    async fn emit_consumer_state(
        &self,
        mut receiver: mpsc::Receiver<StateEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let max_batch = self.config.max_state_batch_events.max(1);
        loop {
            let first = tokio::select! {
                event = receiver.recv() => event,
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let mut batch: Vec<StateEvent> = first.into_iter().collect();
            let stopping = batch.is_empty();
            // Whatever queued meanwhile joins this append; at shutdown, whatever is left.
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.append_state_batch(&batch).await;
            }
            if stopping && receiver.is_empty() {
                return;
            }
        }
    }

    async fn append_state_batch(&self, batch: &[StateEvent]) {
        let counters = &self.replicated.counters;
        let mut records = Vec::with_capacity(batch.len());
        for event in batch {
            match self.resolve_state_event(event) {
                Ok(Some(state)) => {
                    let sequence = self.replicated.sequence.fetch_add(1, Ordering::Relaxed);
                    records.push(NewRecord {
                        message_id: format!("{}#cstate#{sequence:x}", self.storage.region()),
                        topic: CONSUMER_STATE_TOPIC.to_string(),
                        queue_id: 0,
                        body: state.encode(),
                        born_timestamp_ms: self.now_ms(),
                        ..NewRecord::default()
                    });
                }
                Ok(None) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(%error, "consumer state event lost");
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if records.is_empty() {
            return;
        }
        let count = records.len() as u64;
        match self.storage.append(records).await {
            Ok(_) => {
                counters.emitted.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, count, "consumer state records lost");
                counters.dropped.fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// Names the message an event is about by id; `None` when it is no longer stored.
    fn resolve_state_event(
        &self,
        event: &StateEvent,
    ) -> Result<Option<StateRecord>, MessagingError> {
        let (kind, group, topic, queue_id, offset, attempt, invisible_until_ms) = match event {
            StateEvent::Done {
                group,
                topic,
                queue_id,
                offset,
            } => (StateKind::Done, group, topic, *queue_id, *offset, 0, 0),
            StateEvent::Attempt {
                group,
                topic,
                queue_id,
                offset,
                attempt,
                invisible_until_ms,
            } => (
                StateKind::Attempt,
                group,
                topic,
                *queue_id,
                *offset,
                *attempt,
                *invisible_until_ms,
            ),
            StateEvent::Committed {
                group,
                topic,
                queue_id,
                offset,
            } => {
                // The committed offset is the next to consume: name the last one consumed.
                let Some(last) = offset.checked_sub(1) else {
                    return Ok(None);
                };
                (StateKind::Committed, group, topic, *queue_id, last, 0, 0)
            }
        };
        let Some(record) = self.read_one(topic, queue_id, offset)? else {
            return Ok(None);
        };
        Ok(Some(StateRecord {
            kind,
            group: group.clone(),
            topic: topic.clone(),
            message_id: record.message_id,
            origin_region: record.origin.region,
            origin_offset: record.origin.offset,
            attempt,
            invisible_until_ms,
        }))
    }

    async fn apply_consumer_state(&self, mut shutdown: watch::Receiver<bool>) {
        let mut applier = match self.load_applier() {
            Ok(applier) => applier,
            Err(error) => {
                tracing::error!(%error, "cannot load the consumer state applier; other regions' consumer state is not applied");
                return;
            }
        };
        let mut visible = self.storage.subscribe();
        while !*shutdown.borrow() {
            visible.borrow_and_update();
            let mut failed = false;
            for _ in 0..MAX_APPLY_ROUNDS_PER_WAKE {
                match self.apply_state_round(&mut applier).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(%error, "applying consumer state failed; retrying");
                        failed = true;
                        break;
                    }
                }
            }
            let backoff = std::time::Duration::from_millis(self.config.max_idle_ms);
            tokio::select! {
                _ = shutdown.changed() => {}
                changed = visible.changed(), if !failed => {
                    if changed.is_err() {
                        // The storage is closing; nothing more will arrive.
                        return;
                    }
                }
                _ = tokio::time::sleep(backoff), if failed => {}
            }
        }
    }

    fn load_applier(&self) -> Result<Applier, MessagingError> {
        let next = match self.get_state(APPLIED_KEY)? {
            Some(bytes) => decode_u64(&bytes).ok_or_else(|| MessagingError::CorruptState {
                key: String::from_utf8_lossy(APPLIED_KEY).into_owned(),
                reason: "applier position is not 8 bytes",
            })?,
            None => 0,
        };
        let waiting = match self.get_state(WAITING_KEY)? {
            Some(bytes) => decode_waiting(&bytes).ok_or_else(|| MessagingError::CorruptState {
                key: String::from_utf8_lossy(WAITING_KEY).into_owned(),
                reason: "undecodable waiting consumer state records",
            })?,
            None => VecDeque::new(),
        };
        Ok(Applier { next, waiting })
    }

    /// Applies the next batch of state records and retries the waiting ones. Returns whether
    /// there may be more to read.
    async fn apply_state_round(&self, applier: &mut Applier) -> Result<bool, MessagingError> {
        let records = match self.storage.read_queue(
            CONSUMER_STATE_TOPIC,
            0,
            applier.next,
            self.config.max_read_batch_messages,
            self.config.max_read_batch_bytes,
        ) {
            Ok(records) => records,
            Err(StorageError::OutOfRange { earliest, .. }) if earliest > applier.next => {
                // Retention removed records the applier never saw: what they said is lost
                // (redeliveries after a failover, never lost messages).
                tracing::warn!(
                    from = applier.next,
                    to = earliest,
                    "consumer state records expired before they were applied"
                );
                applier.next = earliest;
                return Ok(true);
            }
            Err(StorageError::OutOfRange { .. }) => Vec::new(),
            Err(error) => return Err(error.into()),
        };
        let more = !records.is_empty();
        let mut changed = false;
        // Pop states changed in this round, written once at its end (a state with many marks
        // is not re-encoded per record).
        let mut touched = BTreeSet::new();
        // Waiting records first: their messages may have arrived with this batch or before.
        if !applier.waiting.is_empty() {
            let waiting = std::mem::take(&mut applier.waiting);
            for state in waiting {
                if self.apply_state(&state, &mut touched).await? {
                    changed = true;
                } else {
                    applier.waiting.push_back(state);
                }
            }
        }
        for record in records {
            applier.next = record.queue_offset + 1;
            changed = true;
            if record.origin.region == self.storage.region() {
                continue;
            }
            self.take_state_record(&record, applier, &mut touched)
                .await?;
        }
        for (group, topic, queue_id) in touched {
            let slot = self.pop_slot(&group, &topic, queue_id)?;
            let mut slot = slot.lock().await;
            self.persist_slot(&group, &topic, queue_id, &mut slot)?;
        }
        if changed {
            self.put_progress_many([
                (APPLIED_KEY, applier.next.to_le_bytes().to_vec()),
                (WAITING_KEY, encode_waiting(&applier.waiting)),
            ])?;
            self.notify_consumers();
        }
        Ok(more)
    }

    async fn take_state_record(
        &self,
        record: &Record,
        applier: &mut Applier,
        touched: &mut BTreeSet<PopKey>,
    ) -> Result<(), MessagingError> {
        let counters = &self.replicated.counters;
        let Some(state) = StateRecord::decode(&record.body) else {
            tracing::warn!(message_id = %record.message_id, origin = %record.origin.region, "undecodable consumer state record skipped");
            counters.discarded.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        if !self.apply_state(&state, touched).await? {
            // Its message has not arrived here yet.
            if applier.waiting.len() >= self.config.max_waiting_state_records.max(1) {
                applier.waiting.pop_front();
                counters.discarded.fetch_add(1, Ordering::Relaxed);
            }
            applier.waiting.push_back(state);
        }
        Ok(())
    }

    /// Applies one record; false when its message is not stored here (yet). A changed pop state
    /// is added to `touched` for the caller to persist.
    async fn apply_state(
        &self,
        state: &StateRecord,
        touched: &mut BTreeSet<PopKey>,
    ) -> Result<bool, MessagingError> {
        let counters = &self.replicated.counters;
        // By topic and id: the same id may also name a dead-letter or parked copy.
        let Some((_, message)) = self.storage.read_copy(&state.topic, &state.message_id)? else {
            return Ok(false);
        };
        let max_marks = self.config.max_remote_marks_per_queue;
        match state.kind {
            StateKind::Done | StateKind::Attempt => {
                let slot = self.pop_slot(&state.group, &state.topic, message.queue_id)?;
                let mut slot = slot.lock().await;
                if state.kind == StateKind::Done {
                    slot.queue.remote_done(message.queue_offset, max_marks);
                } else {
                    slot.queue.remote_attempt(
                        message.queue_offset,
                        state.attempt,
                        state.invisible_until_ms,
                        max_marks,
                    );
                }
                touched.insert((state.group.clone(), state.topic.clone(), message.queue_id));
            }
            StateKind::Committed => {
                let key = offset_key(&state.group, &state.topic, message.queue_id, None);
                let next = message.queue_offset + 1;
                let current = self.get_state(&key)?.as_deref().and_then(decode_u64);
                if current.is_none_or(|current| current < next) {
                    self.put_progress(&key, &next.to_le_bytes())?;
                }
            }
        }
        counters.applied.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
}

/// The applier's position and the records waiting for their messages.
#[derive(Debug, Default)]
struct Applier {
    next: u64,
    waiting: VecDeque<StateRecord>,
}

fn encode_waiting(waiting: &VecDeque<StateRecord>) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u8(RECORD_VERSION);
    writer.u32(waiting.len() as u32);
    for state in waiting {
        state.write(&mut writer);
    }
    writer.into_bytes()
}

fn decode_waiting(bytes: &[u8]) -> Option<VecDeque<StateRecord>> {
    let mut reader = Reader::new(bytes);
    if reader.u8()? != RECORD_VERSION {
        return None;
    }
    let count = reader.u32()? as usize;
    let mut waiting = VecDeque::new();
    for _ in 0..count {
        waiting.push_back(StateRecord::read(&mut reader)?);
    }
    reader.finish()?;
    Some(waiting)
}
