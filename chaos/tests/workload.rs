//! The workload generator against real cells (gRPC on loopback): producers whose own region is
//! unreachable move to the next region with the same message ids, consumers receive and ack,
//! and the recorded history checks clean.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use meridian_cell::grpc::{GrpcConfig, serve};
use meridian_cell::messaging::{Broker, BrokerConfig, GroupConfig, SystemClock, TopicMessageType};
use meridian_cell::{Durability, Hlc, Storage, StorageConfig};
use meridian_chaos::{CheckSpec, Recorder, RegionTarget, WorkloadSpec, check, workload};
use tokio::sync::watch;

struct TestCell {
    addr: std::net::SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_cell(region: &str) -> TestCell {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path(), region);
    config.durability = Durability::Async;
    config.index_block_cache_bytes = 8 << 20;
    config.index_write_buffer_bytes = 4 << 20;
    let storage =
        Arc::new(Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500)))).unwrap());
    let broker = Broker::open(storage, BrokerConfig::default(), Arc::new(SystemClock)).unwrap();
    broker
        .create_topic("drill", 4, TopicMessageType::Fifo)
        .unwrap();
    broker
        .create_group(GroupConfig::new("drillers", true))
        .unwrap();
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(broker.clone().run(shutdown_rx.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_broker = broker.clone();
    let server = tokio::spawn(async move {
        serve(server_broker, listener, GrpcConfig::default(), shutdown_rx)
            .await
            .unwrap();
    });
    TestCell {
        addr,
        broker,
        shutdown,
        server,
        _dir: dir,
    }
}

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
