//! Hand-written histories, each holding known violations; the checker must find exactly those.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::history::FaultKind;

/// Small builder so each test reads like a timeline.
#[derive(Default)]
struct Timeline {
    events: Vec<Event>,
}

impl Timeline {
    fn send(&mut self, at_ms: u64, id: &str, region: &str) -> &mut Self {
        self.send_full(at_ms, id, region, "orders", None, None)
    }

    fn send_fifo(
        &mut self,
        at_ms: u64,
        id: &str,
        region: &str,
        group: &str,
        seq: u64,
    ) -> &mut Self {
        self.send_full(at_ms, id, region, "orders", Some((group, seq)), None)
    }

    fn send_by(&mut self, at_ms: u64, id: &str, region: &str, producer: &str) -> &mut Self {
        self.send_full(at_ms, id, region, "orders", None, Some(producer))
    }

    fn send_full(
        &mut self,
        at_ms: u64,
        id: &str,
        region: &str,
        topic: &str,
        fifo: Option<(&str, u64)>,
        producer: Option<&str>,
    ) -> &mut Self {
        self.events.push(Event::Send {
            id: id.into(),
            region: region.into(),
            topic: topic.into(),
            group: fifo.map(|(g, _)| g.to_string()),
            seq: fifo.map(|(_, s)| s),
            producer: producer.map(str::to_string),
            attempt: 1,
            at_ms,
        });
        self
    }

    fn ack_send(&mut self, at_ms: u64, id: &str, region: &str) -> &mut Self {
        self.events.push(Event::SendAck {
            id: id.into(),
            region: region.into(),
            at_ms,
        });
        self
    }

    fn sent(&mut self, at_ms: u64, id: &str, region: &str) -> &mut Self {
        self.send(at_ms, id, region).ack_send(at_ms + 1, id, region)
    }

    fn recv(&mut self, at_ms: u64, id: &str, region: &str, attempt: u32) -> &mut Self {
        self.recv_by(at_ms, id, region, "cg", "c1", attempt)
    }

    fn recv_by(
        &mut self,
        at_ms: u64,
        id: &str,
        region: &str,
        group: &str,
        consumer: &str,
        attempt: u32,
    ) -> &mut Self {
        self.events.push(Event::Receive {
            id: id.into(),
            region: region.into(),
            consumer_group: group.into(),
            consumer: consumer.into(),
            attempt,
            at_ms,
        });
        self
    }

    fn ack(&mut self, at_ms: u64, id: &str, region: &str) -> &mut Self {
        self.events.push(Event::Ack {
            id: id.into(),
            region: region.into(),
            consumer_group: "cg".into(),
            at_ms,
        });
        self
    }

    fn nack(&mut self, at_ms: u64, id: &str, region: &str) -> &mut Self {
        self.events.push(Event::Nack {
            id: id.into(),
            region: region.into(),
            consumer_group: "cg".into(),
            at_ms,
        });
        self
    }

    fn arrival(&mut self, at_ms: u64, id: &str, region: &str) -> &mut Self {
        self.events.push(Event::Arrival {
            id: id.into(),
            region: region.into(),
            at_ms,
        });
        self
    }

    fn fault(&mut self, at_ms: u64, kind: FaultKind, target: &str) -> &mut Self {
        self.events.push(Event::Fault {
            kind,
            target: target.into(),
            at_ms,
            note: String::new(),
        });
        self
    }

    fn check(&self, spec: &CheckSpec) -> Report {
        check(
            &History {
                events: self.events.clone(),
            },
            spec,
        )
    }
}

fn repeat_classes(report: &Report) -> Vec<(String, u64, RepeatClass)> {
    report
        .repeats
        .iter()
        .map(|r| (r.id.clone(), r.at_ms, r.class))
        .collect()
}

#[test]
fn clean_history_has_no_findings() {
    let mut t = Timeline::default();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let at = i as u64 * 10;
        t.sent(at, id, "us")
            .recv(at + 5, id, "us", 1)
            .ack(at + 6, id, "us");
    }
    let report = t.check(&CheckSpec::default());
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.sent_count, 3);
    assert_eq!(report.acked_count, 3);
    assert_eq!(report.receives_count, 3);
    assert!(report.repeats.is_empty());
    assert!(report.rto.is_empty() && report.rpo.is_empty() && report.lag.is_empty());
    assert!(report.render_table().contains("CLEAN"));
}

#[test]
fn loss_is_acked_but_never_received_per_expected_group() {
    let mut t = Timeline::default();
    t.sent(0, "m1", "us")
        .sent(10, "m2", "us")
        // m3 was never acked: its absence is not a loss.
        .send(20, "m3", "us")
        .recv(30, "m1", "us", 1);
    // A second group that received only m2, on another topic's message too.
    t.send_full(40, "x1", "us", "audit", None, None)
        .ack_send(41, "x1", "us")
        .recv_by(50, "m2", "us", "analytics", "a1", 1);
    let report = t.check(&CheckSpec::default());
    let lost: Vec<(&str, &str)> = report
        .lost
        .iter()
        .map(|l| (l.id.as_str(), l.consumer_group.as_str()))
        .collect();
    // Inferred expectations: both groups subscribe to "orders" only; nobody reads "audit".
    assert_eq!(lost, vec![("m1", "analytics"), ("m2", "cg")]);
    assert_eq!(report.lost_count, 2);
    assert_eq!(report.lost[1].origin_region, "us");
    assert_eq!(report.lost[1].acked_at_ms, 11);
    assert!(!report.is_clean());

    // An explicit expectation can cover the unread topic.
    let spec = CheckSpec {
        expect: vec![Expectation {
            consumer_group: "auditor".into(),
            topics: vec!["audit".into()],
        }],
        ..CheckSpec::default()
    };
    let report = t.check(&spec);
    let lost: Vec<&str> = report.lost.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(lost, vec!["x1"]);
}

#[test]
fn unknown_receipts_are_reported() {
    let mut t = Timeline::default();
    t.sent(0, "m1", "us")
        .recv(5, "m1", "us", 1)
        .recv(6, "ghost", "eu", 1);
    let report = t.check(&CheckSpec::default());
    assert_eq!(report.unknown_count, 1);
    assert_eq!(report.unknown[0].id, "ghost");
    assert_eq!(report.unknown[0].region, "eu");
    assert_eq!(report.lost_count, 0);
    assert!(!report.is_clean());
}

#[test]
fn repeats_split_into_redeliveries_and_true_duplicates() {
    let mut t = Timeline::default();
    for id in ["same", "acked", "higher", "nacked", "timeout"] {
        t.sent(0, id, "us");
    }
    t.recv(10, "same", "us", 1).recv(11, "same", "us", 1);
    t.recv(10, "acked", "us", 1)
        .ack(12, "acked", "us")
        .recv(40, "acked", "us", 2);
    t.recv(10, "higher", "us", 1).recv(30, "higher", "us", 2);
    t.recv(10, "nacked", "us", 1)
        .nack(11, "nacked", "us")
        .recv(13, "nacked", "us", 1);
    t.recv(10, "timeout", "us", 1)
        .recv(5_000, "timeout", "us", 1);
    // Another consumer group receiving the same id is not a repeat at all.
    t.recv_by(11, "higher", "us", "other", "o1", 1);

    let report = t.check(&CheckSpec::default());
    use DuplicateReason::*;
    use RedeliveryReason::*;
    use RepeatClass::*;
    assert_eq!(
        repeat_classes(&report),
        vec![
            ("same".to_string(), 11, Duplicate(SameAttempt)),
            ("nacked".to_string(), 13, Redelivery(AfterNack)),
            ("higher".to_string(), 30, Redelivery(HigherAttempt)),
            ("acked".to_string(), 40, Duplicate(AfterAck)),
            // Without an invisibility window, a same-attempt repeat is a duplicate however late.
            ("timeout".to_string(), 5_000, Duplicate(SameAttempt)),
        ]
    );
    assert_eq!(report.duplicate_count, 3);
    assert_eq!(report.redelivery_count, 2);
    assert_eq!(report.repeats[0].first_at_ms, 10);

    let spec = CheckSpec {
        invisible_duration_ms: Some(1_000),
        ..CheckSpec::default()
    };
    let report = t.check(&spec);
    assert_eq!(report.repeats[4].class, Redelivery(AfterInvisibility));
    assert_eq!(report.duplicate_count, 2);
    assert_eq!(report.redelivery_count, 3);
    let table = report.render_table();
    assert!(table.contains("DUPLICATE (AfterAck)"));
    assert!(table.contains("redelivery (AfterInvisibility)"));
}

#[test]
fn fifo_skip_ahead_is_found_once_per_out_of_place_receipt() {
    let mut t = Timeline::default();
    for seq in 0..5 {
        t.send_fifo(seq, &format!("g{seq}"), "us", "G", seq)
            .ack_send(seq + 1, &format!("g{seq}"), "us");
    }
    // Delivered 0, 2, 1, 4, 3: seq 2 overtook 1 and seq 4 overtook 3.
    for (at, seq) in [(10, 0), (11, 2), (12, 1), (13, 4), (14, 3)] {
        t.recv(at, &format!("g{seq}"), "us", 1);
    }
    // In-order delivery of the same message group in another region is fine. (It uses its own
    // consumer group: the same group receiving in two regions would be duplicates.)
    for seq in 0..5 {
        t.recv_by(20 + seq, &format!("g{seq}"), "eu", "cg-eu", "e1", 1);
    }
    let report = t.check(&CheckSpec::default());
    let found: Vec<(FifoKind, &str, u64, u64)> = report
        .fifo_violations
        .iter()
        .map(|v| (v.kind, v.region.as_str(), v.seq, v.other_seq))
        .collect();
    assert_eq!(
        found,
        vec![
            (FifoKind::SkipAhead, "us", 2, 1),
            (FifoKind::SkipAhead, "us", 4, 3),
        ]
    );
    assert_eq!(report.fifo_violation_count, 2);
    assert_eq!(report.fifo_violations[0].id, "g2");
    assert_eq!(report.fifo_violations[0].at_ms, 11);
    assert_eq!(report.duplicate_count, 0);
}

#[test]
fn fifo_regression_allows_redelivery_but_not_duplicates() {
    let mut t = Timeline::default();
    for seq in 0..3 {
        t.send_fifo(seq, &format!("g{seq}"), "us", "G", seq)
            .ack_send(seq + 1, &format!("g{seq}"), "us");
    }
    t.recv(10, "g0", "us", 1)
        .recv(11, "g1", "us", 1)
        .recv(12, "g2", "us", 1)
        // Redelivered with a higher attempt: allowed to go back.
        .recv(13, "g0", "us", 2)
        // Same attempt again after seq 2: a regression and a duplicate.
        .recv(14, "g1", "us", 1);
    let report = t.check(&CheckSpec::default());
    assert_eq!(report.fifo_violation_count, 1);
    let v = &report.fifo_violations[0];
    assert_eq!(
        (v.kind, v.seq, v.other_seq, v.at_ms),
        (FifoKind::Regression, 1, 2, 14)
    );
    assert_eq!(report.duplicate_count, 1);
    assert_eq!(report.redelivery_count, 1);
}

#[test]
fn rto_per_surviving_region_and_displaced_clients() {
    let mut t = Timeline::default();
    // Before the fault: producer p1 and consumer c1 work against us; eu and ap are also live.
    t.send_by(100, "m1", "us", "p1")
        .ack_send(101, "m1", "us")
        .recv_by(150, "m1", "us", "cg", "c1", 1)
        .send_by(200, "e0", "eu", "p2")
        .ack_send(201, "e0", "eu")
        .recv_by(210, "e0", "ap", "cg", "c9", 1);
    t.fault(1_000, FaultKind::RegionDown, "us");
    // After: eu accepts p1 at 1500 and serves c1 at 1800; eu's first receipt is c7's at 1200.
    t.send_by(1_100, "m2", "eu", "p1")
        .ack_send(1_500, "m2", "eu")
        .recv_by(1_200, "e0", "eu", "cg", "c7", 1)
        .recv_by(1_800, "m2", "eu", "cg", "c1", 1);
    let report = t.check(&CheckSpec::default());
    assert_eq!(report.rto.len(), 1);
    let rto = &report.rto[0];
    assert_eq!((rto.region_down.as_str(), rto.fault_at_ms), ("us", 1_000));
    assert_eq!(
        rto.survivors,
        vec![
            RegionRto {
                region: "ap".into(),
                first_ack_ms: None,
                first_receive_ms: None,
            },
            RegionRto {
                region: "eu".into(),
                first_ack_ms: Some(500),
                first_receive_ms: Some(200),
            },
        ]
    );
    assert_eq!(rto.displaced_producers, 1);
    assert_eq!(rto.producers_recovered_ms, Some(500));
    assert_eq!(rto.displaced_consumers, 1);
    assert_eq!(rto.consumers_recovered_ms, Some(800));

    // A displaced consumer that never comes back makes consumer recovery "never".
    t.recv_by(900, "m1", "us", "cg", "c2", 1);
    let report = t.check(&CheckSpec::default());
    assert_eq!(report.rto[0].displaced_consumers, 2);
    assert_eq!(report.rto[0].consumers_recovered_ms, None);
    assert!(report.render_table().contains("never of 2"));
}

#[test]
fn rpo_lists_acked_messages_missing_after_failover() {
    let mut t = Timeline::default();
    t.sent(100, "m1", "us")
        .sent(200, "m2", "us")
        .sent(300, "m3", "us")
        .sent(400, "m4", "us")
        // eu had m1 (stored) and m2 (received) before us went down.
        .arrival(150, "m1", "eu")
        .recv(250, "m2", "eu", 1);
    t.fault(1_000, FaultKind::RegionDown, "us");
    // m5 is acked by eu after the failover: not part of the RPO.
    t.sent(1_100, "m5", "eu");
    t.fault(5_000, FaultKind::RegionUp, "us");
    // m4 only shows up once us is back: it was still missing during the outage.
    t.arrival(5_500, "m4", "eu");
    let report = t.check(&CheckSpec::default());
    assert_eq!(report.rpo.len(), 1);
    let rpo = &report.rpo[0];
    let missing: Vec<(&str, u64)> = rpo
        .missing
        .iter()
        .map(|m| (m.id.as_str(), m.acked_at_ms))
        .collect();
    assert_eq!(missing, vec![("m3", 301), ("m4", 401)]);
    assert_eq!(rpo.missing_count, 2);
    assert_eq!(rpo.window_ms, Some(1_000 - 301));
    let table = report.render_table();
    assert!(table.contains("m3,m4"), "{table}");
}

#[test]
fn replication_lag_percentiles_per_window() {
    let mut t = Timeline::default();
    // Window 0: lags 10, 20, 30, 40; window 1000: lag 500 (a stall).
    for (i, lag) in [10u64, 20, 30, 40].iter().enumerate() {
        let id = format!("w0-{i}");
        let at = i as u64 * 100;
        t.sent(at, &id, "us").arrival(at + 1 + lag, &id, "eu");
    }
    t.sent(1_200, "w1", "us").recv(1_701, "w1", "eu", 1);
    // A later receipt in eu does not change the first-seen time.
    t.recv(9_000, "w0-0", "eu", 2);
    let report = t.check(&CheckSpec::default());
    assert_eq!(report.lag.len(), 1);
    let series = &report.lag[0];
    assert_eq!((series.from.as_str(), series.to.as_str()), ("us", "eu"));
    assert_eq!(
        series.windows,
        vec![
            LagWindow {
                start_ms: 0,
                count: 4,
                p50_ms: 20,
                p99_ms: 40,
                max_ms: 40,
            },
            LagWindow {
                start_ms: 1_000,
                count: 1,
                p50_ms: 500,
                p99_ms: 500,
                max_ms: 500,
            },
        ]
    );
    assert_eq!(series.overall.count, 5);
    assert_eq!(series.overall.max_ms, 500);
    assert_eq!(series.overall.p50_ms, 30);
}

#[test]
fn report_json_round_trips_and_history_file_checks_the_same() {
    let mut t = Timeline::default();
    t.sent(0, "m1", "us")
        .recv(5, "m1", "us", 1)
        .recv(6, "m1", "us", 1)
        .sent(10, "m2", "us");
    let history = History {
        events: t.events.clone(),
    };
    let mut jsonl = Vec::new();
    history.write_jsonl(&mut jsonl).unwrap();
    let reread = History::read_jsonl(jsonl.as_slice(), 1_000).unwrap();
    let spec = CheckSpec::default();
    let report = check(&reread, &spec);
    assert_eq!(report, check(&history, &spec));
    let json = report.to_json();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["lost_count"], 1);
    assert_eq!(value["duplicate_count"], 1);
    assert_eq!(value["repeats"][0]["class"]["class"], "duplicate");
    assert_eq!(value["repeats"][0]["class"]["reason"], "same_attempt");
}

#[test]
fn lists_are_capped_but_counts_are_exact() {
    let mut t = Timeline::default();
    for i in 0..10 {
        t.sent(i, &format!("m{i}"), "us");
    }
    t.recv_by(100, "m0", "us", "cg", "c1", 1);
    let spec = CheckSpec {
        max_listed: 3,
        ..CheckSpec::default()
    };
    let report = t.check(&spec);
    assert_eq!(report.lost_count, 9);
    assert_eq!(report.lost.len(), 3);
    assert_eq!(report.lost[0].id, "m1");
}

#[test]
fn spec_parses_from_toml() {
    let spec: CheckSpec = toml::from_str(
        "invisible_duration_ms = 30000\n[[expect]]\nconsumer_group = \"cg\"\ntopics = [\"orders\"]\n",
    )
    .unwrap();
    assert_eq!(spec.invisible_duration_ms, Some(30_000));
    assert_eq!(spec.lag_window_ms, 1_000);
    assert_eq!(spec.expect[0].topics, vec!["orders".to_string()]);
}

#[test]
fn percentile_is_nearest_rank() {
    let values: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&values, 50), 50);
    assert_eq!(percentile(&values, 99), 99);
    assert_eq!(percentile(&values, 100), 100);
    assert_eq!(percentile(&[7], 50), 7);
    assert_eq!(percentile(&[], 50), 0);
}

#[test]
fn failover_redelivery_is_allowed_only_within_its_window() {
    let mut t = Timeline::default();
    t.sent(0, "a", "us")
        .sent(1, "b", "us")
        .sent(2, "c", "us")
        .recv(10, "a", "us", 1)
        .ack(11, "a", "us")
        .recv(12, "b", "us", 1)
        .ack(13, "b", "us")
        // c is received in us but redelivered in us again later: not a failover case.
        .recv(14, "c", "us", 1);
    t.fault(1_000, FaultKind::RegionDown, "us");
    // eu replays a (acked in us) soon after the failover, b much later, c in us itself.
    t.recv(1_500, "a", "eu", 1)
        .recv(9_000, "b", "eu", 1)
        .recv(1_600, "c", "us", 1);
    use DuplicateReason::*;
    use RedeliveryReason::*;
    use RepeatClass::*;

    let strict = t.check(&CheckSpec::default());
    assert_eq!(strict.duplicate_count, 3);

    let spec = CheckSpec {
        failover_redelivery_window_ms: Some(2_000),
        ..CheckSpec::default()
    };
    let report = t.check(&spec);
    assert_eq!(
        repeat_classes(&report),
        vec![
            ("a".to_string(), 1_500, Redelivery(AfterFailover)),
            ("c".to_string(), 1_600, Duplicate(SameAttempt)),
            ("b".to_string(), 9_000, Duplicate(AfterAck)),
        ]
    );
}
