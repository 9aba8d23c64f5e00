//! Failover findings: RTO and RPO per `RegionDown` fault, and replication lag between regions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{
    CheckSpec, Index, LagSeries, LagWindow, MissingMessage, RegionRto, Report, RpoReport,
    RtoReport, percentile,
};
use crate::history::{Event, FaultKind};

/// One `RegionDown` fault with the regions that were up right after it.
struct DownFault<'a> {
    region: &'a str,
    at_ms: u64,
    /// When the region came back (first `RegionUp` after the fault), if it did.
    up_at_ms: Option<u64>,
    survivors: BTreeSet<&'a str>,
}

fn down_faults<'a>(index: &Index<'a>) -> Vec<DownFault<'a>> {
    let mut down: BTreeSet<&str> = BTreeSet::new();
    let mut faults: Vec<DownFault<'a>> = Vec::new();
    for event in &index.events {
        let Event::Fault {
            kind,
            target,
            at_ms,
            ..
        } = event
        else {
            continue;
        };
        match kind {
            FaultKind::RegionDown => {
                down.insert(target.as_str());
                let survivors = index
                    .regions
                    .iter()
                    .copied()
                    .filter(|r| !down.contains(r))
                    .collect();
                faults.push(DownFault {
                    region: target,
                    at_ms: *at_ms,
                    up_at_ms: None,
                    survivors,
                });
            }
            FaultKind::RegionUp => {
                down.remove(target.as_str());
                for fault in faults.iter_mut() {
                    if fault.region == target && fault.up_at_ms.is_none() {
                        fault.up_at_ms = Some(*at_ms);
                    }
                }
            }
            _ => {}
        }
    }
    faults
}

/// Fills `report.rto` and `report.rpo`, one entry per `RegionDown` fault.
pub(super) fn check_rto_rpo(index: &Index<'_>, spec: &CheckSpec, report: &mut Report) {
    for fault in down_faults(index) {
        report.rto.push(rto(index, &fault));
        report.rpo.push(rpo(index, spec, &fault));
    }
}

fn rto(index: &Index<'_>, fault: &DownFault<'_>) -> RtoReport {
    let t = fault.at_ms;
    let mut first_ack: HashMap<&str, u64> = HashMap::new();
    let mut first_receive: HashMap<&str, u64> = HashMap::new();
    let mut displaced_producers: HashSet<&str> = HashSet::new();
    let mut displaced_consumers: HashSet<&str> = HashSet::new();
    let mut producer_back: HashMap<&str, u64> = HashMap::new();
    let mut consumer_back: HashMap<&str, u64> = HashMap::new();
    for event in &index.events {
        match event {
            Event::SendAck { id, region, at_ms } => {
                let producer = index.sends.get(id.as_str()).and_then(|s| s.producer);
                if *at_ms < t {
                    if region == fault.region {
                        displaced_producers.extend(producer);
                    }
                } else if region != fault.region {
                    first_ack.entry(region.as_str()).or_insert(*at_ms);
                    if let Some(producer) = producer {
                        producer_back.entry(producer).or_insert(*at_ms);
                    }
                }
            }
            Event::Receive {
                region,
                consumer,
                at_ms,
                ..
            } => {
                if *at_ms < t {
                    if region == fault.region {
                        displaced_consumers.insert(consumer.as_str());
                    }
                } else if region != fault.region {
                    first_receive.entry(region.as_str()).or_insert(*at_ms);
                    consumer_back.entry(consumer.as_str()).or_insert(*at_ms);
                }
            }
            _ => {}
        }
    }
    let recovered = |displaced: &HashSet<&str>, back: &HashMap<&str, u64>| -> Option<u64> {
        displaced
            .iter()
            .map(|who| back.get(who).map(|at| at - t))
            .try_fold(0, |acc, ms| ms.map(|ms| acc.max(ms)))
    };
    RtoReport {
        region_down: fault.region.to_string(),
        fault_at_ms: t,
        survivors: fault
            .survivors
            .iter()
            .map(|region| RegionRto {
                region: (*region).to_string(),
                first_ack_ms: first_ack.get(region).map(|at| at - t),
                first_receive_ms: first_receive.get(region).map(|at| at - t),
            })
            .collect(),
        displaced_producers: displaced_producers.len(),
        producers_recovered_ms: recovered(&displaced_producers, &producer_back),
        displaced_consumers: displaced_consumers.len(),
        consumers_recovered_ms: recovered(&displaced_consumers, &consumer_back),
    }
}

fn rpo(index: &Index<'_>, spec: &CheckSpec, fault: &DownFault<'_>) -> RpoReport {
    let until = fault.up_at_ms.unwrap_or(u64::MAX);
    let mut present: HashSet<&str> = HashSet::new();
    for event in &index.events {
        if let Event::Receive {
            id, region, at_ms, ..
        }
        | Event::Arrival { id, region, at_ms } = event
            && *at_ms < until
            && fault.survivors.contains(region.as_str())
        {
            present.insert(id.as_str());
        }
    }
    let mut missing: Vec<MissingMessage> = index
        .sends
        .iter()
        .filter_map(|(id, info)| match info.acked {
            Some((region, acked_at_ms))
                if region == fault.region
                    && acked_at_ms <= fault.at_ms
                    && !present.contains(id) =>
            {
                Some(MissingMessage {
                    id: (*id).to_string(),
                    acked_at_ms,
                })
            }
            _ => None,
        })
        .collect();
    missing.sort_by(|a, b| (a.acked_at_ms, &a.id).cmp(&(b.acked_at_ms, &b.id)));
    let window_ms = missing.first().map(|m| fault.at_ms - m.acked_at_ms);
    let missing_count = missing.len();
    missing.truncate(spec.max_listed);
    RpoReport {
        region_down: fault.region.to_string(),
        fault_at_ms: fault.at_ms,
        missing_count,
        window_ms,
        missing,
    }
}

/// Lag series for every (origin, target) region pair that saw at least one replicated message.
pub(super) fn replication_lag(index: &Index<'_>, spec: &CheckSpec) -> Vec<LagSeries> {
    // id -> region -> first time the message was seen there.
    let mut first_seen: HashMap<&str, BTreeMap<&str, u64>> = HashMap::new();
    for event in &index.events {
        if let Event::Receive {
            id, region, at_ms, ..
        }
        | Event::Arrival { id, region, at_ms } = event
        {
            first_seen
                .entry(id.as_str())
                .or_default()
                .entry(region.as_str())
                .or_insert(*at_ms);
        }
    }
    // (from, to) -> [(ack time, lag)]
    let mut samples: BTreeMap<(&str, &str), Vec<(u64, u64)>> = BTreeMap::new();
    for (id, info) in &index.sends {
        let Some((origin, acked_at_ms)) = info.acked else {
            continue;
        };
        let Some(seen) = first_seen.get(id) else {
            continue;
        };
        for (region, at_ms) in seen {
            if *region != origin {
                samples
                    .entry((origin, *region))
                    .or_default()
                    .push((acked_at_ms, at_ms.saturating_sub(acked_at_ms)));
            }
        }
    }
    let window_ms = spec.lag_window_ms.max(1);
    samples
        .into_iter()
        .map(|((from, to), mut points)| {
            points.sort_unstable();
            let mut windows: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for (acked_at_ms, lag) in &points {
                windows
                    .entry(acked_at_ms / window_ms * window_ms)
                    .or_default()
                    .push(*lag);
            }
            let all: Vec<u64> = points.iter().map(|(_, lag)| *lag).collect();
            let start_ms = points
                .first()
                .map_or(0, |(at, _)| at / window_ms * window_ms);
            LagSeries {
                from: from.to_string(),
                to: to.to_string(),
                overall: lag_window(start_ms, all),
                windows: windows
                    .into_iter()
                    .map(|(start, lags)| lag_window(start, lags))
                    .collect(),
            }
        })
        .collect()
}

fn lag_window(start_ms: u64, mut lags: Vec<u64>) -> LagWindow {
    lags.sort_unstable();
    LagWindow {
        start_ms,
        count: lags.len(),
        p50_ms: percentile(&lags, 50),
        p99_ms: percentile(&lags, 99),
        max_ms: lags.last().copied().unwrap_or(0),
    }
}
