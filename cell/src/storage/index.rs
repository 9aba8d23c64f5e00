//! The RocksDB index beside the log.
//!
//! Everything in the `queue`, `msgid`, `key` and `time` column families is derived from the log
//! and rebuilt from it after a crash: those writes skip RocksDB's WAL, and `meta/indexed_end`
//! (written in the same batch, with atomic flush across column families) says how far the
//! persisted index reaches. The `consumer_offsets` and `replication_checkpoints` column families
//! hold state that is *not* derived from the log; writes to them go through the WAL and are synced.
//!
//! Key layouts (integers big-endian so that keys sort by them):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `queue` | topic id (4), queue id (4), queue offset (8) | log position (8 LE), frame length (4 LE) |
//! | `msgid` | message id bytes | log position (8 LE) of the newest record with that id |
//! | `topic_msgid` | topic id (4), message id bytes | log position (8 LE) of the newest record with that id in that topic |
//! | `key` | topic id (4), key length (2), key, log position (8) | empty |
//! | `time` | topic id (4), queue id (4), store ms (8), queue offset (8) | log position (8 LE) |
//! | `topics` | topic name | topic id (4 LE) |
//! | `meta` | `indexed_end`, `log_start`, `index_layout`, `seg/<base>` | u64 LE, u64 LE, u64 LE, seal record |
//!
//! One message id may name several records in different topics (a delay message in the timer
//! topic and its released copy, a half message and its committed copy, a message and its
//! dead-letter copy): `msgid` finds the newest of them, `topic_msgid` the one of a given topic,
//! which is what replication's deduplication needs. `index_layout` is [`INDEX_LAYOUT`]; an index
//! written by an older layout lacks families and is rebuilt from the log at start.
//!
//! The `time` index is sparse: a queue gets a sample when at least 64 records or one second have
//! passed since its last sample, so its size per message does not grow with the number of queues;
//! a seek finds the nearest samples around the time and reads at most the records between them.
//! A queue's next offset is not stored separately: it is one past the last key of the queue in the
//! `queue` family, found at start-up with one seek per queue.
//! Entries whose position falls below the retained log start are dropped by a compaction filter.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode,
    Options, WriteBatch, WriteOptions,
};

use crate::error::StorageError;

pub(crate) const CF_QUEUE: &str = "queue";
pub(crate) const CF_MSGID: &str = "msgid";
pub(crate) const CF_TOPIC_MSGID: &str = "topic_msgid";
pub(crate) const CF_KEY: &str = "key";
pub(crate) const CF_TIME: &str = "time";
pub(crate) const CF_TOPICS: &str = "topics";
pub(crate) const CF_META: &str = "meta";
/// Committed consumer offsets (not derived from the log).
pub const CF_CONSUMER_OFFSETS: &str = "consumer_offsets";
/// Replication progress per source (not derived from the log).
pub const CF_REPLICATION_CHECKPOINTS: &str = "replication_checkpoints";

const DERIVED_FAMILIES: [&str; 7] = [
    CF_QUEUE,
    CF_MSGID,
    CF_TOPIC_MSGID,
    CF_KEY,
    CF_TIME,
    CF_TOPICS,
    CF_META,
];
const STATE_FAMILIES: [&str; 2] = [CF_CONSUMER_OFFSETS, CF_REPLICATION_CHECKPOINTS];

pub(crate) const META_INDEXED_END: &[u8] = b"indexed_end";
pub(crate) const META_INDEX_LAYOUT: &[u8] = b"index_layout";
/// The derived families' layout: 2 added `topic_msgid`. An index without the key (or with a
/// lower value) is re-derived from the whole retained log at start.
pub(crate) const INDEX_LAYOUT: u64 = 2;
pub(crate) const META_LOG_START: &[u8] = b"log_start";
pub(crate) const META_SEGMENT_PREFIX: &str = "seg/";

/// A key and its value, as read from RocksDB.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// What the queue index stores for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueEntry {
    pub(crate) position: u64,
    pub(crate) frame_len: u32,
}

/// The index database with its column families.
pub(crate) struct Index {
    db: DB,
    /// Entries pointing below this position are dropped during compaction.
    log_start: Arc<AtomicU64>,
    unlogged: WriteOptions,
    synced: WriteOptions,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Index")
            .field("path", &self.db.path())
            .finish_non_exhaustive()
    }
}

fn position_of_value(value: &[u8]) -> Option<u64> {
    value.get(..8).map(|bytes| {
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        u64::from_le_bytes(array)
    })
}

fn position_of_key_suffix(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    let mut array = [0u8; 8];
    array.copy_from_slice(&key[start..]);
    Some(u64::from_be_bytes(array))
}

impl Index {
    /// Opens (creating if needed) the index at `path`.
    pub(crate) fn open(
        path: &Path,
        block_cache_bytes: usize,
        write_buffer_bytes: usize,
    ) -> Result<Self, StorageError> {
        let log_start = Arc::new(AtomicU64::new(0));
        let cache = Cache::new_lru_cache(block_cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);

        let family = |name: &str| {
            let mut options = Options::default();
            options.set_block_based_table_factory(&table);
            options.set_write_buffer_size(write_buffer_bytes);
            options.set_max_write_buffer_number(4);
            options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            let start = Arc::clone(&log_start);
            match name {
                CF_QUEUE | CF_MSGID | CF_TOPIC_MSGID | CF_TIME => options.set_compaction_filter(
                    "below-log-start",
                    move |_level: u32, _key: &[u8], value: &[u8]| match position_of_value(value) {
                        Some(position) if position < start.load(Ordering::Relaxed) => {
                            Decision::Remove
                        }
                        _ => Decision::Keep,
                    },
                ),
                CF_KEY => options.set_compaction_filter(
                    "below-log-start",
                    move |_level: u32, key: &[u8], _value: &[u8]| match position_of_key_suffix(key)
                    {
                        Some(position) if position < start.load(Ordering::Relaxed) => {
                            Decision::Remove
                        }
                        _ => Decision::Keep,
                    },
                ),
                _ => {}
            }
            ColumnFamilyDescriptor::new(name, options)
        };
        let families: Vec<ColumnFamilyDescriptor> = DERIVED_FAMILIES
            .iter()
            .chain(STATE_FAMILIES.iter())
            .map(|name| family(name))
            .collect();

        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        // Derived families skip the WAL; atomic flush keeps `meta/indexed_end` consistent with
        // the entries it covers across families.
        options.set_atomic_flush(true);
        options.set_max_background_jobs(2);
        options.set_bytes_per_sync(1 << 20);
        let db = DB::open_cf_descriptors(&options, path, families)
            .map_err(StorageError::index("open"))?;

        let mut unlogged = WriteOptions::default();
        unlogged.disable_wal(true);
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        let index = Index {
            db,
            log_start,
            unlogged,
            synced,
        };
        let start = index.get_meta_u64(META_LOG_START)?.unwrap_or(0);
        index.log_start.store(start, Ordering::Relaxed);
        Ok(index)
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or(StorageError::MissingColumnFamily(name))
    }

    /// Writes a batch of derived entries without the WAL.
    pub(crate) fn write_derived(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.db
            .write_opt(batch, &self.unlogged)
            .map_err(StorageError::index("write"))
    }

    /// Writes a batch durably (WAL, synced).
    pub(crate) fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.db
            .write_opt(batch, &self.synced)
            .map_err(StorageError::index("synced write"))
    }

    /// Writes a batch to the WAL without waiting for an fsync: it survives a process crash (the
    /// WAL write reaches the page cache) but not a power loss until [`Self::sync_wal`].
    pub(crate) fn write_unsynced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.db
            .write(batch)
            .map_err(StorageError::index("unsynced write"))
    }

    /// Fsyncs the WAL, making every earlier unsynced write durable.
    pub(crate) fn sync_wal(&self) -> Result<(), StorageError> {
        self.db
            .flush_wal(true)
            .map_err(StorageError::index("WAL sync"))
    }

    /// Flushes all memtables, so that a restart needs no re-indexing.
    pub(crate) fn flush(&self) -> Result<(), StorageError> {
        let families: Vec<&ColumnFamily> = DERIVED_FAMILIES
            .iter()
            .chain(STATE_FAMILIES.iter())
            .filter_map(|name| self.db.cf_handle(name))
            .collect();
        self.db
            .flush_cfs_opt(&families, &rocksdb::FlushOptions::default())
            .map_err(StorageError::index("flush"))
    }

    pub(crate) fn get(
        &self,
        family: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .get_cf(self.cf(family)?, key)
            .map_err(StorageError::index("get"))
    }

    pub(crate) fn get_meta_u64(&self, key: &[u8]) -> Result<Option<u64>, StorageError> {
        Ok(self
            .get(CF_META, key)?
            .as_deref()
            .and_then(position_of_value))
    }

    pub(crate) fn set_log_start(&self, start: u64) {
        self.log_start.store(start, Ordering::Relaxed);
    }

    /// Iterates a column family forward from `from`, calling `visit` until it returns false.
    pub(crate) fn scan_from(
        &self,
        family: &'static str,
        from: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let iterator = self.db.iterator_cf(
            self.cf(family)?,
            IteratorMode::From(from, Direction::Forward),
        );
        for item in iterator {
            let (key, value) = item.map_err(StorageError::index("scan"))?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    /// The greatest key strictly below `key` that starts with `prefix`, with its value.
    pub(crate) fn prev_in_prefix(
        &self,
        family: &'static str,
        prefix: &[u8],
        key: &[u8],
    ) -> Result<Option<KeyValue>, StorageError> {
        let mut iterator = self.db.raw_iterator_cf(self.cf(family)?);
        iterator.seek_for_prev(key);
        if let Some((found, value)) = iterator.item() {
            let found = if found == key {
                iterator.prev();
                iterator.item()
            } else {
                Some((found, value))
            };
            if let Some((found, value)) = found
                && found.starts_with(prefix)
            {
                return Ok(Some((found.to_vec(), value.to_vec())));
            }
        }
        iterator.status().map_err(StorageError::index("seek"))?;
        Ok(None)
    }

    /// Every queue in the queue index with its next offset (one past its last key): one seek
    /// per queue, so start-up cost grows with the number of queues, not of records.
    pub(crate) fn queue_heads(
        &self,
    ) -> Result<std::collections::HashMap<(u32, u32), u64>, StorageError> {
        let mut heads = std::collections::HashMap::new();
        let mut iterator = self.db.raw_iterator_cf(self.cf(CF_QUEUE)?);
        iterator.seek_to_first();
        while let Some(key) = iterator.key() {
            let Some((topic, queue, _)) = decode_queue_key(key) else {
                iterator.next();
                continue;
            };
            let mut upper = queue_prefix(topic, queue).to_vec();
            upper.extend_from_slice(&[0xff; 8]);
            iterator.seek_for_prev(&upper);
            if let Some((_, _, last)) = iterator.key().and_then(decode_queue_key) {
                heads.insert((topic, queue), last + 1);
            }
            match queue.checked_add(1) {
                Some(next_queue) => iterator.seek(queue_prefix(topic, next_queue)),
                None => match topic.checked_add(1) {
                    Some(next_topic) => iterator.seek(queue_prefix(next_topic, 0)),
                    None => break,
                },
            }
        }
        iterator
            .status()
            .map_err(StorageError::index("scan queue heads"))?;
        Ok(heads)
    }

    pub(crate) fn delete_range(
        &self,
        family: &'static str,
        from: &[u8],
        to: &[u8],
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(family)?, from, to);
        self.write_derived(batch)
    }

    /// Compacts the families whose stale entries the compaction filter removes.
    pub(crate) fn compact_derived(&self) -> Result<(), StorageError> {
        for name in [CF_QUEUE, CF_MSGID, CF_TOPIC_MSGID, CF_KEY, CF_TIME] {
            self.db
                .compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}

/// `topic_msgid` key: topic id, then the message id.
pub(crate) fn topic_msgid_key(topic_id: u32, message_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + message_id.len());
    key.extend_from_slice(&topic_id.to_be_bytes());
    key.extend_from_slice(message_id.as_bytes());
    key
}

/// Queue index key.
pub(crate) fn queue_key(topic_id: u32, queue_id: u32, offset: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&topic_id.to_be_bytes());
    key[4..8].copy_from_slice(&queue_id.to_be_bytes());
    key[8..].copy_from_slice(&offset.to_be_bytes());
    key
}

pub(crate) fn queue_prefix(topic_id: u32, queue_id: u32) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..4].copy_from_slice(&topic_id.to_be_bytes());
    key[4..].copy_from_slice(&queue_id.to_be_bytes());
    key
}

pub(crate) fn decode_queue_key(key: &[u8]) -> Option<(u32, u32, u64)> {
    if key.len() != 16 {
        return None;
    }
    let topic = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    let queue = u32::from_be_bytes([key[4], key[5], key[6], key[7]]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&key[8..]);
    Some((topic, queue, u64::from_be_bytes(offset)))
}

pub(crate) fn queue_value(entry: QueueEntry) -> [u8; 12] {
    let mut value = [0u8; 12];
    value[..8].copy_from_slice(&entry.position.to_le_bytes());
    value[8..].copy_from_slice(&entry.frame_len.to_le_bytes());
    value
}

pub(crate) fn decode_queue_value(value: &[u8]) -> Option<QueueEntry> {
    let position = position_of_value(value)?;
    let len = value.get(8..12)?;
    Some(QueueEntry {
        position,
        frame_len: u32::from_le_bytes([len[0], len[1], len[2], len[3]]),
    })
}

pub(crate) fn key_index_key(topic_id: u32, key: &str, position: u64) -> Vec<u8> {
    let mut out = key_index_prefix(topic_id, key);
    out.extend_from_slice(&position.to_be_bytes());
    out
}

pub(crate) fn key_index_prefix(topic_id: u32, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 2 + key.len() + 8);
    out.extend_from_slice(&topic_id.to_be_bytes());
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

pub(crate) fn time_key(topic_id: u32, queue_id: u32, store_ms: u64, offset: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&queue_prefix(topic_id, queue_id));
    key[8..16].copy_from_slice(&store_ms.to_be_bytes());
    key[16..].copy_from_slice(&offset.to_be_bytes());
    key
}

pub(crate) fn decode_time_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 24 {
        return None;
    }
    let mut ms = [0u8; 8];
    ms.copy_from_slice(&key[8..16]);
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&key[16..]);
    Some((u64::from_be_bytes(ms), u64::from_be_bytes(offset)))
}

pub(crate) fn u64_value(value: u64) -> [u8; 8] {
    value.to_le_bytes()
}

pub(crate) fn decode_u64(value: &[u8]) -> Option<u64> {
    position_of_value(value)
}

pub(crate) fn put_u64(batch: &mut WriteBatch, family: &ColumnFamily, key: &[u8], value: u64) {
    batch.put_cf(family, key, u64_value(value));
}

/// The log position at the end of a key-index key.
pub(crate) fn decode_position_suffix(key: &[u8]) -> Option<u64> {
    position_of_key_suffix(key)
}
