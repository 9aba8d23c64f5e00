//! Crash test: a real process appends in `sync` mode from 32 concurrent tasks and is killed with
//! SIGKILL at a random moment, 20 times over the same data directory. After every kill the log
//! must hold every acknowledged record, intact, and no partial record.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_cell::Hlc;
use meridian_cell::storage::{Durability, Storage, StorageConfig};

const ITERATIONS: u32 = 20;
const APPENDERS: &str = "32";
/// Longest a child may take to acknowledge the records we wait for before killing it.
const ACK_WAIT_LIMIT: Duration = Duration::from_secs(30);

fn body_for(id: &str) -> Vec<u8> {
    let seed = id
        .bytes()
        .fold(0u8, |acc, byte| acc.wrapping_mul(31).wrapping_add(byte));
    (0..1024u32).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// A small deterministic generator so that every run kills at the same points.
fn kill_after(iteration: u32) -> usize {
    let mut x = u64::from(iteration).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    20 + (x % 600) as usize
}

#[test]
fn every_acknowledged_record_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<String, (u32, u64)> = HashMap::new();
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-crash-appender"))
            .args([
                dir.path().to_str().unwrap(),
                &format!("it{iteration}"),
                APPENDERS,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let target = kill_after(iteration);
        let started = Instant::now();
        let mut seen = 0usize;
        let mut lines = stdout.lines();
        while seen < target && started.elapsed() < ACK_WAIT_LIMIT {
            let Some(Ok(line)) = lines.next() else { break };
            let mut parts = line.split(' ');
            if parts.next() == Some("ACK") {
                let id = parts.next().unwrap().to_string();
                let queue: u32 = parts.next().unwrap().parse().unwrap();
                let offset: u64 = parts.next().unwrap().parse().unwrap();
                acked.insert(id, (queue, offset));
                seen += 1;
            }
        }
        assert_eq!(
            seen, target,
            "iteration {iteration}: child stopped acknowledging early"
        );
        child.kill().unwrap(); // SIGKILL
        // Acknowledgements already in the pipe were acknowledged before the kill: count them too.
        for line in lines.map_while(Result::ok) {
            let mut parts = line.split(' ');
            if parts.next() == Some("ACK") {
                let id = parts.next().unwrap().to_string();
                let queue: u32 = parts.next().unwrap().parse().unwrap();
                let offset: u64 = parts.next().unwrap().parse().unwrap();
                acked.insert(id, (queue, offset));
            }
        }
        child.wait().unwrap();
        verify(dir.path(), &acked, iteration);
    }
}

fn verify(dir: &std::path::Path, acked: &HashMap<String, (u32, u64)>, iteration: u32) {
    let mut config = StorageConfig::new(dir, "crash-test");
    config.durability = Durability::Sync;
    config.segment_size_bytes = 4 << 20;
    let storage = Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500)))).unwrap();
    for (id, (queue, offset)) in acked {
        let (_, record) = storage
            .read_by_id(id)
            .unwrap()
            .unwrap_or_else(|| panic!("iteration {iteration}: acknowledged record {id} lost"));
        assert_eq!(
            (record.queue_id, record.queue_offset),
            (*queue, *offset),
            "{id}"
        );
        assert_eq!(record.body, body_for(id), "{id} body damaged");
    }
    // Every record in the log is whole and its queue offsets are dense.
    let mut total = 0;
    for queue in 0..8 {
        let records = storage
            .read_queue("crash", queue, 0, 1_000_000, usize::MAX)
            .unwrap();
        for (offset, record) in records.iter().enumerate() {
            assert_eq!(record.queue_offset, offset as u64);
            assert_eq!(
                record.body,
                body_for(&record.message_id),
                "partial or damaged record {}",
                record.message_id
            );
        }
        total += records.len();
    }
    assert!(
        total >= acked.len(),
        "iteration {iteration}: {total} records stored, {} acknowledged",
        acked.len()
    );
    assert_eq!(
        storage.read_log(0, 10_000_000, usize::MAX).unwrap().len(),
        total
    );
}
