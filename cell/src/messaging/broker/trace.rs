//! Message trace: lifecycle events per message, stored in the trace topic under the message id
//! as key and queryable by id.

use std::sync::atomic::Ordering;

use crate::messaging::codec::{Reader, Writer};
use crate::messaging::error::MessagingError;
use crate::messaging::names::TRACE_TOPIC;
use crate::storage::NewRecord;

use super::Broker;

/// Most trace events returned for one message.
pub const MAX_TRACE_EVENTS_PER_QUERY: usize = 1024;

/// A lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// Stored in its topic by a send.
    Sent,
    /// Stored as a delay message, waiting for its time.
    Scheduled,
    /// A delay message released into its topic.
    Released,
    /// Stored as a half message.
    HalfStored,
    /// The producer was asked about its open transaction.
    TransactionChecked,
    /// Transaction committed: delivered to its topic.
    Committed,
    /// Transaction rolled back: discarded.
    RolledBack,
    /// Delivered to a consumer group for the first time.
    Received,
    /// Delivered again after an invisibility ran out or a nack.
    Redelivered,
    /// Acknowledged by a consumer group.
    Acked,
    /// Moved to a group's dead-letter queue.
    DeadLettered,
}

impl TraceKind {
    fn to_byte(self) -> u8 {
        self as u8
    }

    fn from_byte(byte: u8) -> Option<Self> {
        const ALL: [TraceKind; 11] = [
            TraceKind::Sent,
            TraceKind::Scheduled,
            TraceKind::Released,
            TraceKind::HalfStored,
            TraceKind::TransactionChecked,
            TraceKind::Committed,
            TraceKind::RolledBack,
            TraceKind::Received,
            TraceKind::Redelivered,
            TraceKind::Acked,
            TraceKind::DeadLettered,
        ];
        ALL.get(usize::from(byte)).copied()
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The message.
    pub message_id: String,
    /// What happened.
    pub kind: TraceKind,
    /// When, ms (the event's store time).
    pub at_ms: u64,
    /// The consumer group involved; empty for producer-side events.
    pub group: String,
    /// Delivery attempt or check number, when relevant.
    pub attempt: u32,
    /// Free text (receipt handle, destination, lateness).
    pub detail: String,
}

fn encode(kind: TraceKind, group: &str, attempt: u32, detail: &str) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.u8(kind.to_byte());
    writer.str(group);
    writer.u32(attempt);
    writer.str(detail);
    writer.into_bytes()
}

fn decode(body: &[u8]) -> Option<(TraceKind, String, u32, String)> {
    let mut reader = Reader::new(body);
    let kind = TraceKind::from_byte(reader.u8()?)?;
    let group = reader.string()?;
    let attempt = reader.u32()?;
    let detail = reader.string()?;
    reader.finish()?;
    Some((kind, group, attempt, detail))
}

impl Broker {
    /// Records one event; failures are logged, never returned (tracing must not fail the
    /// operation it describes).
    pub(super) async fn trace(
        &self,
        message_id: &str,
        kind: TraceKind,
        group: &str,
        attempt: u32,
        detail: &str,
    ) {
        self.trace_many(
            vec![(message_id.to_string(), kind, detail.to_string(), attempt)],
            group,
        )
        .await;
    }

    /// Records several events of one group in one append.
    pub(super) async fn trace_many(
        &self,
        events: Vec<(String, TraceKind, String, u32)>,
        group: &str,
    ) {
        let records = self.trace_records(events, group);
        if records.is_empty() {
            return;
        }
        if let Err(error) = self.storage.append(records).await {
            tracing::warn!(%error, "message trace events lost");
        }
    }

    /// The trace records of several events of one group, for a caller that appends them with
    /// its own records (one append, one fsync); empty when tracing is off.
    pub(super) fn trace_records(
        &self,
        events: Vec<(String, TraceKind, String, u32)>,
        group: &str,
    ) -> Vec<NewRecord> {
        if !self.config.trace_enabled {
            return Vec::new();
        }
        events
            .into_iter()
            .map(|(message_id, kind, detail, attempt)| {
                let sequence = self.trace_sequence.fetch_add(1, Ordering::Relaxed);
                NewRecord {
                    message_id: format!("{message_id}#trace#{sequence:x}"),
                    topic: TRACE_TOPIC.to_string(),
                    queue_id: 0,
                    keys: vec![message_id],
                    body: encode(kind, group, attempt, &detail),
                    born_timestamp_ms: self.now_ms(),
                    ..NewRecord::default()
                }
            })
            .collect()
    }

    /// The recorded lifecycle of a message, oldest first.
    pub fn query_trace(&self, message_id: &str) -> Result<Vec<TraceEvent>, MessagingError> {
        let records =
            self.storage
                .read_by_key(TRACE_TOPIC, message_id, MAX_TRACE_EVENTS_PER_QUERY)?;
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            let Some((kind, group, attempt, detail)) = decode(&record.body) else {
                tracing::warn!(message_id = %record.message_id, "undecodable trace event skipped");
                continue;
            };
            events.push(TraceEvent {
                message_id: message_id.to_string(),
                kind,
                at_ms: record.store_timestamp_ms,
                group,
                attempt,
                detail,
            });
        }
        Ok(events)
    }
}
