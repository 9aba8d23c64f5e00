//! `meridian`: the one binary of the fabric.
//!
//! Subcommands:
//! - `meridian dev`: runs a local cell (storage engine and a Prometheus metrics endpoint) until
//!   Ctrl-C; it grows into the whole multi-region fabric as the layers land.
//! - `meridian bench storage`: storage-engine benchmark (throughput, latency percentiles per
//!   durability mode and concurrency, the disk's own fsync figures, recovery time per GiB).
//! - `meridian bench grpc`: RocketMQ gRPC front benchmark (SendMessage over loopback beside
//!   in-process `Broker::send`).
//! - `meridian bench messaging`: messaging benchmark (produce → receive → ack throughput and
//!   latency on NORMAL and FIFO topics, delay-timer lateness with many pending timers).

mod bench;
mod dev;

use clap::{Parser, Subcommand};

/// Meridian: a geo-replicated, multi-region messaging fabric.
#[derive(Debug, Parser)]
#[command(name = "meridian", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local development cell until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run benchmarks and print their figures.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rocksdb=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Bench { which } => bench::run(which),
    }
}
