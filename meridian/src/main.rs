//! `meridian`: the one binary of the fabric.
//!
//! Subcommands:
//! - `meridian dev [--data-dir DIR] [--no-auto-create-topics]`: runs the three regions of the
//!   dev fabric on 127.0.0.1-3 until Ctrl-C or SIGTERM: in each a meta node (one Raft group
//!   over the three), a cell (storage, broker, RocketMQ 5 gRPC endpoint with Meridian's admin
//!   API on the same port, Prometheus metrics), a replicator with a QUIC link to every other
//!   region, and a meta agent applying meta's topics to the cell. Demo topics are created
//!   through meta. Writes `DIR/endpoints.json` and prints `ready` once meta has a leader and
//!   every cell holds its topics.
//! - `meridian start --config FILE [--data-dir DIR]`: one region of a fabric in its own
//!   process (the config's `[node] region`): meta node, cell, replicator and meta agent, the
//!   same module `dev` runs for each of its regions. Prints `ready` once registered in meta.
//! - Admin and test CLI (each takes `--endpoint HOST:PORT` (repeatable) or `--endpoints-file
//!   DIR/endpoints.json` with optional `--region NAME`, and `--json`):
//!   `meridian topic create|describe|list`, `meridian group create|describe|rewind`,
//!   `meridian send`, `meridian receive`, `meridian message query|trace`,
//!   `meridian region status`.
//! - `meridian fabric init --dir DIR`: the files of a multi-process fabric of the dev topology
//!   (certificates, admin token, one `meridian start` config per region, endpoints.json).
//! - `meridian drill run SCENARIO [--dir DIR] [--duration-ms N] [--seed N] [--json]`: a DR
//!   drill against a fabric of `meridian start` processes it starts; exits non-zero when a
//!   promise of the scenario is broken.
//! - `meridian bench storage`: storage-engine benchmark (throughput, latency percentiles per
//!   durability mode and concurrency, the disk's own fsync figures, recovery time per GiB).
//! - `meridian bench grpc`: RocketMQ gRPC front benchmark (SendMessage over loopback beside
//!   in-process `Broker::send`).
//! - `meridian bench messaging`: messaging benchmark (produce → receive → ack throughput and
//!   latency on NORMAL and FIFO topics, delay-timer lateness with many pending timers).

mod bench;
mod cli;
mod dev;
mod drill;
mod fabric;
mod region;
mod start;

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
    /// Run one region of a fabric (the config's `[node] region`) until Ctrl-C or SIGTERM.
    Start(start::StartArgs),
    /// Write the files of a multi-process fabric on this machine (one config per region).
    Fabric {
        #[command(subcommand)]
        command: FabricCommand,
    },
    /// Run DR drills: a scenario against a fabric of real processes, checked and judged.
    Drill {
        #[command(subcommand)]
        command: drill::DrillCommand,
    },
    /// Run benchmarks and print their figures.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
    #[command(flatten)]
    Cli(cli::CliCommand),
}

/// `meridian fabric ...`
#[derive(Debug, Subcommand)]
enum FabricCommand {
    /// Certificates, admin token, one `meridian start` config per region and endpoints.json.
    Init(fabric::InitArgs),
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
        Command::Start(args) => start::run(args),
        Command::Fabric {
            command: FabricCommand::Init(args),
        } => fabric::run(args),
        Command::Drill { command } => drill::run(command),
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
