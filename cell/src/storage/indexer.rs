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
    self, CF_KEY, CF_META, CF_MSGID, CF_QUEUE, CF_QUEUES, CF_TIME, Index, META_INDEXED_END, QueueEntry,
};
use crate::storage::{Durability, QueueState, Shared};

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
#[derive(Debug, Default)]
pub(crate) struct BatchBuilder {
    /// Store ms of the last time-index entry per queue: one entry per queue per millisecond.
    last_time_ms: HashMap<(u32, u32), u64>,
    /// Next offset per queue touched by the batch being built.
    touched: HashMap<(u32, u32), u64>,
}

impl BatchBuilder {
    pub(crate) fn add(&mut self, index: &Index, batch: &mut WriteBatch, entry: &IndexEntry) -> Result<(), StorageError> {
        let queue = (entry.topic_id, entry.queue_id);
        batch.put_cf(
            index.cf(CF_QUEUE)?,
            index::queue_key(entry.topic_id, entry.queue_id, entry.queue_offset),
            index::queue_value(QueueEntry { position: entry.position, frame_len: entry.frame_len }),
        );
        batch.put_cf(index.cf(CF_MSGID)?, entry.message_id.as_bytes(), index::u64_value(entry.position));
        for key in &entry.keys {
            batch.put_cf(index.cf(CF_KEY)?, index::key_index_key(entry.topic_id, key, entry.position), []);
        }
        let last = self.last_time_ms.get(&queue).copied();
        if last.is_none_or(|last| entry.store_ms > last) {
            batch.put_cf(
                index.cf(CF_TIME)?,
                index::time_key(entry.topic_id, entry.queue_id, entry.store_ms, entry.queue_offset),
                index::u64_value(entry.position),
            );
            self.last_time_ms.insert(queue, entry.store_ms);
        }
        let next = self.touched.entry(queue).or_insert(0);
        *next = (*next).max(entry.queue_offset + 1);
        Ok(())
    }

    /// Adds the per-queue next offsets and the indexed end; returns the touched queues.
    pub(crate) fn finish(
        &mut self,
        index: &Index,
        batch: &mut WriteBatch,
        end: u64,
    ) -> Result<Vec<((u32, u32), u64)>, StorageError> {
        let queues_cf = index.cf(CF_QUEUES)?;
        let touched: Vec<((u32, u32), u64)> = self.touched.drain().collect();
        for ((topic, queue), next) in &touched {
            index::put_u64(batch, queues_cf, &index::queue_prefix(*topic, *queue), *next);
        }
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
        if let Err(error) = index_groups(shared, &mut builder, &groups, end) {
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
    groups: &[IndexBatch],
    end: u64,
) -> Result<(), StorageError> {
    let mut batch = WriteBatch::default();
    for group in groups {
        for entry in &group.entries {
            builder.add(&shared.index, &mut batch, entry)?;
        }
    }
    let touched = builder.finish(&shared.index, &mut batch, end)?;
    shared.index.write_derived(batch)?;
    shared.counters.index_batches.fetch_add(1, Ordering::Relaxed);
    publish(shared, &touched);
    shared.indexed_end.store(end, Ordering::Release);
    shared.indexed_tx.send_replace(end);
    Ok(())
}

/// Makes the new offsets visible to readers.
fn publish(shared: &Shared, touched: &[((u32, u32), u64)]) {
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
                Arc::new(QueueState { next_offset: AtomicU64::new(0), min_offset: AtomicU64::new(0) })
            });
            state.next_offset.fetch_max(next, Ordering::AcqRel);
        }
    }
}
