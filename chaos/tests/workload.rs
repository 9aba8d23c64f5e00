//! The workload generator against real cells (gRPC on loopback): producers whose own region is
//! unreachable move to the next region with the same message ids, consumers receive and ack,
//! and the recorded history checks clean.

#![allow(clippy::unwrap_used)]

mod cells;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cells::start_cell;
use meridian_chaos::{CheckSpec, Recorder, RegionTarget, WorkloadSpec, check, workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_of_an_unreachable_region_move_on_with_the_same_ids() {
    let live = start_cell("eu-west").await;
    // A port nobody listens on: the producers' own region is down from the start.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let spec = WorkloadSpec {
        regions: vec![
            RegionTarget {
                name: "us-east".into(),
                endpoint: dead_addr.to_string(),
            },
            RegionTarget {
                name: "eu-west".into(),
                endpoint: live.addr.to_string(),
            },
        ],
        producer_regions: vec!["us-east".into()],
        consumer_regions: vec!["eu-west".into()],
        topic: "drill".into(),
        consumer_group: "drillers".into(),
        message_groups: 4,
        producers_per_region: 2,
        rate_per_s: 200,
        max_messages: 100,
        duration_ms: 4_000,
        drain_ms: 1_500,
        request_timeout_ms: 1_000,
        max_send_attempts: 3,
        long_poll_ms: 500,
        invisible_ms: 10_000,
        ack_probability_percent: 100,
        body_bytes: 64,
        seed: 7,
    };
    let recorder = Recorder::new(100_000);
    let totals = workload::run(&spec, "t1", &recorder, Arc::new(AtomicBool::new(false)))
        .await
        .unwrap();
    assert_eq!(totals.acknowledged, 200, "{totals:?}");
    assert_eq!(totals.failed, 0);
    let history = recorder.snapshot();
    let report = check(&history, &CheckSpec::default());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.acked_count, 200);
    assert!(report.receives_count >= 200, "{report:?}");
    assert_eq!(totals.received as usize, report.receives_count);
    assert_eq!(report.lost_count, 0);
    assert_eq!(report.duplicate_count, 0);
    assert_eq!(report.fifo_violation_count, 0);
    // Each producer paid the dead region once, then stayed on the survivor.
    let attempts_on_dead = history
        .events
        .iter()
        .filter(|event| {
            matches!(event, meridian_chaos::Event::Send { region, .. } if region == "us-east")
        })
        .count();
    assert_eq!(attempts_on_dead, 2, "one failed attempt per producer");
    assert_eq!(
        live.broker
            .storage()
            .queue_range("drill", 0)
            .map_or(0, |r| r.next)
            + live
                .broker
                .storage()
                .queue_range("drill", 1)
                .map_or(0, |r| r.next)
            + live
                .broker
                .storage()
                .queue_range("drill", 2)
                .map_or(0, |r| r.next)
            + live
                .broker
                .storage()
                .queue_range("drill", 3)
                .map_or(0, |r| r.next),
        200,
        "every message stored once"
    );
    live.shutdown.send(true).unwrap();
    live.server.await.unwrap();
}

#[test]
fn a_spec_names_the_field_at_fault() {
    let text = r#"
        regions = [{ name = "a", endpoint = "127.0.0.1:1" }]
        producer_regions = ["b"]
        topic = "t"
        consumer_group = "g"
        rate_per_s = 10
        max_messages = 10
        duration_ms = 1000
    "#;
    let spec: WorkloadSpec = toml::from_str(text).unwrap();
    let error = spec.validate().unwrap_err().to_string();
    assert!(
        error.contains("producer_regions") && error.contains("\"b\""),
        "{error}"
    );
    let unknown = toml::from_str::<WorkloadSpec>("topic = 1")
        .unwrap_err()
        .to_string();
    assert!(!unknown.is_empty());
}
