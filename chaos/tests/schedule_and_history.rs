//! End to end on loopback: a seeded schedule drives a UDP proxy (blackhole, then heal) while a
//! small request/response workload records a history; the checker must then report exactly the
//! messages lost during the blackhole, and the fault events must be on the timeline.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use meridian_chaos::schedule::run_schedule;
use meridian_chaos::{
    CheckSpec, Event, FaultKind, History, LinkFaults, Recorder, Schedule, UdpProxy, UdpProxyConfig,
    check,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SCHEDULE: &str = r#"
seed = 4242

[[step]]
at_ms = 150
link = "us-eu"
faults = { blackhole = true }

[[step]]
at_ms = 450
link = "us-eu"
"#;

#[tokio::test]
async fn blackhole_window_shows_up_as_loss_in_the_checker() {
    // "eu" consumer: a UDP server that records every message id it receives.
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let schedule = Schedule::from_toml_str(SCHEDULE).unwrap();
    let mut config = UdpProxyConfig::new(server_addr);
    config.seed = schedule.link_seed("us-eu");
    let proxy = UdpProxy::spawn(UdpSocket::bind("127.0.0.1:0").await.unwrap(), config).unwrap();
    let recorder = Recorder::new(10_000);

    let receiver = {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(Ok(len)) =
                tokio::time::timeout(Duration::from_millis(800), server.recv(&mut buf)).await
            {
                let id = String::from_utf8_lossy(&buf[..len]).to_string();
                recorder.record(Event::Receive {
                    id,
                    region: "eu".into(),
                    consumer_group: "cg".into(),
                    consumer: "c1".into(),
                    attempt: 1,
                    at_ms: recorder.now_ms(),
                });
            }
        })
    };

    let mut links = HashMap::new();
    links.insert("us-eu".to_string(), proxy.control());
    let start = Instant::now();
    let faults = {
        let recorder = recorder.clone();
        let schedule = schedule.clone();
        tokio::spawn(async move {
            run_schedule(&schedule, &links, start, |applied| {
                let kind = if applied.step.faults == LinkFaults::clean() {
                    FaultKind::LinkHeal
                } else {
                    FaultKind::LinkFault
                };
                recorder.record(Event::Fault {
                    kind,
                    target: applied.step.link.clone(),
                    at_ms: recorder.now_ms(),
                    note: String::new(),
                });
            })
            .await
            .unwrap()
        })
    };

    // "us" producer: one message every 10 ms for 600 ms; the proxy "acks" by accepting it, so
    // every message counts as acknowledged (the send is recorded before it leaves).
    let producer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    producer.connect(proxy.local_addr()).await.unwrap();
    for i in 0..60u32 {
        let id = format!("m{i:03}");
        let at_ms = recorder.now_ms();
        recorder.record(Event::Send {
            id: id.clone(),
            region: "us".into(),
            topic: "t".into(),
            group: None,
            seq: None,
            producer: Some("p1".into()),
            attempt: 1,
            at_ms,
        });
        recorder.record(Event::SendAck {
            id: id.clone(),
            region: "us".into(),
            at_ms,
        });
        producer.send(id.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied = faults.await.unwrap();
    receiver.await.unwrap();

    assert_eq!(applied.len(), 2);
    assert!(applied[0].applied_at_ms >= 150 && applied[1].applied_at_ms >= 450);
    assert_eq!(proxy.control().faults(), LinkFaults::clean());

    let history = recorder.snapshot();
    assert_eq!(recorder.overflow_count(), 0);
    let spec = CheckSpec::default();
    let report = check(&history, &spec);
    let dropped = proxy.control().stats().upstream.dropped_partition;
    // Exactly the datagrams the proxy dropped are the losses, and there are some on each side.
    assert!(dropped > 0 && dropped < 60, "dropped {dropped}");
    assert_eq!(report.lost_count as u64, dropped);
    assert_eq!(report.duplicate_count, 0);
    assert_eq!(report.lag.len(), 1, "us -> eu lag is measured");
    // Every lost message was sent while the blackhole was in force.
    let fault_times: Vec<u64> = history
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Fault { at_ms, .. } => Some(*at_ms),
            _ => None,
        })
        .collect();
    assert_eq!(fault_times.len(), 2);
    let sent_at: HashMap<&str, u64> = history
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Send { id, at_ms, .. } => Some((id.as_str(), *at_ms)),
            _ => None,
        })
        .collect();
    for lost in &report.lost {
        let at = sent_at[lost.id.as_str()];
        // The send is stamped just before the datagram leaves, the fault just after it is in
        // force: allow a few milliseconds of overlap at the start.
        assert!(
            at + 5 >= fault_times[0] && at <= fault_times[1],
            "{} sent at {at}, outside {fault_times:?}",
            lost.id
        );
    }

    // The history survives a JSON-lines round trip and checks the same.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    history
        .write_jsonl(std::fs::File::create(&path).unwrap())
        .unwrap();
    let reread = History::read_jsonl(
        std::io::BufReader::new(std::fs::File::open(&path).unwrap()),
        100_000,
    )
    .unwrap();
    assert_eq!(check(&reread, &spec), report);
}
