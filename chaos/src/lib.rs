//! `meridian-chaos`: fault injection, process control and history checking for Meridian's tests.
//!
//! **Owns**
//! - [`fault`]: a sans-IO, seeded fault model per link (latency, jitter, loss, duplication,
//!   reordering, bandwidth cap, blackhole, one-way partition).
//! - [`schedule`]: replayable fault schedules (TOML/JSON, or generated from a seed) and the shell
//!   that applies them to live proxies.
//! - [`proxy`]: UDP (QUIC replication) and TCP (gRPC, metadata) proxies that put the model on real
//!   loopback links, with a [`proxy::ProxyControl`] handle to change faults and read counters.
//! - [`process`]: stop, kill -9, pause, resume and restart of fabric nodes that a test started.
//! - [`history`] and [`checker`]: the workload's event log (JSON lines) and the checker that finds
//!   loss, duplicates, FIFO violations, RTO, RPO and replication lag, as a table or JSON.
//! - [`links`] and [`control`]: links described in TOML, and the line commands the
//!   `meridian-chaos` CLI reads on stdin to change faults at run time.
//! - [`drill`]: DR drills: scenarios as data (workload, fault timeline, promises), run against a
//!   fabric the caller started, checked and judged.
//! - [`workload`]: producers and consumers per region over the RocketMQ v2 protocol, retrying a
//!   failed send with the same id on the next region, recording the history the checker reads.
//!
//! **Depends on** tokio, rand, nix (signals), serde/serde_json/toml, parking_lot, thiserror, tracing,
//! and `meridian-proto` with tonic for the workload's wire (the wire definitions only, no server
//! code); the CLI binary adds clap and tracing-subscriber.
//!
//! **Must not touch** the fabric's own crates (cell, meta, replicator, router, sdk): it drives a
//! fabric only from the outside, over sockets and processes, so it tests what users would see and
//! cannot share a bug with the code under test.
//!
//! **Typical test**: bind a socket per link, start a [`UdpProxy`] (QUIC between regions) or
//! [`TcpProxy`] (gRPC, metadata) in front of each node's real address, start the nodes with
//! [`ManagedProcess`] pointing at the proxies, run a workload that records [`Event`]s in a
//! [`Recorder`], drive faults with [`schedule::run_schedule`] or [`ProxyControl::set_faults`]
//! (recording `Fault` events), then [`check`] the history and assert on the [`Report`].
//! The `meridian-chaos` binary does the same from a shell: `proxy --links links.toml
//! [--schedule s.toml]` (commands on stdin, see [`control`]), `schedule --seed N --link a ...`,
//! and `check --history h.jsonl [--spec spec.toml] [--json]` (exit 1 on violations).
//!
//! **Limits** (each with its unit in the name): `max_queue_packets` and `max_sessions` per UDP
//! proxy, `max_queue_chunks` of `max_chunk_bytes` per TCP direction, `max_connections`,
//! [`fault::MAX_DELAY_MS`], [`schedule::MAX_SCHEDULE_STEPS`], `max_events` for histories.

pub mod checker;
pub mod control;
pub mod drill;
pub mod error;
pub mod fault;
pub mod history;
pub mod links;
pub mod process;
pub mod proxy;
pub mod schedule;
pub mod workload;

pub use checker::{CheckSpec, Report, check};
pub use error::{ChaosError, Result};
pub use fault::{Decision, Direction, FaultModel, LinkFaults};
pub use history::{Event, FaultKind, History, Recorder};
pub use process::{ManagedProcess, ProcessSpec, ProcessState};
pub use proxy::{
    ProxyControl, ProxyHandle, ProxyStats, TcpProxy, TcpProxyConfig, UdpProxy, UdpProxyConfig,
};
pub use schedule::{Schedule, ScheduleStep};
pub use workload::{RegionTarget, WorkloadSpec, WorkloadTotals};
