//! Checker over a workload [`History`]: loss, duplicates (split into allowed redeliveries and true
//! duplicates), FIFO violations, RTO, RPO and replication lag. Pure: a history in, a [`Report`] out.

mod delivery;
mod failover;
mod render;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{Event, History};

/// Which consumer group must receive which topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Consumer group.
    pub consumer_group: String,
    /// Topics it subscribes to; empty means every topic.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// What the checker assumes about the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckSpec {
    /// Groups that must receive every acknowledged message of their topics. When empty, each
    /// consumer group seen in the history is expected to receive every acknowledged message of
    /// every topic it received anything from.
    pub expect: Vec<Expectation>,
    /// Invisibility window of the brokers: a message received again at least this long after its
    /// previous receipt, and not acked in between, counts as an allowed redelivery.
    pub invisible_duration_ms: Option<u64>,
    /// Geo failover allowance: a message received (even acked) in a region that then goes down,
    /// and received again by the same group in another region within this long after the
    /// `RegionDown` fault, counts as an allowed redelivery (the consumer position had not yet
    /// replicated). `None` treats such repeats like any other.
    pub failover_redelivery_window_ms: Option<u64>,
    /// Width of the time windows of the replication-lag series.
    pub lag_window_ms: u64,
    /// Longest list of ids per finding kind in the report (counts stay exact).
    pub max_listed: usize,
}

impl Default for CheckSpec {
    fn default() -> Self {
        Self {
            expect: Vec::new(),
            invisible_duration_ms: None,
            failover_redelivery_window_ms: None,
            lag_window_ms: 1_000,
            max_listed: 1_000,
        }
    }
}

/// An acknowledged message a consumer group never received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostMessage {
    /// Message id.
    pub id: String,
    /// Region that acknowledged the send.
    pub origin_region: String,
    /// Group that never received it.
    pub consumer_group: String,
    /// When the send was acknowledged.
    pub acked_at_ms: u64,
}

/// A receipt of a message id that no producer sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnknownReceive {
    /// Message id.
    pub id: String,
    /// Region of the receipt.
    pub region: String,
    /// Consumer group.
    pub consumer_group: String,
    /// Time of the receipt.
    pub at_ms: u64,
}

/// Why a repeated receipt is allowed by the delivery semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedeliveryReason {
    /// The broker reports a higher delivery attempt than any before.
    HigherAttempt,
    /// The consumer nacked the message after the previous receipt.
    AfterNack,
    /// The invisibility window ran out without an ack.
    AfterInvisibility,
    /// The previous receipt was in a region that then went down (see
    /// [`CheckSpec::failover_redelivery_window_ms`]).
    AfterFailover,
}

/// Why a repeated receipt is a true duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicateReason {
    /// The group had already acked the message.
    AfterAck,
    /// Same (or lower) attempt number as an earlier receipt, with no nack or timeout to explain it.
    SameAttempt,
}

/// How a repeated receipt was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", content = "reason", rename_all = "snake_case")]
pub enum RepeatClass {
    /// Allowed by at-least-once semantics.
    Redelivery(RedeliveryReason),
    /// Not allowed.
    Duplicate(DuplicateReason),
}

/// A second or later receipt of one id by one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepeatedReceive {
    /// Message id.
    pub id: String,
    /// Consumer group.
    pub consumer_group: String,
    /// Region of this receipt.
    pub region: String,
    /// Attempt reported with this receipt.
    pub attempt: u32,
    /// Time of this receipt.
    pub at_ms: u64,
    /// Time of the group's first receipt of the id.
    pub first_at_ms: u64,
    /// Classification.
    pub class: RepeatClass,
}

/// How FIFO order was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FifoKind {
    /// `seq` was delivered before a lower sequence number that arrived later.
    SkipAhead,
    /// `seq` came again after higher sequence numbers, and not as an allowed redelivery.
    Regression,
}

/// One FIFO violation within a message group, region and consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FifoViolation {
    /// Message group.
    pub group: String,
    /// Region where the out-of-order delivery happened.
    pub region: String,
    /// Consumer group.
    pub consumer_group: String,
    /// Kind of violation.
    pub kind: FifoKind,
    /// The sequence number delivered out of order.
    pub seq: u64,
    /// For `SkipAhead`, the lowest sequence it overtook; for `Regression`, the highest seen before.
    pub other_seq: u64,
    /// Message id delivered out of order.
    pub id: String,
    /// Time of that receipt.
    pub at_ms: u64,
}

/// Recovery of one surviving region after a region went down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRto {
    /// Surviving region.
    pub region: String,
    /// Milliseconds from the fault to the first send acknowledged by this region.
    pub first_ack_ms: Option<u64>,
    /// Milliseconds from the fault to the first receipt in this region.
    pub first_receive_ms: Option<u64>,
}

/// Recovery time after one `RegionDown` fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtoReport {
    /// Region that went down.
    pub region_down: String,
    /// When.
    pub fault_at_ms: u64,
    /// Per surviving region.
    pub survivors: Vec<RegionRto>,
    /// Producers that had a send acked by the failed region before the fault.
    pub displaced_producers: usize,
    /// Milliseconds until the last of them had a send acked elsewhere; None if one never did.
    pub producers_recovered_ms: Option<u64>,
    /// Consumers that had received from the failed region before the fault.
    pub displaced_consumers: usize,
    /// Milliseconds until the last of them received elsewhere; None if one never did.
    pub consumers_recovered_ms: Option<u64>,
}

/// An acknowledged message lost to a failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingMessage {
    /// Message id.
    pub id: String,
    /// When the failed region acknowledged it.
    pub acked_at_ms: u64,
}

/// Data loss after one `RegionDown` fault: messages acked by the failed region before the fault
/// that no surviving region had (received or stored) before the failed region came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpoReport {
    /// Region that went down.
    pub region_down: String,
    /// When.
    pub fault_at_ms: u64,
    /// How many acked messages are missing.
    pub missing_count: usize,
    /// Fault time minus the oldest missing message's ack time (the data-loss window).
    pub window_ms: Option<u64>,
    /// The missing messages (up to `max_listed`).
    pub missing: Vec<MissingMessage>,
}

/// Lag percentiles for messages acknowledged within one time window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagWindow {
    /// Window start (ack time).
    pub start_ms: u64,
    /// Messages in the window that reached the target region.
    pub count: usize,
    /// Median lag.
    pub p50_ms: u64,
    /// 99th percentile lag.
    pub p99_ms: u64,
    /// Largest lag.
    pub max_ms: u64,
}

/// Replication lag from one region to another over time: time a message first appears in the
/// target region (receipt or arrival) minus its ack time in the origin region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagSeries {
    /// Origin region.
    pub from: String,
    /// Target region.
    pub to: String,
    /// Percentiles over the whole run.
    pub overall: LagWindow,
    /// Per window, in time order; empty windows are left out.
    pub windows: Vec<LagWindow>,
}

/// Everything the checker found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Events in the history.
    pub events_count: usize,
    /// Distinct message ids sent.
    pub sent_count: usize,
    /// Distinct message ids acknowledged.
    pub acked_count: usize,
    /// Receipts.
    pub receives_count: usize,
    /// Acknowledged messages never received, per expected group.
    pub lost_count: usize,
    /// The first `max_listed` of them.
    pub lost: Vec<LostMessage>,
    /// Receipts of ids never sent.
    pub unknown_count: usize,
    /// The first `max_listed` of them.
    pub unknown: Vec<UnknownReceive>,
    /// Repeats allowed by the semantics.
    pub redelivery_count: usize,
    /// True duplicates.
    pub duplicate_count: usize,
    /// Repeats of both classes (up to `max_listed`), in time order.
    pub repeats: Vec<RepeatedReceive>,
    /// FIFO violations.
    pub fifo_violation_count: usize,
    /// The first `max_listed` of them.
    pub fifo_violations: Vec<FifoViolation>,
    /// One entry per `RegionDown` fault.
    pub rto: Vec<RtoReport>,
    /// One entry per `RegionDown` fault.
    pub rpo: Vec<RpoReport>,
    /// One series per (origin, target) region pair that replicated anything.
    pub lag: Vec<LagSeries>,
}

impl Report {
    /// True when nothing the semantics forbid happened: no loss, no true duplicate, no FIFO
    /// violation, no unknown message. RPO loss shows up as loss too unless the messages came back.
    pub fn is_clean(&self) -> bool {
        self.lost_count == 0
            && self.duplicate_count == 0
            && self.fifo_violation_count == 0
            && self.unknown_count == 0
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs with string keys cannot fail; fall back to an empty object anyway.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// What the checker knows about one message id from its sends.
#[derive(Debug, Clone)]
pub(crate) struct SendInfo<'a> {
    pub(crate) first_region: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) group: Option<&'a str>,
    pub(crate) seq: Option<u64>,
    pub(crate) producer: Option<&'a str>,
    /// Region and time of the first acknowledgement.
    pub(crate) acked: Option<(&'a str, u64)>,
}

impl<'a> SendInfo<'a> {
    /// Region the message belongs to: the one that acked it, else the one first tried.
    pub(crate) fn origin(&self) -> &'a str {
        self.acked.map_or(self.first_region, |(region, _)| region)
    }
}

/// Events in time order (stable, so equal times keep recording order) plus per-id send facts.
pub(crate) struct Index<'a> {
    pub(crate) events: Vec<&'a Event>,
    pub(crate) sends: BTreeMap<&'a str, SendInfo<'a>>,
    pub(crate) regions: BTreeSet<&'a str>,
}

impl<'a> Index<'a> {
    fn build(history: &'a History) -> Self {
        let mut events: Vec<&Event> = history.events.iter().collect();
        events.sort_by_key(|event| event.at_ms());
        let mut sends: BTreeMap<&str, SendInfo> = BTreeMap::new();
        let mut regions = BTreeSet::new();
        for event in &events {
            match event {
                Event::Send {
                    id,
                    region,
                    topic,
                    group,
                    seq,
                    producer,
                    ..
                } => {
                    regions.insert(region.as_str());
                    sends.entry(id.as_str()).or_insert(SendInfo {
                        first_region: region,
                        topic,
                        group: group.as_deref(),
                        seq: *seq,
                        producer: producer.as_deref(),
                        acked: None,
                    });
                }
                Event::SendAck { id, region, at_ms } => {
                    regions.insert(region.as_str());
                    if let Some(info) = sends.get_mut(id.as_str()) {
                        info.acked.get_or_insert((region.as_str(), *at_ms));
                    }
                }
                Event::Receive { region, .. }
                | Event::Arrival { region, .. }
                | Event::SendFailed { region, .. } => {
                    regions.insert(region.as_str());
                }
                Event::Ack { .. } | Event::Nack { .. } | Event::Fault { .. } => {}
            }
        }
        Self {
            events,
            sends,
            regions,
        }
    }
}

/// Checks a history and reports every finding.
pub fn check(history: &History, spec: &CheckSpec) -> Report {
    let index = Index::build(history);
    let mut report = Report {
        events_count: history.events.len(),
        sent_count: index.sends.len(),
        acked_count: index.sends.values().filter(|s| s.acked.is_some()).count(),
        receives_count: index
            .events
            .iter()
            .filter(|e| matches!(e, Event::Receive { .. }))
            .count(),
        ..Report::default()
    };
    delivery::check_loss(&index, spec, &mut report);
    delivery::check_repeats_and_fifo(&index, spec, &mut report);
    failover::check_rto_rpo(&index, spec, &mut report);
    report.lag = failover::replication_lag(&index, spec);
    report
}

/// Nearest-rank percentile of a sorted, non-empty slice.
pub(crate) fn percentile(sorted: &[u64], percent: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let len = sorted.len() as u64;
    let rank = (percent * len).div_ceil(100).clamp(1, len);
    sorted[usize::try_from(rank - 1).unwrap_or(0)]
}
