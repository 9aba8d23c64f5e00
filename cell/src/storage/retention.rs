//! Retention: remove whole sealed segments by age and by total size, with their index entries.
//!
//! Order matters for crash safety: the new log start is persisted first (so that a crash in the
//! middle leaves the index and the files agreeing on what is retained, and recovery finishes the
//! file removal), then readers are moved past it, then files are deleted. Queue index entries are
//! range-deleted per queue; message-id, key and time entries are dropped by the index's
//! compaction filter, and every lookup ignores entries below the log start until then.

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;

use crate::clock::stamp_ms;
use crate::error::StorageError;
use crate::storage::index::{self, CF_META, CF_QUEUE, META_LOG_START};
use crate::storage::segment::sync_dir;
use crate::storage::writer::SealInfo;
use crate::storage::{QueueId, Storage, recovery};

/// What one retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment files removed.
    pub removed_segments: usize,
    /// Bytes freed.
    pub removed_bytes: u64,
    /// The first retained log position afterwards.
    pub log_start: u64,
}

impl Storage {
    /// Applies the retention limits of the config now; a background task calls this
    /// periodically. The active segment is never removed.
    pub fn enforce_retention(&self) -> Result<RetentionReport, StorageError> {
        let shared = &self.shared;
        let max_age_ms = shared.config.retention_max_age_ms;
        let max_total = shared.config.retention_max_total_bytes;
        let mut report = RetentionReport {
            log_start: shared.log_start.load(Ordering::Acquire),
            ..Default::default()
        };
        if max_age_ms.is_none() && max_total.is_none() {
            return Ok(report);
        }
        let now_ms = stamp_ms(shared.hlc.now());
        let segments = shared.segments.read().all();
        let active_base = shared.active.lock().base;
        let written_end = shared.written_end.load(Ordering::Acquire);
        let mut total: u64 = written_end.saturating_sub(report.log_start);
        let mut doomed = Vec::new();
        for segment in segments.iter().filter(|segment| segment.base < active_base) {
            let seal = shared
                .index
                .get(CF_META, SealInfo::key(segment.base).as_bytes())?
                .as_deref()
                .and_then(SealInfo::decode);
            let len = segment.file_len()?;
            let too_old = match (max_age_ms, seal) {
                (Some(max_age), Some(seal)) => now_ms.saturating_sub(seal.max_store_ms) > max_age,
                _ => false,
            };
            let too_big = max_total.is_some_and(|max| total > max);
            if !too_old && !too_big {
                break;
            }
            total -= len;
            doomed.push((segment.clone(), len));
        }
        let Some((last, last_len)) = doomed.last() else {
            return Ok(report);
        };
        let new_start = last.base + last_len;

        let mut batch = WriteBatch::default();
        index::put_u64(
            &mut batch,
            shared.index.cf(CF_META)?,
            META_LOG_START,
            new_start,
        );
        shared.index.write_synced(batch)?;
        shared.log_start.store(new_start, Ordering::Release);
        shared.index.set_log_start(new_start);
        self.advance_queue_minimums(new_start)?;
        {
            let mut map = shared.segments.write();
            for (segment, _) in &doomed {
                map.remove(segment.base);
            }
        }
        let log_dir = shared.config.log_dir();
        for (segment, len) in &doomed {
            std::fs::remove_file(&segment.path).map_err(|error| {
                StorageError::io("remove expired segment", &segment.path, error)
            })?;
            let mut batch = WriteBatch::default();
            batch.delete_cf(shared.index.cf(CF_META)?, SealInfo::key(segment.base));
            shared.index.write_synced(batch)?;
            report.removed_segments += 1;
            report.removed_bytes += len;
        }
        sync_dir(&log_dir)?;
        report.log_start = new_start;
        tracing::info!(
            removed = report.removed_segments,
            bytes = report.removed_bytes,
            log_start = new_start,
            "retention removed segments"
        );
        Ok(report)
    }

    /// Moves every queue's earliest offset past the new log start and range-deletes the queue
    /// index entries below it.
    fn advance_queue_minimums(&self, log_start: u64) -> Result<(), StorageError> {
        let shared = &self.shared;
        let queues: Vec<(QueueId, std::sync::Arc<crate::storage::QueueState>)> = shared
            .queues
            .read()
            .iter()
            .map(|(key, state)| (*key, state.clone()))
            .collect();
        for ((topic, queue), state) in queues {
            let old_min = state.min_offset.load(Ordering::Acquire);
            let next = state.next_offset.load(Ordering::Acquire);
            let new_min = recovery::first_retained_offset(&shared.index, topic, queue, log_start)?
                .unwrap_or(next)
                .max(old_min);
            if new_min > old_min {
                state.min_offset.store(new_min, Ordering::Release);
                shared.index.delete_range(
                    CF_QUEUE,
                    &index::queue_key(topic, queue, old_min),
                    &index::queue_key(topic, queue, new_min),
                )?;
            }
        }
        Ok(())
    }

    /// Compacts the index so that entries of removed segments are dropped now rather than at the
    /// next natural compaction (tests and operators use this).
    pub fn compact_index(&self) -> Result<(), StorageError> {
        self.shared.index.compact_derived()
    }
}
