//! What a node does for callers: writes through Raft, linearizable reads (read-index on the
//! leader), membership changes and heartbeat flushes. A follower forwards each of them to the
//! leader once; a node that receives a forwarded request and is not the leader answers
//! `NotLeader` instead of forwarding again, so requests never loop.

use std::collections::BTreeSet;

use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};

use super::MetaNode;
use crate::error::NodeError;
use crate::heartbeat::Recorded;
use crate::raft_types::{Node, NodeId};
use crate::state::{Applied, Command, CommandResult, Object, ObjectKind, Request};

/// Voters and learners of the current membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, Node>>;

impl MetaNode {
    /// Applies `command` through Raft from this node (forwarding to the leader if needed) and
    /// returns what the state machine produced. A rejected command is `NodeError::Rejected`.
    pub async fn write(&self, command: Command) -> Result<Applied, NodeError> {
        let request = Request {
            issued_at_ms: (self.inner.clock)(),
            command,
        };
        Ok(self.submit(request, true).await??)
    }

    /// Submits an already stamped request. `may_forward` is false for requests that were
    /// themselves forwarded.
    pub(crate) async fn submit(
        &self,
        request: Request,
        may_forward: bool,
    ) -> Result<CommandResult, NodeError> {
        self.ensure_running()?;
        let timeout = self.inner.config.request_timeout();
        let outcome =
            tokio::time::timeout(timeout, self.inner.raft.client_write(request.clone())).await;
        match outcome {
            Err(_) => Err(NodeError::Timeout {
                what: "write",
                timeout_ms: self.inner.config.request_timeout_ms,
            }),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(error)) => {
                let forward = self.forward_target(write_error(error)?, may_forward)?;
                self.forward_write(forward, &request).await
            }
        }
    }

    /// Linearizable listing: the leader confirms it still leads a quorum (read-index) and
    /// waits until it applied up to the read index; a follower forwards to the leader.
    /// A node cut off from the quorum refuses (times out) rather than answer stale data.
    pub async fn list(&self, kind: ObjectKind) -> Result<(u64, Vec<Object>), NodeError> {
        self.list_inner(kind, true).await
    }

    pub(crate) async fn list_inner(
        &self,
        kind: ObjectKind,
        may_forward: bool,
    ) -> Result<(u64, Vec<Object>), NodeError> {
        self.ensure_running()?;
        let timeout = self.inner.config.request_timeout();
        match tokio::time::timeout(timeout, self.inner.raft.ensure_linearizable()).await {
            Err(_) => Err(NodeError::Timeout {
                what: "linearizable read",
                timeout_ms: self.inner.config.request_timeout_ms,
            }),
            Ok(Ok(_read_log_id)) => Ok(self
                .inner
                .view
                .read(|state| (state.revision(), state.list(kind)))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
                let target = self.forward_target(forward, may_forward)?;
                self.forward_list(target, kind).await
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(error)))) => {
                Err(NodeError::Raft(format!("read refused: {error}")))
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(NodeError::from(fatal)),
        }
    }

    /// Adds `node_id` at `addr` as a learner: it receives the log but does not vote (regions
    /// that follow metadata without weighing on the quorum). Returns once it caught up.
    pub async fn add_learner(
        &self,
        node_id: NodeId,
        addr: String,
    ) -> Result<Membership, NodeError> {
        self.add_learner_inner(node_id, addr, true).await
    }

    pub(crate) async fn add_learner_inner(
        &self,
        node_id: NodeId,
        addr: String,
        may_forward: bool,
    ) -> Result<Membership, NodeError> {
        self.ensure_running()?;
        let timeout = self.inner.config.request_timeout();
        let call = self
            .inner
            .raft
            .add_learner(node_id, Node::new(addr.clone()), true);
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(NodeError::Timeout {
                what: "add learner",
                timeout_ms: self.inner.config.request_timeout_ms,
            }),
            Ok(Ok(_)) => Ok(self.membership()),
            Ok(Err(error)) => {
                let target = self.forward_target(write_error(error)?, may_forward)?;
                self.forward_add_learner(target, node_id, addr).await
            }
        }
    }

    /// Makes `voters` the voting members (joint consensus under the hood). Every voter must
    /// already be a learner; removed voters stay learners when `retain_as_learners`.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        retain_as_learners: bool,
    ) -> Result<Membership, NodeError> {
        self.change_membership_inner(voters, retain_as_learners, true)
            .await
    }

    pub(crate) async fn change_membership_inner(
        &self,
        voters: BTreeSet<NodeId>,
        retain_as_learners: bool,
        may_forward: bool,
    ) -> Result<Membership, NodeError> {
        self.ensure_running()?;
        let timeout = self.inner.config.request_timeout();
        let call = self
            .inner
            .raft
            .change_membership(voters.clone(), retain_as_learners);
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(NodeError::Timeout {
                what: "change membership",
                timeout_ms: self.inner.config.request_timeout_ms,
            }),
            Ok(Ok(_)) => Ok(self.membership()),
            Ok(Err(error)) => {
                let target = self.forward_target(write_error(error)?, may_forward)?;
                self.forward_change_membership(target, voters, retain_as_learners)
                    .await
            }
        }
    }

    /// Membership as this node last saw it.
    pub fn membership(&self) -> Membership {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        Membership {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// The leader as this node believes it to be, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())?;
        Some((leader, addr))
    }

    /// Records heartbeats of `cells`; returns how many were accepted into the pending batch.
    /// Cells refused because the batch is full should beat again shortly.
    pub fn heartbeat(&self, cells: &[String]) -> Result<usize, NodeError> {
        self.ensure_running()?;
        let now_ms = (self.inner.clock)();
        let mut accepted = 0;
        let mut flush = false;
        {
            let mut batcher = self.inner.heartbeats.lock();
            for cell in cells {
                match batcher.record(cell, now_ms) {
                    Recorded::Pending => accepted += 1,
                    Recorded::FlushNow => {
                        accepted += 1;
                        flush = true;
                    }
                    Recorded::Full => flush = true,
                }
            }
        }
        if flush {
            self.inner.flush_now.notify_one();
        }
        Ok(accepted)
    }

    /// Writes the pending heartbeat batch, if any, as one Raft command.
    pub async fn flush_heartbeats(&self) -> Result<Option<Applied>, NodeError> {
        let beats = self.inner.heartbeats.lock().take();
        if beats.is_empty() {
            return Ok(None);
        }
        let applied = self.write(Command::RecordHeartbeats { beats }).await?;
        Ok(Some(applied))
    }

    /// Where to forward, or why not: a forwarded request is never forwarded again, and a
    /// node that is not a member cannot name a leader.
    fn forward_target(
        &self,
        forward: ForwardToLeader<NodeId, Node>,
        may_forward: bool,
    ) -> Result<(NodeId, String), NodeError> {
        let leader = match (forward.leader_id, forward.leader_node) {
            (Some(id), Some(node)) => Some((id, node.addr)),
            _ => None,
        };
        if !may_forward {
            return Err(NodeError::NotLeader { leader });
        }
        match leader {
            Some(leader) => Ok(leader),
            None if !self.is_member() => Err(NodeError::NotMember {
                node_id: self.inner.id,
            }),
            None => Err(NodeError::NoLeader),
        }
    }

    fn is_member(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&self.inner.id)
            .is_some()
    }
}

/// Splits a write error into "forward to the leader" or a final error.
fn write_error(error: WriteError) -> Result<ForwardToLeader<NodeId, Node>, NodeError> {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => Ok(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::LearnerNotFound(missing),
        )) => Err(NodeError::UnknownNode {
            node_id: missing.node_id,
        }),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            Err(NodeError::Raft(error.to_string()))
        }
        RaftError::Fatal(fatal) => Err(NodeError::from(fatal)),
    }
}
