//! Meridian meta: the cluster metadata every region agrees on, and its consensus.
//!
//! **Owns**: the replicated metadata state (regions, cells and their heartbeats, topics with
//! replication mode, topology and failover epochs, consumer groups, users and permissions,
//! FIFO message-group ownership), its Raft group (openraft 0.9 with RocksDB storage), and the
//! gRPC API over it (admin writes, linearizable reads, resumable watches, heartbeats,
//! membership changes).
//!
//! **Depends on**: openraft, rocksdb, tonic/prost, tokio. **Must not depend on** `cell`,
//! `replicator` or `router`: they read metadata through this crate's client or API, never the
//! other way round. Meta is the only writer of failover epochs.
//!
//! Layout:
//! - [`state`]: the sans-IO state machine (`State::apply`), its validations, the
//!   compare-and-set epoch rule and the bounded change log for watch resumption.
//! - [`heartbeat`]: sans-IO batching of cell heartbeats into one Raft write per interval.
//! - [`store`]: RocksDB log, vote and snapshot storage for openraft.
//! - `network`, `server`, [`node`], [`client`]: the gRPC shell.
//!
//! Reads: `List` is linearizable by **read-index**: the leader confirms with a quorum that it
//! still leads (openraft `ensure_linearizable`) and waits until it applied up to that index;
//! followers forward to the leader. A node cut off from the quorum therefore refuses reads
//! (after `request_timeout_ms`) instead of serving stale data. No leader lease is used, so
//! reads stay correct under clock drift. Watches are served by any node from its applied
//! state: a lagging replica delivers changes later, never out of order or with gaps.
//!
//! Security (interim): every RPC needs a token (see [`auth`]): the cluster peer token for Raft
//! traffic and node-facing calls, the admin token for admin writes. Mutual TLS is not yet
//! wired; until it is, tokens cross the network in clear text.
//!
//! Timers derive from the expected inter-region round trip ([`config`] documents the formula
//! and defaults). Measured with `examples/meta_bench.rs` (debug build, shared 2-core box,
//! 3 nodes on loopback): new leader elected ~1.0-1.4 s after a leader kill at 0 ms delay;
//! ~3 s at 50 ms one-way delay (election timeout 800..1600 ms there).
//!
//! Known gaps of this first pass: no mutual TLS; domain payloads travel as JSON bytes inside
//! the protobuf messages; client retries are at-least-once (no per-client request ids); the
//! multi-node tests run nodes in one process (no child processes); openraft 0.9 replicates
//! stop-and-wait per follower, so a commit under WAN delay costs up to two round trips.

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod faults;
pub mod heartbeat;
pub mod network;
pub mod node;
pub mod raft_types;
pub mod server;
pub mod state;
pub mod store;

/// Generated protobuf and gRPC code for `meridian.meta.v1`.
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod pb {
    tonic::include_proto!("meridian.meta.v1");
}

pub use auth::Credentials;
pub use client::{ClientCredentials, ClientError, MetaClient, WatchItem, WatchStream};
pub use config::MetaConfig;
pub use error::{MetaError, NodeError};
pub use faults::LinkFaults;
pub use node::{Clock, Membership, MetaNode, NodeOptions, RunningNode, system_clock};
pub use raft_types::{NodeId, TypeConfig};
