//! The disk's own fsync figures, measured in the same run as the storage benchmark so that the
//! two can be compared: append a block to a file and `fdatasync` it, many times.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What the probe measured.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct FsyncFigures {
    pub(crate) block_bytes: usize,
    pub(crate) fsyncs_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
}

/// Appends `block_bytes` and fdatasyncs, repeatedly for `duration` (at most `max_fsyncs` times).
pub(crate) fn probe(
    dir: &Path,
    block_bytes: usize,
    duration: Duration,
    max_fsyncs: u64,
) -> anyhow::Result<FsyncFigures> {
    let path = dir.join(format!("fsync-probe-{block_bytes}.dat"));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .context("fsync probe file")?;
    let block = vec![0xa5u8; block_bytes];
    let mut histogram = super::new_histogram()?;
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration && count < max_fsyncs {
        let begin = Instant::now();
        file.write_all(&block).context("fsync probe write")?;
        file.sync_data().context("fsync probe fdatasync")?;
        histogram.record(begin.elapsed().as_nanos() as u64)?;
        count += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).context("removing the fsync probe file")?;
    let (p50_us, p99_us, p999_us) = super::percentiles_us(&histogram);
    Ok(FsyncFigures {
        block_bytes,
        fsyncs_per_s: count as f64 / elapsed,
        p50_us,
        p99_us,
        p999_us,
    })
}
