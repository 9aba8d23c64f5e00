//! Recovery, corruption, retention and scale tests.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::tests::{append_visible, config, hlc, message};
use super::*;

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    files.sort();
    files
}

fn small_segments(dir: &Path, durability: Durability) -> StorageConfig {
    let mut cfg = config(dir, durability);
    cfg.segment_size_bytes = 4096;
    cfg
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Async);
    {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        append_visible(
            &storage,
            (0..20)
                .map(|i| message("t", 0, &format!("m{i}"), b"body"))
                .collect(),
        );
    }
    // A write cut short by a crash: the first half of a valid frame.
    let frame = Record {
        kind: RecordKind::Message,
        message_id: "torn".into(),
        topic: "t".into(),
        queue_id: 0,
        queue_offset: 20,
        message_type: MessageType::Normal,
        tags: String::new(),
        keys: vec![],
        message_group: String::new(),
        properties: Default::default(),
        body: vec![9; 200],
        born_timestamp_ms: 0,
        store_timestamp_ms: 0,
        hlc: 0,
        delivery_timestamp_ms: 0,
        origin: Origin::default(),
    }
    .encode()
    .unwrap();
    let active = segment_files(dir.path()).pop().unwrap();
    let len_before = std::fs::metadata(&active).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap()
        .write_all(&frame[..frame.len() / 2])
        .unwrap();

    let storage = Storage::open(cfg.clone(), hlc()).unwrap();
    assert_eq!(
        storage.recovery_report().truncated_bytes,
        (frame.len() / 2) as u64
    );
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len_before);
    assert_eq!(
        storage
            .read_queue("t", 0, 0, 100, usize::MAX)
            .unwrap()
            .len(),
        20
    );
    assert!(storage.read_by_id("torn").unwrap().is_none());
    assert_eq!(
        append_visible(&storage, vec![message("t", 0, "after", b"x")])[0].queue_offset,
        20
    );
    drop(storage);

    // Zeros after the last record (a file extended but never written) are a torn tail too.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap()
        .write_all(&[0u8; 4096])
        .unwrap();
    let storage = Storage::open(cfg, hlc()).unwrap();
    assert_eq!(storage.recovery_report().truncated_bytes, 4096);
    assert_eq!(
        storage
            .read_queue("t", 0, 0, 100, usize::MAX)
            .unwrap()
            .len(),
        21
    );
}

/// Flips one byte inside the body of the record with the given id; returns the segment file and
/// the record's offset within it.
fn corrupt_record(storage: &Storage, id: &str) -> (PathBuf, u64) {
    use std::os::unix::fs::FileExt;
    let (position, record) = storage.read_by_id(id).unwrap().unwrap();
    let segment = storage.shared.segments.read().find(position).unwrap();
    let offset_in_segment = position - segment.base;
    let body_at = offset_in_segment + record.frame_len() as u64 - 10;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment.path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, body_at).unwrap();
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, body_at).unwrap();
    file.sync_all().unwrap();
    (segment.path.clone(), offset_in_segment)
}

#[test]
fn corruption_in_a_sealed_segment_stops_start_up_and_names_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(dir.path(), Durability::Sync);
    let (path, offset) = {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        append_visible(
            &storage,
            (0..60)
                .map(|i| message("t", 0, &format!("m{i}"), &[3; 300]))
                .collect(),
        );
        assert!(segment_files(dir.path()).len() >= 4);
        corrupt_record(&storage, "m5")
    };
    assert_ne!(
        &path,
        segment_files(dir.path()).last().unwrap(),
        "m5 must be in a sealed segment"
    );
    let error = Storage::open(cfg.clone(), hlc()).unwrap_err();
    match &error {
        StorageError::Corrupt {
            segment,
            offset_in_segment,
            ..
        } => {
            assert_eq!(segment, &path);
            assert_eq!(*offset_in_segment, offset);
        }
        other => panic!("expected corruption, got {other}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains(&offset.to_string()),
        "{text}"
    );
    assert!(
        text.contains("repair"),
        "the message says how to proceed: {text}"
    );

    // Repair skips exactly the damaged record and keeps everything else.
    let mut repair = cfg;
    repair.repair = true;
    let storage = Storage::open(repair, hlc()).unwrap();
    assert_eq!(storage.recovery_report().skipped_ranges.len(), 1);
    assert!(storage.read_by_id("m5").unwrap().is_none());
    let records = storage.read_queue("t", 0, 0, 100, usize::MAX).unwrap();
    let offsets: Vec<u64> = records.iter().map(|r| r.queue_offset).collect();
    assert_eq!(records.len(), 59);
    assert!(!offsets.contains(&5));
    assert_eq!(
        append_visible(&storage, vec![message("t", 0, "new", b"x")])[0].queue_offset,
        60
    );
}

#[test]
fn corruption_before_valid_records_in_the_active_segment_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Sync);
    {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        append_visible(
            &storage,
            (0..20)
                .map(|i| message("t", 0, &format!("m{i}"), &[3; 100]))
                .collect(),
        );
        corrupt_record(&storage, "m10");
    }
    let error = Storage::open(cfg, hlc()).unwrap_err();
    assert!(
        matches!(error, StorageError::Corrupt { .. }),
        "acknowledged records after the damage must not be truncated away: {error}"
    );
}

#[test]
fn unchanged_sealed_segments_are_not_reread() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_segments(dir.path(), Durability::Async);
    {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        append_visible(
            &storage,
            (0..100)
                .map(|i| message("t", 0, &format!("m{i}"), &[3; 300]))
                .collect(),
        );
    }
    let storage = Storage::open(cfg.clone(), hlc()).unwrap();
    let total: u64 = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        storage.recovery_report().scanned_bytes < total / 2,
        "{:?}",
        storage.recovery_report()
    );
    drop(storage);
    let mut all = cfg;
    all.verify_on_open = VerifyOnOpen::All;
    let storage = Storage::open(all, hlc()).unwrap();
    assert_eq!(storage.recovery_report().scanned_bytes, total);
}

#[test]
fn retention_by_size_removes_whole_segments_and_reports_the_earliest_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_segments(dir.path(), Durability::Async);
    cfg.retention_max_total_bytes = Some(3 * 4096);
    let storage = Storage::open(cfg.clone(), hlc()).unwrap();
    append_visible(
        &storage,
        (0..100)
            .map(|i| message("t", i % 2, &format!("m{i}"), &[3; 300]))
            .collect(),
    );
    let files_before = segment_files(dir.path()).len();
    let report = storage.enforce_retention().unwrap();
    assert!(report.removed_segments > 0);
    assert_eq!(
        segment_files(dir.path()).len(),
        files_before - report.removed_segments
    );
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(on_disk <= 3 * 4096 + 4096, "{on_disk}");
    let range = storage.queue_range("t", 0).unwrap();
    assert!(range.earliest > 0);
    match storage.read_queue("t", 0, 0, 10, usize::MAX).unwrap_err() {
        StorageError::OutOfRange {
            earliest,
            requested: 0,
            ..
        } => assert_eq!(earliest, range.earliest),
        other => panic!("expected out of range, got {other}"),
    }
    let first = storage
        .read_queue("t", 0, range.earliest, 1, usize::MAX)
        .unwrap();
    assert_eq!(first[0].queue_offset, range.earliest);
    assert!(storage.read_by_id("m0").unwrap().is_none());
    assert!(storage.read_by_key("t", "key-m0", 10).unwrap().is_empty());
    assert!(storage.read_by_id("m99").unwrap().is_some());
    storage.compact_index().unwrap();
    assert!(storage.read_by_id("m0").unwrap().is_none());
    drop(storage);

    let storage = Storage::open(cfg, hlc()).unwrap();
    assert_eq!(
        storage.queue_range("t", 0).unwrap(),
        range,
        "the retained range survives a restart"
    );
    assert!(storage.read_by_id("m99").unwrap().is_some());
}

#[test]
fn ten_thousand_queues() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(config(dir.path(), Durability::Async), hlc()).unwrap();
    let queues = 10_000u32;
    for chunk in 0..4 {
        let batch: Vec<NewRecord> = (0..queues)
            .map(|queue| {
                message(
                    &format!("topic-{}", queue % 100),
                    queue,
                    &format!("{chunk}-{queue}"),
                    &[1; 64],
                )
            })
            .collect();
        append_visible(&storage, batch);
    }
    assert_eq!(storage.queues().len(), queues as usize);
    for queue in (0..queues).step_by(97) {
        let records = storage
            .read_queue(&format!("topic-{}", queue % 100), queue, 0, 10, usize::MAX)
            .unwrap();
        let ids: Vec<String> = records.iter().map(|r| r.message_id.clone()).collect();
        assert_eq!(
            ids,
            (0..4)
                .map(|chunk| format!("{chunk}-{queue}"))
                .collect::<Vec<_>>()
        );
    }
    // Per-message cost does not depend on the queue count: one write call and one index batch
    // per group of appends, whatever the number of queues the group touches.
    let counters = storage.counters();
    assert!(counters.write_calls.load(Ordering::Relaxed) <= 8 * 4);
    drop(storage);
    let storage = Storage::open(config(dir.path(), Durability::Async), hlc()).unwrap();
    assert_eq!(storage.queues().len(), queues as usize);
    assert_eq!(storage.queue_range("topic-5", 9905).unwrap().next, 4);
}

#[derive(Debug, Clone)]
enum Step {
    Append {
        queue: u32,
        count: usize,
        body_len: usize,
    },
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u32..4, 1usize..20, 0usize..700).prop_map(|(queue, count, body_len)| Step::Append { queue, count, body_len }),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Any sequence of appends and reopenings reads back exactly, across segment rolls.
    #[test]
    fn any_appends_and_reopens_read_back_exactly(steps in prop::collection::vec(step(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small_segments(dir.path(), Durability::Async);
        let mut storage = Storage::open(cfg.clone(), hlc()).unwrap();
        let mut model: HashMap<u32, Vec<(String, Vec<u8>)>> = HashMap::new();
        let mut next_id = 0u64;
        for step in steps {
            match step {
                Step::Append { queue, count, body_len } => {
                    let batch: Vec<NewRecord> = (0..count).map(|i| {
                        next_id += 1;
                        message("p", queue, &format!("id{next_id}"), &vec![(next_id % 251) as u8; body_len + i])
                    }).collect();
                    for record in &batch {
                        model.entry(queue).or_default().push((record.message_id.clone(), record.body.clone()));
                    }
                    append_visible(&storage, batch);
                }
                Step::Reopen => {
                    drop(storage);
                    storage = Storage::open(cfg.clone(), hlc()).unwrap();
                }
            }
        }
        drop(storage);
        let storage = Storage::open(cfg, hlc()).unwrap();
        for (queue, expected) in &model {
            let records = storage.read_queue("p", *queue, 0, 10_000, usize::MAX).unwrap();
            let got: Vec<(String, Vec<u8>)> = records.iter().map(|r| (r.message_id.clone(), r.body.clone())).collect();
            prop_assert_eq!(&got, expected);
            for (offset, record) in records.iter().enumerate() {
                prop_assert_eq!(record.queue_offset, offset as u64);
            }
        }
        let total: usize = model.values().map(Vec::len).sum();
        prop_assert_eq!(storage.read_log(0, 100_000, usize::MAX).unwrap().len(), total);
    }
}

#[test]
fn one_message_id_in_several_topics_is_found_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Sync);
    let storage = Storage::open(cfg.clone(), hlc()).unwrap();
    // A parked copy, then its released copy in one batch, then a dead-letter copy later: the
    // id resolves to the newest, each topic to its own copy.
    append_visible(
        &storage,
        vec![
            message("%SYS%TIMER", 0, "m1", b"parked"),
            message("orders", 0, "m1", b"released"),
        ],
    );
    append_visible(&storage, vec![message("%DLQ%g", 0, "m1", b"dead")]);
    assert_eq!(storage.read_by_id("m1").unwrap().unwrap().1.body, b"dead");
    for (topic, body) in [
        ("%SYS%TIMER", &b"parked"[..]),
        ("orders", b"released"),
        ("%DLQ%g", b"dead"),
    ] {
        let (position, record) = storage.read_copy(topic, "m1").unwrap().unwrap();
        assert_eq!(record.body, body, "{topic}");
        assert_eq!(storage.read_at(position).unwrap(), record);
        assert!(storage.contains_copy(topic, "m1").unwrap());
    }
    assert!(!storage.contains_copy("orders", "m2").unwrap());
    assert!(!storage.contains_copy("never-created", "m1").unwrap());

    // Two records with one id in one topic and one batch: the newer wins in both indexes.
    append_visible(
        &storage,
        vec![
            message("orders", 1, "m9", b"first"),
            message("orders", 1, "m9", b"second"),
        ],
    );
    assert_eq!(storage.read_by_id("m9").unwrap().unwrap().1.body, b"second");
    assert_eq!(
        storage.read_copy("orders", "m9").unwrap().unwrap().1.body,
        b"second"
    );
}

#[test]
fn an_index_of_the_previous_layout_is_rebuilt_with_the_topic_id_family() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Durability::Sync);
    {
        let storage = Storage::open(cfg.clone(), hlc()).unwrap();
        append_visible(
            &storage,
            (0..30)
                .map(|i| message("t", i % 3, &format!("m{i}"), b"x"))
                .collect(),
        );
    }
    {
        // What layout 1 left: no layout key and an empty `topic_msgid` family.
        let index = index::Index::open(&cfg.index_dir(), 1 << 20, 1 << 20).unwrap();
        index
            .delete_range(index::CF_TOPIC_MSGID, &[], &[0xff; 16])
            .unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(index.cf(index::CF_META).unwrap(), index::META_INDEX_LAYOUT);
        index.write_synced(batch).unwrap();
        index.flush().unwrap();
    }
    let storage = Storage::open(cfg.clone(), hlc()).unwrap();
    assert_eq!(storage.recovery_report().reindexed_records, 30);
    for i in 0..30 {
        assert!(
            storage.contains_copy("t", &format!("m{i}")).unwrap(),
            "m{i}"
        );
    }
    assert_eq!(storage.queue_range("t", 0).unwrap().next, 10);
    drop(storage);
    // The layout is recorded: the next start re-derives nothing.
    let storage = Storage::open(cfg, hlc()).unwrap();
    assert_eq!(storage.recovery_report().reindexed_records, 0);
}
