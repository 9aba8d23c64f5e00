//! The openraft state machine (`RaftStateMachine` + `RaftSnapshotBuilder`): the in-memory
//! `State` behind a lock, its latest snapshot persisted in RocksDB, and a revision signal for
//! watchers.

// openraft's trait signatures fix the (large) error types returned here.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use parking_lot::RwLock;
use rocksdb::{DB, WriteBatch, WriteOptions};
use tokio::sync::watch;

use super::{CF_SM, cf};
use crate::error::NodeError;
use crate::raft_types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::state::{Applied, CommandResult, Limits, Outcome, State};

const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";

struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: State,
}

struct Shared {
    data: RwLock<AppliedState>,
    /// Current revision, so watchers wake on every change without polling.
    revision_tx: watch::Sender<u64>,
}

/// Read-only handle on the applied state, for the API server.
#[derive(Clone)]
pub struct StateView {
    shared: Arc<Shared>,
}

impl StateView {
    /// Runs `read` against the applied state under a read lock; keep it short.
    pub fn read<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.shared.data.read().state)
    }

    /// Index of the last applied log entry (0 before the first).
    pub fn last_applied_index(&self) -> u64 {
        self.shared
            .data
            .read()
            .last_applied
            .map(|log_id| log_id.index)
            .unwrap_or(0)
    }

    /// Wakes whenever the revision moves (changes are applied or a snapshot is installed).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.revision_tx.subscribe()
    }
}

/// The state machine store handed to openraft.
pub struct StateMachineStore {
    db: Arc<DB>,
    shared: Arc<Shared>,
    snapshot_counter: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Loads the latest snapshot if one exists; openraft then re-applies the committed log.
    pub(super) fn open(
        db: Arc<DB>,
        limits: Limits,
        change_log_capacity_revisions: usize,
    ) -> Result<Self, NodeError> {
        let mut data = AppliedState {
            last_applied: None,
            membership: StoredMembership::default(),
            state: State::new(limits, change_log_capacity_revisions),
        };
        if let Some(snapshot) = read_snapshot(&db)? {
            let state: State =
                serde_json::from_slice(snapshot.snapshot.get_ref()).map_err(|source| {
                    NodeError::Codec {
                        what: "state snapshot",
                        source,
                    }
                })?;
            data = AppliedState {
                last_applied: snapshot.meta.last_log_id,
                membership: snapshot.meta.last_membership.clone(),
                state,
            };
        }
        let (revision_tx, _) = watch::channel(data.state.revision());
        Ok(Self {
            db,
            shared: Arc::new(Shared {
                data: RwLock::new(data),
                revision_tx,
            }),
            snapshot_counter: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn view(&self) -> StateView {
        StateView {
            shared: Arc::clone(&self.shared),
        }
    }

    fn notify(&self, revision: u64) {
        self.shared.revision_tx.send_replace(revision);
    }
}

fn read_snapshot(db: &DB) -> Result<Option<Snapshot>, StorageError> {
    let sm = cf(db, CF_SM)?;
    let meta = db
        .get_cf(sm, KEY_SNAPSHOT_META)
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    let data = db
        .get_cf(sm, KEY_SNAPSHOT_DATA)
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    match (meta, data) {
        (Some(meta), Some(data)) => {
            let meta: SnapshotMeta = serde_json::from_slice(&meta)
                .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
            Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
        }
        _ => Ok(None),
    }
}

/// Both keys in one synced batch, so a crash never pairs new metadata with old data.
fn write_snapshot(db: &DB, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let signature = Some(meta.signature());
    let sm = cf(db, CF_SM)?;
    let meta_bytes = serde_json::to_vec(meta)
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
    let mut batch = WriteBatch::default();
    batch.put_cf(sm, KEY_SNAPSHOT_META, meta_bytes);
    batch.put_cf(sm, KEY_SNAPSHOT_DATA, data);
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(batch, &options)
        .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
    Ok(())
}

/// Builds snapshots from a clone of the shared state.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    shared: Arc<Shared>,
    snapshot_counter: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Serialise under the read lock so data, last_applied and membership agree.
        let (data, last_applied, membership) = {
            let guard = self.shared.data.read();
            let data = serde_json::to_vec(&guard.state)
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            (data, guard.last_applied, guard.membership.clone())
        };
        let counter = self.snapshot_counter.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(log_id) => format!("{}-{}-{counter}", log_id.leader_id.term, log_id.index),
            None => format!("none-{counter}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        write_snapshot(&self.db, &meta, &data)?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built state snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let guard = self.shared.data.read();
        Ok((guard.last_applied, guard.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let revision = {
            let mut guard = self.shared.data.write();
            for entry in entries {
                guard.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Normal(request) => guard.state.apply(&request),
                    EntryPayload::Membership(membership) => {
                        guard.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Ok(Applied {
                            revision: guard.state.revision(),
                            outcome: Outcome::Done,
                        })
                    }
                    EntryPayload::Blank => Ok(Applied {
                        revision: guard.state.revision(),
                        outcome: Outcome::Done,
                    }),
                };
                results.push(result);
            }
            guard.state.revision()
        };
        self.notify(revision);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: Arc::clone(&self.db),
            shared: Arc::clone(&self.shared),
            snapshot_counter: Arc::clone(&self.snapshot_counter),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: State = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // Persist first: if we crash after, restart loads this snapshot; before, the old one.
        write_snapshot(&self.db, meta, &data)?;
        let revision = state.revision();
        {
            let mut guard = self.shared.data.write();
            guard.state = state;
            guard.last_applied = meta.last_log_id;
            guard.membership = meta.last_membership.clone();
        }
        tracing::info!(snapshot = %meta.snapshot_id, revision, "installed state snapshot");
        self.notify(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        read_snapshot(&self.db)
    }
}
