//! Storage settings, with defaults and validation.

use std::path::PathBuf;

use crate::error::StorageError;

/// When an append counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged only after the record is fsynced; concurrent appends share one fsync.
    Sync,
    /// Acknowledged once the write reached the OS page cache; fsynced every
    /// `async_flush_interval_ms`. A process crash loses nothing, a power loss may lose the last
    /// interval.
    Async,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        })
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sync" => Ok(Durability::Sync),
            "async" => Ok(Durability::Async),
            other => Err(format!(
                "unknown durability mode {other:?}; use \"sync\" or \"async\""
            )),
        }
    }
}

/// How much of the sealed log to check when the storage opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOnOpen {
    /// Re-read a sealed segment only when its length or modification time differs from what was
    /// recorded when it was sealed (cheap: start-up does not read gigabytes).
    Changed,
    /// Re-read and check every sealed segment.
    All,
}

/// Settings of one cell's commit log and index.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory holding `log/` (segments) and `index/` (RocksDB).
    pub dir: PathBuf,
    /// Region written as the origin of local appends.
    pub region: String,
    /// When an append is acknowledged.
    pub durability: Durability,
    /// Size at which the active segment is sealed and a new one started.
    pub segment_size_bytes: u64,
    /// Longest time the flusher waits for more appends before an fsync, once one is pending.
    /// Zero flushes as soon as the previous fsync finished; appends that arrive during an fsync
    /// share the next one either way.
    pub group_commit_max_wait_us: u64,
    /// Most bytes written with one write call and made durable by one fsync.
    pub group_commit_max_bytes: usize,
    /// Most fsyncs of the log in flight at once in `sync` mode. With more than one, an append
    /// written while an fsync runs gets its own fsync started at once instead of waiting for the
    /// running one to finish; each fsync still covers everything written before it started.
    pub max_concurrent_fsyncs: usize,
    /// Interval of the background fsync in `async` mode.
    pub async_flush_interval_ms: u64,
    /// Most appends queued for the writer; further appends wait (backpressure).
    pub max_pending_appends: usize,
    /// Most index batches queued between the writer and the indexer.
    pub max_pending_index_batches: usize,
    /// Remove sealed segments whose newest record is older than this; `None` keeps them.
    pub retention_max_age_ms: Option<u64>,
    /// Remove the oldest sealed segments while the log is larger than this; `None` for no limit.
    pub retention_max_total_bytes: Option<u64>,
    /// Skip corrupt records found at start-up (logging the damaged ranges) instead of refusing
    /// to start.
    pub repair: bool,
    /// How much of the sealed log to check at start-up.
    pub verify_on_open: VerifyOnOpen,
    /// RocksDB block cache for the index.
    pub index_block_cache_bytes: usize,
    /// RocksDB memtable size per column family.
    pub index_write_buffer_bytes: usize,
}

/// One GiB, the default segment size.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 1 << 30;
const MIN_SEGMENT_SIZE_BYTES: u64 = 4096;
/// Upper bound of `max_concurrent_fsyncs`: more threads than this only add contention.
const MAX_CONCURRENT_FSYNCS: usize = 16;

impl StorageConfig {
    /// Defaults for a cell storing under `dir` for `region`.
    pub fn new(dir: impl Into<PathBuf>, region: impl Into<String>) -> Self {
        StorageConfig {
            dir: dir.into(),
            region: region.into(),
            durability: Durability::Sync,
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            group_commit_max_wait_us: 0,
            group_commit_max_bytes: 4 << 20,
            async_flush_interval_ms: 200,
            max_concurrent_fsyncs: 1,
            max_pending_appends: 65_536,
            max_pending_index_batches: 1024,
            retention_max_age_ms: None,
            retention_max_total_bytes: None,
            repair: false,
            verify_on_open: VerifyOnOpen::Changed,
            index_block_cache_bytes: 64 << 20,
            index_write_buffer_bytes: 64 << 20,
        }
    }

    /// Checks every field; the error names the field and what would be valid.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid = |field, reason: String| Err(StorageError::InvalidConfig { field, reason });
        if self.region.is_empty() || self.region.len() > 64 {
            return invalid("region", "must be 1 to 64 bytes".into());
        }
        if self.segment_size_bytes < MIN_SEGMENT_SIZE_BYTES {
            return invalid(
                "segment_size_bytes",
                format!(
                    "{} is too small; use at least {MIN_SEGMENT_SIZE_BYTES}",
                    self.segment_size_bytes
                ),
            );
        }
        if self.group_commit_max_bytes == 0 {
            return invalid("group_commit_max_bytes", "must be at least 1".into());
        }
        if self.group_commit_max_wait_us > 1_000_000 {
            return invalid(
                "group_commit_max_wait_us",
                "must be at most 1,000,000 (one second)".into(),
            );
        }
        if !(1..=MAX_CONCURRENT_FSYNCS).contains(&self.max_concurrent_fsyncs) {
            return invalid(
                "max_concurrent_fsyncs",
                format!(
                    "{} is out of range; use 1 to {MAX_CONCURRENT_FSYNCS}",
                    self.max_concurrent_fsyncs
                ),
            );
        }
        if self.async_flush_interval_ms == 0 {
            return invalid("async_flush_interval_ms", "must be at least 1".into());
        }
        if self.max_pending_appends == 0 {
            return invalid("max_pending_appends", "must be at least 1".into());
        }
        if self.max_pending_index_batches == 0 {
            return invalid("max_pending_index_batches", "must be at least 1".into());
        }
        if self.retention_max_total_bytes == Some(0) {
            return invalid(
                "retention_max_total_bytes",
                "must be positive, or unset for no limit".into(),
            );
        }
        Ok(())
    }

    /// Directory of the segment files.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Directory of the RocksDB index.
    pub fn index_dir(&self) -> PathBuf {
        self.dir.join("index")
    }
}
