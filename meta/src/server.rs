//! gRPC services of a meta node: `RaftService` (peer traffic) and `MetaService` (admin
//! writes, linearizable reads, watches, heartbeats, membership). Every handler checks the
//! caller's credential first and refuses anything else; `status_of` is the one place node
//! errors become gRPC statuses.

use std::collections::BTreeSet;
use std::pin::Pin;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::NodeError;
use crate::network::GRPC_MESSAGE_BYTES_MAX;
use crate::node::MetaNode;
use crate::pb;
use crate::pb::meta_service_server::{MetaService, MetaServiceServer};
use crate::pb::raft_service_server::{RaftService, RaftServiceServer};
use crate::raft_types::{NodeId, TypeConfig};
use crate::state::{Command, ObjectKind, Since};

/// Metadata key carrying the leader's address on a `NotLeader` refusal.
pub const LEADER_HINT_HEADER: &str = "x-meridian-leader";

/// Both services of `node`, ready to serve; over mutual TLS when the node's peer identity is a
/// certificate.
pub(crate) fn router(node: MetaNode) -> Result<tonic::transport::server::Router, NodeError> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = node.inner.credentials.peer.tls() {
        let handshake_timeout = node.inner.config.request_timeout();
        builder = builder
            .tls_config(crate::auth::server_tls(identity, handshake_timeout))
            .map_err(NodeError::Tls)?;
    }
    let raft = RaftServiceServer::new(RaftHandler { node: node.clone() })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let meta = MetaServiceServer::new(MetaHandler { node })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    Ok(builder.add_service(raft).add_service(meta))
}

/// Maps a node error to the status a client sees.
pub(crate) fn status_of(error: NodeError) -> Status {
    match error {
        NodeError::NotLeader { leader } => {
            let mut status =
                Status::failed_precondition(format!("not the leader (leader: {leader:?})"));
            if let Some((_, addr)) = leader
                && let Ok(value) = addr.parse()
            {
                status.metadata_mut().insert(LEADER_HINT_HEADER, value);
            }
            status
        }
        NodeError::NotMember { .. } | NodeError::UnknownNode { .. } | NodeError::Rejected(_) => {
            Status::failed_precondition(error.to_string())
        }
        NodeError::NoLeader
        | NodeError::Stopped
        | NodeError::Unreachable { .. }
        | NodeError::Timeout { .. }
        | NodeError::Fatal(_)
        | NodeError::Raft(_)
        | NodeError::Connect { .. } => Status::unavailable(error.to_string()),
        NodeError::Rpc { status, .. } => status,
        NodeError::Codec { .. } => Status::invalid_argument(error.to_string()),
        NodeError::Storage(_)
        | NodeError::Rocks { .. }
        | NodeError::Config { .. }
        | NodeError::Tls(_)
        | NodeError::Pki(_)
        | NodeError::Io(_) => Status::internal(error.to_string()),
    }
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|error| Status::invalid_argument(format!("malformed {what}: {error}")))
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|error| Status::internal(format!("encode {what}: {error}")))
}

fn running(node: &MetaNode) -> Result<(), Status> {
    node.ensure_running().map_err(status_of)
}

/// The gate of every handler: the caller's credentials pass `check`, and the node is serving.
fn admit<T>(
    node: &MetaNode,
    request: &Request<T>,
    check: fn(&Caller) -> Result<(), Status>,
) -> Result<(), Status> {
    check(&node.inner.credentials.caller(request))?;
    running(node)
}

struct RaftHandler {
    node: MetaNode,
}

#[tonic::async_trait]
impl RaftService for RaftHandler {
    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        admit(&self.node, &request, Caller::require_peer)?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode("append entries", &request.get_ref().json)?;
        let result = self.node.raft().append_entries(rpc).await;
        Ok(Response::new(pb::RaftPayload {
            json: encode("append entries reply", &result)?,
        }))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        admit(&self.node, &request, Caller::require_peer)?;
        let rpc: VoteRequest<NodeId> = decode("vote", &request.get_ref().json)?;
        let result = self.node.raft().vote(rpc).await;
        Ok(Response::new(pb::RaftPayload {
            json: encode("vote reply", &result)?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::SnapshotChunk>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        admit(&self.node, &request, Caller::require_peer)?;
        let chunk = request.into_inner();
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: decode("snapshot vote", &chunk.vote_json)?,
            meta: decode("snapshot meta", &chunk.meta_json)?,
            offset: chunk.offset,
            data: chunk.data,
            done: chunk.done,
        };
        let result = self.node.raft().install_snapshot(rpc).await;
        Ok(Response::new(pb::RaftPayload {
            json: encode("install snapshot reply", &result)?,
        }))
    }
}

struct MetaHandler {
    node: MetaNode,
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl MetaService for MetaHandler {
    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let caller = self.node.inner.credentials.caller(&request);
        let command: Command = decode("command", &request.get_ref().command_json)?;
        if command.needs_admin() {
            caller.require_admin()?;
        } else {
            caller.require_peer_or_admin()?;
        }
        running(&self.node)?;
        let message = request.get_ref();
        // Only a peer's forwarded request keeps its original stamp; anything else is stamped
        // here, by the node that first accepted it.
        let issued_at_ms = if message.forwarded && caller.peer {
            message.issued_at_ms
        } else {
            (self.node.inner.clock)()
        };
        let submitted = crate::state::Request {
            issued_at_ms,
            command,
        };
        let result = self
            .node
            .submit(submitted, !message.forwarded)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::WriteReply {
            result_json: encode("write result", &result)?,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListReply>, Status> {
        admit(&self.node, &request, Caller::require_peer_or_admin)?;
        let message = request.into_inner();
        let kind = ObjectKind::parse(&message.kind).ok_or_else(|| {
            Status::invalid_argument(format!("unknown object kind `{}`", message.kind))
        })?;
        let (revision, objects) = self
            .node
            .list_inner(kind, !message.forwarded)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListReply {
            revision,
            objects_json: encode("objects", &objects)?,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        admit(&self.node, &request, Caller::require_peer_or_admin)?;
        let slot = self.node.watch_slot().ok_or_else(|| {
            Status::resource_exhausted("this meta node serves its maximum number of watches")
        })?;
        let batch_max = self.node.inner.config.watch_batch_changes_max.max(1);
        let (tx, rx) = mpsc::channel(batch_max);
        let node = self.node.clone();
        let from_revision = request.get_ref().from_revision;
        tokio::spawn(async move {
            let _slot = slot;
            stream_changes(node, from_revision, batch_max, tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        self.node
            .inner
            .credentials
            .caller(&request)
            .require_peer_or_admin()?;
        let cells: Vec<String> = request
            .into_inner()
            .cells
            .into_iter()
            .map(|beat| beat.cell)
            .collect();
        let accepted = self.node.heartbeat(&cells).map_err(status_of)?;
        Ok(Response::new(pb::HeartbeatReply {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        admit(&self.node, &request, Caller::require_admin)?;
        let message = request.into_inner();
        let membership = self
            .node
            .add_learner_inner(message.node_id, message.addr, !message.forwarded)
            .await
            .map_err(status_of)?;
        Ok(Response::new(membership_reply(membership)))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        admit(&self.node, &request, Caller::require_admin)?;
        let message = request.into_inner();
        let voters: BTreeSet<NodeId> = message.voters.into_iter().collect();
        let membership = self
            .node
            .change_membership_inner(voters, message.retain_as_learners, !message.forwarded)
            .await
            .map_err(status_of)?;
        Ok(Response::new(membership_reply(membership)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        admit(&self.node, &request, Caller::require_peer_or_admin)?;
        let (leader_id, leader_addr) = self.node.leader().unwrap_or((0, String::new()));
        let term = self.node.raft().metrics().borrow().current_term;
        Ok(Response::new(pb::StatusReply {
            node_id: self.node.id(),
            leader_id,
            leader_addr,
            term,
            last_applied_index: self.node.view().last_applied_index(),
            revision: self.node.view().read(|state| state.revision()),
        }))
    }
}

fn membership_reply(membership: crate::node::Membership) -> pb::MembershipReply {
    pb::MembershipReply {
        voters: membership.voters.into_iter().collect(),
        learners: membership.learners.into_iter().collect(),
    }
}

/// Streams every change after `after` in revision order until the client goes away, the node
/// stops, or the watcher falls out of the retained window (then one `compacted` event).
async fn stream_changes(
    node: MetaNode,
    mut after: u64,
    batch_max: usize,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
) {
    let view = node.view().clone();
    let mut revisions = view.subscribe();
    let mut stop = node.stop_signal();
    loop {
        if *stop.borrow() {
            let _ = tx
                .send(Err(Status::unavailable(
                    "meta node stopped; reconnect to another node",
                )))
                .await;
            return;
        }
        // Mark the revision seen *before* reading, so a change landing in between wakes us.
        revisions.borrow_and_update();
        match view.read(|state| state.changes_since(after, batch_max)) {
            Since::Compacted { current_revision } => {
                let event = pb::WatchEvent {
                    revision: current_revision,
                    change_json: Vec::new(),
                    compacted: true,
                };
                let _ = tx.send(Ok(event)).await;
                return;
            }
            Since::Changes(changes) if changes.is_empty() => {
                tokio::select! {
                    changed = revisions.changed() => if changed.is_err() { return },
                    _ = stop.changed() => {}
                    () = tx.closed() => return,
                }
            }
            Since::Changes(changes) => {
                for change in changes {
                    after = change.revision;
                    let event = match serde_json::to_vec(&change) {
                        Ok(change_json) => pb::WatchEvent {
                            revision: change.revision,
                            change_json,
                            compacted: false,
                        },
                        Err(error) => {
                            let _ = tx
                                .send(Err(Status::internal(format!("encode change: {error}"))))
                                .await;
                            return;
                        }
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
