//! `meridian`: the one binary of the fabric.
//!
//! Subcommands:
//! - `meridian dev [--data-dir DIR] [--no-auto-create-topics]`: runs the three regions of the
//!   dev fabric on 127.0.0.1-3 until Ctrl-C or SIGTERM: in each a cell (storage, broker,
//!   RocketMQ 5 gRPC endpoint with Meridian's admin API on the same port, Prometheus metrics)
//!   and a replicator with a QUIC link to every other region. Writes `DIR/endpoints.json` and
//!   prints `ready` once every region serves.
//! - Admin and test CLI (each takes `--endpoint HOST:PORT` (repeatable) or `--endpoints-file
//!   DIR/endpoints.json` with optional `--region NAME`, and `--json`):
//!   `meridian topic create|describe|list`, `meridian group create|describe|rewind`,
//!   `meridian send`, `meridian receive`, `meridian message query|trace`,
//!   `meridian region status`.
//! - `meridian bench storage`: storage-engine benchmark (throughput, latency percentiles per
//!   durability mode and concurrency, the disk's own fsync figures, recovery time per GiB).
//! - `meridian bench grpc`: RocketMQ gRPC front benchmark (SendMessage over loopback beside
//!   in-process `Broker::send`).
//! - `meridian bench messaging`: messaging benchmark (produce → receive → ack throughput and
//!   latency on NORMAL and FIFO topics, delay-timer lateness with many pending timers).

mod bench;
mod cli;
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
    /// Run the local three-region dev fabric until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run benchmarks and print their figures.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
    #[command(flatten)]
    Cli(cli::CliCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The CLI's output is for people and scripts: only warnings go to stderr there.
    let default_filter = match cli.command {
        Command::Cli(_) => "warn",
        _ => "info,rocksdb=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Bench { which } => bench::run(which),
        Command::Cli(command) => cli::run(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line with every cause, never a backtrace: errors here are for the user.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
