//! A region whose wall clock runs seconds ahead: its records keep their order and stamps in
//! the receiving region, seeking by time there follows the receiver's clock, and the
//! receiver's clock is dragged along only within the configured maximum delta.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uhlc::NTP64;

use super::tests::{append_visible, config, message};
use super::*;
use crate::clock::{ms_to_stamp, stamp_ms};

/// Past the 500 ms the tests' clocks accept from others.
const FAR_AHEAD_MS: u64 = 5_000;
/// Within it.
const SLIGHTLY_AHEAD_MS: u64 = 300;

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn far_ahead() -> NTP64 {
    NTP64(ms_to_stamp(wall_ms() + FAR_AHEAD_MS))
}

fn slightly_ahead() -> NTP64 {
    NTP64(ms_to_stamp(wall_ms() + SLIGHTLY_AHEAD_MS))
}

fn open(dir: &std::path::Path, region: &str, clock: Option<fn() -> NTP64>) -> Storage {
    let mut cfg = config(&dir.join(region), Durability::Async);
    cfg.region = region.to_string();
    let max_delta = Duration::from_millis(500);
    let hlc = match clock {
        Some(clock) => Hlc::with_physical_clock(clock, max_delta),
        None => Hlc::system(max_delta),
    };
    Storage::open(cfg, Arc::new(hlc)).unwrap()
}

/// Copies `from`'s own records to `to` as a replication link would (origin and stamp kept).
fn replicate(from: &Storage, to: &Storage) -> Vec<Record> {
    let end = from.log_range().1;
    let records: Vec<Record> = from
        .read_log(0, 10_000, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, _, record)| record)
        .filter(|record| record.origin.region == from.region())
        .collect();
    assert!(records.iter().all(|record| record.origin.offset < end));
    let copies = records
        .iter()
        .map(|record| NewRecord {
            message_id: record.message_id.clone(),
            topic: record.topic.clone(),
            queue_id: record.queue_id,
            body: record.body.clone(),
            replicated: Some(ReplicatedFrom {
                origin: record.origin.clone(),
                hlc: record.hlc,
            }),
            ..NewRecord::default()
        })
        .collect();
    append_visible(to, copies);
    records
}

#[test]
fn a_clock_seconds_ahead_breaks_neither_order_nor_seeking_nor_the_receivers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let skewed = open(dir.path(), "ahead", Some(far_ahead));
    let receiver = open(dir.path(), "normal", None);
    append_visible(
        &skewed,
        (0..50)
            .map(|i| message("t", 0, &format!("a{i}"), b"x"))
            .collect(),
    );
    let sent = replicate(&skewed, &receiver);
    let before_ms = wall_ms();
    append_visible(
        &receiver,
        (0..10)
            .map(|i| message("t", 0, &format!("n{i}"), b"y"))
            .collect(),
    );

    // Order: the queue holds the skewed region's records in its order, then the local ones.
    let stored = receiver.read_queue("t", 0, 0, 100, usize::MAX).unwrap();
    let ids: Vec<&str> = stored.iter().map(|r| r.message_id.as_str()).collect();
    let expected: Vec<String> = (0..50)
        .map(|i| format!("a{i}"))
        .chain((0..10).map(|i| format!("n{i}")))
        .collect();
    assert_eq!(ids, expected);
    // The origin's stamps are kept exactly, and stay strictly increasing in origin order.
    for (copy, original) in stored.iter().zip(&sent) {
        assert_eq!(copy.hlc, original.hlc);
        assert!(stamp_ms(copy.hlc) >= before_ms + FAR_AHEAD_MS - 1_000);
    }
    assert!(sent.windows(2).all(|pair| pair[0].hlc < pair[1].hlc));

    // The receiver's clock did not jump 5 s ahead: its own stamps follow its own wall clock.
    let local = &stored[50..];
    for record in local {
        assert!(
            stamp_ms(record.hlc) < wall_ms() + 1_000,
            "a clock past the maximum delta must not drag the receiver along"
        );
        assert!(record.store_timestamp_ms <= wall_ms());
    }
    // Seeking by time uses the receiver's store time: a second ago finds everything stored
    // since, including the replicated records, not only what the skewed stamps would suggest.
    let first = receiver
        .seek_by_time("t", 0, before_ms.saturating_sub(60_000))
        .unwrap();
    assert_eq!(first, 0);
    let after_all = receiver.seek_by_time("t", 0, wall_ms() + 1_000).unwrap();
    assert_eq!(after_all, 60, "nothing is stored in the receiver's future");
}

#[test]
fn a_clock_slightly_ahead_is_followed_so_causal_order_holds() {
    let dir = tempfile::tempdir().unwrap();
    let skewed = open(dir.path(), "ahead", Some(slightly_ahead));
    let receiver = open(dir.path(), "normal", None);
    append_visible(
        &skewed,
        (0..20)
            .map(|i| message("t", 0, &format!("a{i}"), b"x"))
            .collect(),
    );
    let sent = replicate(&skewed, &receiver);
    let newest_remote = sent.iter().map(|record| record.hlc).max().unwrap();
    // A reply written after the receiver applied the records is stamped after all of them,
    // although the receiver's wall clock is 300 ms behind.
    append_visible(&receiver, vec![message("t", 0, "reply", b"r")]);
    let reply = receiver.read_by_id("reply").unwrap().unwrap().1;
    assert!(reply.hlc > newest_remote);
}
