//! Raft log and vote storage in RocksDB (`RaftLogReader` + `RaftLogStorage`).

// openraft's trait signatures fix the (large) error types returned here.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CF_LOGS, CF_RAFT, cf};
use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log of one node. Cloning shares the database; openraft uses clones as readers for
/// its replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    fn synced() -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        options
    }

    fn put_raft_key<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageIOError<u64>> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        let cf = cf(&self.db, CF_RAFT).map_err(|e| StorageIOError::write(&e))?;
        let options = if sync {
            Self::synced()
        } else {
            WriteOptions::default()
        };
        self.db
            .put_cf_opt(cf, key, bytes, &options)
            .map_err(|e| StorageIOError::write(&e))
    }

    fn get_raft_key<T: DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageIOError<u64>> {
        let cf = cf(&self.db, CF_RAFT).map_err(|e| StorageIOError::read(&e))?;
        match self
            .db
            .get_cf(cf, key)
            .map_err(|e| StorageIOError::read(&e))?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read(&e)),
        }
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let logs = cf(&self.db, CF_LOGS)?;
        match self.db.iterator_cf(logs, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry =
                    serde_json::from_slice(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry))
            }
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn start_index(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(start) => *start,
        Bound::Excluded(start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let logs = cf(&self.db, CF_LOGS)?;
        let start = index_key(start_index(&range));
        let mut entries = Vec::new();
        for item in self
            .db
            .iterator_cf(logs, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index_bytes: [u8; 8] = key.as_ref().try_into().map_err(|_| {
                let error =
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "log key is not 8 bytes");
                StorageIOError::read_logs(&error)
            })?;
            if !range.contains(&u64::from_be_bytes(index_bytes)) {
                break;
            }
            entries
                .push(serde_json::from_slice(&value).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_raft_key(KEY_LAST_PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_raft_key(KEY_VOTE, vote, true)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self
            .get_raft_key(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e))?)
    }

    /// Not synced: a lost committed id only means re-learning it from the leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        Ok(self.put_raft_key(KEY_COMMITTED, &committed, false)?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_raft_key::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let value = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(logs, index_key(entry.log_id.index), value);
        }
        // Synced before the callback: openraft counts these entries toward a quorum as soon as
        // the callback fires.
        let result = self.db.write_opt(batch, &Self::synced());
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(StorageIOError::write_logs(&error).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(logs, index_key(log_id.index), index_key(u64::MAX));
        self.db
            .write_opt(batch, &Self::synced())
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: if we crash between the two writes, the log state
        // still reports a consistent `last_purged_log_id` and the leftovers are unreachable.
        self.put_raft_key(KEY_LAST_PURGED, &log_id, true)?;
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            logs,
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
