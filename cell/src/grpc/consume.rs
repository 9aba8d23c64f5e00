//! Consuming RPCs: ReceiveMessage, AckMessage, ChangeInvisibleDuration,
//! ForwardMessageToDeadLetterQueue, QueryAssignment, and the per-queue PullMessage /
//! UpdateOffset / GetOffset / QueryOffset.

use meridian_proto::rocketmq::v2::{self as pb, Code, FilterType, Permission};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tracing::Instrument;

use super::convert::{self, resource_name};
use super::receive::{self, PollBounds};
use super::service::{Caller, CellService, ItemStream};
use super::stats::Rpc;
use super::status::{self, Refusal};
use crate::messaging::{Filter, FilterKind, ReceiveRequest};

/// Largest batch one receive or pull returns, whatever the client asks (the reference proxy's
/// default batch is 32).
const MAX_RECEIVE_BATCH_MESSAGES: usize = 32;

impl CellService {
    fn poll_bounds(&self) -> PollBounds {
        let config = &self.inner.config;
        PollBounds {
            min_ms: config.min_long_polling_ms,
            max_ms: config.max_long_polling_ms,
            reserve_ms: config.long_polling_reserve_ms,
        }
    }

    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            })
    }

    /// Starts a receive: the stream is returned at once (R1) and filled by a task that ends the
    /// long poll early if the client goes away.
    pub(crate) fn receive(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> ItemStream<pb::ReceiveMessageResponse> {
        let service = self.clone();
        let queue = request.get_ref().message_queue.as_ref();
        let span = tracing::debug_span!(
            "receive_message",
            cell = %self.inner.config.broker_name,
            topic = %queue.and_then(|q| q.topic.as_ref()).map(|t| t.name.as_str()).unwrap_or_default(),
            group = %request.get_ref().group.as_ref().map(|g| g.name.as_str()).unwrap_or_default(),
        );
        stream_items(async move { service.receive_items(request).await }.instrument(span))
    }

    async fn receive_items(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Vec<pb::ReceiveMessageResponse> {
        let deadline_ms = receive::deadline_ms(request.metadata());
        let caller = match self.caller_of(&request) {
            Ok(caller) => caller,
            Err((refusal, language)) => {
                return receive::response_items(
                    refusal.to_status(language),
                    Vec::new(),
                    self.now_ms(),
                );
            }
        };
        let language = caller.language;
        let request = request.into_inner();
        let outcome = async {
            let request = self.receive_request(&caller, &request, deadline_ms)?;
            let received = self
                .inner
                .broker
                .receive(&request)
                .await
                .map_err(Refusal::from)?;
            let now = self.now_ms();
            Ok::<_, Refusal>(
                received
                    .iter()
                    .map(|message| convert::delivered(message, &self.inner.store_host, now))
                    .collect::<Vec<_>>(),
            )
        }
        .await;
        let now = self.now_ms();
        let stats = &self.inner.config.stats;
        match &outcome {
            Ok(messages) => {
                stats.delivered(messages.len() as u64);
                stats.record(Rpc::Receive, std::time::Duration::ZERO, false);
            }
            Err(_) => stats.record(Rpc::Receive, std::time::Duration::ZERO, true),
        }
        match outcome {
            Ok(messages) if messages.is_empty() => receive::response_items(
                Refusal::new(Code::MessageNotFound, "no new message").to_status(language),
                Vec::new(),
                now,
            ),
            Ok(messages) => receive::response_items(status::ok(), messages, now),
            Err(refusal) => receive::response_items(refusal.to_status(language), Vec::new(), now),
        }
    }

    fn receive_request(
        &self,
        caller: &Caller,
        request: &pb::ReceiveMessageRequest,
        deadline_ms: Option<u64>,
    ) -> Result<ReceiveRequest, Refusal> {
        let group = resource_name(
            request.group.as_ref(),
            "consumer group",
            Code::IllegalConsumerGroup,
        )?;
        caller.principal.may_subscribe(&group)?;
        let topic = resource_name(
            request
                .message_queue
                .as_ref()
                .and_then(|queue| queue.topic.as_ref()),
            "topic",
            Code::IllegalTopic,
        )?;
        self.auto_create_topic(&topic)?;
        self.auto_create_group(&group)?;
        let filter = filter_of(request.filter_expression.as_ref())?;
        let long_polling_ms = receive::long_poll_ms(
            request
                .long_polling_timeout
                .as_ref()
                .and_then(convert::duration_ms),
            deadline_ms,
            self.poll_bounds(),
        )?;
        let invisible_duration_ms = match &request.invisible_duration {
            Some(duration) => convert::duration_ms(duration).ok_or_else(|| {
                Refusal::new(Code::IllegalInvisibleTime, "invisible duration is negative")
            })?,
            // Auto-renewing clients send none (R7).
            None => self.inner.config.default_invisible_duration_ms,
        };
        let max_messages = usize::try_from(request.batch_size)
            .unwrap_or(0)
            .clamp(1, MAX_RECEIVE_BATCH_MESSAGES);
        Ok(ReceiveRequest {
            group,
            topic,
            // Any queue of the topic, whatever queue the client names (R5, research §8.2): a
            // client that round-robins queues never waits on an empty one.
            queue_id: None,
            filter,
            max_messages,
            invisible_duration_ms,
            long_polling_ms,
        })
    }

    fn group_and_topic(
        caller: &Caller,
        group: Option<&pb::Resource>,
        topic: Option<&pb::Resource>,
    ) -> Result<(String, String), Refusal> {
        let group = resource_name(group, "consumer group", Code::IllegalConsumerGroup)?;
        caller.principal.may_subscribe(&group)?;
        let topic = resource_name(topic, "topic", Code::IllegalTopic)?;
        Ok((group, topic))
    }

    pub(crate) async fn ack(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> pb::AckMessageResponse {
        let caller = match self.caller_of(&request) {
            Ok(caller) => caller,
            Err((refusal, language)) => {
                return ack_response(&request.into_inner().entries, &Err(refusal), language);
            }
        };
        let request = request.into_inner();
        let names = Self::group_and_topic(&caller, request.group.as_ref(), request.topic.as_ref());
        let (group, topic) = match names {
            Ok(names) => names,
            Err(refusal) => return ack_response(&request.entries, &Err(refusal), caller.language),
        };
        if request.entries.is_empty() {
            let refusal = Refusal::new(Code::BadRequest, "the request acknowledges no message");
            return ack_response(&request.entries, &Err(refusal), caller.language);
        }
        let mut entries = Vec::with_capacity(request.entries.len());
        for entry in &request.entries {
            let result = self
                .inner
                .broker
                .ack(&group, &topic, &entry.receipt_handle)
                .await
                .map_err(Refusal::from);
            entries.push(pb::AckMessageResultEntry {
                message_id: entry.message_id.clone(),
                receipt_handle: entry.receipt_handle.clone(),
                status: Some(status::of(&result, caller.language)),
            });
        }
        let status = overall_status(&entries, caller.language);
        pb::AckMessageResponse {
            status: Some(status),
            entries,
        }
    }

    pub(crate) async fn change_invisible(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> pb::ChangeInvisibleDurationResponse {
        let (language, result) = match self.caller_of(&request) {
            Ok(caller) => {
                let result = self.change_invisible_as(&caller, request.get_ref()).await;
                (caller.language, result)
            }
            Err((refusal, language)) => (language, Err(refusal)),
        };
        match result {
            Ok(receipt_handle) => pb::ChangeInvisibleDurationResponse {
                status: Some(status::ok()),
                receipt_handle,
            },
            // C1: PY adopts the returned handle before it reads the status; give the old one.
            Err(refusal) => pb::ChangeInvisibleDurationResponse {
                status: Some(refusal.to_status(language)),
                receipt_handle: request.into_inner().receipt_handle,
            },
        }
    }

    async fn change_invisible_as(
        &self,
        caller: &Caller,
        request: &pb::ChangeInvisibleDurationRequest,
    ) -> Result<String, Refusal> {
        let (group, topic) =
            Self::group_and_topic(caller, request.group.as_ref(), request.topic.as_ref())?;
        let duration_ms = request
            .invisible_duration
            .as_ref()
            .and_then(convert::duration_ms)
            .ok_or_else(|| {
                Refusal::new(
                    Code::IllegalInvisibleTime,
                    "invisible duration is missing or negative",
                )
            })?;
        self.inner
            .broker
            .change_invisible_duration(&group, &topic, &request.receipt_handle, duration_ms)
            .await
            .map_err(Refusal::from)
    }

    pub(crate) async fn forward_to_dead_letter(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> pb::ForwardMessageToDeadLetterQueueResponse {
        let status = match self.caller_of(&request) {
            Ok(caller) => {
                let request = request.into_inner();
                let result = async {
                    let (group, topic) = Self::group_and_topic(
                        &caller,
                        request.group.as_ref(),
                        request.topic.as_ref(),
                    )?;
                    self.inner
                        .broker
                        .forward_to_dead_letter(&group, &topic, &request.receipt_handle)
                        .await
                        .map_err(Refusal::from)
                }
                .await;
                status::of(&result, caller.language)
            }
            Err((refusal, language)) => refusal.to_status(language),
        };
        pb::ForwardMessageToDeadLetterQueueResponse {
            status: Some(status),
        }
    }

    /// G1: a non-FIFO group gets one assignment with queue id -1 (any queue, read by pop); a
    /// FIFO group gets one per queue, so that the client consumes each queue serially.
    pub(crate) fn query_assignment(
        &self,
        request: Request<pb::QueryAssignmentRequest>,
    ) -> pb::QueryAssignmentResponse {
        let (language, result) = match self.caller_of(&request) {
            Ok(caller) => (
                caller.language,
                self.assignments(&caller, request.get_ref()),
            ),
            Err((refusal, language)) => (language, Err(refusal)),
        };
        match result {
            Ok(assignments) => pb::QueryAssignmentResponse {
                status: Some(status::ok()),
                assignments,
            },
            Err(refusal) => pb::QueryAssignmentResponse {
                status: Some(refusal.to_status(language)),
                assignments: Vec::new(),
            },
        }
    }

    fn assignments(
        &self,
        caller: &Caller,
        request: &pb::QueryAssignmentRequest,
    ) -> Result<Vec<pb::Assignment>, Refusal> {
        let (group, topic) =
            Self::group_and_topic(caller, request.group.as_ref(), request.topic.as_ref())?;
        let group = self.inner.broker.group(&group).map_err(Refusal::from)?;
        let topic = self.inner.broker.topic(&topic).map_err(Refusal::from)?;
        let endpoints = self.broker_endpoints(request.endpoints.as_ref());
        let queue = |id: i32| pb::Assignment {
            message_queue: Some(pb::MessageQueue {
                topic: Some(convert::resource(&topic.name)),
                id,
                permission: Permission::ReadWrite as i32,
                broker: Some(self.broker_resource(endpoints.clone())),
                accept_message_types: convert::accepted_types(topic.message_type),
            }),
        };
        if group.fifo {
            Ok((0..topic.queue_count)
                .map(|id| queue(i32::try_from(id).unwrap_or(i32::MAX)))
                .collect())
        } else {
            Ok(vec![queue(-1)])
        }
    }

    /// PullMessage: per-queue reading from an offset (no official client of this protocol
    /// version calls it; answered for completeness with the same status rules).
    pub(crate) fn pull(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> ItemStream<pb::PullMessageResponse> {
        let service = self.clone();
        stream_items(async move { service.pull_items(request).await })
    }

    async fn pull_items(
        &self,
        request: Request<pb::PullMessageRequest>,
    ) -> Vec<pb::PullMessageResponse> {
        use pb::pull_message_response::Content;
        let deadline_ms = receive::deadline_ms(request.metadata());
        let (language, outcome) = match self.caller_of(&request) {
            Ok(caller) => {
                let outcome = self.pull_as(&caller, request.get_ref(), deadline_ms).await;
                (caller.language, outcome)
            }
            Err((refusal, language)) => (language, Err(refusal)),
        };
        let item = |content| pb::PullMessageResponse {
            content: Some(content),
        };
        match outcome {
            Ok((messages, next_offset)) => {
                let mut items = Vec::with_capacity(messages.len() + 2);
                items.push(item(Content::Status(if messages.is_empty() {
                    Refusal::new(Code::MessageNotFound, "no new message").to_status(language)
                } else {
                    status::ok()
                })));
                items.extend(
                    messages
                        .into_iter()
                        .map(|message| item(Content::Message(message))),
                );
                items.push(item(Content::NextOffset(
                    i64::try_from(next_offset).unwrap_or(i64::MAX),
                )));
                items
            }
            Err(refusal) => vec![item(Content::Status(refusal.to_status(language)))],
        }
    }

    async fn pull_as(
        &self,
        caller: &Caller,
        request: &pb::PullMessageRequest,
        deadline_ms: Option<u64>,
    ) -> Result<(Vec<pb::Message>, u64), Refusal> {
        let queue = request.message_queue.as_ref();
        let (group, topic) = Self::group_and_topic(
            caller,
            request.group.as_ref(),
            queue.and_then(|q| q.topic.as_ref()),
        )?;
        let queue_id = queue_id_of(queue)?;
        let offset = u64::try_from(request.offset)
            .map_err(|_| Refusal::new(Code::IllegalOffset, "offset is negative"))?;
        let filter = filter_of(request.filter_expression.as_ref())?;
        let long_polling_ms = receive::long_poll_ms(
            request
                .long_polling_timeout
                .as_ref()
                .and_then(convert::duration_ms),
            deadline_ms,
            self.poll_bounds(),
        )?;
        let max_messages = usize::try_from(request.batch_size)
            .unwrap_or(0)
            .clamp(1, MAX_RECEIVE_BATCH_MESSAGES);
        let result = self
            .inner
            .broker
            .pull(
                &group,
                &topic,
                queue_id,
                offset,
                max_messages,
                &filter,
                long_polling_ms,
            )
            .await
            .map_err(Refusal::from)?;
        let messages = result
            .records
            .iter()
            .map(|record| convert::record_message(record, None, &self.inner.store_host))
            .collect();
        Ok((messages, result.next_offset))
    }

    pub(crate) fn update_offset(
        &self,
        request: Request<pb::UpdateOffsetRequest>,
    ) -> pb::UpdateOffsetResponse {
        let status = match self.caller_of(&request) {
            Ok(caller) => {
                let request = request.get_ref();
                let result = (|| {
                    let queue = request.message_queue.as_ref();
                    let (group, topic) = Self::group_and_topic(
                        &caller,
                        request.group.as_ref(),
                        queue.and_then(|q| q.topic.as_ref()),
                    )?;
                    let queue_id = queue_id_of(queue)?;
                    let offset = u64::try_from(request.offset)
                        .map_err(|_| Refusal::new(Code::IllegalOffset, "offset is negative"))?;
                    self.inner
                        .broker
                        .commit_offset(&group, &topic, queue_id, offset, Some(&caller.client_id))
                        .map_err(Refusal::from)
                })();
                status::of(&result, caller.language)
            }
            Err((refusal, language)) => refusal.to_status(language),
        };
        pb::UpdateOffsetResponse {
            status: Some(status),
        }
    }

    pub(crate) fn get_offset(
        &self,
        request: Request<pb::GetOffsetRequest>,
    ) -> pb::GetOffsetResponse {
        let (language, result) = match self.caller_of(&request) {
            Ok(caller) => {
                let request = request.get_ref();
                let result = (|| {
                    let queue = request.message_queue.as_ref();
                    let (group, topic) = Self::group_and_topic(
                        &caller,
                        request.group.as_ref(),
                        queue.and_then(|q| q.topic.as_ref()),
                    )?;
                    let queue_id = queue_id_of(queue)?;
                    self.inner
                        .broker
                        .committed_offset(&group, &topic, queue_id, Some(&caller.client_id))
                        .map_err(Refusal::from)?
                        .ok_or_else(|| {
                            Refusal::new(Code::OffsetNotFound, "the group has no committed offset")
                        })
                })();
                (caller.language, result)
            }
            Err((refusal, language)) => (language, Err(refusal)),
        };
        pb::GetOffsetResponse {
            status: Some(status::of(&result, language)),
            offset: result.map_or(0, |offset| i64::try_from(offset).unwrap_or(i64::MAX)),
        }
    }

    pub(crate) fn query_offset(
        &self,
        request: Request<pb::QueryOffsetRequest>,
    ) -> pb::QueryOffsetResponse {
        let (language, result) = match self.caller_of(&request) {
            Ok(caller) => (caller.language, self.query_offset_as(request.get_ref())),
            Err((refusal, language)) => (language, Err(refusal)),
        };
        pb::QueryOffsetResponse {
            status: Some(status::of(&result, language)),
            offset: result.map_or(0, |offset| i64::try_from(offset).unwrap_or(i64::MAX)),
        }
    }

    fn query_offset_as(&self, request: &pb::QueryOffsetRequest) -> Result<u64, Refusal> {
        let queue = request.message_queue.as_ref();
        let topic = resource_name(
            queue.and_then(|q| q.topic.as_ref()),
            "topic",
            Code::IllegalTopic,
        )?;
        let queue_id = queue_id_of(queue)?;
        let topic = self.inner.broker.topic(&topic).map_err(Refusal::from)?;
        if queue_id >= topic.queue_count {
            return Err(Refusal::new(
                Code::BadRequest,
                format!("topic {} has no queue {queue_id}", topic.name),
            ));
        }
        let storage = self.inner.broker.storage();
        let range = storage.queue_range(&topic.name, queue_id);
        match pb::QueryOffsetPolicy::try_from(request.query_offset_policy) {
            Ok(pb::QueryOffsetPolicy::Beginning) => Ok(range.map_or(0, |range| range.earliest)),
            Ok(pb::QueryOffsetPolicy::End) => Ok(range.map_or(0, |range| range.next)),
            Ok(pb::QueryOffsetPolicy::Timestamp) => {
                let at = request
                    .timestamp
                    .as_ref()
                    .and_then(convert::timestamp_ms)
                    .ok_or_else(|| {
                        Refusal::new(Code::BadRequest, "timestamp is missing or negative")
                    })?;
                storage
                    .seek_by_time(&topic.name, queue_id, at)
                    .map_err(|error| Refusal::from(crate::messaging::MessagingError::from(error)))
            }
            Err(_) => Err(Refusal::new(
                Code::BadRequest,
                format!("unknown offset policy {}", request.query_offset_policy),
            )),
        }
    }
}

/// A server stream returned at once (R1) and filled with the items `produce` computes, in a
/// task. If the client hangs up first the task stops waiting: nothing was taken yet, or what was
/// taken becomes visible again after its invisible duration.
fn stream_items<T: Send + 'static>(
    produce: impl std::future::Future<Output = Vec<T>> + Send + 'static,
) -> ItemStream<T> {
    let (sender, receiver) = mpsc::channel(MAX_RECEIVE_BATCH_MESSAGES + 2);
    tokio::spawn(async move {
        let items = tokio::select! {
            items = produce => items,
            () = sender.closed() => return,
        };
        for item in items {
            if sender.send(Ok(item)).await.is_err() {
                break;
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// The filter of a request: TAG `""`/`*` or absent match all (R6).
fn filter_of(expression: Option<&pb::FilterExpression>) -> Result<Filter, Refusal> {
    let Some(expression) = expression else {
        return Ok(Filter::all());
    };
    let kind = match FilterType::try_from(expression.r#type) {
        Ok(FilterType::Tag | FilterType::Unspecified) => FilterKind::Tag,
        Ok(FilterType::Sql) => FilterKind::Sql92,
        Err(_) => {
            return Err(Refusal::new(
                Code::IllegalFilterExpression,
                format!("unknown filter type {}", expression.r#type),
            ));
        }
    };
    if kind == FilterKind::Tag && expression.expression.trim().is_empty() {
        return Ok(Filter::all());
    }
    Filter::parse(kind, &expression.expression).map_err(|error| {
        Refusal::new(
            Code::IllegalFilterExpression,
            format!("filter expression {:?}: {error}", expression.expression),
        )
    })
}

fn queue_id_of(queue: Option<&pb::MessageQueue>) -> Result<u32, Refusal> {
    queue
        .and_then(|queue| u32::try_from(queue.id).ok())
        .ok_or_else(|| Refusal::new(Code::BadRequest, "a queue id of 0 or more is required"))
}

fn ack_response(
    entries: &[pb::AckMessageEntry],
    result: &Result<(), Refusal>,
    language: pb::Language,
) -> pb::AckMessageResponse {
    let status = status::of(result, language);
    pb::AckMessageResponse {
        status: Some(status.clone()),
        entries: entries
            .iter()
            .map(|entry| pb::AckMessageResultEntry {
                message_id: entry.message_id.clone(),
                receipt_handle: entry.receipt_handle.clone(),
                status: Some(status.clone()),
            })
            .collect(),
    }
}

/// OK when every entry is; the entry's own status when there is one (S3: never
/// MULTIPLE_RESULTS for a single entry); MULTIPLE_RESULTS when entries disagree.
fn overall_status(entries: &[pb::AckMessageResultEntry], language: pb::Language) -> pb::Status {
    let ok = Code::Ok as i32;
    let statuses: Vec<&pb::Status> = entries
        .iter()
        .filter_map(|entry| entry.status.as_ref())
        .collect();
    if statuses.iter().all(|status| status.code == ok) {
        return status::ok();
    }
    if statuses.len() == 1 {
        return statuses[0].clone();
    }
    let first = statuses[0].code;
    if statuses.iter().all(|status| status.code == first) {
        return statuses[0].clone();
    }
    Refusal::new(
        Code::MultipleResults,
        "some acknowledgements failed; see each entry",
    )
    .to_status(language)
}
