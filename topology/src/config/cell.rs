//! `[cell]`: storage settings of every cell, as plain data. The cell crate maps them to its own types.

use serde::{Deserialize, Serialize};

/// One GiB, the default segment size.
const GIB: u64 = 1 << 30;
/// One MiB.
const MIB: u64 = 1 << 20;

/// Smallest `segment_size_bytes` accepted: below this, per-segment overhead (file handles, index
/// entries, fsync of metadata) dominates.
pub const SEGMENT_SIZE_BYTES_MIN: u64 = MIB;
/// Largest `segment_size_bytes` accepted: a segment is the unit retention deletes, so a huge one makes
/// retention coarse.
pub const SEGMENT_SIZE_BYTES_MAX: u64 = 64 * GIB;
/// Smallest `group_commit_max_bytes` accepted (one page).
pub const GROUP_COMMIT_BYTES_MIN: u64 = 4096;
/// Largest `group_commit_max_bytes` accepted: bounds the memory one commit batch may hold.
pub const GROUP_COMMIT_BYTES_MAX: u64 = 64 * MIB;
/// Largest `group_commit_max_wait_us` accepted (100 ms): a longer wait would dominate produce latency.
pub const GROUP_COMMIT_WAIT_US_MAX: u64 = 100_000;
/// Largest `async_flush_interval_ms` accepted (1 min): bounds what an `async` cell can lose on a crash.
pub const ASYNC_FLUSH_INTERVAL_MS_MAX: u64 = 60_000;
/// Largest `retention_max_age_s` accepted (10 years of 365 days).
pub const RETENTION_AGE_S_MAX: u64 = 10 * 365 * 24 * 3600;
/// Largest `retention_max_total_bytes` accepted (1 PiB), to catch unit mistakes.
pub const RETENTION_BYTES_MAX: u64 = 1 << 50;

/// When a cell acknowledges a produced message relative to making it durable on its local disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledge after the message is fsynced (group commit batches the fsyncs).
    #[default]
    Sync,
    /// Acknowledge after the message is written to the page cache; a background flush runs every
    /// `async_flush_interval_ms`. A machine crash can lose up to that much acknowledged data.
    Async,
}

/// Storage settings of each cell (`[cell]`). Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellConfig {
    /// Local durability of an acknowledged message. Default `sync`.
    pub durability: Durability,
    /// Size at which the log rolls to a new segment, in bytes. Default 1 GiB; 1 MiB ..= 64 GiB.
    pub segment_size_bytes: u64,
    /// How long a group commit waits for more writes before it fsyncs, in microseconds. Default 0:
    /// fsync as soon as the previous fsync is done; appends arriving during an fsync share the next
    /// one either way. 0 ..= 100000.
    pub group_commit_max_wait_us: u64,
    /// Most bytes written by one write call and made durable by one fsync. Default 4 MiB;
    /// 4 KiB ..= min(64 MiB, segment size).
    pub group_commit_max_bytes: u64,
    /// Period of the background flush under `async` durability, in milliseconds. Default 200;
    /// 1 ..= 60000.
    pub async_flush_interval_ms: u64,
    /// Age after which sealed segments are deleted, in seconds. Default 7 days (604800).
    pub retention_max_age_s: u64,
    /// Total log size above which the oldest sealed segments are deleted, in bytes; absent (the
    /// default) means no size limit. At least two segments when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_max_total_bytes: Option<u64>,
}

impl Default for CellConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            segment_size_bytes: GIB,
            // The same defaults as the cell crate's own `StorageConfig::new`, so a cell started from
            // a fabric file behaves like one built in code. Concurrent appends already share an fsync
            // without waiting, hence 0.
            group_commit_max_wait_us: 0,
            group_commit_max_bytes: 4 * MIB,
            async_flush_interval_ms: 200,
            // Seven days, the retention most brokers default to (Kafka's log.retention.hours = 168).
            retention_max_age_s: 7 * 24 * 3600,
            retention_max_total_bytes: None,
        }
    }
}
