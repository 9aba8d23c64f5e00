//! `meridian bench storage`: the storage engine's figures.
//!
//! For each durability mode, body size and number of concurrent appenders it runs a fresh
//! storage for a fixed time and prints appends/s, MB/s and append latency percentiles, with the
//! disk's own fsync figures measured in the same run beside them. Then it measures recovery time
//! per GiB and the per-message cost of 10 versus 10,000 queues.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_cell::Hlc;
use meridian_cell::storage::{Durability, NewRecord, Storage, StorageConfig};

use super::disk;

/// Arguments of `meridian bench storage`.
#[derive(Debug, clap::Args)]
pub(crate) struct StorageBenchArgs {
    /// Directory for benchmark data; each case uses a fresh subdirectory, removed afterwards.
    #[arg(long, default_value = "./meridian-bench-data")]
    dir: PathBuf,
    /// Measured seconds per case (after a warm-up of a tenth of that).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Body sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "128,1024")]
    sizes: Vec<usize>,
    /// Numbers of concurrent appenders.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    appenders: Vec<usize>,
    /// Durability modes.
    #[arg(long, value_delimiter = ',', default_value = "sync,async")]
    modes: Vec<Durability>,
    /// MiB written for the recovery-time measurement (0 skips it).
    #[arg(long, default_value_t = 1024)]
    recovery_mib: u64,
    /// Skip the 10 vs 10,000 queue comparison.
    #[arg(long)]
    skip_queue_scaling: bool,
    /// fsyncs in flight at once in `sync` mode (the storage's `max_concurrent_fsyncs`).
    #[arg(long, default_value_t = 1)]
    max_concurrent_fsyncs: usize,
    /// Worker threads of the runtime that drives the appenders.
    #[arg(long, default_value_t = 1)]
    runtime_threads: usize,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

/// Most appends one case may issue, whatever the duration (every load loop is bounded).
const MAX_APPENDS_PER_CASE: u64 = 50_000_000;

#[derive(Debug, Clone, serde::Serialize)]
struct CaseFigures {
    mode: String,
    body_bytes: usize,
    appenders: usize,
    queues: u32,
    appends: u64,
    appends_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    appends_per_fsync: f64,
    cpu_us_per_append: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct RecoveryFigures {
    written_mib: u64,
    reopen_s_per_gib: f64,
    full_reindex_s_per_gib: f64,
    reindexed_records: u64,
}

pub(crate) fn run(args: StorageBenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let fsync_4k = disk::probe(&args.dir, 4096, Duration::from_secs(3), 5_000)?;
    let fsync_256k = disk::probe(&args.dir, 256 << 10, Duration::from_secs(2), 2_000)?;
    if !args.json {
        println!(
            "disk: append+fdatasync 4 KiB: {:.0}/s p50 {:.0} us p99 {:.0} us p99.9 {:.0} us",
            fsync_4k.fsyncs_per_s, fsync_4k.p50_us, fsync_4k.p99_us, fsync_4k.p999_us
        );
        println!(
            "disk: append+fdatasync 256 KiB: {:.0}/s p50 {:.0} us p99 {:.0} us p99.9 {:.0} us",
            fsync_256k.fsyncs_per_s, fsync_256k.p50_us, fsync_256k.p99_us, fsync_256k.p999_us
        );
        println!();
        println!(
            "{:<6} {:>6} {:>9} {:>12} {:>9} {:>10} {:>10} {:>10} {:>11} {:>9}",
            "mode",
            "body",
            "appenders",
            "appends/s",
            "MB/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "per fsync",
            "cpu us"
        );
    }
    let mut cases = Vec::new();
    for &mode in &args.modes {
        for &size in &args.sizes {
            for &appenders in &args.appenders {
                let figures = run_case(&args, mode, size, appenders, 8)?;
                if !args.json {
                    print_case(&figures);
                }
                cases.push(figures);
            }
        }
    }
    let mut scaling = Vec::new();
    if !args.skip_queue_scaling {
        if !args.json {
            println!("\nqueue scaling (async, 1 KiB, 256 appenders):");
        }
        for queues in [10, 10_000] {
            let figures = run_case(&args, Durability::Async, 1024, 256, queues)?;
            if !args.json {
                print!("{queues:>6} queues: ");
                print_case(&figures);
            }
            scaling.push(figures);
        }
    }
    let recovery = if args.recovery_mib > 0 {
        Some(measure_recovery(&args)?)
    } else {
        None
    };
    if let (Some(recovery), false) = (&recovery, args.json) {
        println!(
            "\nrecovery: {} MiB written; clean reopen {:.2} s/GiB; full re-index {:.2} s/GiB ({} records)",
            recovery.written_mib,
            recovery.reopen_s_per_gib,
            recovery.full_reindex_s_per_gib,
            recovery.reindexed_records
        );
    }
    if args.json {
        let document = serde_json::json!({
            "disk_fsync": [fsync_4k, fsync_256k],
            "cases": cases,
            "queue_scaling": scaling,
            "recovery": recovery,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    Ok(())
}

fn print_case(figures: &CaseFigures) {
    println!(
        "{:<6} {:>6} {:>9} {:>12.0} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>11.1} {:>9.2}",
        figures.mode,
        figures.body_bytes,
        figures.appenders,
        figures.appends_per_s,
        figures.mb_per_s,
        figures.p50_us,
        figures.p99_us,
        figures.p999_us,
        figures.appends_per_fsync,
        figures.cpu_us_per_append
    );
}

fn fresh_dir(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    Ok(dir)
}

fn open(dir: &Path, mode: Durability, max_concurrent_fsyncs: usize) -> anyhow::Result<Storage> {
    let mut config = StorageConfig::new(dir, "bench");
    config.durability = mode;
    config.max_concurrent_fsyncs = max_concurrent_fsyncs;
    Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500))))
        .context("opening the storage")
}

/// Process CPU time (user + system) from /proc, in microseconds.
fn process_cpu_us() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name; Linux
    // reports them in units of 1/100 s.
    (ticks(11) + ticks(12)) * 10_000
}

fn run_case(
    args: &StorageBenchArgs,
    mode: Durability,
    size: usize,
    appenders: usize,
    queues: u32,
) -> anyhow::Result<CaseFigures> {
    let dir = fresh_dir(&args.dir, "case")?;
    let storage = Arc::new(open(&dir, mode, args.max_concurrent_fsyncs)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.runtime_threads.max(1))
        .enable_all()
        .build()
        .context("benchmark runtime")?;
    let warm_up = Duration::from_secs_f64(args.seconds / 10.0);
    let measured = Duration::from_secs_f64(args.seconds);
    let body = vec![0x42u8; size];
    let fsyncs_before = storage.counters().fsync_calls.load(Ordering::Relaxed);
    let (histogram, appends, elapsed, cpu_us) = runtime.block_on(async {
        let started = Instant::now();
        let measure_from = started + warm_up;
        let deadline = measure_from + measured;
        let cpu_at_start = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for task in 0..appenders {
            let storage = Arc::clone(&storage);
            let body = body.clone();
            let per_task_limit = MAX_APPENDS_PER_CASE / appenders as u64;
            tasks.push(tokio::spawn(async move {
                let mut histogram = super::new_histogram()?;
                let mut measured_appends = 0u64;
                for seq in 0..per_task_limit {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    let record = NewRecord {
                        message_id: format!("{task}-{seq}"),
                        topic: "bench".into(),
                        queue_id: ((task as u64 + seq) % u64::from(queues)) as u32,
                        body: body.clone(),
                        ..NewRecord::default()
                    };
                    storage.append(vec![record]).await?;
                    if begin >= measure_from {
                        histogram.record(begin.elapsed().as_nanos() as u64)?;
                        measured_appends += 1;
                    }
                }
                anyhow::Ok((histogram, measured_appends))
            }));
        }
        tokio::time::sleep_until(measure_from.into()).await;
        cpu_at_start.store(process_cpu_us(), Ordering::Relaxed);
        let fsync_mark = storage.counters().fsync_calls.load(Ordering::Relaxed);
        let mut total = super::new_histogram()?;
        let mut appends = 0;
        for task in tasks {
            let (histogram, count) = task.await??;
            total.add(&histogram)?;
            appends += count;
        }
        let elapsed = measure_from
            .elapsed()
            .min(measured + Duration::from_millis(50))
            .as_secs_f64();
        let cpu_us = process_cpu_us().saturating_sub(cpu_at_start.load(Ordering::Relaxed));
        let _ = fsync_mark;
        anyhow::Ok((total, appends, elapsed, cpu_us))
    })?;
    let fsyncs = storage.counters().fsync_calls.load(Ordering::Relaxed) - fsyncs_before;
    drop(runtime);
    if let Ok(storage) = Arc::try_unwrap(storage) {
        storage.close().context("closing the storage")?;
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    let (p50_us, p99_us, p999_us) = super::percentiles_us(&histogram);
    let appends_per_s = appends as f64 / elapsed;
    Ok(CaseFigures {
        mode: mode.to_string(),
        body_bytes: size,
        appenders,
        queues,
        appends,
        appends_per_s,
        mb_per_s: appends_per_s * size as f64 / 1e6,
        p50_us,
        p99_us,
        p999_us,
        appends_per_fsync: if fsyncs == 0 {
            f64::NAN
        } else {
            appends as f64 / fsyncs as f64
        },
        cpu_us_per_append: if appends == 0 {
            0.0
        } else {
            cpu_us as f64 / appends as f64
        },
    })
}

fn measure_recovery(args: &StorageBenchArgs) -> anyhow::Result<RecoveryFigures> {
    let dir = fresh_dir(&args.dir, "recovery")?;
    let target_bytes = args.recovery_mib << 20;
    {
        let storage = Arc::new(open(&dir, Durability::Async, 1)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let body = vec![7u8; 1024];
            let mut tasks = Vec::new();
            for task in 0..64u64 {
                let storage = Arc::clone(&storage);
                let body = body.clone();
                tasks.push(tokio::spawn(async move {
                    for seq in 0..MAX_APPENDS_PER_CASE / 64 {
                        if storage.counters().appended_bytes.load(Ordering::Relaxed) >= target_bytes
                        {
                            break;
                        }
                        let record = NewRecord {
                            message_id: format!("r{task}-{seq}"),
                            topic: "recovery".into(),
                            queue_id: (seq % 16) as u32,
                            keys: vec![format!("k{seq}")],
                            body: body.clone(),
                            ..NewRecord::default()
                        };
                        storage.append(vec![record]).await?;
                    }
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            anyhow::Ok(())
        })?;
        drop(runtime);
        if let Ok(storage) = Arc::try_unwrap(storage) {
            storage.close()?;
        }
    }
    let written = dir_size(&dir.join("log"))?;
    let gib = written as f64 / f64::from(1u32 << 30);
    let started = Instant::now();
    drop(open(&dir, Durability::Async, 1)?);
    let reopen = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dir.join("index"))
        .context("removing the index for the re-index measurement")?;
    let started = Instant::now();
    let storage = open(&dir, Durability::Async, 1)?;
    let reindex = started.elapsed().as_secs_f64();
    let reindexed_records = storage.recovery_report().reindexed_records;
    drop(storage);
    std::fs::remove_dir_all(&dir)?;
    Ok(RecoveryFigures {
        written_mib: written >> 20,
        reopen_s_per_gib: reopen / gib,
        full_reindex_s_per_gib: reindex / gib,
        reindexed_records,
    })
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}
