//! Forwarding to the leader over `MetaService`, with this node's own credentials: the caller
//! was already authenticated here, and a forwarded admin write still needs the admin token
//! at the leader, so a peer-token holder cannot launder admin writes through a follower.

use std::collections::BTreeSet;
use std::future::Future;

use tonic::transport::Channel;

use super::{Membership, MetaNode};
use crate::auth;
use crate::error::NodeError;
use crate::network::GRPC_MESSAGE_BYTES_MAX;
use crate::pb::meta_service_client::MetaServiceClient;
use crate::pb::{
    AddLearnerRequest, ChangeMembershipRequest, ListRequest, MembershipReply, WriteRequest,
};
use crate::raft_types::NodeId;
use crate::state::{CommandResult, Object, ObjectKind, Request};

impl MetaNode {
    fn forward_client(&self, addr: &str) -> Result<MetaServiceClient<Channel>, NodeError> {
        if let Some(client) = self.inner.forward_clients.lock().get(addr) {
            return Ok(client.clone());
        }
        let credentials = &self.inner.credentials;
        let dial = self
            .inner
            .config
            .dial_via
            .get(addr)
            .map_or(addr, String::as_str);
        let channel = auth::endpoint(
            dial,
            credentials.peer.tls(),
            self.inner.config.request_timeout(),
        )
        .map_err(|source| NodeError::Connect {
            addr: addr.to_string(),
            source,
        })?
        .connect_lazy();
        let client = MetaServiceClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        self.inner
            .forward_clients
            .lock()
            .insert(addr.to_string(), client.clone());
        Ok(client)
    }

    fn forward_request<T>(&self, message: T) -> Result<tonic::Request<T>, NodeError> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.inner.config.request_timeout());
        let credentials = &self.inner.credentials;
        credentials
            .peer
            .attach(&mut request)
            .and_then(|()| auth::attach_admin_token(&mut request, &credentials.admin_token))
            .map_err(|_| NodeError::Config {
                field: "credentials",
                reason: "not valid gRPC metadata".into(),
            })?;
        Ok(request)
    }

    /// The injected link faults apply to node-to-node forwarding as they do to Raft.
    async fn cross(&self, from: NodeId, to: NodeId) -> Result<(), NodeError> {
        self.inner
            .faults
            .traverse(from, to)
            .await
            .map_err(|source| NodeError::Unreachable {
                node_id: to,
                source,
            })
    }

    /// One forwarded call: the request crosses the (fault-injectable) link to the leader, the
    /// reply crosses back.
    async fn forward<T, R, Fut>(
        &self,
        (leader, addr): (NodeId, String),
        message: T,
        call: impl FnOnce(MetaServiceClient<Channel>, tonic::Request<T>) -> Fut,
    ) -> Result<R, NodeError>
    where
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let client = self.forward_client(&addr)?;
        let request = self.forward_request(message)?;
        self.cross(self.inner.id, leader).await?;
        let reply = call(client, request)
            .await
            .map_err(|status| NodeError::Rpc { addr, status })?;
        self.cross(leader, self.inner.id).await?;
        Ok(reply.into_inner())
    }

    pub(super) async fn forward_write(
        &self,
        leader: (NodeId, String),
        request: &Request,
    ) -> Result<CommandResult, NodeError> {
        let command_json =
            serde_json::to_vec(&request.command).map_err(|source| NodeError::Codec {
                what: "command",
                source,
            })?;
        let message = WriteRequest {
            command_json,
            forwarded: true,
            issued_at_ms: request.issued_at_ms,
        };
        let reply = self
            .forward(leader, message, |mut client, request| async move {
                client.write(request).await
            })
            .await?;
        serde_json::from_slice(&reply.result_json).map_err(|source| NodeError::Codec {
            what: "write result",
            source,
        })
    }

    pub(super) async fn forward_list(
        &self,
        leader: (NodeId, String),
        kind: ObjectKind,
    ) -> Result<(u64, Vec<Object>), NodeError> {
        let message = ListRequest {
            kind: kind.as_str().to_string(),
            forwarded: true,
        };
        let reply = self
            .forward(leader, message, |mut client, request| async move {
                client.list(request).await
            })
            .await?;
        let objects =
            serde_json::from_slice(&reply.objects_json).map_err(|source| NodeError::Codec {
                what: "listed objects",
                source,
            })?;
        Ok((reply.revision, objects))
    }

    pub(super) async fn forward_add_learner(
        &self,
        leader: (NodeId, String),
        node_id: NodeId,
        learner_addr: String,
    ) -> Result<Membership, NodeError> {
        let message = AddLearnerRequest {
            node_id,
            addr: learner_addr,
            forwarded: true,
        };
        let reply = self
            .forward(leader, message, |mut client, request| async move {
                client.add_learner(request).await
            })
            .await?;
        Ok(membership_of(reply))
    }

    pub(super) async fn forward_change_membership(
        &self,
        leader: (NodeId, String),
        voters: BTreeSet<NodeId>,
        retain_as_learners: bool,
    ) -> Result<Membership, NodeError> {
        let message = ChangeMembershipRequest {
            voters: voters.into_iter().collect(),
            retain_as_learners,
            forwarded: true,
        };
        let reply = self
            .forward(leader, message, |mut client, request| async move {
                client.change_membership(request).await
            })
            .await?;
        Ok(membership_of(reply))
    }
}

pub(crate) fn membership_of(reply: MembershipReply) -> Membership {
    Membership {
        voters: reply.voters.into_iter().collect(),
        learners: reply.learners.into_iter().collect(),
    }
}
