//! A sparse index from an origin's positions to this cell's log, so that a digest request for
//! an origin range scans only the part of the local log that can hold it.
//!
//! An origin's records are appended here in origin order (batches are applied in order, and
//! deduplication only drops records), so local positions grow with origin positions. When the
//! checkpoint "applied through origin position P" is written, the log's visible end V right
//! after that apply is a boundary: every record of the origin before P lies before V, and every
//! record from P on is appended after V. The checkpoint writer stores (P, V) for the first
//! checkpoint that falls into each `stride` of origin positions (bucket `P / stride`), in the
//! replication state family, without an fsync: an entry is a hint, and a lost one only widens a
//! scan. A digest of `[start, end)` scans from the V of the nearest entry at or below `start` to
//! the V of the nearest entry at or above `end`, probing at most [`MAX_PROBES`] buckets each
//! way and falling back to the log's start or end.
//!
//! Records that did not arrive through the link (a forged or misplaced append) may sit anywhere;
//! the scan finds them only inside its bounds, which is where the verification loop looks.

use meridian_cell::Storage;
use meridian_cell::storage::CF_REPLICATION_CHECKPOINTS;

use crate::error::ReplicatorError;

/// Buckets probed in each direction before falling back to the log's ends.
pub(super) const MAX_PROBES: u64 = 64;

fn key(origin_region: &str, bucket: u64) -> Vec<u8> {
    let mut key = b"replica-index/".to_vec();
    key.extend_from_slice(origin_region.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&bucket.to_be_bytes());
    key
}

/// Remembers that `origin_region`'s records from `position` on are stored after local position
/// `visible_end`, if no entry of this bucket was written yet by this writer (`last_bucket`).
pub(super) fn note(
    storage: &Storage,
    origin_region: &str,
    stride: u64,
    position: u64,
    visible_end: u64,
    last_bucket: &mut Option<u64>,
) -> Result<(), ReplicatorError> {
    let bucket = position / stride.max(1);
    if *last_bucket == Some(bucket) {
        return Ok(());
    }
    let mut value = position.to_le_bytes().to_vec();
    value.extend_from_slice(&visible_end.to_le_bytes());
    storage.put_state_unsynced(
        CF_REPLICATION_CHECKPOINTS,
        &key(origin_region, bucket),
        &value,
    )?;
    *last_bucket = Some(bucket);
    Ok(())
}

fn entry(
    storage: &Storage,
    origin_region: &str,
    bucket: u64,
) -> Result<Option<(u64, u64)>, ReplicatorError> {
    let Some(bytes) = storage.get_state(CF_REPLICATION_CHECKPOINTS, &key(origin_region, bucket))?
    else {
        return Ok(None);
    };
    let (Ok(position), Ok(local)) = (
        <[u8; 8]>::try_from(bytes.get(..8).unwrap_or_default()),
        <[u8; 8]>::try_from(bytes.get(8..16).unwrap_or_default()),
    ) else {
        // A damaged hint is ignored: the scan just widens.
        return Ok(None);
    };
    Ok(Some((
        u64::from_le_bytes(position),
        u64::from_le_bytes(local),
    )))
}

/// The local log range `[from, to)` that holds every record of `origin_region` with an origin
/// position in `[start, end)`, clamped to the log's retained range.
pub(super) fn scan_bounds(
    storage: &Storage,
    origin_region: &str,
    stride: u64,
    start: u64,
    end: u64,
) -> Result<(u64, u64), ReplicatorError> {
    let stride = stride.max(1);
    let (log_start, log_end) = storage.log_range();
    let mut from = log_start;
    let first = start / stride;
    for bucket in (first.saturating_sub(MAX_PROBES)..=first).rev() {
        if let Some((position, local)) = entry(storage, origin_region, bucket)?
            && position <= start
        {
            from = local;
            break;
        }
    }
    let mut to = log_end;
    let last = end.div_ceil(stride);
    for bucket in last.saturating_sub(1)..last.saturating_add(MAX_PROBES) {
        if let Some((position, local)) = entry(storage, origin_region, bucket)?
            && position >= end
        {
            to = local;
            break;
        }
    }
    let from = from.clamp(log_start, log_end);
    Ok((from, to.clamp(from, log_end)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use meridian_cell::storage::{NewRecord, Origin, ReplicatedFrom};
    use meridian_cell::{Hlc, StorageConfig};

    use super::*;
    use crate::quic::receiver::replica_digest;

    /// Origin records every 100 origin bytes, applied ten per batch like a link would, with an
    /// index entry after each batch; and local records of the replica's own in between.
    fn replica() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::open(
            StorageConfig::new(dir.path(), "us"),
            Arc::new(Hlc::system(Duration::from_secs(5))),
        )
        .expect("open storage");
        let mut last_bucket = None;
        for batch in 0..40u64 {
            let mut records: Vec<NewRecord> = (0..10u64)
                .map(|index| {
                    let offset = (batch * 10 + index) * 100;
                    NewRecord {
                        message_id: format!("eu-{offset}"),
                        topic: "orders".into(),
                        body: vec![b'x'; 64],
                        replicated: Some(ReplicatedFrom {
                            origin: Origin {
                                region: "eu".into(),
                                offset,
                            },
                            hlc: offset + 1,
                        }),
                        ..NewRecord::default()
                    }
                })
                .collect();
            records.push(NewRecord {
                message_id: format!("us-{batch}"),
                topic: "orders".into(),
                ..NewRecord::default()
            });
            let appended = storage.append_blocking(records).expect("append");
            let last = appended.last().expect("appended").position;
            // Like the receiver, wait until the batch is visible (indexed) before taking the
            // visible end as the boundary.
            let mut waited_ms = 0;
            while storage.log_range().1 <= last {
                assert!(waited_ms < 10_000, "the batch never became visible");
                std::thread::sleep(Duration::from_millis(1));
                waited_ms += 1;
            }
            let (_, visible_end) = storage.log_range();
            note(
                &storage,
                "eu",
                1_000,
                (batch + 1) * 1_000,
                visible_end,
                &mut last_bucket,
            )
            .expect("note");
        }
        (dir, storage)
    }

    /// The digest of the range from a scan of the whole log, without the index.
    fn full_digest(storage: &Storage, start: u64, end: u64) -> crate::digest::RangeDigest {
        let mut digest = crate::digest::RangeDigest::new();
        let (log_start, log_end) = storage.log_range();
        let records = storage
            .read_log(log_start, usize::MAX, usize::MAX)
            .expect("read the log");
        assert_eq!(
            records.last().map(|(p, l, _)| p + u64::from(*l)),
            Some(log_end)
        );
        for (_, _, record) in &records {
            if record.origin.region == "eu" && (start..end).contains(&record.origin.offset) {
                digest.add_record(record);
            }
        }
        digest
    }

    #[test]
    fn digest_scans_only_the_indexed_part_of_the_log_and_agree_with_a_full_scan() {
        let (_dir, storage) = replica();
        for (start, end) in [(0, 40_000), (12_300, 15_700), (39_000, 40_000), (0, 1)] {
            let (narrow, scanned) =
                replica_digest(&storage, "eu", 1_000, start, end).expect("narrow digest");
            assert_eq!(
                narrow,
                full_digest(&storage, start, end),
                "[{start}, {end})"
            );
            let expected = (end - start).div_ceil(100);
            assert_eq!(narrow.count(), expected.min(400));
            // The replica's own records in between, and at most one batch (11 records) of
            // slack on each side.
            assert!(
                scanned <= expected * 11 / 10 + 22,
                "[{start}, {end}) scanned {scanned} records"
            );
        }
    }
}
