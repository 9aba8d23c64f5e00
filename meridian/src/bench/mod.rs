//! `meridian bench`: benchmarks that print figures (never pass/fail timing assertions).

mod disk;
mod storage;

/// Which benchmark to run.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// The cell storage engine: append throughput and latency per durability mode, body size and
    /// concurrency; the disk's own fsync figures; recovery time per GiB; 10 vs 10,000 queues.
    Storage(storage::StorageBenchArgs),
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Storage(args) => storage::run(args),
    }
}

/// Latency percentiles in microseconds from an HDR histogram of nanoseconds.
pub(crate) fn percentiles_us(histogram: &hdrhistogram::Histogram<u64>) -> (f64, f64, f64) {
    let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    (at(0.50), at(0.99), at(0.999))
}

pub(crate) fn new_histogram() -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    // 1 ns .. 60 s at 3 significant digits.
    Ok(hdrhistogram::Histogram::new_with_bounds(
        1,
        60_000_000_000,
        3,
    )?)
}
