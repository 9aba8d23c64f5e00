//! Start-up recovery: rebuild a consistent log and index from whatever a crash left.
//!
//! 1. Segment files must form one contiguous range of log positions.
//! 2. Sealed segments are re-read and CRC-checked when their length or modification time differs
//!    from their seal record (or always, with [`VerifyOnOpen::All`]). A corrupt record there stops
//!    the start with an error naming the segment and byte offset, unless `repair` is set.
//! 3. The active (last) segment is always scanned. At the first invalid frame, the rest of the file
//!    is searched for a valid frame: if there is none, the bad bytes are a torn tail (a write that
//!    a crash interrupted) and are truncated; if there is one, the damage is in the middle of the
//!    log, which is corruption (as above).
//! 4. Records at or after the index's `indexed_end` are (re-)indexed. If the index reaches beyond
//!    the end of the log (possible in `async` mode after a power loss), its entries past the end
//!    are removed.
//!
//! [`VerifyOnOpen::All`]: super::VerifyOnOpen::All

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;

use crate::clock::{Hlc, ms_to_stamp};
use crate::error::{CodecError, StorageError};
use crate::storage::QueueId;
use crate::storage::QueueState;
use crate::storage::config::{StorageConfig, VerifyOnOpen};
use crate::storage::index::{
    self, CF_KEY, CF_META, CF_MSGID, CF_QUEUE, CF_TIME, CF_TOPIC_MSGID, CF_TOPICS, INDEX_LAYOUT,
    Index, META_INDEX_LAYOUT, META_INDEXED_END, META_LOG_START,
};
use crate::storage::indexer::{BatchBuilder, IndexEntry};
use crate::storage::record::{
    self, FORMAT_VERSION, FRAME_HEADER_BYTES, FrameCheck, MAX_PAYLOAD_BYTES, MIN_PAYLOAD_BYTES,
};
use crate::storage::segment::{self, Segment, SegmentMap};
use crate::storage::writer::SealInfo;

/// Bytes read per call while scanning a segment.
const SCAN_CHUNK_BYTES: usize = 8 << 20;
/// Index entries per write batch while re-indexing.
const REINDEX_BATCH_ENTRIES: usize = 16_384;

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Wall time recovery took.
    pub duration: Duration,
    /// Bytes of segment files read and checked.
    pub scanned_bytes: u64,
    /// Records indexed because the index had not persisted them.
    pub reindexed_records: u64,
    /// Bytes cut from the end of the active segment (a torn tail).
    pub truncated_bytes: u64,
    /// Damaged ranges skipped in repair mode: segment, start and end byte within it.
    pub skipped_ranges: Vec<(PathBuf, u64, u64)>,
    /// The index reached past the end of the log and was cut back.
    pub index_rolled_back: bool,
    /// Segment files below the retained start that were removed (an interrupted retention run).
    pub removed_segments: u64,
}

/// Everything `Storage::open` needs to start its threads.
pub(crate) struct Recovered {
    pub(crate) index: Index,
    pub(crate) segments: SegmentMap,
    pub(crate) active: Arc<Segment>,
    pub(crate) active_len: u64,
    pub(crate) active_max_store_ms: u64,
    pub(crate) queue_next: HashMap<QueueId, u64>,
    pub(crate) topics: HashMap<String, u32>,
    pub(crate) queues: HashMap<QueueId, Arc<QueueState>>,
    pub(crate) log_start: u64,
    pub(crate) end: u64,
    pub(crate) report: RecoveryReport,
}

/// How a scan of one segment ended.
enum ScanEnd {
    /// Every byte up to the end of the file belongs to a valid frame.
    Clean,
    /// The frame at `offset` is invalid.
    Bad { offset: u64, error: CodecError },
}

/// Per-run re-indexing state.
struct Reindexer<'a> {
    index: &'a Index,
    from: u64,
    builder: BatchBuilder,
    topics: HashMap<String, u32>,
    queue_next: HashMap<QueueId, u64>,
    max_store_ms: u64,
    reindexed: u64,
}

impl Reindexer<'_> {
    /// Feeds one frame: the outer error is an index failure, the inner one a bad record.
    fn visit(
        &mut self,
        position: u64,
        frame: &[u8],
    ) -> Result<Result<(), CodecError>, StorageError> {
        let (record, frame_len) = match record::decode_frame(frame) {
            Ok(decoded) => decoded,
            Err(error) => return Ok(Err(error)),
        };
        self.max_store_ms = self.max_store_ms.max(record.store_timestamp_ms);
        if position < self.from {
            return Ok(Ok(()));
        }
        let topic_id = self.topic_id(&record.topic)?;
        let queue = (topic_id, record.queue_id);
        let next = self.queue_next.entry(queue).or_insert(0);
        *next = (*next).max(record.queue_offset + 1);
        let entry = IndexEntry {
            topic_id,
            queue_id: record.queue_id,
            queue_offset: record.queue_offset,
            position,
            frame_len: frame_len as u32,
            store_ms: record.store_timestamp_ms,
            message_id: record.message_id,
            keys: record.keys,
        };
        self.builder.add(entry);
        self.reindexed += 1;
        Ok(Ok(()))
    }

    fn topic_id(&mut self, topic: &str) -> Result<u32, StorageError> {
        if let Some(id) = self.topics.get(topic) {
            return Ok(*id);
        }
        let id = self.topics.values().max().map_or(1, |id| id + 1);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.index.cf(CF_TOPICS)?,
            topic.as_bytes(),
            id.to_le_bytes(),
        );
        self.index.write_synced(batch)?;
        self.topics.insert(topic.to_string(), id);
        Ok(id)
    }

    /// Writes what is batched; `end` is recorded as indexed only by the final call.
    fn write(&mut self, end: Option<u64>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        if let Some(end) = end {
            self.builder.finish(self.index, &mut batch, end)?;
        } else if self.builder.pending() < REINDEX_BATCH_ENTRIES {
            return Ok(());
        } else {
            self.builder.drain_into(self.index, &mut batch)?;
        }
        self.index.write_derived(batch)
    }
}

pub(crate) fn recover(config: &StorageConfig, hlc: &Hlc) -> Result<Recovered, StorageError> {
    let started = Instant::now();
    let log_dir = config.log_dir();
    std::fs::create_dir_all(&log_dir)
        .map_err(|error| StorageError::io("create log directory", &log_dir, error))?;
    let index = Index::open(
        &config.index_dir(),
        config.index_block_cache_bytes,
        config.index_write_buffer_bytes,
    )?;
    let mut report = RecoveryReport::default();
    let mut log_start = index.get_meta_u64(META_LOG_START)?.unwrap_or(0);
    let indexed_end = index.get_meta_u64(META_INDEXED_END)?.unwrap_or(0);
    // An index of an older layout lacks whole families: re-derive everything from the log (the
    // families that exist get the same entries again).
    let layout = index.get_meta_u64(META_INDEX_LAYOUT)?.unwrap_or(0);
    let reindex_from = if layout < INDEX_LAYOUT {
        if indexed_end > 0 {
            tracing::info!(
                layout,
                "index layout is older than {INDEX_LAYOUT}: rebuilding the index from the log"
            );
        }
        0
    } else {
        indexed_end
    };

    let segments = open_segments(&log_dir, log_start, &mut report)?;
    let segments = if segments.is_empty() {
        vec![Arc::new(Segment::create(&log_dir, log_start)?)]
    } else {
        segments
    };
    check_contiguous(&segments)?;
    if let Some(first) = segments.first()
        && first.base > log_start
    {
        // Files below were removed by hand or by a retention run whose start was not recorded.
        log_start = first.base;
        write_meta(&index, META_LOG_START, log_start)?;
    }
    index.set_log_start(log_start);

    let mut reindexer = Reindexer {
        index: &index,
        from: reindex_from.max(log_start),
        builder: BatchBuilder::default(),
        topics: load_topics(&index)?,
        queue_next: index.queue_heads()?,
        max_store_ms: 0,
        reindexed: 0,
    };
    let last = segments.len() - 1;
    let mut damaged: Vec<(u64, u64)> = Vec::new();
    let mut active_len = 0;
    let mut active_max_store_ms = 0;
    for (number, segment) in segments.iter().enumerate() {
        let file_len = segment.file_len()?;
        let is_active = number == last;
        let seal = index
            .get(CF_META, SealInfo::key(segment.base).as_bytes())?
            .as_deref()
            .and_then(SealInfo::decode);
        let unchanged = seal.is_some_and(|seal| {
            SealInfo::of_file(segment, seal.max_store_ms)
                .is_ok_and(|now| now.len == seal.len && now.mtime_ns == seal.mtime_ns)
        });
        let needs_index = segment.base + file_len > reindexer.from;
        let needs_verify = config.verify_on_open == VerifyOnOpen::All || !unchanged;
        if !is_active && !needs_index && !needs_verify {
            reindexer.max_store_ms = reindexer
                .max_store_ms
                .max(seal.map_or(0, |seal| seal.max_store_ms));
            continue;
        }
        let before = reindexer.max_store_ms;
        reindexer.max_store_ms = 0;
        let valid_len = scan_and_repair(
            config,
            segment,
            file_len,
            is_active,
            &mut reindexer,
            &mut report,
            &mut damaged,
        )?;
        let segment_max_ms = reindexer.max_store_ms;
        reindexer.max_store_ms = reindexer.max_store_ms.max(before);
        if is_active {
            active_len = valid_len;
            active_max_store_ms = segment_max_ms;
        } else {
            let seal = SealInfo::of_file(segment, segment_max_ms)?;
            let mut batch = WriteBatch::default();
            batch.put_cf(
                index.cf(CF_META)?,
                SealInfo::key(segment.base),
                seal.encode(),
            );
            index.write_synced(batch)?;
        }
    }
    let active = Arc::clone(&segments[last]);
    let end = active.base + active_len;

    if indexed_end > end || !damaged.is_empty() {
        report.index_rolled_back = indexed_end > end;
        remove_entries(&index, |position| {
            position >= end
                || damaged
                    .iter()
                    .any(|(from, to)| (*from..*to).contains(&position))
        })?;
        reindexer.queue_next = index.queue_heads()?;
    }
    reindexer.write(Some(end))?;
    index.flush()?;
    if layout < INDEX_LAYOUT {
        // Only now: the flush above made the re-derived entries durable.
        write_meta(&index, META_INDEX_LAYOUT, INDEX_LAYOUT)?;
    }
    if reindexer.max_store_ms > 0 && hlc.observe(ms_to_stamp(reindexer.max_store_ms)).is_err() {
        tracing::warn!(
            "stored timestamps are ahead of this machine's clock; the HLC continues from its own clock"
        );
    }

    let queues = build_queue_states(&index, &reindexer.queue_next, log_start)?;
    report.reindexed_records = reindexer.reindexed;
    report.duration = started.elapsed();
    let mut map = SegmentMap::default();
    for segment in &segments {
        map.insert(Arc::clone(segment));
    }
    tracing::info!(
        end,
        log_start,
        reindexed = report.reindexed_records,
        truncated = report.truncated_bytes,
        duration_ms = report.duration.as_millis() as u64,
        "storage recovered"
    );
    Ok(Recovered {
        topics: reindexer.topics,
        queue_next: reindexer.queue_next,
        index,
        segments: map,
        active,
        active_len,
        active_max_store_ms,
        queues,
        log_start,
        end,
        report,
    })
}

fn open_segments(
    log_dir: &std::path::Path,
    log_start: u64,
    report: &mut RecoveryReport,
) -> Result<Vec<Arc<Segment>>, StorageError> {
    let files = segment::list_segments(log_dir)?;
    let count = files.len();
    let mut segments = Vec::with_capacity(count);
    for (number, (base, path)) in files.into_iter().enumerate() {
        let segment = Segment::open(path, base)?;
        let len = segment.file_len()?;
        if number + 1 < count && base + len <= log_start {
            std::fs::remove_file(&segment.path).map_err(|error| {
                StorageError::io("remove retained-away segment", &segment.path, error)
            })?;
            report.removed_segments += 1;
            continue;
        }
        segments.push(Arc::new(segment));
    }
    if report.removed_segments > 0 {
        segment::sync_dir(log_dir)?;
    }
    Ok(segments)
}

fn check_contiguous(segments: &[Arc<Segment>]) -> Result<(), StorageError> {
    for pair in segments.windows(2) {
        let len = pair[0].file_len()?;
        if pair[0].base + len != pair[1].base {
            return Err(StorageError::SegmentLayout {
                detail: format!(
                    "{} ends at log position {} but the next segment {} starts at {}",
                    pair[0].path.display(),
                    pair[0].base + len,
                    pair[1].path.display(),
                    pair[1].base
                ),
            });
        }
    }
    Ok(())
}

/// Scans one segment, indexing what needs it; handles a bad frame by truncating (torn tail of the
/// active segment), skipping (repair) or failing. Returns the valid length of the segment.
fn scan_and_repair(
    config: &StorageConfig,
    segment: &Segment,
    file_len: u64,
    is_active: bool,
    reindexer: &mut Reindexer<'_>,
    report: &mut RecoveryReport,
    damaged: &mut Vec<(u64, u64)>,
) -> Result<u64, StorageError> {
    let mut from = 0;
    loop {
        let end = scan_segment(segment, from, file_len, reindexer, report)?;
        let ScanEnd::Bad { offset, error } = end else {
            reindexer.write(None)?;
            return Ok(file_len);
        };
        let resume = find_next_valid_frame(segment, offset + 1, file_len)?;
        match resume {
            None if is_active => {
                segment
                    .file
                    .set_len(offset)
                    .and_then(|()| segment.file.sync_all())
                    .map_err(|io| StorageError::io("truncate torn tail of", &segment.path, io))?;
                report.truncated_bytes += file_len - offset;
                tracing::warn!(segment = %segment.path.display(), offset, bytes = file_len - offset, %error, "truncated torn tail");
                reindexer.write(None)?;
                return Ok(offset);
            }
            _ if !config.repair => return Err(segment.corrupt(offset, error)),
            resume => {
                let skip_to = resume.unwrap_or(file_len);
                tracing::warn!(segment = %segment.path.display(), from = offset, to = skip_to, %error, "repair: skipping damaged range");
                report
                    .skipped_ranges
                    .push((segment.path.clone(), offset, skip_to));
                damaged.push((segment.base + offset, segment.base + skip_to));
                if resume.is_none() {
                    reindexer.write(None)?;
                    return Ok(file_len);
                }
                from = skip_to;
            }
        }
    }
}

/// Reads frames from `from` to the end of the file, feeding valid ones to the re-indexer.
fn scan_segment(
    segment: &Segment,
    from: u64,
    file_len: u64,
    reindexer: &mut Reindexer<'_>,
    report: &mut RecoveryReport,
) -> Result<ScanEnd, StorageError> {
    let mut buffer: Vec<u8> = Vec::new();
    let mut buffer_start = from;
    let mut cursor = 0usize;
    loop {
        let offset = buffer_start + cursor as u64;
        if offset == file_len {
            return Ok(ScanEnd::Clean);
        }
        match record::check_frame(&buffer[cursor..]) {
            FrameCheck::Valid { frame_len } => {
                let frame = &buffer[cursor..cursor + frame_len];
                if let Err(error) = reindexer.visit(segment.base + offset, frame)? {
                    return Ok(ScanEnd::Bad { offset, error });
                }
                reindexer.write(None)?;
                cursor += frame_len;
            }
            FrameCheck::Incomplete => {
                let loaded_to = buffer_start + buffer.len() as u64;
                if loaded_to >= file_len {
                    return Ok(ScanEnd::Bad {
                        offset,
                        error: CodecError::Truncated,
                    });
                }
                let wanted = segment::declared_frame_len(&buffer[cursor..])
                    .unwrap_or(0)
                    .max(SCAN_CHUNK_BYTES);
                let read_len = wanted.min((file_len - offset) as usize);
                buffer = segment.read_bytes(offset, read_len)?;
                report.scanned_bytes += buffer.len() as u64;
                buffer_start = offset;
                cursor = 0;
                if buffer.is_empty() {
                    return Ok(ScanEnd::Bad {
                        offset,
                        error: CodecError::Truncated,
                    });
                }
            }
            FrameCheck::Invalid(error) => return Ok(ScanEnd::Bad { offset, error }),
        }
    }
}

/// The offset of the first valid frame at or after `from`, searching byte by byte. Cheap
/// plausibility checks (length range, version byte) come before the CRC.
fn find_next_valid_frame(
    segment: &Segment,
    from: u64,
    file_len: u64,
) -> Result<Option<u64>, StorageError> {
    let mut chunk_start = from;
    while chunk_start < file_len {
        let chunk = segment.read_bytes(
            chunk_start,
            SCAN_CHUNK_BYTES.min((file_len - chunk_start) as usize),
        )?;
        for index in 0..chunk.len() {
            let Some(header) = chunk.get(index..index + FRAME_HEADER_BYTES + 1) else {
                // Too close to the chunk's end to judge: the next chunk starts here.
                break;
            };
            let payload_len =
                u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_len)
                || header[8] != FORMAT_VERSION
            {
                continue;
            }
            let offset = chunk_start + index as u64;
            let frame_len = FRAME_HEADER_BYTES + payload_len;
            if offset + frame_len as u64 > file_len {
                continue;
            }
            let frame = match chunk.get(index..index + frame_len) {
                Some(frame) => std::borrow::Cow::Borrowed(frame),
                None => std::borrow::Cow::Owned(segment.read_bytes(offset, frame_len)?),
            };
            if matches!(record::check_frame(&frame), FrameCheck::Valid { .. }) {
                return Ok(Some(offset));
            }
        }
        let advanced = chunk.len().saturating_sub(FRAME_HEADER_BYTES + 1).max(1);
        chunk_start += advanced as u64;
        if chunk.len() < FRAME_HEADER_BYTES + 1 {
            break;
        }
    }
    Ok(None)
}

fn write_meta(index: &Index, key: &[u8], value: u64) -> Result<(), StorageError> {
    let mut batch = WriteBatch::default();
    index::put_u64(&mut batch, index.cf(CF_META)?, key, value);
    index.write_synced(batch)
}

fn load_topics(index: &Index) -> Result<HashMap<String, u32>, StorageError> {
    let mut topics = HashMap::new();
    index.scan_from(CF_TOPICS, &[], |key, value| {
        if let (Ok(name), Some(id)) = (std::str::from_utf8(key), value.get(..4)) {
            topics.insert(
                name.to_string(),
                u32::from_le_bytes([id[0], id[1], id[2], id[3]]),
            );
        }
        true
    })?;
    Ok(topics)
}

/// Deletes every derived entry whose log position matches `doomed`. Scans whole families, so it
/// runs only in the rare cases that need it (index ahead of the log, repair).
fn remove_entries(index: &Index, doomed: impl Fn(u64) -> bool) -> Result<(), StorageError> {
    let mut batch = WriteBatch::default();
    for family in [CF_QUEUE, CF_MSGID, CF_TOPIC_MSGID, CF_TIME] {
        let cf = index.cf(family)?;
        index.scan_from(family, &[], |key, value| {
            if index::decode_u64(value).is_some_and(&doomed) {
                batch.delete_cf(cf, key);
            }
            true
        })?;
    }
    let cf = index.cf(CF_KEY)?;
    index.scan_from(CF_KEY, &[], |key, _| {
        if key.len() >= 8 {
            let mut position = [0u8; 8];
            position.copy_from_slice(&key[key.len() - 8..]);
            if doomed(u64::from_be_bytes(position)) {
                batch.delete_cf(cf, key);
            }
        }
        true
    })?;
    index.write_derived(batch)
}

/// Readers' queue states: next offset from the log, earliest offset from the index.
pub(crate) fn build_queue_states(
    index: &Index,
    queue_next: &HashMap<QueueId, u64>,
    log_start: u64,
) -> Result<HashMap<QueueId, Arc<QueueState>>, StorageError> {
    let mut states = HashMap::with_capacity(queue_next.len());
    for (&(topic, queue), &next) in queue_next {
        let min = first_retained_offset(index, topic, queue, log_start)?.unwrap_or(next);
        states.insert(
            (topic, queue),
            Arc::new(QueueState {
                next_offset: AtomicU64::new(next),
                min_offset: AtomicU64::new(min),
            }),
        );
    }
    Ok(states)
}

/// The first offset of a queue whose record lies at or after `log_start`.
pub(crate) fn first_retained_offset(
    index: &Index,
    topic: u32,
    queue: u32,
    log_start: u64,
) -> Result<Option<u64>, StorageError> {
    let prefix = index::queue_prefix(topic, queue);
    let mut found = None;
    index.scan_from(CF_QUEUE, &prefix, |key, value| {
        if !key.starts_with(&prefix) {
            return false;
        }
        match (
            index::decode_queue_key(key),
            index::decode_queue_value(value),
        ) {
            (Some((_, _, offset)), Some(entry)) if entry.position >= log_start => {
                found = Some(offset);
                false
            }
            _ => true,
        }
    })?;
    Ok(found)
}
