//! RocksDB-backed openraft storage: one database per node with three column families.
//!
//! - `logs`: Raft log entries, key = index as 8 big-endian bytes (so key order is index
//!   order), value = serde-JSON `Entry`.
//! - `raft`: the vote, the committed log id and the last purged log id.
//! - `sm`: the latest state-machine snapshot (metadata and data).
//!
//! The state machine itself lives in memory and is rebuilt on restart from the snapshot plus
//! the committed log (openraft re-applies `(last_applied, committed]` at startup, which is why
//! the committed log id is saved). Log writes are synced before openraft is told they are
//! durable; the vote is synced before it is acknowledged.

// openraft's trait signatures fix the (large) error types returned here.
#![allow(clippy::result_large_err)]

mod log;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options};

pub use log::LogStore;
pub use state_machine::{StateMachineStore, StateView};

use crate::error::NodeError;
use crate::raft_types::StorageError;
use crate::state::Limits;

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_RAFT: &str = "raft";
pub(crate) const CF_SM: &str = "sm";

/// Opens (creating if needed) the node's database and returns its log store and state
/// machine, sharing the one database.
pub fn open(
    path: &Path,
    limits: Limits,
    change_log_capacity_revisions: usize,
) -> Result<(LogStore, StateMachineStore), NodeError> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    let families =
        [CF_LOGS, CF_RAFT, CF_SM].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db =
        DB::open_cf_descriptors(&options, path, families).map_err(|source| NodeError::Rocks {
            path: path.display().to_string(),
            source,
        })?;
    let db = Arc::new(db);
    let log = LogStore::new(Arc::clone(&db));
    let state_machine = StateMachineStore::open(db, limits, change_log_capacity_revisions)?;
    Ok((log, state_machine))
}

/// Column family handle; the families are created at open, so absence is a broken invariant
/// reported as a storage error rather than a panic.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StorageError> {
    db.cf_handle(name).ok_or_else(|| {
        let error = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("column family `{name}` missing"),
        );
        openraft::StorageIOError::read(&error).into()
    })
}
