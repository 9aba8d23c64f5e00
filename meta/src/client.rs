//! `MetaClient`: the gRPC client admins, cells and tests use. It tries the configured
//! endpoints in turn (any node accepts writes and forwards them), with a bounded number of
//! attempts and a pause between rounds that doubles up to `retry_pause_max`, so that the
//! default budget outlasts a leader election (about 2.5 s of pauses over six rounds).
//!
//! Retries are at-least-once: a write whose reply was lost may be applied twice, and the
//! second application then fails with the command's own rule (for example `TopicExists`, or
//! `StaleEpoch` for a compare-and-set that already happened).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use meridian_pki::NodeIdentity;
use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::auth;
use crate::error::MetaError;
use crate::network::GRPC_MESSAGE_BYTES_MAX;
use crate::node::Membership;
use crate::pb;
use crate::pb::meta_service_client::MetaServiceClient;
use crate::raft_types::NodeId;
use crate::state::{Applied, Change, Command, CommandResult, Object, ObjectKind};

/// What a client presents. Against a cluster on mutual TLS every client sets `tls` (a
/// certificate from the fabric CA) and admin tooling adds `admin_token`; against a plain-text
/// development cluster cells set `peer_token` instead of `tls`.
#[derive(Clone, Default)]
pub struct ClientCredentials {
    pub tls: Option<Arc<NodeIdentity>>,
    pub peer_token: Option<String>,
    pub admin_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("rejected: {0}")]
    Rejected(#[from] MetaError),
    #[error("{endpoint}: {status}")]
    Status {
        endpoint: String,
        #[source]
        status: tonic::Status,
    },
    #[error("bad endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("encode/decode {what}")]
    Codec {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("credential is not valid gRPC metadata")]
    Credential(#[from] auth::BadToken),
    #[error("no endpoint answered after {attempts} attempts")]
    Exhausted {
        attempts: usize,
        #[source]
        last: Box<ClientError>,
    },
    #[error("no endpoints configured")]
    NoEndpoints,
}

impl ClientError {
    /// Errors worth trying another endpoint for: the node is down, not serving, cannot reach
    /// the leader right now, or is not (yet) a member of the cluster.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                matches!(
                    status.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                        | tonic::Code::Unknown
                ) || (status.code() == tonic::Code::FailedPrecondition
                    && (status.message().starts_with("not the leader")
                        || status.message().starts_with("this node")))
            }
            Self::Endpoint { .. } => true,
            _ => false,
        }
    }
}

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Change(Change),
    /// The watcher fell out of the retained window: re-list, then watch from `revision`.
    Compacted {
        revision: u64,
    },
}

/// A client of the meta cluster.
pub struct MetaClient {
    endpoints: Vec<String>,
    credentials: ClientCredentials,
    request_timeout: Duration,
    attempts_max: usize,
    retry_pause_first: Duration,
    retry_pause_max: Duration,
    clients: Mutex<Vec<Option<MetaServiceClient<Channel>>>>,
}

impl MetaClient {
    /// `endpoints` are `host:port` of meta nodes. Defaults: 5 s per request, 6 rounds over
    /// the endpoints, pauses between rounds of 100 ms doubling up to 1 s.
    pub fn new(endpoints: Vec<String>, credentials: ClientCredentials) -> Self {
        let count = endpoints.len();
        Self {
            endpoints,
            credentials,
            request_timeout: Duration::from_secs(5),
            attempts_max: 6 * count.max(1),
            retry_pause_first: Duration::from_millis(100),
            retry_pause_max: Duration::from_secs(1),
            clients: Mutex::new(vec![None; count]),
        }
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Pause before the second round over the endpoints, doubling each round up to `max`.
    pub fn with_retry_pause(mut self, first: Duration, max: Duration) -> Self {
        self.retry_pause_first = first;
        self.retry_pause_max = max.max(first);
        self
    }

    /// Total attempts over all endpoints before giving up (at least 1).
    pub fn with_attempts_max(mut self, attempts_max: usize) -> Self {
        self.attempts_max = attempts_max.max(1);
        self
    }

    fn client(&self, index: usize) -> Result<MetaServiceClient<Channel>, ClientError> {
        let mut clients = self.clients.lock();
        let slot = clients.get_mut(index).ok_or(ClientError::NoEndpoints)?;
        if let Some(client) = slot {
            return Ok(client.clone());
        }
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        let channel = auth::endpoint(
            endpoint,
            self.credentials.tls.as_deref(),
            self.request_timeout,
        )
        .map_err(|source| ClientError::Endpoint {
            endpoint: endpoint.clone(),
            source,
        })?
        .connect_lazy();
        let client = MetaServiceClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        *slot = Some(client.clone());
        Ok(client)
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.request_timeout);
        self.attach(&mut request)?;
        Ok(request)
    }

    fn attach<T>(&self, request: &mut tonic::Request<T>) -> Result<(), ClientError> {
        if let Some(token) = &self.credentials.peer_token {
            auth::attach_peer_token(request, token)?;
        }
        if let Some(token) = &self.credentials.admin_token {
            auth::attach_admin_token(request, token)?;
        }
        Ok(())
    }

    /// Runs `call` against the endpoints in turn until one answers or the attempts run out.
    async fn with_retries<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(MetaServiceClient<Channel>, String) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        if self.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut last = None;
        let mut pause = self.retry_pause_first;
        for attempt in 0..self.attempts_max {
            let index = attempt % self.endpoints.len();
            if attempt > 0 && index == 0 {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(self.retry_pause_max);
            }
            let client = self.client(index)?;
            match call(client, self.endpoints[index].clone()).await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() => {
                    tracing::debug!(endpoint = %self.endpoints[index], %error, "meta request failed, trying next");
                    last = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(ClientError::Exhausted {
            attempts: self.attempts_max,
            last: Box::new(last.unwrap_or(ClientError::NoEndpoints)),
        })
    }

    /// Applies `command`; a rule violation comes back as `ClientError::Rejected`.
    pub async fn write(&self, command: &Command) -> Result<Applied, ClientError> {
        let command_json = serde_json::to_vec(command).map_err(|source| ClientError::Codec {
            what: "command",
            source,
        })?;
        let result: CommandResult = self
            .with_retries(|mut client, endpoint| {
                let message = pb::WriteRequest {
                    command_json: command_json.clone(),
                    forwarded: false,
                    issued_at_ms: 0,
                };
                let request = self.request(message);
                async move {
                    let reply = client
                        .write(request?)
                        .await
                        .map_err(|status| ClientError::Status { endpoint, status })?;
                    serde_json::from_slice(&reply.into_inner().result_json).map_err(|source| {
                        ClientError::Codec {
                            what: "write result",
                            source,
                        }
                    })
                }
            })
            .await?;
        Ok(result?)
    }

    /// Linearizable listing of one kind, with the revision it reflects.
    pub async fn list(&self, kind: ObjectKind) -> Result<(u64, Vec<Object>), ClientError> {
        self.with_retries(|mut client, endpoint| {
            let request = self.request(pb::ListRequest {
                kind: kind.as_str().to_string(),
                forwarded: false,
            });
            async move {
                let reply = client
                    .list(request?)
                    .await
                    .map_err(|status| ClientError::Status { endpoint, status })?;
                let reply = reply.into_inner();
                let objects = serde_json::from_slice(&reply.objects_json).map_err(|source| {
                    ClientError::Codec {
                        what: "objects",
                        source,
                    }
                })?;
                Ok((reply.revision, objects))
            }
        })
        .await
    }

    /// Reports heartbeats of `cells` to one node; returns how many it accepted.
    pub async fn heartbeat(&self, cells: &[String]) -> Result<u32, ClientError> {
        self.with_retries(|mut client, endpoint| {
            let beats = cells
                .iter()
                .map(|cell| pb::CellBeat { cell: cell.clone() })
                .collect();
            let request = self.request(pb::HeartbeatRequest { cells: beats });
            async move {
                let reply = client
                    .heartbeat(request?)
                    .await
                    .map_err(|status| ClientError::Status { endpoint, status })?;
                Ok(reply.into_inner().accepted)
            }
        })
        .await
    }

    pub async fn add_learner(
        &self,
        node_id: NodeId,
        addr: &str,
    ) -> Result<Membership, ClientError> {
        self.with_retries(|mut client, endpoint| {
            let request = self.request(pb::AddLearnerRequest {
                node_id,
                addr: addr.to_string(),
                forwarded: false,
            });
            async move {
                let reply = client
                    .add_learner(request?)
                    .await
                    .map_err(|status| ClientError::Status { endpoint, status })?;
                Ok(crate::node::membership_of(reply.into_inner()))
            }
        })
        .await
    }

    pub async fn change_membership(
        &self,
        voters: &BTreeSet<NodeId>,
        retain_as_learners: bool,
    ) -> Result<Membership, ClientError> {
        self.with_retries(|mut client, endpoint| {
            let message = pb::ChangeMembershipRequest {
                voters: voters.iter().copied().collect(),
                retain_as_learners,
                forwarded: false,
            };
            let request = self.request(message);
            async move {
                let reply = client
                    .change_membership(request?)
                    .await
                    .map_err(|status| ClientError::Status { endpoint, status })?;
                Ok(crate::node::membership_of(reply.into_inner()))
            }
        })
        .await
    }

    /// Status of the node at endpoint `index` (no retries: it asks that node specifically).
    pub async fn status(&self, index: usize) -> Result<pb::StatusReply, ClientError> {
        let mut client = self.client(index)?;
        let endpoint = self.endpoints.get(index).cloned().unwrap_or_default();
        let reply = client
            .status(self.request(pb::StatusRequest {})?)
            .await
            .map_err(|status| ClientError::Status { endpoint, status })?;
        Ok(reply.into_inner())
    }

    /// Opens a watch on the node at endpoint `index` for changes after `from_revision`.
    /// No request timeout applies: the stream lives until either side ends it.
    pub async fn watch(
        &self,
        index: usize,
        from_revision: u64,
    ) -> Result<WatchStream, ClientError> {
        let mut client = self.client(index)?;
        let endpoint = self.endpoints.get(index).cloned().unwrap_or_default();
        let mut request = tonic::Request::new(pb::WatchRequest { from_revision });
        self.attach(&mut request)?;
        let stream = client
            .watch(request)
            .await
            .map_err(|status| ClientError::Status {
                endpoint: endpoint.clone(),
                status,
            })?
            .into_inner();
        Ok(WatchStream { endpoint, stream })
    }
}

/// An open watch.
pub struct WatchStream {
    endpoint: String,
    stream: tonic::Streaming<pb::WatchEvent>,
}

impl WatchStream {
    /// The next change; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchItem>, ClientError> {
        let event = self
            .stream
            .message()
            .await
            .map_err(|status| ClientError::Status {
                endpoint: self.endpoint.clone(),
                status,
            })?;
        let Some(event) = event else { return Ok(None) };
        if event.compacted {
            return Ok(Some(WatchItem::Compacted {
                revision: event.revision,
            }));
        }
        let change =
            serde_json::from_slice(&event.change_json).map_err(|source| ClientError::Codec {
                what: "change",
                source,
            })?;
        Ok(Some(WatchItem::Change(change)))
    }
}
