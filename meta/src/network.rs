//! The Raft network over gRPC: `RaftNetworkFactory` / `RaftNetwork` sending serde-JSON
//! openraft payloads through `RaftService`, over mutual TLS (or, in development, plain text
//! with the peer token on every call; see [`crate::auth`]).

// openraft's trait signatures fix the (large) error types returned here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::auth::{self, PeerAuth};
use crate::faults::LinkFaults;
use crate::pb::raft_service_client::RaftServiceClient;
use crate::pb::{RaftPayload, SnapshotChunk};
use crate::raft_types::{Node, NodeId, TypeConfig};

/// Largest gRPC message a meta node sends or accepts (snapshot chunks are far smaller).
pub(crate) const GRPC_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Creates one `PeerNetwork` per replication target.
pub struct NetworkFactory {
    self_id: NodeId,
    faults: Arc<LinkFaults>,
    peer: PeerAuth,
    rpc_timeout: Duration,
    /// Peer address → the address dialled instead (see `MetaConfig::dial_via`).
    dial_via: BTreeMap<String, String>,
}

impl NetworkFactory {
    /// Dials each peer address in `dial_via` through its replacement.
    pub fn dialling_via(mut self, dial_via: BTreeMap<String, String>) -> Self {
        self.dial_via = dial_via;
        self
    }

    pub fn new(
        self_id: NodeId,
        faults: Arc<LinkFaults>,
        peer: PeerAuth,
        rpc_timeout: Duration,
    ) -> Self {
        Self {
            self_id,
            faults,
            peer,
            rpc_timeout,
            dial_via: BTreeMap::new(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerNetwork {
        PeerNetwork {
            self_id: self.self_id,
            target,
            addr: self
                .dial_via
                .get(&node.addr)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            faults: Arc::clone(&self.faults),
            peer: self.peer.clone(),
            rpc_timeout: self.rpc_timeout,
            client: None,
        }
    }
}

/// The link to one peer. The gRPC channel is created lazily and reconnects by itself.
pub struct PeerNetwork {
    self_id: NodeId,
    target: NodeId,
    addr: String,
    faults: Arc<LinkFaults>,
    peer: PeerAuth,
    rpc_timeout: Duration,
    client: Option<RaftServiceClient<Channel>>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl PeerNetwork {
    fn client<E: std::error::Error>(&mut self) -> RpcResult<RaftServiceClient<Channel>, E> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let channel = auth::endpoint(&self.addr, self.peer.tls(), self.rpc_timeout)
            .map_err(|error| RPCError::Unreachable(Unreachable::new(&error)))?
            .connect_lazy();
        let client = RaftServiceClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        self.client = Some(client.clone());
        Ok(client)
    }

    fn request<T>(&self, message: T, timeout: Duration) -> RpcResult<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        self.peer
            .attach(&mut request)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        Ok(request)
    }

    /// The fault layer, the deadline and the decoding shared by every RPC.
    async fn finish<T, E>(
        &self,
        call: impl Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
        timeout: Duration,
    ) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if let Err(cut) = self.faults.traverse(self.self_id, self.target).await {
            return Err(RPCError::Unreachable(Unreachable::new(&cut)));
        }
        let response = match tokio::time::timeout(timeout, call).await {
            Err(elapsed) => return Err(RPCError::Network(NetworkError::new(&elapsed))),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Ok(Err(status)) => return Err(RPCError::Network(NetworkError::new(&status))),
            Ok(Ok(response)) => response.into_inner(),
        };
        if let Err(cut) = self.faults.traverse(self.target, self.self_id).await {
            return Err(RPCError::Unreachable(Unreachable::new(&cut)));
        }
        let result: Result<T, RaftError<NodeId, E>> = serde_json::from_slice(&response.json)
            .map_err(|error| RPCError::Network(NetworkError::new(&error)))?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.target, error)))
    }

    fn timeout(&self, option: &RPCOption) -> Duration {
        self.rpc_timeout.min(option.hard_ttl())
    }
}

fn encode<T: Serialize, E: std::error::Error>(value: &T) -> RpcResult<Vec<u8>, E> {
    serde_json::to_vec(value).map_err(|error| RPCError::Network(NetworkError::new(&error)))
}

fn widen<T>(result: RpcResult<T>) -> RpcResult<T, InstallSnapshotError> {
    result.map_err(|error| match error {
        RPCError::Timeout(e) => RPCError::Timeout(e),
        RPCError::Unreachable(e) => RPCError::Unreachable(e),
        RPCError::PayloadTooLarge(e) => RPCError::PayloadTooLarge(e),
        RPCError::Network(e) => RPCError::Network(e),
        RPCError::RemoteError(e) => RPCError::Network(NetworkError::new(&e)),
    })
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let timeout = self.timeout(&option);
        let json = encode(&rpc)?;
        let mut client = self.client()?;
        let request = self.request(RaftPayload { json }, timeout)?;
        self.finish(client.append_entries(request), timeout).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let timeout = self.timeout(&option);
        let chunk = SnapshotChunk {
            vote_json: encode(&rpc.vote)?,
            meta_json: encode(&rpc.meta)?,
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let mut client = widen(self.client())?;
        let request = widen(self.request(chunk, timeout))?;
        self.finish(client.install_snapshot(request), timeout).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let timeout = self.timeout(&option);
        let json = encode(&rpc)?;
        let mut client = self.client()?;
        let request = self.request(RaftPayload { json }, timeout)?;
        self.finish(client.vote(request), timeout).await
    }
}
