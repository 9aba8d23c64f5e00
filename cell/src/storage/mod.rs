//! The cell's storage engine: an append-only commit log in segment files, indexed in RocksDB.
//!
//! Three threads carry an append (see ARCHITECTURE.md for the whole path):
//! - the **writer** takes appends from a bounded queue, assigns queue offsets and HLC stamps,
//!   encodes a whole group of appends into one buffer and writes it with one positional write;
//! - the **flusher** fsyncs the active segment; in `sync` mode every append waits for the first
//!   fsync that starts after its write, so all appends that arrive during an fsync share the next
//!   one (group commit); in `async` mode appends are acknowledged after the write and the flusher
//!   fsyncs on an interval;
//! - the **indexer** writes the index entries of each group to RocksDB (in `sync` mode only once
//!   the group is durable, so the index never points at data a crash could take back) and then
//!   makes the records visible to readers.
//!
//! Readers never take a lock the writer holds across IO: they look up the index, clone the `Arc`
//! of a segment and read it with positional reads.
//!
//! A failed write or fsync poisons the log: every pending and later append fails with
//! [`StorageError::Poisoned`] until the cell restarts and recovers from what is on disk.

mod config;
mod flusher;
mod index;
mod indexer;
mod read;
pub mod record;
mod recovery;
mod retention;
mod segment;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{DEFAULT_SEGMENT_SIZE_BYTES, Durability, StorageConfig, VerifyOnOpen};
pub use index::{CF_CONSUMER_OFFSETS, CF_REPLICATION_CHECKPOINTS};
pub use read::QueueRange;
pub use record::{MessageType, NewRecord, Origin, Record, RecordKind, ReplicatedFrom};
pub use recovery::RecoveryReport;
pub use retention::RetentionReport;

use crate::clock::Hlc;
use crate::error::StorageError;
use index::Index;
use segment::{Segment, SegmentMap};

/// What the log assigned to one appended record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Log position of the record's frame.
    pub position: u64,
    /// Offset within its queue.
    pub queue_offset: u64,
    /// Store timestamp, ms.
    pub store_timestamp_ms: u64,
    /// HLC stamp (the origin's for replicated records).
    pub hlc: u64,
}

type AppendReply = oneshot::Sender<Result<Vec<Appended>, StorageError>>;

/// One call to append: its records are written together, in order, in one group.
struct AppendJob {
    records: Vec<NewRecord>,
    reply: AppendReply,
}

/// A queue inside the index: (topic id, queue id).
pub(crate) type QueueId = (u32, u32);

/// Readers' view of one queue.
#[derive(Debug)]
pub(crate) struct QueueState {
    /// Offsets below this are visible (indexed and, in `sync` mode, durable).
    pub(crate) next_offset: AtomicU64,
    /// Earliest offset still retained.
    pub(crate) min_offset: AtomicU64,
}

/// Appends waiting for an fsync (sync mode).
pub(crate) struct PendingAck {
    /// Log position up to which the group must be durable.
    pub(crate) end: u64,
    pub(crate) replies: Vec<(AppendReply, Vec<Appended>)>,
}

#[derive(Default)]
pub(crate) struct FlushQueue {
    pub(crate) pending: std::collections::VecDeque<PendingAck>,
    pub(crate) shutdown: bool,
    /// The furthest log position an fsync has been started for.
    pub(crate) fsync_started_up_to: u64,
}

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct StorageCounters {
    /// Records appended.
    pub appended_records: AtomicU64,
    /// Bytes appended, frame headers included.
    pub appended_bytes: AtomicU64,
    /// Write calls to segment files.
    pub write_calls: AtomicU64,
    /// fsync calls on segment files.
    pub fsync_calls: AtomicU64,
    /// Index batches written.
    pub index_batches: AtomicU64,
}

/// State shared by the facade and the three threads.
pub(crate) struct Shared {
    pub(crate) config: StorageConfig,
    pub(crate) hlc: Arc<Hlc>,
    pub(crate) index: Index,
    pub(crate) segments: RwLock<SegmentMap>,
    /// The segment the writer appends to; the flusher fsyncs it.
    pub(crate) active: Mutex<Arc<Segment>>,
    pub(crate) topics: RwLock<HashMap<String, u32>>,
    pub(crate) queues: RwLock<HashMap<QueueId, Arc<QueueState>>>,
    pub(crate) log_start: AtomicU64,
    pub(crate) written_end: AtomicU64,
    pub(crate) durable_end: AtomicU64,
    pub(crate) indexed_end: AtomicU64,
    poison: Mutex<Option<(&'static str, Arc<std::io::Error>)>>,
    poisoned: AtomicBool,
    pub(crate) flush_queue: Mutex<FlushQueue>,
    /// Wakes the flusher (new writes, shutdown) and the indexer (new durable data).
    pub(crate) flush_signal: Condvar,
    pub(crate) durable_signal: Condvar,
    pub(crate) indexed_tx: watch::Sender<u64>,
    pub(crate) counters: StorageCounters,
    /// Fault injection: the next fsync fails.
    fail_next_fsync: AtomicBool,
}

impl Shared {
    /// fdatasync of a segment, through the fault-injection hook.
    pub(crate) fn sync_segment(&self, segment: &Segment) -> std::io::Result<()> {
        if self.fail_next_fsync.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        segment.file.sync_data()
    }

    pub(crate) fn poison(&self, operation: &'static str, error: std::io::Error) {
        tracing::error!(operation, %error, "commit log poisoned; refusing further writes");
        {
            // Released before taking the flush queue's lock: `wait_durable` takes them the other
            // way round.
            let mut slot = self.poison.lock();
            if slot.is_none() {
                *slot = Some((operation, Arc::new(error)));
            }
        }
        self.poisoned.store(true, Ordering::Release);
        // Wake everyone who waits on durability so that they see the poison.
        let _queue = self.flush_queue.lock();
        self.flush_signal.notify_all();
        self.durable_signal.notify_all();
    }

    pub(crate) fn poison_error(&self) -> Option<StorageError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.poison
            .lock()
            .as_ref()
            .map(|(operation, cause)| StorageError::Poisoned {
                operation,
                cause: Arc::clone(cause),
            })
    }

    pub(crate) fn queue_state(&self, topic_id: u32, queue_id: u32) -> Option<Arc<QueueState>> {
        self.queues.read().get(&(topic_id, queue_id)).cloned()
    }

    pub(crate) fn topic_id(&self, topic: &str) -> Option<u32> {
        self.topics.read().get(topic).copied()
    }
}

/// One cell's commit log and index. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Storage {
    shared: Arc<Shared>,
    jobs: Mutex<Option<mpsc::Sender<AppendJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Storage")
            .field("dir", &self.shared.config.dir)
            .field("durability", &self.shared.config.durability)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens the storage in `config.dir`, recovering from whatever a crash left there: a torn
    /// tail is truncated, records the index missed are re-indexed, and a corrupt record in the
    /// middle of the log stops the start with an error naming the segment and offset (unless
    /// `config.repair` is set).
    pub fn open(config: StorageConfig, hlc: Arc<Hlc>) -> Result<Self, StorageError> {
        config.validate()?;
        let recovered = recovery::recover(&config, &hlc)?;
        let (indexed_tx, _) = watch::channel(recovered.end);
        let shared = Arc::new(Shared {
            hlc,
            index: recovered.index,
            segments: RwLock::new(recovered.segments),
            active: Mutex::new(Arc::clone(&recovered.active)),
            topics: RwLock::new(recovered.topics.clone()),
            queues: RwLock::new(recovered.queues),
            log_start: AtomicU64::new(recovered.log_start),
            written_end: AtomicU64::new(recovered.end),
            durable_end: AtomicU64::new(recovered.end),
            indexed_end: AtomicU64::new(recovered.end),
            poison: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            flush_queue: Mutex::new(FlushQueue::default()),
            flush_signal: Condvar::new(),
            durable_signal: Condvar::new(),
            indexed_tx,
            counters: StorageCounters::default(),
            fail_next_fsync: AtomicBool::new(false),
            config,
        });
        let (jobs_tx, jobs_rx) = mpsc::channel(shared.config.max_pending_appends);
        let (index_tx, index_rx) =
            crossbeam_channel::bounded(shared.config.max_pending_index_batches);
        let writer_state = writer::WriterState::new(
            recovered.active,
            recovered.active_len,
            recovered.queue_next,
            recovered.topics,
            recovered.active_max_store_ms,
        );
        let mut threads = Vec::new();
        threads.push(spawn_named("meridian-log-writer", {
            let shared = Arc::clone(&shared);
            move || writer::run(&shared, jobs_rx, &index_tx, writer_state)
        })?);
        let flushers = match shared.config.durability {
            Durability::Sync => shared.config.max_concurrent_fsyncs,
            Durability::Async => 1,
        };
        for _ in 0..flushers {
            threads.push(spawn_named("meridian-log-flusher", {
                let shared = Arc::clone(&shared);
                move || flusher::run(&shared)
            })?);
        }
        threads.push(spawn_named("meridian-log-indexer", {
            let shared = Arc::clone(&shared);
            move || indexer::run(&shared, &index_rx)
        })?);
        Ok(Storage {
            shared,
            jobs: Mutex::new(Some(jobs_tx)),
            threads: Mutex::new(threads),
            recovery: recovered.report,
        })
    }

    /// What recovery found and did when this storage opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn sender(&self) -> Result<mpsc::Sender<AppendJob>, StorageError> {
        self.jobs.lock().clone().ok_or(StorageError::Closed)
    }

    /// Appends records as one group and resolves when they are stored as the durability mode
    /// promises. All records of one call are written together and in order.
    pub async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>, StorageError> {
        if let Some(error) = self.shared.poison_error() {
            return Err(error);
        }
        let (reply, result) = oneshot::channel();
        self.sender()?
            .send(AppendJob { records, reply })
            .await
            .map_err(|_| StorageError::Closed)?;
        result.await.map_err(|_| StorageError::Closed)?
    }

    /// [`Storage::append`] for callers outside an async runtime. Must not be called from within
    /// one (it blocks the thread).
    pub fn append_blocking(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>, StorageError> {
        if let Some(error) = self.shared.poison_error() {
            return Err(error);
        }
        let (reply, result) = oneshot::channel();
        self.sender()?
            .blocking_send(AppendJob { records, reply })
            .map_err(|_| StorageError::Closed)?;
        result.blocking_recv().map_err(|_| StorageError::Closed)?
    }

    /// A receiver of the log position up to which records are visible; it changes whenever new
    /// records become readable. Long polling waits on it instead of sleeping.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.indexed_tx.subscribe()
    }

    /// First retained log position and the position after the last visible record.
    pub fn log_range(&self) -> (u64, u64) {
        (
            self.shared.log_start.load(Ordering::Acquire),
            self.shared.indexed_end.load(Ordering::Acquire),
        )
    }

    /// The log position up to which the log is known to be fsynced. In `sync` mode every
    /// acknowledged append lies below it; in `async` mode it trails the visible end by up to
    /// `async_flush_interval_ms`. Whoever records progress derived from the log (e.g. a
    /// replication checkpoint) waits for this to pass the records the progress covers, so that a
    /// power loss cannot keep the progress and lose the records.
    pub fn durable_end(&self) -> u64 {
        self.shared.durable_end.load(Ordering::Acquire)
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &StorageCounters {
        &self.shared.counters
    }

    /// The region this log stores local appends for (`StorageConfig::region`).
    pub fn region(&self) -> &str {
        &self.shared.config.region
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.shared.config.durability
    }

    /// Stores `value` under `key` in a state column family ([`CF_CONSUMER_OFFSETS`],
    /// [`CF_REPLICATION_CHECKPOINTS`]); the write is synced before this returns.
    pub fn put_state(
        &self,
        family: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.shared.index.cf(family)?, key, value);
        self.shared.index.write_synced(batch)
    }

    /// Like [`Self::put_state`], but returns once the write is in RocksDB's WAL in the page
    /// cache, without an fsync: it survives a process crash, and a power loss only after the
    /// next [`Self::sync_state`] (or any synced state write). For state whose loss can only
    /// repeat work, such as consumer progress (a lost acknowledgement means a redelivery).
    pub fn put_state_unsynced(
        &self,
        family: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.put_states_unsynced(family, [(key, value)])
    }

    /// Several [`Self::put_state_unsynced`] writes as one atomic WAL write.
    pub fn put_states_unsynced<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        family: &'static str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), StorageError> {
        let cf = self.shared.index.cf(family)?;
        let mut batch = rocksdb::WriteBatch::default();
        for (key, value) in entries {
            batch.put_cf(cf, key, value);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.shared.index.write_unsynced(batch)
    }

    /// Removes every key in `from..to` of a state column family, through the WAL without an
    /// fsync (for state whose reappearance after a power loss is harmless).
    pub fn delete_state_range_unsynced(
        &self,
        family: &'static str,
        from: &[u8],
        to: &[u8],
    ) -> Result<(), StorageError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(self.shared.index.cf(family)?, from, to);
        self.shared.index.write_unsynced(batch)
    }

    /// Makes every earlier [`Self::put_state_unsynced`] write durable (one WAL fsync).
    pub fn sync_state(&self) -> Result<(), StorageError> {
        self.shared.index.sync_wal()
    }

    /// Reads a value from a state column family.
    pub fn get_state(
        &self,
        family: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.shared.index.get(family, key)
    }

    /// Removes a value from a state column family (synced).
    pub fn delete_state(&self, family: &'static str, key: &[u8]) -> Result<(), StorageError> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.shared.index.cf(family)?, key);
        self.shared.index.write_synced(batch)
    }

    /// Fault injection for drills and tests: the next fsync of the log fails, which poisons it
    /// exactly as a real disk error would.
    pub fn inject_fsync_failure(&self) {
        self.shared.fail_next_fsync.store(true, Ordering::Release);
    }

    /// Stops accepting appends, lets pending ones finish, stops the threads and flushes the
    /// index so that the next start needs no re-indexing. Called by `Drop` too.
    pub fn close(&self) -> Result<(), StorageError> {
        drop(self.jobs.lock().take());
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *self.threads.lock());
        if threads.is_empty() {
            return Ok(());
        }
        // The writer exits once the job queue is drained and closed; it then tells the flusher
        // and (by dropping its sender) the indexer to finish.
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a storage thread panicked");
            }
        }
        if self.shared.poison_error().is_none() {
            self.shared.index.flush()?;
        }
        Ok(())
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "closing storage");
        }
    }
}

fn spawn_named(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StorageError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .map_err(|error| StorageError::io("spawn thread", name, error))
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_hlc;
#[cfg(test)]
mod tests_recovery;
