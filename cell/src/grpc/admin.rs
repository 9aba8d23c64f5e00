//! `meridian.admin.v1.Admin`: Meridian's own admin API for one cell, served on the same port as
//! the RocketMQ `MessagingService` when [`super::GrpcConfig::admin`] is set.
//!
//! Unlike the RocketMQ front, which must answer gRPC OK with the outcome in the body because
//! that is what the official clients expect, this service is ours: failures are gRPC statuses
//! (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, INTERNAL) whose message
//! names the field at fault. Every decision is the broker's; this module only translates.
//!
//! The admin API has no authentication yet, so it refuses to run on a cell with request
//! signatures configured (see `validate` in the parent module).

use std::sync::Arc;

use meridian_proto::admin::v1::{self as pb, TopicType, admin_server::Admin};
use tonic::{Request, Response, Status};

use crate::messaging::broker::TraceKind;
use crate::messaging::names::SYSTEM_TOPIC_PREFIX;
use crate::messaging::{Broker, GroupConfig, MessagingError, TopicConfig, TopicMessageType};
use crate::storage::Record;

/// Most messages a key query returns when the request names no limit.
const DEFAULT_QUERY_RESULTS: usize = 32;

/// Replication progress as the process running the cell's replicator sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// Origin region and the position of its log this cell holds up to.
    pub origins: Vec<(String, u64)>,
    /// Link counters by name.
    pub counters: Vec<(String, u64)>,
    /// The meta revision the region's topics and routes reflect (0: no meta).
    pub meta_applied_revision: u64,
}

/// A callback that reports [`ReplicationStatus`] on demand (the cell does not know the
/// replicator; the process that runs both passes this in).
#[derive(Clone)]
pub struct ReplicationStatusSource(pub Arc<dyn Fn() -> ReplicationStatus + Send + Sync>);

impl std::fmt::Debug for ReplicationStatusSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ReplicationStatusSource(..)")
    }
}

/// Settings of the admin service.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Where `RegionStatus` gets replication progress; `None` reports none.
    pub replication_status: Option<ReplicationStatusSource>,
}

/// The admin service of one cell.
#[derive(Clone)]
pub(crate) struct AdminService {
    broker: Arc<Broker>,
    broker_name: String,
    config: AdminConfig,
}

impl AdminService {
    pub(crate) fn new(broker: Arc<Broker>, broker_name: String, config: AdminConfig) -> Self {
        AdminService {
            broker,
            broker_name,
            config,
        }
    }

    fn topic_info(&self, topic: &TopicConfig) -> pb::TopicInfo {
        let storage = self.broker.storage();
        pb::TopicInfo {
            name: topic.name.clone(),
            r#type: topic_type(topic.message_type) as i32,
            queue_count: topic.queue_count,
            queues: (0..topic.queue_count)
                .map(|queue_id| {
                    let range = storage.queue_range(&topic.name, queue_id);
                    pb::QueueRange {
                        queue_id,
                        earliest_offset: range.map_or(0, |range| range.earliest),
                        next_offset: range.map_or(0, |range| range.next),
                    }
                })
                .collect(),
        }
    }

    async fn queue_lags(
        &self,
        group: &GroupConfig,
        topic: &TopicConfig,
    ) -> Result<Vec<pb::QueueLag>, Status> {
        let mut lags = Vec::with_capacity(topic.queue_count as usize);
        for queue_id in 0..topic.queue_count {
            let next = self
                .broker
                .storage()
                .queue_range(&topic.name, queue_id)
                .map_or(0, |range| range.next);
            // Receive-based consumers keep per-message state; pull consumers commit offsets.
            // A queue is consumed up to the further of the two.
            let (floor, inflight) = self
                .broker
                .consumption_progress(&group.name, &topic.name, queue_id)
                .await
                .map_err(|error| to_status(&error))?;
            let committed = match group.model {
                crate::messaging::ConsumptionModel::Clustering => self
                    .broker
                    .committed_offset(&group.name, &topic.name, queue_id, None)
                    .map_err(|error| to_status(&error))?
                    .unwrap_or(0),
                // Broadcasting groups commit per client; the shared view is the pop state.
                crate::messaging::ConsumptionModel::Broadcasting => 0,
            };
            let consumed = floor.max(committed).min(next);
            lags.push(pb::QueueLag {
                topic: topic.name.clone(),
                queue_id,
                next_offset: next,
                consumed_offset: consumed,
                lag: next - consumed,
                inflight,
            });
        }
        Ok(lags)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let request = request.into_inner();
        let message_type = match TopicType::try_from(request.r#type) {
            Ok(TopicType::Normal) | Ok(TopicType::Unspecified) => TopicMessageType::Normal,
            Ok(TopicType::Fifo) => TopicMessageType::Fifo,
            Ok(TopicType::Delay) => TopicMessageType::Delay,
            Ok(TopicType::Transaction) => TopicMessageType::Transaction,
            Ok(TopicType::Mixed) => TopicMessageType::Mixed,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "type: unknown topic type {}; use NORMAL, FIFO, DELAY, TRANSACTION or MIXED",
                    request.r#type
                )));
            }
        };
        let topic = self
            .broker
            .create_topic(&request.name, request.queue_count, message_type)
            .map_err(|error| to_status(&error))?;
        Ok(Response::new(self.topic_info(&topic)))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let topic = self
            .broker
            .topic(&request.get_ref().name)
            .map_err(|error| to_status(&error))?;
        Ok(Response::new(self.topic_info(&topic)))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let include_system = request.get_ref().include_system;
        let topics = self
            .broker
            .topics()
            .iter()
            .filter(|topic| include_system || !is_system(&topic.name))
            .map(|topic| self.topic_info(topic))
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::GroupInfo>, Status> {
        let request = request.into_inner();
        self.broker
            .create_group(GroupConfig::new(request.name.clone(), request.fifo))
            .map_err(|error| to_status(&error))?;
        Ok(Response::new(pb::GroupInfo {
            name: request.name,
            fifo: request.fifo,
            lags: Vec::new(),
        }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupInfo>, Status> {
        let request = request.into_inner();
        let group = self
            .broker
            .group(&request.name)
            .map_err(|error| to_status(&error))?;
        let topics = if request.topic.is_empty() {
            self.broker
                .topics()
                .into_iter()
                .filter(|topic| !is_system(&topic.name))
                .collect()
        } else {
            vec![
                self.broker
                    .topic(&request.topic)
                    .map_err(|error| to_status(&error))?,
            ]
        };
        let mut lags = Vec::new();
        for topic in &topics {
            lags.extend(self.queue_lags(&group, topic).await?);
        }
        Ok(Response::new(pb::GroupInfo {
            name: group.name,
            fifo: group.fifo,
            lags,
        }))
    }

    async fn query_message(
        &self,
        request: Request<pb::QueryMessageRequest>,
    ) -> Result<Response<pb::QueryMessageResponse>, Status> {
        let request = request.into_inner();
        let records = if !request.message_id.is_empty() {
            self.broker
                .query_by_id(&request.message_id)
                .map_err(|error| to_status(&error))?
                .into_iter()
                .collect()
        } else if !request.topic.is_empty() && !request.key.is_empty() {
            let max = match request.max_results {
                0 => DEFAULT_QUERY_RESULTS,
                max => max as usize,
            };
            self.broker
                .query_by_key(&request.topic, &request.key, max)
                .map_err(|error| to_status(&error))?
        } else {
            return Err(Status::invalid_argument(
                "message_id: give a message id, or both topic and key",
            ));
        };
        Ok(Response::new(pb::QueryMessageResponse {
            messages: records.into_iter().map(message_info).collect(),
        }))
    }

    async fn message_trace(
        &self,
        request: Request<pb::MessageTraceRequest>,
    ) -> Result<Response<pb::MessageTraceResponse>, Status> {
        let message_id = &request.get_ref().message_id;
        if message_id.is_empty() {
            return Err(Status::invalid_argument(
                "message_id: required; give the id a send returned",
            ));
        }
        let events = self
            .broker
            .query_trace(message_id)
            .map_err(|error| to_status(&error))?
            .into_iter()
            .map(|event| pb::TraceEvent {
                kind: trace_kind_name(event.kind).to_string(),
                at_ms: event.at_ms,
                group: event.group,
                attempt: event.attempt,
                detail: event.detail,
            })
            .collect();
        Ok(Response::new(pb::MessageTraceResponse { events }))
    }

    async fn reset_offset(
        &self,
        request: Request<pb::ResetOffsetRequest>,
    ) -> Result<Response<pb::ResetOffsetResponse>, Status> {
        let request = request.into_inner();
        self.broker
            .group(&request.group)
            .map_err(|error| to_status(&error))?;
        let result = match request.to {
            Some(pb::reset_offset_request::To::TimestampMs(at)) => {
                self.broker
                    .reset_offsets_to_time(&request.group, &request.topic, at)
                    .await
            }
            Some(pb::reset_offset_request::To::Latest(true)) => {
                self.broker
                    .reset_offsets_to_latest(&request.group, &request.topic)
                    .await
            }
            _ => {
                return Err(Status::invalid_argument(
                    "to: give timestamp_ms or latest = true",
                ));
            }
        };
        result.map_err(|error| to_status(&error))?;
        Ok(Response::new(pb::ResetOffsetResponse {}))
    }

    async fn region_status(
        &self,
        _request: Request<pb::RegionStatusRequest>,
    ) -> Result<Response<pb::RegionStatusResponse>, Status> {
        let storage = self.broker.storage();
        let (log_start, log_end) = storage.log_range();
        let replication = self
            .config
            .replication_status
            .as_ref()
            .map(|source| (source.0)())
            .unwrap_or_default();
        let topic_count = self
            .broker
            .topics()
            .iter()
            .filter(|topic| !is_system(&topic.name))
            .count();
        Ok(Response::new(pb::RegionStatusResponse {
            region: storage.region().to_string(),
            broker_name: self.broker_name.clone(),
            log_start,
            log_end,
            appended_records: storage
                .counters()
                .appended_records
                .load(std::sync::atomic::Ordering::Relaxed),
            topic_count: u32::try_from(topic_count).unwrap_or(u32::MAX),
            meta_applied_revision: replication.meta_applied_revision,
            origins: replication
                .origins
                .into_iter()
                .map(|(origin_region, applied_through)| pb::ReplicationOrigin {
                    origin_region,
                    applied_through,
                })
                .collect(),
            replication_counters: replication.counters.into_iter().collect(),
        }))
    }
}

/// System topics (`%SYS%...`) and dead-letter topics (`%DLQ%...`): user names cannot contain
/// `%`, so the first byte tells them apart. User listings leave them out.
fn is_system(name: &str) -> bool {
    name.starts_with(SYSTEM_TOPIC_PREFIX) || name.starts_with('%')
}

fn topic_type(kind: TopicMessageType) -> TopicType {
    match kind {
        TopicMessageType::Normal => TopicType::Normal,
        TopicMessageType::Fifo => TopicType::Fifo,
        TopicMessageType::Delay => TopicType::Delay,
        TopicMessageType::Transaction => TopicType::Transaction,
        TopicMessageType::Mixed => TopicType::Mixed,
    }
}

fn trace_kind_name(kind: TraceKind) -> &'static str {
    match kind {
        TraceKind::Sent => "sent",
        TraceKind::Scheduled => "scheduled",
        TraceKind::Released => "released",
        TraceKind::HalfStored => "half-stored",
        TraceKind::TransactionChecked => "transaction-checked",
        TraceKind::Committed => "committed",
        TraceKind::RolledBack => "rolled-back",
        TraceKind::Received => "received",
        TraceKind::Redelivered => "redelivered",
        TraceKind::Acked => "acked",
        TraceKind::DeadLettered => "dead-lettered",
    }
}

fn message_info(record: Record) -> pb::MessageInfo {
    pb::MessageInfo {
        message_id: record.message_id,
        topic: record.topic,
        queue_id: record.queue_id,
        queue_offset: record.queue_offset,
        tag: record.tags,
        keys: record.keys,
        message_group: record.message_group,
        properties: record.properties.into_iter().collect(),
        body: record.body,
        born_timestamp_ms: record.born_timestamp_ms,
        store_timestamp_ms: record.store_timestamp_ms,
        delivery_timestamp_ms: record.delivery_timestamp_ms,
        origin_region: record.origin.region,
    }
}

/// The gRPC status of a broker error, by the class of its RocketMQ code (400 bad request, 404
/// not found, 428 precondition, 429 too many), with the broker's message, which names the field.
fn to_status(error: &MessagingError) -> Status {
    let message = error.to_string();
    match error.rocketmq_code() / 100 {
        400 => Status::invalid_argument(message),
        404 => Status::not_found(message),
        409 | 428 => Status::failed_precondition(message),
        429 => Status::resource_exhausted(message),
        _ => {
            tracing::warn!(%error, "admin request failed inside the cell");
            Status::internal(message)
        }
    }
}
