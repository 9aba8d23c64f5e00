//! Reads: by queue offset, by message id, by key, by time, by log position, and log scans.
//!
//! Every read checks what it got back against what the index promised (topic, queue, offset or
//! message id), so a stale index entry can never return the wrong message.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::StorageError;
use crate::storage::Storage;
use crate::storage::index::{self, CF_KEY, CF_MSGID, CF_QUEUE, CF_TIME, CF_TOPIC_MSGID};
use crate::storage::record::Record;
use crate::storage::segment::Segment;

/// Records read per step while a time seek scans between two samples.
const SEEK_READ_BATCH_RECORDS: usize = 128;

/// Offsets of a queue: `[earliest, next)` are stored and visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRange {
    /// Earliest retained offset.
    pub earliest: u64,
    /// Offset the next record will get; records below it are visible.
    pub next: u64,
}

impl Storage {
    fn segment_for(&self, position: u64) -> Result<Arc<Segment>, StorageError> {
        let start = self.shared.log_start.load(Ordering::Acquire);
        let end = self.shared.written_end.load(Ordering::Acquire);
        if position < start || position >= end {
            return Err(StorageError::PositionOutOfRange {
                requested: position,
                start,
                end,
            });
        }
        self.shared
            .segments
            .read()
            .find(position)
            .ok_or(StorageError::PositionOutOfRange {
                requested: position,
                start,
                end,
            })
    }

    /// Reads the record at a log position.
    pub fn read_at(&self, position: u64) -> Result<Record, StorageError> {
        let segment = self.segment_for(position)?;
        segment.read_record(position - segment.base)
    }

    /// The retained and visible offsets of a queue; `None` if nothing was ever stored in it.
    pub fn queue_range(&self, topic: &str, queue_id: u32) -> Option<QueueRange> {
        let topic_id = self.shared.topic_id(topic)?;
        let state = self.shared.queue_state(topic_id, queue_id)?;
        Some(QueueRange {
            earliest: state.min_offset.load(Ordering::Acquire),
            next: state.next_offset.load(Ordering::Acquire),
        })
    }

    /// Every (topic, queue) that holds records.
    pub fn queues(&self) -> Vec<(String, u32)> {
        let names: std::collections::HashMap<u32, String> = self
            .shared
            .topics
            .read()
            .iter()
            .map(|(name, id)| (*id, name.clone()))
            .collect();
        let mut queues: Vec<(String, u32)> = self
            .shared
            .queues
            .read()
            .keys()
            .filter_map(|(topic, queue)| names.get(topic).map(|name| (name.clone(), *queue)))
            .collect();
        queues.sort();
        queues
    }

    /// Reads up to `max_count` records of a queue starting at `offset`, stopping once `max_bytes`
    /// of frames are collected (at least one record is returned when one is there). Offsets that
    /// retention removed give [`StorageError::OutOfRange`] with the earliest offset.
    pub fn read_queue(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let Some(topic_id) = self.shared.topic_id(topic) else {
            return Ok(Vec::new());
        };
        let Some(state) = self.shared.queue_state(topic_id, queue_id) else {
            return Ok(Vec::new());
        };
        let earliest = state.min_offset.load(Ordering::Acquire);
        let next = state.next_offset.load(Ordering::Acquire);
        if offset < earliest {
            return Err(StorageError::OutOfRange {
                topic: topic.to_string(),
                queue_id,
                requested: offset,
                earliest,
            });
        }
        if offset >= next || max_count == 0 {
            return Ok(Vec::new());
        }
        let prefix = index::queue_prefix(topic_id, queue_id);
        let log_start = self.shared.log_start.load(Ordering::Acquire);
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        self.shared.index.scan_from(
            CF_QUEUE,
            &index::queue_key(topic_id, queue_id, offset),
            |key, value| {
                if !key.starts_with(&prefix) {
                    return false;
                }
                let (Some((_, _, at)), Some(entry)) = (
                    index::decode_queue_key(key),
                    index::decode_queue_value(value),
                ) else {
                    return true;
                };
                if at >= next {
                    return false;
                }
                if entry.position < log_start {
                    return true;
                }
                if !entries.is_empty() && bytes + entry.frame_len as usize > max_bytes {
                    return false;
                }
                bytes += entry.frame_len as usize;
                entries.push((at, entry.position));
                entries.len() < max_count
            },
        )?;
        if entries.first().is_none_or(|(first, _)| *first != offset) {
            let earliest = state.min_offset.load(Ordering::Acquire);
            if offset < earliest {
                return Err(StorageError::OutOfRange {
                    topic: topic.to_string(),
                    queue_id,
                    requested: offset,
                    earliest,
                });
            }
        }
        let mut records = Vec::with_capacity(entries.len());
        for (at, position) in entries {
            let record = self.read_at(position)?;
            if record.topic != topic || record.queue_id != queue_id || record.queue_offset != at {
                return Err(StorageError::IndexMismatch {
                    what: format!("{topic}/{queue_id}@{at}"),
                    position,
                });
            }
            records.push(record);
        }
        Ok(records)
    }

    /// The record with a message id, with its log position; `None` if it is not (or no longer)
    /// stored.
    pub fn read_by_id(&self, message_id: &str) -> Result<Option<(u64, Record)>, StorageError> {
        let Some(value) = self.shared.index.get(CF_MSGID, message_id.as_bytes())? else {
            return Ok(None);
        };
        let Some(position) = index::decode_u64(&value) else {
            return Ok(None);
        };
        match self.read_at(position) {
            Ok(record) if record.message_id == message_id => Ok(Some((position, record))),
            Ok(_) | Err(StorageError::PositionOutOfRange { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The newest record with `message_id` in `topic`, with its log position. Unlike
    /// [`Self::read_by_id`] it also finds a record whose id a newer record of another topic
    /// shares (a delay message's released copy, a dead-letter copy).
    pub fn read_copy(
        &self,
        topic: &str,
        message_id: &str,
    ) -> Result<Option<(u64, Record)>, StorageError> {
        let Some(topic_id) = self.shared.topic_id(topic) else {
            return Ok(None);
        };
        let key = index::topic_msgid_key(topic_id, message_id);
        let Some(value) = self.shared.index.get(CF_TOPIC_MSGID, &key)? else {
            return Ok(None);
        };
        let Some(position) = index::decode_u64(&value) else {
            return Ok(None);
        };
        match self.read_at(position) {
            Ok(record) if record.message_id == message_id && record.topic == topic => {
                Ok(Some((position, record)))
            }
            Ok(_) | Err(StorageError::PositionOutOfRange { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Whether `topic` holds a record with `message_id` (replication's deduplication key: the
    /// same id in another topic is another record).
    pub fn contains_copy(&self, topic: &str, message_id: &str) -> Result<bool, StorageError> {
        Ok(self.read_copy(topic, message_id)?.is_some())
    }

    /// Whether a message id is stored (cheaper than reading it; used for deduplication).
    pub fn contains_id(&self, message_id: &str) -> Result<bool, StorageError> {
        Ok(self.read_by_id(message_id)?.is_some())
    }

    /// Records of a topic carrying `key`, oldest first, at most `max_count`.
    pub fn read_by_key(
        &self,
        topic: &str,
        key: &str,
        max_count: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let Some(topic_id) = self.shared.topic_id(topic) else {
            return Ok(Vec::new());
        };
        let prefix = index::key_index_prefix(topic_id, key);
        let log_start = self.shared.log_start.load(Ordering::Acquire);
        let mut positions = Vec::new();
        self.shared.index.scan_from(CF_KEY, &prefix, |found, _| {
            if !found.starts_with(&prefix) || found.len() != prefix.len() + 8 {
                return false;
            }
            if let Some(position) = index::decode_position_suffix(found)
                && position >= log_start
            {
                positions.push(position);
            }
            positions.len() < max_count
        })?;
        let mut records = Vec::with_capacity(positions.len());
        for position in positions {
            let record = self.read_at(position)?;
            if record.topic == topic && record.keys.iter().any(|candidate| candidate == key) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// The earliest offset of a queue whose store time is at or after `timestamp_ms`; the next
    /// offset if every stored record is older.
    pub fn seek_by_time(
        &self,
        topic: &str,
        queue_id: u32,
        timestamp_ms: u64,
    ) -> Result<u64, StorageError> {
        let Some(range) = self.queue_range(topic, queue_id) else {
            return Ok(0);
        };
        let Some(topic_id) = self.shared.topic_id(topic) else {
            return Ok(0);
        };
        let prefix = index::queue_prefix(topic_id, queue_id);
        let log_start = self.shared.log_start.load(Ordering::Acquire);
        let target = index::time_key(topic_id, queue_id, timestamp_ms, 0);
        let sample = |key: &[u8], value: &[u8]| match (
            index::decode_time_key(key),
            index::decode_u64(value),
        ) {
            (Some((_, offset)), Some(position)) if position >= log_start => Some(offset),
            _ => None,
        };
        // The answer lies between the last sample before the time and the first one at or after
        // it; samples are at most 64 records or one second apart.
        let from = self
            .shared
            .index
            .prev_in_prefix(CF_TIME, &prefix, &target)?
            .and_then(|(key, value)| sample(&key, &value))
            .map_or(range.earliest, |offset| offset.max(range.earliest));
        let mut upper = range.next;
        self.shared
            .index
            .scan_from(CF_TIME, &target, |key, value| {
                if !key.starts_with(&prefix) {
                    return false;
                }
                match sample(key, value) {
                    Some(offset) => {
                        upper = upper.min(offset);
                        false
                    }
                    None => true,
                }
            })?;
        let mut at = from;
        while at < upper {
            let records =
                self.read_queue(topic, queue_id, at, SEEK_READ_BATCH_RECORDS, usize::MAX)?;
            let Some(last) = records.last().map(|record| record.queue_offset) else {
                break;
            };
            for record in &records {
                if record.queue_offset >= upper {
                    return Ok(upper);
                }
                if record.store_timestamp_ms >= timestamp_ms {
                    return Ok(record.queue_offset);
                }
            }
            at = last + 1;
        }
        Ok(upper)
    }

    /// Reads records in log order from `position` (a record boundary, e.g. a previous record's
    /// position plus its frame length), up to `max_count` records or `max_bytes`, stopping at
    /// the end of what is visible. Returns each record with its position and frame length.
    pub fn read_log(
        &self,
        position: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, u32, Record)>, StorageError> {
        let visible_end = self.shared.indexed_end.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut at = position;
        let mut bytes = 0usize;
        while at < visible_end && out.len() < max_count {
            let segment = self.segment_for(at)?;
            let record = segment.read_record(at - segment.base)?;
            let frame_len = record.frame_len();
            if !out.is_empty() && bytes + frame_len > max_bytes {
                break;
            }
            bytes += frame_len;
            out.push((at, frame_len as u32, record));
            at += frame_len as u64;
        }
        Ok(out)
    }
}
