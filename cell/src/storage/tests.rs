//! Storage engine tests on a real RocksDB and real files in a temporary directory.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::clock::Hlc;

pub(crate) fn config(dir: &std::path::Path, durability: Durability) -> StorageConfig {
    let mut config = StorageConfig::new(dir, "us-east");
    config.durability = durability;
    config.index_block_cache_bytes = 8 << 20;
    config.index_write_buffer_bytes = 4 << 20;
    config
}

pub(crate) fn hlc() -> Arc<Hlc> {
    Arc::new(Hlc::system(Duration::from_millis(500)))
}

pub(crate) fn message(topic: &str, queue_id: u32, id: &str, body: &[u8]) -> NewRecord {
    NewRecord {
        message_id: id.to_string(),
        topic: topic.to_string(),
        queue_id,
        tags: format!("tag-{}", queue_id % 2),
        keys: vec![format!("key-{id}"), "shared-key".to_string()],
        properties: BTreeMap::from([("id".to_string(), id.to_string())]),
        body: body.to_vec(),
        born_timestamp_ms: 1_700_000_000_000,
        ..NewRecord::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Appends and waits until the records are visible to readers.
pub(crate) fn append_visible(storage: &Storage, records: Vec<NewRecord>) -> Vec<Appended> {
    let appended = storage.append_blocking(records).unwrap();
    let end = appended.iter().map(|a| a.position).max().unwrap_or(0);
    wait_visible(storage, end);
    appended
}

pub(crate) fn wait_visible(storage: &Storage, position: u64) {
    for _ in 0..5000 {
        if storage.log_range().1 > position {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("position {position} never became visible");
}

#[test]
fn append_then_read_by_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), Durability::Sync), hlc()).unwrap();
    let mut sent = Vec::new();
    for index in 0..40u32 {
        let mut record = message(
            if index % 2 == 0 { "orders" } else { "payments" },
            index % 4,
            &format!("m{index}"),
            format!("body {index}").as_bytes(),
        );
        record.message_type = MessageType::Fifo;
        record.message_group = format!("group-{}", index % 3);
        record.delivery_timestamp_ms = u64::from(index);
        sent.push(record);
    }
    let appended = append_visible(&storage, sent.clone());
    assert_eq!(appended.len(), 40);

    // By queue: offsets are dense per (topic, queue) and every field comes back.
    for (topic, queue) in [
        ("orders", 0),
        ("orders", 2),
        ("payments", 1),
        ("payments", 3),
    ] {
        let records = storage
            .read_queue(topic, queue, 0, 100, usize::MAX)
            .unwrap();
        assert_eq!(records.len(), 10, "{topic}/{queue}");
        for (offset, record) in records.iter().enumerate() {
            assert_eq!(record.queue_offset, offset as u64);
            let original = sent
                .iter()
                .find(|new| new.message_id == record.message_id)
                .unwrap();
            assert_eq!(record.topic, original.topic);
            assert_eq!(record.queue_id, original.queue_id);
            assert_eq!(record.body, original.body);
            assert_eq!(record.tags, original.tags);
            assert_eq!(record.keys, original.keys);
            assert_eq!(record.properties, original.properties);
            assert_eq!(record.message_type, MessageType::Fifo);
            assert_eq!(record.message_group, original.message_group);
            assert_eq!(record.born_timestamp_ms, original.born_timestamp_ms);
            assert_eq!(record.delivery_timestamp_ms, original.delivery_timestamp_ms);
            assert_eq!(record.origin.region, "us-east");
            assert!(record.hlc > 0 && record.store_timestamp_ms > 1_700_000_000_000);
        }
        assert_eq!(
            storage.queue_range(topic, queue),
            Some(QueueRange {
                earliest: 0,
                next: 10
            })
        );
    }
    // Reading from the middle, with a count and a byte limit.
    let records = storage.read_queue("orders", 0, 3, 2, usize::MAX).unwrap();
    assert_eq!(
        records.iter().map(|r| r.queue_offset).collect::<Vec<_>>(),
        vec![3, 4]
    );
    let one = storage.read_queue("orders", 0, 3, 100, 1).unwrap();
    assert_eq!(
        one.len(),
        1,
        "at least one record even when it exceeds max_bytes"
    );
    assert!(
        storage
            .read_queue("orders", 0, 10, 100, usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert!(
        storage
            .read_queue("nope", 0, 0, 100, usize::MAX)
            .unwrap()
            .is_empty()
    );

    // By id and by log position.
    let (position, record) = storage.read_by_id("m17").unwrap().unwrap();
    assert_eq!(record.body, b"body 17");
    assert_eq!(position, appended[17].position);
    assert_eq!(
        record.origin.offset, position,
        "local records are their own origin"
    );
    assert_eq!(storage.read_at(position).unwrap(), record);
    assert!(storage.read_by_id("missing").unwrap().is_none());

    // By key.
    let by_key = storage.read_by_key("orders", "key-m6", 10).unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].message_id, "m6");
    assert_eq!(
        storage
            .read_by_key("orders", "shared-key", 100)
            .unwrap()
            .len(),
        20
    );
    assert_eq!(
        storage
            .read_by_key("orders", "shared-key", 5)
            .unwrap()
            .len(),
        5
    );

    // By time: before everything -> 0, after everything -> next offset.
    assert_eq!(storage.seek_by_time("orders", 0, 0).unwrap(), 0);
    assert_eq!(storage.seek_by_time("orders", 0, u64::MAX / 2).unwrap(), 10);
    let third = storage
        .read_queue("orders", 0, 3, 1, usize::MAX)
        .unwrap()
        .remove(0);
    let sought = storage
        .seek_by_time("orders", 0, third.store_timestamp_ms)
        .unwrap();
    assert!(sought <= 3);
    let at_sought = storage
        .read_queue("orders", 0, sought, 1, usize::MAX)
        .unwrap()
        .remove(0);
    assert_eq!(at_sought.store_timestamp_ms, third.store_timestamp_ms);

    // Log order scan.
    let log = storage.read_log(0, 1000, usize::MAX).unwrap();
    assert_eq!(log.len(), 40);
    assert_eq!(
        log.iter()
            .map(|(_, _, r)| r.message_id.clone())
            .collect::<Vec<_>>(),
        sent.iter()
            .map(|r| r.message_id.clone())
            .collect::<Vec<_>>()
    );
    let (second_position, _, _) = log[1];
    assert_eq!(log[0].0 + u64::from(log[0].1), second_position);
}

#[test]
fn seek_by_time_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), Durability::Async), hlc()).unwrap();
    for round in 0..5 {
        append_visible(
            &storage,
            (0..20)
                .map(|i| message("t", 0, &format!("r{round}-{i}"), b"x"))
                .collect(),
        );
        std::thread::sleep(Duration::from_millis(3));
    }
    let all = storage.read_queue("t", 0, 0, 1000, usize::MAX).unwrap();
    for record in &all {
        let sought = storage
            .seek_by_time("t", 0, record.store_timestamp_ms)
            .unwrap();
        let first_same_ms = all
            .iter()
            .find(|r| r.store_timestamp_ms >= record.store_timestamp_ms)
            .unwrap();
        assert_eq!(sought, first_same_ms.queue_offset);
    }
}

#[test]
fn reopen_keeps_everything_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = Storage::open(config(dir.path(), Durability::Sync), hlc()).unwrap();
        append_visible(
            &storage,
            (0..10)
                .map(|i| message("t", 1, &format!("a{i}"), b"first"))
                .collect(),
        );
    }
    let storage = Storage::open(config(dir.path(), Durability::Sync), hlc()).unwrap();
    assert_eq!(
        storage.recovery_report().reindexed_records,
        0,
        "a clean close needs no re-indexing"
    );
    assert_eq!(storage.recovery_report().truncated_bytes, 0);
    let appended = append_visible(&storage, vec![message("t", 1, "b0", b"second")]);
    assert_eq!(appended[0].queue_offset, 10);
    let records = storage.read_queue("t", 1, 0, 100, usize::MAX).unwrap();
    assert_eq!(records.len(), 11);
    assert_eq!(records[10].body, b"second");
}

#[test]
fn lost_index_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Sync);
    {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        append_visible(
            &storage,
            (0..50)
                .map(|i| message("t", i % 5, &format!("m{i}"), b"x"))
                .collect(),
        );
    }
    std::fs::remove_dir_all(cfg.index_dir()).unwrap();
    let storage = Storage::open(cfg, hlc()).unwrap();
    assert_eq!(storage.recovery_report().reindexed_records, 50);
    for queue in 0..5 {
        assert_eq!(
            storage
                .read_queue("t", queue, 0, 100, usize::MAX)
                .unwrap()
                .len(),
            10
        );
    }
    assert!(storage.read_by_id("m42").unwrap().is_some());
    assert_eq!(storage.read_by_key("t", "key-m42", 10).unwrap().len(), 1);
    assert_eq!(
        append_visible(&storage, vec![message("t", 0, "new", b"y")])[0].queue_offset,
        10
    );
}

#[test]
fn concurrent_sync_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::open(config(dir.path(), Durability::Sync), hlc()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let appends_per_task = 20;
    let last_position = runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..64 {
            let storage = Arc::clone(&storage);
            tasks.push(tokio::spawn(async move {
                let mut last = 0;
                for i in 0..appends_per_task {
                    let appended = storage
                        .append(vec![message(
                            "t",
                            task % 8,
                            &format!("{task}-{i}"),
                            &[7; 512],
                        )])
                        .await
                        .unwrap();
                    last = last.max(appended[0].position);
                }
                last
            }));
        }
        let mut last = 0;
        for task in tasks {
            last = last.max(task.await.unwrap());
        }
        last
    });
    let records = storage.counters().appended_records.load(Ordering::Relaxed);
    let fsyncs = storage.counters().fsync_calls.load(Ordering::Relaxed);
    assert_eq!(records, 64 * appends_per_task as u64);
    assert!(
        fsyncs < records / 4,
        "group commit should share fsyncs: {fsyncs} fsyncs for {records} appends"
    );
    // Acknowledged records become visible once the indexer has caught up.
    wait_visible(&storage, last_position);
    for queue in 0..8 {
        let range = storage.queue_range("t", queue).unwrap();
        assert_eq!(range.next, 8 * appends_per_task as u64);
    }
}

#[test]
fn several_fsyncs_in_flight_acknowledge_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Sync);
    cfg.max_concurrent_fsyncs = 3;
    let storage = Arc::new(Storage::open(cfg.clone(), hlc()).unwrap());
    let mut handles = Vec::new();
    for thread in 0..8 {
        let storage = Arc::clone(&storage);
        handles.push(std::thread::spawn(move || {
            (0..25)
                .map(|i| {
                    storage
                        .append_blocking(vec![message(
                            "t",
                            thread,
                            &format!("{thread}-{i}"),
                            &[1; 256],
                        )])
                        .unwrap()[0]
                        .position
                })
                .max()
                .unwrap()
        }));
    }
    let last = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .max()
        .unwrap();
    wait_visible(&storage, last);
    for queue in 0..8 {
        assert_eq!(storage.queue_range("t", queue).unwrap().next, 25);
    }
    Arc::try_unwrap(storage).unwrap().close().unwrap();
    let reopened = Storage::open(cfg, hlc()).unwrap();
    assert_eq!(reopened.read_log(0, 1000, usize::MAX).unwrap().len(), 200);
}

#[test]
fn invalid_records_are_refused_without_harming_others() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), Durability::Sync), hlc()).unwrap();
    let mut too_big = message("t", 0, "big", b"");
    too_big.topic = "x".repeat(70_000);
    let error = storage
        .append_blocking(vec![message("t", 0, "ok-in-same-job", b"x"), too_big])
        .unwrap_err();
    assert!(matches!(error, StorageError::InvalidRecord(_)), "{error}");
    assert!(error.to_string().contains("topic"), "{error}");
    let appended = append_visible(&storage, vec![message("t", 0, "ok", b"x")]);
    assert_eq!(
        appended[0].queue_offset, 0,
        "a refused job must not consume offsets"
    );
    assert!(storage.read_by_id("ok-in-same-job").unwrap().is_none());
}

#[test]
fn failed_fsync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Sync);
    {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        append_visible(&storage, vec![message("t", 0, "before", b"x")]);
        storage.inject_fsync_failure();
        let error = storage
            .append_blocking(vec![message("t", 0, "during", b"x")])
            .unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Poisoned {
                    operation: "fsync",
                    ..
                }
            ),
            "{error}"
        );
        let error = storage
            .append_blocking(vec![message("t", 0, "after", b"x")])
            .unwrap_err();
        assert!(matches!(error, StorageError::Poisoned { .. }), "{error}");
        assert!(error.to_string().contains("refuses writes"));
    }
    let storage = Storage::open(cfg, hlc()).unwrap();
    assert!(storage.read_by_id("before").unwrap().is_some());
    assert!(storage.read_by_id("after").unwrap().is_none());
    append_visible(&storage, vec![message("t", 0, "again", b"x")]);
}

#[test]
fn config_errors_name_the_field() {
    let mut cfg = StorageConfig::new("/tmp/x", "r");
    cfg.segment_size_bytes = 10;
    let error = cfg.validate().unwrap_err().to_string();
    assert!(error.contains("segment_size_bytes"), "{error}");
    let mut cfg = StorageConfig::new("/tmp/x", "r");
    cfg.max_concurrent_fsyncs = 0;
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("max_concurrent_fsyncs")
    );
    let mut cfg = StorageConfig::new("/tmp/x", "");
    cfg.segment_size_bytes = DEFAULT_SEGMENT_SIZE_BYTES;
    assert!(cfg.validate().unwrap_err().to_string().contains("region"));
    assert!("fast".parse::<Durability>().unwrap_err().contains("sync"));
}

#[test]
fn state_families_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Async);
    {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        storage
            .put_state(CF_CONSUMER_OFFSETS, b"group/t/0", b"42")
            .unwrap();
        storage
            .put_state(CF_REPLICATION_CHECKPOINTS, b"eu-west", b"1000")
            .unwrap();
    }
    let storage = Storage::open(cfg, hlc()).unwrap();
    assert_eq!(
        storage
            .get_state(CF_CONSUMER_OFFSETS, b"group/t/0")
            .unwrap()
            .unwrap(),
        b"42"
    );
    storage
        .delete_state(CF_CONSUMER_OFFSETS, b"group/t/0")
        .unwrap();
    assert!(
        storage
            .get_state(CF_CONSUMER_OFFSETS, b"group/t/0")
            .unwrap()
            .is_none()
    );
    assert_eq!(
        storage
            .get_state(CF_REPLICATION_CHECKPOINTS, b"eu-west")
            .unwrap()
            .unwrap(),
        b"1000"
    );
}

#[test]
fn visibility_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), Durability::Sync), hlc()).unwrap();
    let runtime = runtime();
    let mut watcher = storage.subscribe();
    let before = *watcher.borrow();
    let appended = runtime
        .block_on(storage.append(vec![message("t", 0, "w", b"x")]))
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            while *watcher.borrow_and_update() <= appended[0].position {
                watcher.changed().await.unwrap();
            }
        })
        .await
        .unwrap();
    });
    assert!(*watcher.borrow() > before);
    assert_eq!(
        storage.read_queue("t", 0, 0, 10, usize::MAX).unwrap().len(),
        1
    );
}

static MANUAL_CLOCK_MS: AtomicU64 = AtomicU64::new(1_700_000_000_000);

fn manual_clock() -> uhlc::NTP64 {
    uhlc::NTP64::from(Duration::from_millis(
        MANUAL_CLOCK_MS.load(Ordering::SeqCst),
    ))
}

#[test]
fn retention_by_age_removes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Durability::Async);
    cfg.segment_size_bytes = 4096;
    cfg.retention_max_age_ms = Some(60_000);
    let clock = Arc::new(Hlc::with_physical_clock(
        manual_clock,
        Duration::from_secs(3600),
    ));
    let storage = Storage::open(cfg, Arc::clone(&clock)).unwrap();
    MANUAL_CLOCK_MS.store(1_700_000_000_000, Ordering::SeqCst);
    append_visible(
        &storage,
        (0..40)
            .map(|i| message("t", 0, &format!("old{i}"), &[1; 300]))
            .collect(),
    );
    assert_eq!(
        storage.enforce_retention().unwrap().removed_segments,
        0,
        "nothing is old yet"
    );
    MANUAL_CLOCK_MS.store(1_700_000_600_000, Ordering::SeqCst);
    append_visible(
        &storage,
        (0..40)
            .map(|i| message("t", 0, &format!("new{i}"), &[2; 300]))
            .collect(),
    );
    let report = storage.enforce_retention().unwrap();
    assert!(report.removed_segments >= 2, "{report:?}");
    let range = storage.queue_range("t", 0).unwrap();
    assert!(range.earliest > 0 && range.earliest <= 40, "{range:?}");
    assert!(storage.read_by_id("new0").unwrap().is_some());
    for record in storage
        .read_queue("t", 0, range.earliest, 1000, usize::MAX)
        .unwrap()
    {
        assert!(record.store_timestamp_ms >= 1_700_000_000_000);
    }
}
