//! The writer thread: assigns offsets and stamps, encodes groups of appends, writes them, rolls
//! segments, and hands each group to the flusher (acknowledgement) and the indexer (visibility).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use tokio::sync::mpsc;

use crate::clock::stamp_ms;
use crate::error::StorageError;
use crate::storage::index::{self, CF_META, CF_TOPICS};
use crate::storage::indexer::{IndexBatch, IndexEntry};
use crate::storage::record::{NewRecord, Origin, Record, RecordKind};
use crate::storage::segment::Segment;
use crate::storage::{AppendJob, AppendReply, Appended, Durability, PendingAck, QueueId, Shared};

/// What only the writer thread touches.
pub(crate) struct WriterState {
    active: Arc<Segment>,
    /// Bytes already in the active segment.
    active_len: u64,
    /// Next offset to assign per (topic id, queue id).
    queue_next: HashMap<QueueId, u64>,
    topics: HashMap<String, u32>,
    next_topic_id: u32,
    /// Newest store timestamp in the active segment, recorded when it is sealed (retention by age).
    active_max_store_ms: u64,
    buffer: Vec<u8>,
}

impl WriterState {
    pub(crate) fn new(
        active: Arc<Segment>,
        active_len: u64,
        queue_next: HashMap<QueueId, u64>,
        topics: HashMap<String, u32>,
        active_max_store_ms: u64,
    ) -> Self {
        let next_topic_id = topics.values().max().map_or(1, |id| id + 1);
        WriterState {
            active,
            active_len,
            queue_next,
            topics,
            next_topic_id,
            active_max_store_ms,
            buffer: Vec::with_capacity(1 << 20),
        }
    }
}

/// Seal information of a segment, kept in the index's meta family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SealInfo {
    pub(crate) len: u64,
    pub(crate) mtime_ns: u64,
    pub(crate) max_store_ms: u64,
}

impl SealInfo {
    pub(crate) fn key(base: u64) -> String {
        format!("{}{base:020}", index::META_SEGMENT_PREFIX)
    }

    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..16].copy_from_slice(&self.mtime_ns.to_le_bytes());
        out[16..].copy_from_slice(&self.max_store_ms.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        Some(SealInfo {
            len: index::decode_u64(bytes.get(..8)?)?,
            mtime_ns: index::decode_u64(bytes.get(8..16)?)?,
            max_store_ms: index::decode_u64(bytes.get(16..24)?)?,
        })
    }

    pub(crate) fn of_file(segment: &Segment, max_store_ms: u64) -> Result<Self, StorageError> {
        let metadata = segment
            .file
            .metadata()
            .map_err(|error| StorageError::io("stat segment", &segment.path, error))?;
        Ok(SealInfo {
            len: metadata.len(),
            mtime_ns: mtime_ns(&metadata),
            max_store_ms,
        })
    }
}

pub(crate) fn mtime_ns(metadata: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    (metadata.mtime() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(metadata.mtime_nsec() as u64)
}

/// Jobs of one group plus the results assigned so far.
struct Group {
    accepted: Vec<(AppendReply, Vec<Appended>)>,
    entries: Vec<IndexEntry>,
}

pub(crate) fn run(
    shared: &Shared,
    mut jobs: mpsc::Receiver<AppendJob>,
    index_tx: &Sender<IndexBatch>,
    mut state: WriterState,
) {
    let max_group_bytes = shared.config.group_commit_max_bytes;
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        let mut bytes = estimate(&batch[0]);
        while bytes < max_group_bytes {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += estimate(&job);
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        if shared.poison_error().is_some() {
            fail_all(shared, batch);
            continue;
        }
        write_group(shared, &mut state, batch, index_tx);
    }
    // Queue closed: let the flusher finish what is pending and stop.
    let mut queue = shared.flush_queue.lock();
    queue.shutdown = true;
    shared.flush_signal.notify_all();
}

fn estimate(job: &AppendJob) -> usize {
    job.records
        .iter()
        .map(|record| 128 + record.body.len())
        .sum()
}

/// The error for appends refused because the log is poisoned. Errors are not `Clone` (they carry
/// OS errors), so each refused append gets its own copy from the shared poison state.
fn poisoned(shared: &Shared) -> StorageError {
    shared.poison_error().unwrap_or(StorageError::Closed)
}

fn fail_all(shared: &Shared, batch: Vec<AppendJob>) {
    for job in batch {
        let _ = job.reply.send(Err(poisoned(shared)));
    }
}

fn write_group(
    shared: &Shared,
    state: &mut WriterState,
    batch: Vec<AppendJob>,
    index_tx: &Sender<IndexBatch>,
) {
    let mut group = Group {
        accepted: Vec::with_capacity(batch.len()),
        entries: Vec::new(),
    };
    state.buffer.clear();
    for AppendJob { records, reply } in batch {
        // A write failed while staging this group: refuse the rest with the poison error.
        if shared.poison_error().is_some() {
            let _ = reply.send(Err(poisoned(shared)));
            continue;
        }
        match stage_job(shared, state, records, &mut group.entries) {
            Ok(results) => group.accepted.push((reply, results)),
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }
    // A failed write poisons the log, so every accepted job is refused with that error.
    if flush_buffer(shared, state).is_err() {
        for (reply, _) in group.accepted {
            let _ = reply.send(Err(poisoned(shared)));
        }
        return;
    }
    let end = state.active.base + state.active_len;
    shared.written_end.store(end, Ordering::Release);
    if !group.entries.is_empty()
        && index_tx
            .send(IndexBatch {
                end,
                entries: group.entries,
            })
            .is_err()
    {
        tracing::error!("indexer stopped; records stay unindexed until restart");
    }
    match shared.config.durability {
        Durability::Async => {
            for (reply, results) in group.accepted {
                let _ = reply.send(Ok(results));
            }
        }
        Durability::Sync => {
            let mut queue = shared.flush_queue.lock();
            queue.pending.push_back(PendingAck {
                end,
                replies: group.accepted,
            });
            shared.flush_signal.notify_one();
        }
    }
}

/// Assigns offsets and stamps to one job's records and encodes them into the buffer. A job is
/// checked whole (limits, topic ids) before anything is assigned, so a refused job leaves no trace.
fn stage_job(
    shared: &Shared,
    state: &mut WriterState,
    job: Vec<NewRecord>,
    entries: &mut Vec<IndexEntry>,
) -> Result<Vec<Appended>, StorageError> {
    let mut records = Vec::with_capacity(job.len());
    for new in job {
        let record = Record {
            kind: RecordKind::Message,
            message_id: new.message_id,
            topic: new.topic,
            queue_id: new.queue_id,
            queue_offset: 0,
            message_type: new.message_type,
            tags: new.tags,
            keys: new.keys,
            message_group: new.message_group,
            properties: new.properties,
            body: new.body,
            born_timestamp_ms: new.born_timestamp_ms,
            store_timestamp_ms: 0,
            hlc: 0,
            delivery_timestamp_ms: new.delivery_timestamp_ms,
            origin: new
                .replicated
                .as_ref()
                .map(|from| from.origin.clone())
                .unwrap_or_default(),
        };
        record.check_encodable()?;
        let topic_id = ensure_topic(shared, state, &record.topic)?;
        records.push((topic_id, record, new.replicated.map(|from| from.hlc)));
    }
    let mut results = Vec::with_capacity(records.len());
    for (topic_id, mut record, replicated_hlc) in records {
        let local_stamp = shared.hlc.now();
        match replicated_hlc {
            Some(origin_hlc) => {
                if let Err(error) = shared.hlc.observe(origin_hlc) {
                    // A stamp far ahead of our clock is kept as it is (order is the origin's);
                    // our clock just does not jump with it.
                    tracing::warn!(%error, "replicated HLC stamp ahead of the local clock");
                }
                record.hlc = origin_hlc;
            }
            None => record.hlc = local_stamp,
        }
        record.store_timestamp_ms = stamp_ms(local_stamp);
        let next = state
            .queue_next
            .entry((topic_id, record.queue_id))
            .or_insert(0);
        record.queue_offset = *next;
        *next += 1;
        let frame_len = record.frame_len() as u64;
        let pending = state.active_len + state.buffer.len() as u64;
        if pending > 0 && pending + frame_len > shared.config.segment_size_bytes {
            flush_buffer(shared, state)?;
            roll_segment(shared, state)?;
        }
        let position = state.active.base + state.active_len + state.buffer.len() as u64;
        if replicated_hlc.is_none() {
            record.origin = Origin {
                region: shared.config.region.clone(),
                offset: position,
            };
        }
        record.encode_into(&mut state.buffer);
        state.active_max_store_ms = state.active_max_store_ms.max(record.store_timestamp_ms);
        results.push(Appended {
            position,
            queue_offset: record.queue_offset,
            store_timestamp_ms: record.store_timestamp_ms,
            hlc: record.hlc,
        });
        shared
            .counters
            .appended_records
            .fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .appended_bytes
            .fetch_add(frame_len, Ordering::Relaxed);
        entries.push(IndexEntry {
            topic_id,
            queue_id: record.queue_id,
            queue_offset: record.queue_offset,
            position,
            frame_len: frame_len as u32,
            store_ms: record.store_timestamp_ms,
            message_id: record.message_id,
            keys: record.keys,
        });
    }
    Ok(results)
}

/// The id of a topic, allocating and persisting one for a new topic.
fn ensure_topic(
    shared: &Shared,
    state: &mut WriterState,
    topic: &str,
) -> Result<u32, StorageError> {
    if let Some(id) = state.topics.get(topic) {
        return Ok(*id);
    }
    let id = state.next_topic_id;
    let mut batch = rocksdb::WriteBatch::default();
    batch.put_cf(
        shared.index.cf(CF_TOPICS)?,
        topic.as_bytes(),
        id.to_le_bytes(),
    );
    shared.index.write_synced(batch)?;
    state.next_topic_id += 1;
    state.topics.insert(topic.to_string(), id);
    shared.topics.write().insert(topic.to_string(), id);
    Ok(id)
}

/// Writes the buffered frames to the active segment with one positional write. A failed write
/// poisons the log: part of the buffer may be on disk, and nothing after it can be trusted.
fn flush_buffer(shared: &Shared, state: &mut WriterState) -> Result<(), StorageError> {
    if state.buffer.is_empty() {
        return Ok(());
    }
    if let Err(error) = state
        .active
        .file
        .write_all_at(&state.buffer, state.active_len)
    {
        shared.poison("write", error);
        return Err(shared.poison_error().unwrap_or(StorageError::Closed));
    }
    shared.counters.write_calls.fetch_add(1, Ordering::Relaxed);
    state.active_len += state.buffer.len() as u64;
    state.buffer.clear();
    Ok(())
}

/// Seals the active segment (fsync, seal record) and starts the next one where it ends.
fn roll_segment(shared: &Shared, state: &mut WriterState) -> Result<(), StorageError> {
    if let Err(error) = shared.sync_segment(&state.active) {
        shared.poison("fsync", error);
        return Err(shared.poison_error().unwrap_or(StorageError::Closed));
    }
    shared.counters.fsync_calls.fetch_add(1, Ordering::Relaxed);
    let seal = SealInfo::of_file(&state.active, state.active_max_store_ms)?;
    let mut batch = rocksdb::WriteBatch::default();
    batch.put_cf(
        shared.index.cf(CF_META)?,
        SealInfo::key(state.active.base),
        seal.encode(),
    );
    shared.index.write_synced(batch)?;
    let base = state.active.base + state.active_len;
    let segment = Arc::new(Segment::create(&shared.config.log_dir(), base)?);
    shared.segments.write().insert(Arc::clone(&segment));
    *shared.active.lock() = Arc::clone(&segment);
    tracing::info!(base, "sealed segment and started a new one");
    state.active = segment;
    state.active_len = 0;
    state.active_max_store_ms = 0;
    Ok(())
}
