//! `MessagingService` for a cell: each RPC checks the caller, translates the request, calls the
//! broker and shapes the answer so that official clients never panic or hang on it.
//!
//! Unary RPCs always answer gRPC OK with the outcome in the body's `status` (T7). Producing and
//! routing RPCs are here; consuming RPCs are in `consume.rs`, Telemetry and transaction checks in
//! `telemetry.rs`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use meridian_proto::metadata::{CLIENT_ID, LANGUAGE, language_from_header};
use meridian_proto::rocketmq::v2::messaging_service_server::MessagingService;
use meridian_proto::rocketmq::v2::{self as pb, AddressScheme, Code, Language, Permission};
use tokio_stream::Stream;
use tonic::{Request, Response};
use tracing::Instrument;

use super::auth::{Authenticator, Principal};
use super::convert;
use super::forward::{FORWARDED_FROM_HEADER, forwarded_metadata};
use super::session::Sessions;
use super::stats::Rpc;
use super::status::{self, Refusal};
use super::{GrpcConfig, GrpcError};
use crate::messaging::{Broker, RefusalReason, TransactionResolution, WriteDecision, WriteRefusal};

pub(crate) type ItemStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Who sent a request, from its headers.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) client_id: String,
    pub(crate) language: Language,
    pub(crate) principal: Principal,
}

/// The service shared by every connection.
#[derive(Clone)]
pub(crate) struct CellService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: GrpcConfig,
    pub(crate) authenticator: Authenticator,
    pub(crate) sessions: Sessions,
    /// Endpoint routes carry when neither an advertised endpoint nor the client's access point
    /// is known.
    pub(crate) local_addr: SocketAddr,
    /// `host:port` written as the store host of delivered messages.
    pub(crate) store_host: String,
    /// Rotates transaction checks over a topic's producers.
    pub(crate) check_rotation: AtomicU64,
}

impl CellService {
    pub(crate) fn new(
        broker: Arc<Broker>,
        config: GrpcConfig,
        local_addr: SocketAddr,
    ) -> Result<Self, GrpcError> {
        let authenticator = Authenticator::new(config.auth.as_ref());
        let sessions = Sessions::new(config.max_client_sessions, config.max_streams_per_client);
        let store_host = config.advertised_endpoint.unwrap_or(local_addr).to_string();
        Ok(CellService {
            inner: Arc::new(Inner {
                broker,
                config,
                authenticator,
                sessions,
                local_addr,
                store_host,
                check_rotation: AtomicU64::new(0),
            }),
        })
    }

    /// The caller of a request, or the refusal to answer with (in the caller's language).
    pub(crate) fn caller_of<T>(&self, request: &Request<T>) -> Result<Caller, (Refusal, Language)> {
        caller_from(&self.inner.authenticator, request.metadata())
    }

    /// Forwards the whole request when the router says another region takes every message of
    /// it (see `forward`); `None` when this cell answers itself.
    async fn try_forward(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        request: &pb::SendMessageRequest,
    ) -> Option<Result<Response<pb::SendMessageResponse>, tonic::Status>> {
        let forwarder = self.inner.config.forwarder.as_ref()?;
        if metadata.contains_key(FORWARDED_FROM_HEADER) {
            // One hop at most: the home's own refusal goes back to the client.
            return None;
        }
        let region = self.forward_region(request)?;
        let own_region = self.inner.broker.storage().region();
        tracing::debug!(to = %region, "forwarding a send to the region that takes it");
        let outgoing = match forwarded_metadata(metadata, own_region) {
            Ok(outgoing) => outgoing,
            Err(status) => return Some(Err(status)),
        };
        Some(
            forwarder
                .forward(&region, outgoing, request.clone())
                .await
                .map(Response::new),
        )
    }

    /// The one other region the write gate names as taking every message of the request.
    fn forward_region(&self, request: &pb::SendMessageRequest) -> Option<String> {
        let own_region = self.inner.broker.storage().region();
        let mut target: Option<String> = None;
        for message in &request.messages {
            let topic = message.topic.as_ref()?.name.as_str();
            let group = message
                .system_properties
                .as_ref()
                .and_then(|system| system.message_group.as_deref())
                .unwrap_or("");
            match self.inner.broker.write_decision(topic, group) {
                WriteDecision::Refuse(WriteRefusal {
                    reason: RefusalReason::NotHome,
                    home_region,
                    ..
                }) if !home_region.is_empty() && home_region != own_region => {
                    if target.as_ref().is_some_and(|target| *target != home_region) {
                        return None;
                    }
                    target = Some(home_region);
                }
                _ => return None,
            }
        }
        target
    }

    async fn send(
        &self,
        caller: &Caller,
        request: pb::SendMessageRequest,
    ) -> pb::SendMessageResponse {
        let count = request.messages.len();
        if count == 0 {
            let refusal = Refusal::new(Code::BadRequest, "the request carries no message");
            return pb::SendMessageResponse {
                status: Some(refusal.to_status(caller.language)),
                entries: Vec::new(),
            };
        }
        let max_body = self.inner.broker.config().limits.max_message_body_bytes;
        let mut message_ids = Vec::with_capacity(count);
        let mut outgoing = Vec::with_capacity(count);
        let mut refusal = None;
        for message in request.messages {
            let id = message
                .system_properties
                .as_ref()
                .map(|system| system.message_id.clone())
                .unwrap_or_default();
            message_ids.push(id);
            if refusal.is_some() {
                continue;
            }
            match convert::outgoing(message, max_body).and_then(|message| {
                caller.principal.may_publish(&message.topic)?;
                self.auto_create_topic(&message.topic)?;
                Ok(message)
            }) {
                Ok(message) => outgoing.push(message),
                Err(error) => refusal = Some(error),
            }
        }
        let result = match refusal {
            Some(refusal) => Err(refusal),
            None => self
                .inner
                .broker
                .send(outgoing)
                .await
                .map_err(Refusal::from),
        };
        match result {
            Ok(receipts) => pb::SendMessageResponse {
                status: Some(status::ok()),
                entries: receipts
                    .into_iter()
                    .map(|receipt| pb::SendResultEntry {
                        status: Some(status::ok()),
                        message_id: receipt.message_id,
                        transaction_id: receipt.transaction_id.unwrap_or_default(),
                        offset: i64::try_from(receipt.offset).unwrap_or(i64::MAX),
                        recall_handle: String::new(),
                    })
                    .collect(),
            },
            Err(refusal) => {
                let status = refusal.to_status(caller.language);
                tracing::debug!(client = %caller.client_id, code = status.code, message = %status.message, "send refused");
                // One entry per message even on refusal (P1): clients index entries[0].
                pb::SendMessageResponse {
                    status: Some(status.clone()),
                    entries: message_ids
                        .into_iter()
                        .map(|message_id| pb::SendResultEntry {
                            status: Some(status.clone()),
                            message_id,
                            ..Default::default()
                        })
                        .collect(),
                }
            }
        }
    }

    fn route(&self, request: &pb::QueryRouteRequest) -> Result<Vec<pb::MessageQueue>, Refusal> {
        let name = convert::resource_name(request.topic.as_ref(), "topic", Code::IllegalTopic)?;
        self.auto_create_topic(&name)?;
        let topic = self.inner.broker.topic(&name).map_err(Refusal::from)?;
        let redirect = self
            .inner
            .config
            .route_advisor
            .as_ref()
            .and_then(|advisor| advisor.redirect(&topic.name));
        let broker = match redirect {
            Some(redirect) => pb::Broker {
                name: redirect.broker_name,
                id: 0,
                endpoints: Some(endpoints_of(redirect.endpoint)),
            },
            None => self.broker_resource(self.broker_endpoints(request.endpoints.as_ref())),
        };
        // Q1/Q2: never an OK route without queues; every queue names its topic and broker.
        Ok((0..topic.queue_count)
            .map(|id| pb::MessageQueue {
                topic: Some(convert::resource(&topic.name)),
                id: i32::try_from(id).unwrap_or(i32::MAX),
                permission: Permission::ReadWrite as i32,
                broker: Some(broker.clone()),
                accept_message_types: convert::accepted_types(topic.message_type),
            })
            .collect())
    }

    pub(crate) fn broker_resource(&self, endpoints: pb::Endpoints) -> pb::Broker {
        pb::Broker {
            name: self.inner.config.broker_name.clone(),
            id: 0,
            endpoints: Some(endpoints),
        }
    }

    /// Endpoints clients dial for this cell (Q3): the advertised address, else the access point
    /// the client used (it reached us through it), else the listener's address.
    pub(crate) fn broker_endpoints(&self, requested: Option<&pb::Endpoints>) -> pb::Endpoints {
        if let Some(address) = self.inner.config.advertised_endpoint {
            return endpoints_of(address);
        }
        match requested {
            Some(endpoints) if usable(endpoints) => endpoints.clone(),
            _ => endpoints_of(self.inner.local_addr),
        }
    }

    async fn end_transaction(
        &self,
        caller: &Caller,
        request: pb::EndTransactionRequest,
    ) -> Result<(), Refusal> {
        let topic = convert::resource_name(request.topic.as_ref(), "topic", Code::IllegalTopic)?;
        caller.principal.may_publish(&topic)?;
        let transaction_id = if request.transaction_id.is_empty() {
            request.message_id
        } else {
            request.transaction_id
        };
        let resolution = match pb::TransactionResolution::try_from(request.resolution) {
            Ok(pb::TransactionResolution::Commit) => TransactionResolution::Commit,
            Ok(pb::TransactionResolution::Rollback) => TransactionResolution::Rollback,
            // The producer does not know yet (E1): the half message stays and is checked again.
            Ok(pb::TransactionResolution::Unspecified) => return Ok(()),
            Err(_) => {
                return Err(Refusal::new(
                    Code::BadRequest,
                    format!("unknown transaction resolution {}", request.resolution),
                ));
            }
        };
        self.inner
            .broker
            .end_transaction(&transaction_id, resolution)
            .await
            .map_err(Refusal::from)
    }

    fn heartbeat(&self, caller: &Caller, request: &pb::HeartbeatRequest) -> Result<(), Refusal> {
        let Some(group) = request
            .group
            .as_ref()
            .filter(|group| !group.name.is_empty())
        else {
            // Producers heartbeat without a group (H1).
            return Ok(());
        };
        caller.principal.may_subscribe(&group.name)?;
        self.auto_create_group(&group.name)?;
        self.inner
            .broker
            .group(&group.name)
            .map_err(Refusal::from)?;
        if request.client_type == pb::ClientType::PushConsumer as i32 {
            // Push consumers share queues through QueryAssignment; keep them in the membership.
            self.inner
                .broker
                .heartbeat(&group.name, &caller.client_id)
                .map_err(Refusal::from)?;
        }
        Ok(())
    }

    fn terminate(&self, caller: &Caller, request: &pb::NotifyClientTerminationRequest) {
        if let Some(group) = request
            .group
            .as_ref()
            .filter(|group| !group.name.is_empty())
        {
            // Leaving is idempotent and never fails for an unknown member.
            let _ = self.inner.broker.leave(&group.name, &caller.client_id);
        }
        self.inner.sessions.terminate(&caller.client_id);
    }
}

pub(crate) fn caller_from(
    authenticator: &Authenticator,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Caller, (Refusal, Language)> {
    let language = language_from_header(metadata.get(LANGUAGE).and_then(|v| v.to_str().ok()));
    let client_id = metadata
        .get(CLIENT_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if client_id.is_empty() {
        return Err((
            Refusal::new(
                Code::ClientIdRequired,
                "the x-mq-client-id header is required",
            ),
            language,
        ));
    }
    let principal = authenticator
        .authenticate(metadata)
        .map_err(|refusal| (refusal, language))?;
    Ok(Caller {
        client_id: client_id.to_string(),
        language,
        principal,
    })
}

fn usable(endpoints: &pb::Endpoints) -> bool {
    !endpoints.addresses.is_empty()
        && endpoints
            .addresses
            .iter()
            .all(|address| !address.host.is_empty() && address.port > 0)
        && AddressScheme::try_from(endpoints.scheme)
            .is_ok_and(|scheme| scheme != AddressScheme::Unspecified)
}

pub(crate) fn endpoints_of(address: SocketAddr) -> pb::Endpoints {
    let scheme = if address.is_ipv4() {
        AddressScheme::IPv4
    } else {
        AddressScheme::IPv6
    };
    pb::Endpoints {
        scheme: scheme as i32,
        addresses: vec![pb::Address {
            host: address.ip().to_string(),
            port: i32::from(address.port()),
        }],
    }
}

/// Answers a unary call: OK at the gRPC level, the outcome in the body.
fn answer<T>(body: T) -> Result<Response<T>, tonic::Status> {
    Ok(Response::new(body))
}

/// Whether a send's answer is OK as a whole.
fn send_succeeded(response: &pb::SendMessageResponse) -> bool {
    response
        .status
        .as_ref()
        .is_some_and(|status| status.code == pb::Code::Ok as i32)
}

#[tonic::async_trait]
impl MessagingService for CellService {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, tonic::Status> {
        let result = self
            .caller_of(&request)
            .map_err(|(refusal, language)| refusal.to_status(language))
            .and_then(|caller| {
                self.route(request.get_ref())
                    .map_err(|refusal| refusal.to_status(caller.language))
            });
        answer(match result {
            Ok(message_queues) => pb::QueryRouteResponse {
                status: Some(status::ok()),
                message_queues,
            },
            Err(status) => pb::QueryRouteResponse {
                status: Some(status),
                message_queues: Vec::new(),
            },
        })
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, tonic::Status> {
        let status = match self.caller_of(&request) {
            Ok(caller) => status::of(&self.heartbeat(&caller, request.get_ref()), caller.language),
            Err((refusal, language)) => refusal.to_status(language),
        };
        answer(pb::HeartbeatResponse {
            status: Some(status),
        })
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, tonic::Status> {
        match self.caller_of(&request) {
            Ok(caller) => {
                let (metadata, _, request) = request.into_parts();
                let topic = request
                    .messages
                    .first()
                    .and_then(|message| message.topic.as_ref())
                    .map(|topic| topic.name.clone())
                    .unwrap_or_default();
                let span = tracing::debug_span!(
                    "send_message",
                    cell = %self.inner.config.broker_name,
                    client = %caller.client_id,
                    %topic,
                    messages = request.messages.len(),
                );
                let started = std::time::Instant::now();
                let stats = &self.inner.config.stats;
                if let Some(forwarded) = self
                    .try_forward(&metadata, &request)
                    .instrument(span.clone())
                    .await
                {
                    stats.forwarded();
                    let failed = forwarded
                        .as_ref()
                        .map_or(true, |response| !send_succeeded(response.get_ref()));
                    stats.record(Rpc::Send, started.elapsed(), failed);
                    return forwarded;
                }
                let response = self.send(&caller, request).instrument(span).await;
                let succeeded = send_succeeded(&response);
                if succeeded {
                    stats.produced(response.entries.len() as u64);
                }
                stats.record(Rpc::Send, started.elapsed(), !succeeded);
                answer(response)
            }
            Err((refusal, language)) => {
                let status = refusal.to_status(language);
                let entries = request
                    .get_ref()
                    .messages
                    .iter()
                    .map(|message| pb::SendResultEntry {
                        status: Some(status.clone()),
                        message_id: message
                            .system_properties
                            .as_ref()
                            .map(|system| system.message_id.clone())
                            .unwrap_or_default(),
                        ..Default::default()
                    })
                    .collect();
                answer(pb::SendMessageResponse {
                    status: Some(status),
                    entries,
                })
            }
        }
    }

    async fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, tonic::Status> {
        answer(self.query_assignment(request))
    }

    type ReceiveMessageStream = ItemStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, tonic::Status> {
        Ok(Response::new(self.receive(request)))
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, tonic::Status> {
        let topic = request
            .get_ref()
            .topic
            .as_ref()
            .map(|topic| topic.name.clone())
            .unwrap_or_default();
        let span =
            tracing::debug_span!("ack_message", cell = %self.inner.config.broker_name, %topic);
        let started = std::time::Instant::now();
        let response = self.ack(request).instrument(span).await;
        let acked = response
            .entries
            .iter()
            .filter(|entry| {
                entry
                    .status
                    .as_ref()
                    .is_some_and(|status| status.code == pb::Code::Ok as i32)
            })
            .count();
        let stats = &self.inner.config.stats;
        stats.acked(acked as u64);
        stats.record(Rpc::Ack, started.elapsed(), acked < response.entries.len());
        answer(response)
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, tonic::Status> {
        answer(self.forward_to_dead_letter(request).await)
    }

    type PullMessageStream = ItemStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, tonic::Status> {
        Ok(Response::new(self.pull(request)))
    }

    async fn update_offset(
        &self,
        request: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, tonic::Status> {
        answer(self.update_offset(request))
    }

    async fn get_offset(
        &self,
        request: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, tonic::Status> {
        answer(self.get_offset(request))
    }

    async fn query_offset(
        &self,
        request: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, tonic::Status> {
        answer(self.query_offset(request))
    }

    async fn end_transaction(
        &self,
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, tonic::Status> {
        let started = std::time::Instant::now();
        let status = match self.caller_of(&request) {
            Ok(caller) => {
                let result = self.end_transaction(&caller, request.into_inner()).await;
                status::of(&result, caller.language)
            }
            Err((refusal, language)) => refusal.to_status(language),
        };
        self.inner.config.stats.record(
            Rpc::EndTransaction,
            started.elapsed(),
            status.code != Code::Ok as i32,
        );
        answer(pb::EndTransactionResponse {
            status: Some(status),
        })
    }

    type TelemetryStream = ItemStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<tonic::Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, tonic::Status> {
        // M1: the response (and its headers) goes back at once; the work runs in a task.
        Ok(Response::new(self.open_telemetry(request)))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, tonic::Status> {
        let status = match self.caller_of(&request) {
            Ok(caller) => {
                self.terminate(&caller, request.get_ref());
                status::ok()
            }
            Err((refusal, language)) => refusal.to_status(language),
        };
        answer(pb::NotifyClientTerminationResponse {
            status: Some(status),
        })
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, tonic::Status> {
        let started = std::time::Instant::now();
        let response = self.change_invisible(request).await;
        let failed = response
            .status
            .as_ref()
            .is_none_or(|status| status.code != Code::Ok as i32);
        self.inner
            .config
            .stats
            .record(Rpc::ChangeInvisibleDuration, started.elapsed(), failed);
        answer(response)
    }

    async fn recall_message(
        &self,
        request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, tonic::Status> {
        let language = match self.caller_of(&request) {
            Ok(caller) => caller.language,
            Err((_, language)) => language,
        };
        answer(pb::RecallMessageResponse {
            status: Some(
                Refusal::new(
                    Code::NotImplemented,
                    "recalling delay messages is not supported by this cell",
                )
                .to_status(language),
            ),
            message_id: String::new(),
        })
    }

    async fn sync_lite_subscription(
        &self,
        request: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, tonic::Status> {
        let language = match self.caller_of(&request) {
            Ok(caller) => caller.language,
            Err((_, language)) => language,
        };
        answer(pb::SyncLiteSubscriptionResponse {
            status: Some(
                Refusal::new(
                    Code::NotImplemented,
                    "lite topics are not supported by this cell",
                )
                .to_status(language),
            ),
        })
    }
}
