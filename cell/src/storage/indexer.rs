//! The indexer thread: writes index entries for written groups and makes them visible.
//!
//! In `sync` mode a group is indexed only once it is durable, so the index (and so every reader
//! and consumer) never sees a record that a crash could take back. Several queued groups are
//! merged into one RocksDB write batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Receiver;
use rocksdb::WriteBatch;

use crate::error::StorageError;
use crate::storage::index::{
    self, CF_KEY, CF_META, CF_MSGID, CF_QUEUE, CF_TIME, CF_TOPIC_MSGID, Index, META_INDEXED_END,
    QueueEntry,
};
use crate::storage::{Durability, QueueId, QueueState, Shared};

/// A queue gets a time-index sample at most every this many records...
pub(crate) const TIME_SAMPLE_EVERY_RECORDS: u32 = 64;
/// ...or when this much time passed since its last sample.
pub(crate) const TIME_SAMPLE_EVERY_MS: u64 = 1000;

/// Most groups merged into one index write.
const MAX_GROUPS_PER_INDEX_WRITE: usize = 64;

/// The index entries of one record.
#[derive(Debug, Clone)]
pub(crate) struct IndexEntry {
    pub(crate) topic_id: u32,
    pub(crate) queue_id: u32,
    pub(crate) queue_offset: u64,
    pub(crate) position: u64,
    pub(crate) frame_len: u32,
    pub(crate) store_ms: u64,
    pub(crate) message_id: String,
    pub(crate) keys: Vec<String>,
}

/// The entries of one written group, and where the group ends in the log.
#[derive(Debug)]
pub(crate) struct IndexBatch {
    pub(crate) end: u64,
    pub(crate) entries: Vec<IndexEntry>,
}

/// Builds write batches from entries; also used by recovery when it re-indexes the log.
///
/// Entries are buffered per column family and written in key order: RocksDB's skiplist memtable
/// reuses the position of the previous insert, so sorted inserts (random message ids above all)
/// cost far less than the same keys in arrival order.
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    /// Per queue: store ms of its last time-index sample and records since.
    last_sample: HashMap<QueueId, (u64, u32)>,
    /// Next offset per queue touched by the batch being built.
    touched: HashMap<QueueId, u64>,
    queue: Vec<([u8; 16], [u8; 12])>,
    msgid: Vec<(Vec<u8>, [u8; 8])>,
    topic_msgid: Vec<(Vec<u8>, [u8; 8])>,
    keys: Vec<Vec<u8>>,
    time: Vec<([u8; 24], [u8; 8])>,
}

impl BatchBuilder {
    /// Buffers the index entries of one record, taking its strings without copying them.
    pub(crate) fn add(&mut self, entry: IndexEntry) {
        let queue = (entry.topic_id, entry.queue_id);
        self.queue.push((
            index::queue_key(entry.topic_id, entry.queue_id, entry.queue_offset),
            index::queue_value(QueueEntry {
                position: entry.position,
                frame_len: entry.frame_len,
            }),
        ));
        self.topic_msgid.push((
            index::topic_msgid_key(entry.topic_id, &entry.message_id),
            index::u64_value(entry.position),
        ));
        self.msgid.push((
            entry.message_id.into_bytes(),
            index::u64_value(entry.position),
        ));
        for key in &entry.keys {
            self.keys
                .push(index::key_index_key(entry.topic_id, key, entry.position));
        }
        let sample = match self.last_sample.get_mut(&queue) {
            None => true,
            Some((last_ms, since)) => {
                *since += 1;
                entry.store_ms > *last_ms
                    && (*since >= TIME_SAMPLE_EVERY_RECORDS
                        || entry.store_ms - *last_ms >= TIME_SAMPLE_EVERY_MS)
            }
        };
        if sample {
            self.time.push((
                index::time_key(
                    entry.topic_id,
                    entry.queue_id,
                    entry.store_ms,
                    entry.queue_offset,
                ),
                index::u64_value(entry.position),
            ));
            self.last_sample.insert(queue, (entry.store_ms, 0));
        }
        let next = self.touched.entry(queue).or_insert(0);
        *next = (*next).max(entry.queue_offset + 1);
    }

    /// Moves the buffered entries into `batch`, sorted per column family.
    pub(crate) fn drain_into(
        &mut self,
        index: &Index,
        batch: &mut WriteBatch,
    ) -> Result<(), StorageError> {
        self.queue.sort_unstable_by_key(|entry| entry.0);
        let family = index.cf(CF_QUEUE)?;
        for (key, value) in self.queue.drain(..) {
            batch.put_cf(family, key, value);
        }
        // Stable: of two records with one id in a batch the newer must be put last.
        self.msgid.sort_by(|a, b| a.0.cmp(&b.0));
        let family = index.cf(CF_MSGID)?;
        for (key, value) in self.msgid.drain(..) {
            batch.put_cf(family, key, value);
        }
        self.topic_msgid.sort_by(|a, b| a.0.cmp(&b.0));
        let family = index.cf(CF_TOPIC_MSGID)?;
        for (key, value) in self.topic_msgid.drain(..) {
            batch.put_cf(family, key, value);
        }
        self.keys.sort_unstable();
        let family = index.cf(CF_KEY)?;
        for key in self.keys.drain(..) {
            batch.put_cf(family, key, []);
        }
        self.time.sort_unstable_by_key(|entry| entry.0);
        let family = index.cf(CF_TIME)?;
        for (key, value) in self.time.drain(..) {
            batch.put_cf(family, key, value);
        }
        Ok(())
    }

    /// Entries buffered and not yet drained.
    pub(crate) fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Drains the buffered entries and adds the indexed end; returns the touched queues with
    /// their new next offsets.
    pub(crate) fn finish(
        &mut self,
        index: &Index,
        batch: &mut WriteBatch,
        end: u64,
    ) -> Result<Vec<(QueueId, u64)>, StorageError> {
        self.drain_into(index, batch)?;
        let touched: Vec<(QueueId, u64)> = self.touched.drain().collect();
        index::put_u64(batch, index.cf(CF_META)?, META_INDEXED_END, end);
        Ok(touched)
    }
}

pub(crate) fn run(shared: &Shared, batches: &Receiver<IndexBatch>) {
    let mut builder = BatchBuilder::default();
    while let Ok(first) = batches.recv() {
        let mut groups = vec![first];
        while groups.len() < MAX_GROUPS_PER_INDEX_WRITE {
            match batches.try_recv() {
                Ok(group) => groups.push(group),
                Err(_) => break,
            }
        }
        let end = groups.iter().map(|group| group.end).max().unwrap_or(0);
        if shared.config.durability == Durability::Sync && !wait_durable(shared, end) {
            // Poisoned: these records were never acknowledged and must not become visible.
            continue;
        }
        if let Err(error) = index_groups(shared, &mut builder, groups, end) {
            tracing::error!(%error, "index write failed; records stay invisible until restart re-indexes them");
            shared.poison("index write", std::io::Error::other(error.to_string()));
        }
    }
}

/// Waits until the log is durable up to `end`; false if the log was poisoned first.
fn wait_durable(shared: &Shared, end: u64) -> bool {
    let mut queue = shared.flush_queue.lock();
    loop {
        if shared.poison_error().is_some() {
            return false;
        }
        if shared.durable_end.load(Ordering::Acquire) >= end {
            return true;
        }
        shared.durable_signal.wait(&mut queue);
    }
}

fn index_groups(
    shared: &Shared,
    builder: &mut BatchBuilder,
    groups: Vec<IndexBatch>,
    end: u64,
) -> Result<(), StorageError> {
    let mut batch = WriteBatch::default();
    for group in groups {
        for entry in group.entries {
            builder.add(entry);
        }
    }
    let touched = builder.finish(&shared.index, &mut batch, end)?;
    shared.index.write_derived(batch)?;
    shared
        .counters
        .index_batches
        .fetch_add(1, Ordering::Relaxed);
    publish(shared, &touched);
    shared.indexed_end.store(end, Ordering::Release);
    shared.indexed_tx.send_replace(end);
    Ok(())
}

/// Makes the new offsets visible to readers.
fn publish(shared: &Shared, touched: &[(QueueId, u64)]) {
    let mut missing = Vec::new();
    {
        let queues = shared.queues.read();
        for (queue, next) in touched {
            match queues.get(queue) {
                Some(state) => {
                    state.next_offset.fetch_max(*next, Ordering::AcqRel);
                }
                None => missing.push((*queue, *next)),
            }
        }
    }
    if !missing.is_empty() {
        let mut queues = shared.queues.write();
        for (queue, next) in missing {
            let state = queues.entry(queue).or_insert_with(|| {
                Arc::new(QueueState {
                    next_offset: AtomicU64::new(0),
                    min_offset: AtomicU64::new(0),
                })
            });
            state.next_offset.fetch_max(next, Ordering::AcqRel);
        }
    }
}
