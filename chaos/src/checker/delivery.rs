//! Delivery findings: loss, unknown messages, repeated receipts (redelivery vs true duplicate) and
//! FIFO order within message groups.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{
    CheckSpec, DuplicateReason, FifoKind, FifoViolation, Index, LostMessage, RedeliveryReason,
    RepeatClass, RepeatedReceive, Report, UnknownReceive,
};
use crate::history::{Event, FaultKind};

/// Acknowledged messages that an expected consumer group never received, and receipts of ids
/// nobody sent.
pub(super) fn check_loss(index: &Index<'_>, spec: &CheckSpec, report: &mut Report) {
    let mut received: HashSet<(&str, &str)> = HashSet::new();
    // Group -> topics it received from; used when the spec names no expectations.
    let mut inferred: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for event in &index.events {
        let Event::Receive {
            id,
            region,
            consumer_group,
            at_ms,
            ..
        } = event
        else {
            continue;
        };
        received.insert((id.as_str(), consumer_group.as_str()));
        match index.sends.get(id.as_str()) {
            Some(info) => {
                inferred
                    .entry(consumer_group.as_str())
                    .or_default()
                    .insert(info.topic);
            }
            None => {
                report.unknown_count += 1;
                if report.unknown.len() < spec.max_listed {
                    report.unknown.push(UnknownReceive {
                        id: id.clone(),
                        region: region.clone(),
                        consumer_group: consumer_group.clone(),
                        at_ms: *at_ms,
                    });
                }
            }
        }
    }
    // (group, topics) where empty topics means all.
    let expectations: Vec<(&str, BTreeSet<&str>)> = if spec.expect.is_empty() {
        inferred.into_iter().collect()
    } else {
        spec.expect
            .iter()
            .map(|e| {
                (
                    e.consumer_group.as_str(),
                    e.topics.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    };
    let mut acked: Vec<(u64, &str)> = index
        .sends
        .iter()
        .filter_map(|(id, info)| info.acked.map(|(_, at)| (at, *id)))
        .collect();
    acked.sort_unstable();
    for (acked_at_ms, id) in acked {
        let Some(info) = index.sends.get(id) else {
            continue;
        };
        for (group, topics) in &expectations {
            let subscribed = topics.is_empty() || topics.contains(info.topic);
            if subscribed && !received.contains(&(id, *group)) {
                report.lost_count += 1;
                if report.lost.len() < spec.max_listed {
                    report.lost.push(LostMessage {
                        id: id.to_string(),
                        origin_region: info.origin().to_string(),
                        consumer_group: (*group).to_string(),
                        acked_at_ms,
                    });
                }
            }
        }
    }
}

/// Per (id, consumer group) delivery state during the pass.
struct ReceiveState<'a> {
    last_region: &'a str,
    first_at_ms: u64,
    last_at_ms: u64,
    max_attempt: u32,
    acked: bool,
    nacked_since_last: bool,
}

/// Per (message group, region, consumer group) FIFO state during the pass.
#[derive(Default)]
struct FifoState<'a> {
    seen: HashSet<u64>,
    max_seq: Option<u64>,
    /// First receipts in this key, in delivery order: (seq, id, time).
    first_receipts: Vec<(u64, &'a str, u64)>,
}

/// Classifies every repeated receipt and finds FIFO violations, in one pass over time.
pub(super) fn check_repeats_and_fifo(index: &Index<'_>, spec: &CheckSpec, report: &mut Report) {
    let mut states: HashMap<(&str, &str), ReceiveState<'_>> = HashMap::new();
    // Latest `RegionDown` time per region, as of the event being looked at.
    let mut down_at: HashMap<&str, u64> = HashMap::new();
    let mut fifo: BTreeMap<(&str, &str, &str), FifoState<'_>> = BTreeMap::new();
    let mut violations: Vec<FifoViolation> = Vec::new();
    for event in &index.events {
        match event {
            Event::Fault {
                kind: FaultKind::RegionDown,
                target,
                at_ms,
                ..
            } => {
                down_at.insert(target.as_str(), *at_ms);
            }
            Event::Ack {
                id, consumer_group, ..
            } => {
                if let Some(state) = states.get_mut(&(id.as_str(), consumer_group.as_str())) {
                    state.acked = true;
                }
            }
            Event::Nack {
                id, consumer_group, ..
            } => {
                if let Some(state) = states.get_mut(&(id.as_str(), consumer_group.as_str())) {
                    state.nacked_since_last = true;
                }
            }
            Event::Receive {
                id,
                region,
                consumer_group,
                attempt,
                at_ms,
                ..
            } => {
                let key = (id.as_str(), consumer_group.as_str());
                let class = match states.get_mut(&key) {
                    None => {
                        states.insert(
                            key,
                            ReceiveState {
                                last_region: region,
                                first_at_ms: *at_ms,
                                last_at_ms: *at_ms,
                                max_attempt: *attempt,
                                acked: false,
                                nacked_since_last: false,
                            },
                        );
                        None
                    }
                    Some(state) => {
                        // The fault that took down the region of the previous receipt, if any.
                        let failover_at = (state.last_region != region.as_str())
                            .then(|| down_at.get(state.last_region).copied())
                            .flatten()
                            .filter(|down| *down >= state.last_at_ms && *down <= *at_ms);
                        let class = classify(state, *attempt, *at_ms, failover_at, spec);
                        state.last_region = region;
                        state.last_at_ms = *at_ms;
                        state.max_attempt = state.max_attempt.max(*attempt);
                        state.nacked_since_last = false;
                        match class {
                            RepeatClass::Redelivery(_) => report.redelivery_count += 1,
                            RepeatClass::Duplicate(_) => report.duplicate_count += 1,
                        }
                        if report.repeats.len() < spec.max_listed {
                            report.repeats.push(RepeatedReceive {
                                id: id.clone(),
                                consumer_group: consumer_group.clone(),
                                region: region.clone(),
                                attempt: *attempt,
                                at_ms: *at_ms,
                                first_at_ms: state.first_at_ms,
                                class,
                            });
                        }
                        Some(class)
                    }
                };
                let Some(info) = index.sends.get(id.as_str()) else {
                    continue;
                };
                let (Some(group), Some(seq)) = (info.group, info.seq) else {
                    continue;
                };
                let state = fifo
                    .entry((group, region.as_str(), consumer_group.as_str()))
                    .or_default();
                if state.seen.insert(seq) {
                    state.first_receipts.push((seq, id.as_str(), *at_ms));
                } else if let Some(max_seq) = state.max_seq.filter(|max| *max > seq) {
                    // Going back is fine only as an allowed redelivery.
                    if !matches!(class, Some(RepeatClass::Redelivery(_))) {
                        violations.push(FifoViolation {
                            group: group.to_string(),
                            region: region.clone(),
                            consumer_group: consumer_group.clone(),
                            kind: FifoKind::Regression,
                            seq,
                            other_seq: max_seq,
                            id: id.clone(),
                            at_ms: *at_ms,
                        });
                    }
                }
                state.max_seq = Some(state.max_seq.map_or(seq, |max| max.max(seq)));
            }
            _ => {}
        }
    }
    for ((group, region, consumer_group), state) in &fifo {
        // A first receipt is out of order if a lower sequence is first received after it.
        let receipts = &state.first_receipts;
        let mut later_min = u64::MAX;
        let mut found = Vec::new();
        for (seq, id, at_ms) in receipts.iter().rev() {
            if later_min < *seq {
                found.push(FifoViolation {
                    group: (*group).to_string(),
                    region: (*region).to_string(),
                    consumer_group: (*consumer_group).to_string(),
                    kind: FifoKind::SkipAhead,
                    seq: *seq,
                    other_seq: later_min,
                    id: (*id).to_string(),
                    at_ms: *at_ms,
                });
            }
            later_min = later_min.min(*seq);
        }
        violations.extend(found);
    }
    violations.sort_by(|a, b| {
        (a.at_ms, &a.group, &a.region, &a.consumer_group, a.seq).cmp(&(
            b.at_ms,
            &b.group,
            &b.region,
            &b.consumer_group,
            b.seq,
        ))
    });
    report.fifo_violation_count = violations.len();
    violations.truncate(spec.max_listed);
    report.fifo_violations = violations;
}

fn classify(
    state: &ReceiveState<'_>,
    attempt: u32,
    at_ms: u64,
    failover_at_ms: Option<u64>,
    spec: &CheckSpec,
) -> RepeatClass {
    let after_failover = spec
        .failover_redelivery_window_ms
        .zip(failover_at_ms)
        .is_some_and(|(window, down)| at_ms.saturating_sub(down) <= window);
    if after_failover {
        RepeatClass::Redelivery(RedeliveryReason::AfterFailover)
    } else if state.acked {
        RepeatClass::Duplicate(DuplicateReason::AfterAck)
    } else if attempt > state.max_attempt {
        RepeatClass::Redelivery(RedeliveryReason::HigherAttempt)
    } else if state.nacked_since_last {
        RepeatClass::Redelivery(RedeliveryReason::AfterNack)
    } else if spec
        .invisible_duration_ms
        .is_some_and(|window| at_ms.saturating_sub(state.last_at_ms) >= window)
    {
        RepeatClass::Redelivery(RedeliveryReason::AfterInvisibility)
    } else {
        RepeatClass::Duplicate(DuplicateReason::SameAttempt)
    }
}
