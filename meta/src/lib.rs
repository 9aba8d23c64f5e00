//! Meridian meta: the cluster metadata every region agrees on, and its consensus.
//!
//! **Owns**: the replicated metadata state (regions, cells and their heartbeats, topics with
//! replication mode, topology and failover epochs, consumer groups, users and permissions,
//! FIFO message-group ownership), its Raft group (openraft 0.9 with RocksDB storage), and the
//! gRPC API over it (admin writes, linearizable reads, resumable watches, heartbeats,
//! membership changes).
//!
//! **Depends on**: openraft, rocksdb, tonic/prost, tokio, `pki` (certificates for mutual
//! TLS). **Must not depend on** `cell`,
//! `replicator` or `router`: they read metadata through this crate's client or API, never the
//! other way round. Meta is the only writer of failover epochs.
//!
//! Layout:
//! - [`state`]: the sans-IO state machine (`State::apply`), its validations, the
//!   compare-and-set epoch rule and the bounded change log for watch resumption.
//! - [`heartbeat`]: sans-IO batching of cell heartbeats into one Raft write per interval.
//! - [`store`]: RocksDB log, vote and snapshot storage for openraft.
//! - [`auth`]: peer identity (mutual TLS, or a token on the plain-text dev transport) and the
//!   admin credential.
//! - `network`, `server`, [`node`], [`client`]: the gRPC shell.
//! - [`node_file`] and the `meridian-meta-node` binary: one node as its own process.
//!
//! Reads: `List` is linearizable by **read-index**: the leader confirms with a quorum that it
//! still leads (openraft `ensure_linearizable`) and waits until it applied up to that index;
//! followers forward to the leader. A node cut off from the quorum therefore refuses reads
//! (after `request_timeout_ms`) instead of serving stale data. No leader lease is used, so
//! reads stay correct under clock drift. Watches are served by any node from its applied
//! state: a lagging replica delivers changes later, never out of order or with gaps.
//!
//! Security (see [`auth`]): Raft traffic and the node-facing API run over mutual TLS with
//! certificates from the fabric CA (the replicator's CA); a caller without such a certificate
//! is refused in the handshake. Admin writes and membership changes also need the admin token.
//! Plain text with a shared peer token exists for development and tests and must be chosen
//! explicitly ([`PeerAuth::PlaintextToken`]; `plaintext_peer_token` in a node file).
//!
//! Timers derive from the expected inter-region round trip ([`config`] documents the formula
//! and defaults). Write latency, throughput and time-to-new-leader are measured by
//! `examples/meta_bench.rs`; figures and the command are in docs/benchmarks.md ("Meta").
//!
//! Tests: `tests/cluster.rs` runs 3- and 5-node clusters in one process over mutual TLS;
//! `tests/processes.rs` runs nodes as child processes and kills the leader with SIGKILL.
//!
//! Known gaps: domain payloads travel as JSON bytes inside the protobuf messages; client
//! retries are at-least-once (no per-client request ids); any certificate of the fabric CA is
//! a peer (no roles by certificate name yet), and there is no revocation; openraft 0.9
//! replicates stop-and-wait per follower, so a commit under WAN delay costs up to two round
//! trips.

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod faults;
pub mod heartbeat;
pub mod network;
pub mod node;
pub mod node_file;
pub mod raft_types;
pub mod server;
pub mod state;
pub mod store;

/// Generated protobuf and gRPC code for `meridian.meta.v1`.
#[allow(clippy::all, unreachable_pub, missing_docs)]
pub mod pb {
    tonic::include_proto!("meridian.meta.v1");
}

pub use auth::{Credentials, PeerAuth};
pub use client::{ClientCredentials, ClientError, MetaClient, WatchItem, WatchStream};
pub use config::MetaConfig;
pub use error::{MetaError, NodeError};
pub use faults::LinkFaults;
pub use node::{Clock, Membership, MetaNode, NodeOptions, RunningNode, system_clock};
pub use raft_types::{NodeId, TypeConfig};
