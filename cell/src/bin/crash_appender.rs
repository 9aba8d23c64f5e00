//! Test tool for the crash test (`tests/crash_kill9.rs`): appends in `sync` mode from many
//! concurrent tasks and prints `ACK <id> <queue> <offset>` for every acknowledged record, so that
//! a parent can kill it with SIGKILL mid-stream and then check that every acknowledged record
//! survived. It is a real process because only a real process can be killed mid-write.
//!
//! Usage: `meridian-crash-appender <data-dir> <id-prefix> <appenders>`. It stops by itself after
//! `MAX_RECORDS` records or `MAX_RUN_SECONDS`, whichever comes first.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use meridian_cell::Hlc;
use meridian_cell::storage::{Durability, NewRecord, Storage, StorageConfig};

const MAX_RECORDS_PER_APPENDER: u64 = 100_000;
const MAX_RUN_SECONDS: u64 = 60;
const QUEUES: u32 = 8;

/// The body every record with this id must have; the checker recomputes it.
fn body_for(id: &str) -> Vec<u8> {
    let seed = id
        .bytes()
        .fold(0u8, |acc, byte| acc.wrapping_mul(31).wrapping_add(byte));
    (0..1024u32).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(prefix), Some(appenders)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: meridian-crash-appender <data-dir> <id-prefix> <appenders>");
        std::process::exit(2);
    };
    let Ok(appenders) = appenders.parse::<u32>() else {
        eprintln!("appenders must be a number, got {appenders:?}");
        std::process::exit(2);
    };
    let mut config = StorageConfig::new(dir, "crash-test");
    config.durability = Durability::Sync;
    config.segment_size_bytes = 4 << 20;
    let storage = match Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500)))) {
        Ok(storage) => Arc::new(storage),
        Err(error) => {
            eprintln!("open failed: {error}");
            std::process::exit(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("runtime: {error}");
            std::process::exit(1);
        }
    };
    println!("READY");
    let _ = std::io::stdout().flush();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..appenders {
            let storage = Arc::clone(&storage);
            let prefix = prefix.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0..MAX_RECORDS_PER_APPENDER {
                    let id = format!("{prefix}-{task}-{seq}");
                    let queue = (task + seq as u32) % QUEUES;
                    let record = NewRecord {
                        message_id: id.clone(),
                        topic: "crash".into(),
                        queue_id: queue,
                        keys: vec![id.clone()],
                        body: body_for(&id),
                        ..NewRecord::default()
                    };
                    match storage.append(vec![record]).await {
                        Ok(appended) => {
                            let line = format!("ACK {id} {queue} {}\n", appended[0].queue_offset);
                            let mut out = std::io::stdout().lock();
                            let _ = out.write_all(line.as_bytes());
                            let _ = out.flush();
                        }
                        Err(error) => {
                            eprintln!("append failed: {error}");
                            return;
                        }
                    }
                }
            }));
        }
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(MAX_RUN_SECONDS), all).await;
    });
}
