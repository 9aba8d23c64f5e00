//! openraft type configuration: what a log entry carries (`Request`) and returns
//! (`CommandResult`), node ids and addresses.

use std::io::Cursor;

use crate::state::{CommandResult, Request};

/// Raft node id of a meta node.
pub type NodeId = u64;

/// What membership stores about a node: the address of its gRPC server (`host:port`).
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// Type configuration of the meta Raft group.
    pub TypeConfig:
        D = Request,
        R = CommandResult,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
