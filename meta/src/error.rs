//! Errors: `MetaError` for rejected commands (deterministic, part of the replicated result) and
//! `NodeError` for everything the IO shell can hit (disk, network, Raft, timeouts).

use serde::{Deserialize, Serialize};

use crate::raft_types::NodeId;

/// Why the state machine rejected a command. Produced identically on every replica, so it is
/// serialisable and travels back to the client as the command's result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetaError {
    #[error("region `{region}` does not exist")]
    RegionNotFound { region: String },
    #[error("region `{region}` is still used by {user}")]
    RegionInUse { region: String, user: String },
    #[error("region `{region}` is {status} and cannot become a topic's home")]
    RegionNotActive { region: String, status: String },
    #[error("cell `{cell}` does not exist")]
    CellNotFound { cell: String },
    #[error("cell `{cell}` already exists in region `{region}`")]
    CellInOtherRegion { cell: String, region: String },
    #[error("topic `{topic}` does not exist")]
    TopicNotFound { topic: String },
    #[error("topic `{topic}` already exists")]
    TopicExists { topic: String },
    #[error("topic `{topic}` is used by consumer group `{group}`")]
    TopicInUse { topic: String, group: String },
    #[error("consumer group `{group}` does not exist")]
    ConsumerGroupNotFound { group: String },
    #[error("user `{user}` does not exist")]
    UserNotFound { user: String },
    #[error("invalid {kind} name `{name}`: {reason}")]
    InvalidName {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("topic `{topic}` names no region")]
    TopicWithoutRegions { topic: String },
    #[error("topic `{topic}`: home region `{home}` is not among the topic's regions")]
    HomeNotAmongRegions { topic: String, home: String },
    #[error("topic `{topic}`: sync-quorum replication needs at least {min} regions, got {count}")]
    SyncQuorumTooFewRegions {
        topic: String,
        count: usize,
        min: usize,
    },
    #[error("topic `{topic}`: queue count {queue_count} is outside 1..={max}")]
    QueueCountOutOfRange {
        topic: String,
        queue_count: u32,
        max: u32,
    },
    #[error("topic `{topic}`: message type cannot change from {from} to {to}")]
    MessageTypeChange {
        topic: String,
        from: String,
        to: String,
    },
    #[error("topic `{topic}` is active-active and has no home to move")]
    NoHomeToMove { topic: String },
    #[error("topic `{topic}`: {reason}")]
    InvalidMove { topic: String, reason: String },
    #[error("topic `{topic}` is not a FIFO topic")]
    NotFifoTopic { topic: String },
    #[error("consumer group `{group}`: invalid retry policy: {reason}")]
    InvalidRetryPolicy { group: String, reason: String },
    #[error("consumer group `{group}` does not subscribe to topic `{topic}`")]
    NotSubscribed { group: String, topic: String },
    #[error("{what}: {count} exceeds the limit of {max}")]
    LimitExceeded {
        what: String,
        count: usize,
        max: usize,
    },
    #[error("stale epoch for {object}: expected {expected}, current is {current}")]
    StaleEpoch {
        object: String,
        expected: u64,
        current: u64,
    },
    #[error("message group {key} is owned by `{owner}` until {lease_until_ms} ms")]
    MessageGroupOwned {
        key: String,
        owner: String,
        lease_until_ms: u64,
    },
    #[error("message group {key} is not owned by `{owner}`")]
    NotMessageGroupOwner { key: String, owner: String },
}

/// Errors of the IO shell: storage, Raft, gRPC and configuration.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("command rejected: {0}")]
    Rejected(#[from] MetaError),
    #[error("rocksdb at {path}")]
    Rocks {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    /// Boxed: openraft's storage error is large and would bloat every `Result`.
    #[error("raft storage")]
    Storage(#[source] Box<openraft::StorageError<NodeId>>),
    #[error("raft: {0}")]
    Raft(String),
    #[error("raft stopped")]
    Fatal(#[source] Box<openraft::error::Fatal<NodeId>>),
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("no leader is known")]
    NoLeader,
    #[error("this meta node is stopped")]
    Stopped,
    #[error("node {node_id} is unreachable")]
    Unreachable {
        node_id: NodeId,
        #[source]
        source: crate::faults::LinkCut,
    },
    /// This node has not (yet) been added to the cluster, so it knows no leader.
    #[error("this node ({node_id}) is not part of the cluster")]
    NotMember { node_id: NodeId },
    /// A membership change names a node that was never added as a learner.
    #[error("node {node_id} is not part of the cluster; add it as a learner first")]
    UnknownNode { node_id: NodeId },
    #[error("{what} timed out after {timeout_ms} ms")]
    Timeout { what: &'static str, timeout_ms: u64 },
    #[error("encode/decode {what}")]
    Codec {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("rpc to {addr}: {status}")]
    Rpc {
        addr: String,
        #[source]
        status: tonic::Status,
    },
    #[error("certificates")]
    Pki(#[from] meridian_pki::PkiError),
    /// The TLS configuration of the node's server (certificate or key unusable).
    #[error("tls setup")]
    Tls(#[source] tonic::transport::Error),
    #[error("invalid configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("io")]
    Io(#[from] std::io::Error),
}

impl From<openraft::StorageError<NodeId>> for NodeError {
    fn from(error: openraft::StorageError<NodeId>) -> Self {
        Self::Storage(Box::new(error))
    }
}

impl From<openraft::error::Fatal<NodeId>> for NodeError {
    fn from(error: openraft::error::Fatal<NodeId>) -> Self {
        Self::Fatal(Box::new(error))
    }
}
