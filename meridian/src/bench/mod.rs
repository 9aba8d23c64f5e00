//! `meridian bench`: benchmarks that print figures (never pass/fail timing assertions).

mod disk;
mod grpc;
mod messaging;
mod messaging_timers;
mod replication;
mod storage;

/// Which benchmark to run.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// The cell storage engine: append throughput and latency per durability mode, body size and
    /// concurrency; the disk's own fsync figures; recovery time per GiB; 10 vs 10,000 queues.
    Storage(storage::StorageBenchArgs),
    /// The RocketMQ gRPC front: SendMessage throughput and latency over loopback beside
    /// in-process `Broker::send` for the same load, so the protocol's cost is visible.
    Grpc(grpc::GrpcBenchArgs),
    /// The messaging layer: send and receive+ack throughput and latency with many producers and
    /// consumers on a NORMAL and a FIFO topic, and delay-timer lateness with many pending timers;
    /// each case checks that every message was received and acked exactly once.
    Messaging(messaging::MessagingBenchArgs),
    /// One replication link between two cells over QUIC: catch-up throughput against the local
    /// append rate, and replication lag at a fixed rate with and without injected delay.
    Replication(replication::ReplicationBenchArgs),
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Storage(args) => storage::run(args),
        BenchCommand::Grpc(args) => grpc::run(args),
        BenchCommand::Messaging(args) => messaging::run(args),
        BenchCommand::Replication(args) => replication::run(args),
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
