//! RocksDB storage: openraft's storage conformance suite, and reopen-from-disk behaviour.

#![allow(clippy::unwrap_used)]

use meridian_meta::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use meridian_meta::state::{Command, Limits, Request};
use meridian_meta::store::{self, LogStore, StateMachineStore};
use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, RaftLogReader, RaftSnapshotBuilder, StorageIOError,
};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
        let (log, state_machine) = store::open(dir.path(), Limits::default(), 100)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, log, state_machine))
    }
}

#[test]
fn rocksdb_store_passes_the_openraft_conformance_suite() {
    Suite::test_all(RocksBuilder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn put_region(term: u64, index: u64, name: &str) -> Entry {
    let command = Command::PutRegion {
        name: name.into(),
        zone: "z".into(),
        endpoints: vec![],
    };
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request {
            issued_at_ms: 1,
            command,
        }),
    }
}

#[tokio::test]
async fn log_vote_and_snapshot_survive_reopen_and_purge_and_truncate_persist() {
    let dir = TempDir::new().unwrap();
    let entries = vec![
        Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        },
        put_region(1, 2, "eu"),
        put_region(1, 3, "us"),
        put_region(2, 4, "ap"),
    ];
    {
        let (mut log, mut state_machine) = store::open(dir.path(), Limits::default(), 100).unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        let results = state_machine.apply(entries[..3].to_vec()).await.unwrap();
        assert!(results.iter().all(|result| result.is_ok()));
        let snapshot = state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));
    }

    // Reopen: vote, log, committed id and snapshot are back; the state machine is restored
    // from the snapshot (revision 2: two regions).
    {
        let (mut log, mut state_machine) = store::open(dir.path(), Limits::default(), 100).unwrap();
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new_committed(2, 1))
        );
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(2, 4)));
        assert_eq!(state.last_purged_log_id, None);
        assert_eq!(log.try_get_log_entries(1..5).await.unwrap(), entries);
        assert_eq!(
            log.try_get_log_entries(2..=3).await.unwrap(),
            entries[1..3].to_vec()
        );
        let (applied, _) = state_machine.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
        assert_eq!(state_machine.view().read(|state| state.revision()), 2);
        assert!(
            state_machine
                .get_current_snapshot()
                .await
                .unwrap()
                .is_some()
        );

        log.purge(log_id(1, 2)).await.unwrap();
        log.truncate(log_id(2, 4)).await.unwrap();
    }

    // Reopen again: purge and truncation persisted.
    let (mut log, _state_machine) = store::open(dir.path(), Limits::default(), 100).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    assert_eq!(
        log.try_get_log_entries(0..10).await.unwrap(),
        entries[2..3].to_vec()
    );
    assert_eq!(log.get_log_id(3).await.unwrap(), log_id(1, 3));
}
