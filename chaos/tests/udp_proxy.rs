//! UDP proxy on loopback: an echo server behind the proxy, with latency, loss, duplication,
//! reordering, bandwidth cap, blackhole and heal, one-way partitions, and per-client sessions.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_chaos::{Direction, LinkFaults, ProxyHandle, UdpProxy, UdpProxyConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An echo server that also reports each datagram's source address and payload.
struct Echo {
    addr: SocketAddr,
    seen: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo_server() -> Echo {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, seen) = mpsc::channel(4096);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let _ = tx.try_send((from, buf[..len].to_vec()));
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    Echo { addr, seen, task }
}

async fn proxy(upstream: SocketAddr, faults: LinkFaults, seed: u64) -> ProxyHandle {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = UdpProxyConfig::new(upstream);
    config.faults = faults;
    config.seed = seed;
    UdpProxy::spawn(socket, config).unwrap()
}

async fn client(proxy: &ProxyHandle) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(proxy.local_addr()).await.unwrap();
    socket
}

/// Collects replies until none arrives for `quiet_ms` (or 200 replies, or 10 s in all).
async fn collect(socket: &UdpSocket, quiet_ms: u64) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 65_535];
    let deadline = Instant::now() + Duration::from_secs(10);
    while replies.len() < 200 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(quiet_ms), socket.recv(&mut buf)).await {
            Ok(Ok(len)) => replies.push(buf[..len].to_vec()),
            _ => break,
        }
    }
    replies
}

async fn round_trip(socket: &UdpSocket, payload: &[u8], wait_ms: u64) -> Option<Duration> {
    let start = Instant::now();
    socket.send(payload).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(Duration::from_millis(wait_ms), socket.recv(&mut buf)).await {
        Ok(Ok(len)) => {
            assert_eq!(&buf[..len], payload);
            Some(start.elapsed())
        }
        _ => None,
    }
}

#[tokio::test]
async fn latency_is_applied_each_way() {
    let echo = echo_server().await;
    let faults = LinkFaults {
        latency_ms: 40,
        ..LinkFaults::default()
    };
    let proxy = proxy(echo.addr, faults, 1).await;
    let socket = client(&proxy).await;
    let rtt = round_trip(&socket, b"ping", 2_000).await.unwrap();
    assert!(rtt >= Duration::from_millis(80), "rtt {rtt:?}");
    let stats = proxy.control().stats();
    assert_eq!(stats.upstream.forwarded_packets, 1);
    assert_eq!(stats.downstream.forwarded_packets, 1);
    assert_eq!(stats.upstream.forwarded_bytes, 4);
    assert_eq!(stats.sessions_opened, 1);
}

#[tokio::test]
async fn loss_drops_about_the_configured_share() {
    let echo = echo_server().await;
    let faults = LinkFaults {
        loss_percent: 50.0,
        ..LinkFaults::default()
    };
    let proxy = proxy(echo.addr, faults, 7).await;
    let socket = client(&proxy).await;
    let sent_count = 200u32;
    for i in 0..sent_count {
        socket.send(&i.to_be_bytes()).await.unwrap();
    }
    let replies = collect(&socket, 300).await;
    let stats = proxy.control().stats();
    assert_eq!(
        stats.upstream.forwarded_packets + stats.upstream.dropped_loss,
        u64::from(sent_count)
    );
    // Each way keeps half: a quarter survive the round trip (mean 50, sd ~6).
    assert!(
        (20..=90).contains(&replies.len()),
        "{} replies",
        replies.len()
    );
    assert!((70..=130).contains(&stats.upstream.dropped_loss));
    assert_eq!(
        stats.downstream.forwarded_packets as usize,
        replies.len(),
        "every forwarded reply arrives on loopback"
    );
}

#[tokio::test]
async fn duplication_doubles_each_way() {
    let echo = echo_server().await;
    let faults = LinkFaults {
        duplicate_percent: 100.0,
        ..LinkFaults::default()
    };
    let proxy = proxy(echo.addr, faults, 3).await;
    let socket = client(&proxy).await;
    socket.send(b"dup").await.unwrap();
    let replies = collect(&socket, 300).await;
    // Two copies reach the server; each echo is duplicated again.
    assert_eq!(replies.len(), 4);
    assert!(replies.iter().all(|r| r == b"dup"));
    let stats = proxy.control().stats();
    assert_eq!(stats.upstream.duplicated_packets, 1);
    assert_eq!(stats.downstream.duplicated_packets, 2);
}

#[tokio::test]
async fn reordering_lets_later_datagrams_overtake() {
    let echo = echo_server().await;
    let faults = LinkFaults {
        reorder_percent: 40.0,
        reorder_hold_ms: 60,
        ..LinkFaults::default()
    };
    let proxy = proxy(echo.addr, faults, 5).await;
    let socket = client(&proxy).await;
    for i in 0..30u32 {
        socket.send(&i.to_be_bytes()).await.unwrap();
    }
    let replies = collect(&socket, 300).await;
    let order: Vec<u32> = replies
        .iter()
        .map(|r| u32::from_be_bytes(r.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(order.len(), 30, "reordering must not lose anything");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..30).collect::<Vec<_>>());
    assert_ne!(order, sorted, "some datagram should have been overtaken");
}

#[tokio::test]
async fn bandwidth_cap_spaces_datagrams() {
    let echo = echo_server().await;
    // 20 kB/s: ten 1000-byte datagrams need 0.5 s on the upstream link alone.
    let faults = LinkFaults {
        bandwidth_bytes_per_s: 20_000,
        ..LinkFaults::default()
    };
    let proxy = proxy(echo.addr, faults, 1).await;
    let socket = client(&proxy).await;
    let start = Instant::now();
    for _ in 0..10 {
        socket.send(&[7u8; 1000]).await.unwrap();
    }
    let replies = collect(&socket, 400).await;
    assert_eq!(replies.len(), 10);
    // The last reply left after 0.5 s; `collect` then waited a quiet period.
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(500 + 400), "{elapsed:?}");
}

#[tokio::test]
async fn blackhole_then_heal() {
    let echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean(), 1).await;
    let control = proxy.control();
    let socket = client(&proxy).await;
    assert!(round_trip(&socket, b"before", 1_000).await.is_some());
    control.set_faults(LinkFaults::blackholed()).unwrap();
    assert!(round_trip(&socket, b"during", 300).await.is_none());
    assert_eq!(control.stats().upstream.dropped_partition, 1);
    control.heal();
    assert_eq!(control.faults(), LinkFaults::clean());
    assert!(round_trip(&socket, b"after", 1_000).await.is_some());
}

#[tokio::test]
async fn one_way_partitions_block_only_their_direction() {
    let mut echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean(), 1).await;
    let control = proxy.control();
    let socket = client(&proxy).await;

    // Replies are cut: the server still hears us.
    control
        .set_faults(LinkFaults::partitioned(Direction::Downstream))
        .unwrap();
    assert!(round_trip(&socket, b"one", 300).await.is_none());
    let (_, payload) = tokio::time::timeout(Duration::from_secs(1), echo.seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payload, b"one");
    assert_eq!(control.stats().downstream.dropped_partition, 1);

    // Requests are cut: the server hears nothing.
    control
        .set_faults(LinkFaults::partitioned(Direction::Upstream))
        .unwrap();
    assert!(round_trip(&socket, b"two", 300).await.is_none());
    assert!(echo.seen.try_recv().is_err());
    assert_eq!(control.stats().upstream.dropped_partition, 1);

    control.heal();
    assert!(round_trip(&socket, b"three", 1_000).await.is_some());
}

#[tokio::test]
async fn each_client_gets_its_own_upstream_socket() {
    let mut echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean(), 1).await;
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    assert!(round_trip(&a, b"a1", 1_000).await.is_some());
    assert!(round_trip(&b, b"b1", 1_000).await.is_some());
    assert!(round_trip(&a, b"a2", 1_000).await.is_some());
    let mut sources = Vec::new();
    while let Ok((from, payload)) = echo.seen.try_recv() {
        sources.push((from, payload));
    }
    assert_eq!(sources.len(), 3);
    // a's two datagrams share a source; b's differs; none is the proxy's client-facing port.
    assert_eq!(sources[0].0, sources[2].0);
    assert_ne!(sources[0].0, sources[1].0);
    let distinct: HashSet<SocketAddr> = sources.iter().map(|(s, _)| *s).collect();
    assert!(!distinct.contains(&proxy.local_addr()));
    assert_eq!(proxy.control().stats().sessions_opened, 2);
}

#[tokio::test]
async fn session_limit_rejects_extra_clients() {
    let echo = echo_server().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = UdpProxyConfig::new(echo.addr);
    config.max_sessions = 1;
    let proxy = UdpProxy::spawn(socket, config).unwrap();
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    assert!(round_trip(&a, b"a", 1_000).await.is_some());
    assert!(round_trip(&b, b"b", 300).await.is_none());
    let stats = proxy.control().stats();
    assert_eq!(stats.sessions_opened, 1);
    assert_eq!(stats.sessions_rejected, 1);
}

#[tokio::test]
async fn shutdown_stops_forwarding() {
    let echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean(), 1).await;
    let socket = client(&proxy).await;
    assert!(round_trip(&socket, b"x", 1_000).await.is_some());
    proxy.shutdown().await;
    // The client-facing socket is closed: sends may fail (ICMP) or vanish; no reply either way.
    let _ = socket.send(b"y").await;
    let mut buf = [0u8; 16];
    let reply = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await;
    assert!(!matches!(reply, Ok(Ok(_))));
}

#[tokio::test]
async fn full_delay_queue_tail_drops() {
    let echo = echo_server().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = UdpProxyConfig::new(echo.addr);
    config.max_queue_packets = 5;
    config.faults = LinkFaults {
        latency_ms: 200,
        ..LinkFaults::default()
    };
    let proxy = UdpProxy::spawn(socket, config).unwrap();
    let client = client(&proxy).await;
    for i in 0..50u32 {
        client.send(&i.to_be_bytes()).await.unwrap();
    }
    let replies = collect(&client, 600).await;
    let stats = proxy.control().stats();
    assert_eq!(
        stats.upstream.forwarded_packets + stats.upstream.dropped_queue_full,
        50
    );
    assert!(stats.upstream.forwarded_packets <= 10, "{stats:?}");
    assert!(!replies.is_empty() && replies.len() <= 10);
}

#[tokio::test]
async fn idle_sessions_are_forgotten_and_reopened() {
    let mut echo = echo_server().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut config = UdpProxyConfig::new(echo.addr);
    config.session_idle_timeout_ms = 100;
    let proxy = UdpProxy::spawn(socket, config).unwrap();
    let client = client(&proxy).await;
    assert!(round_trip(&client, b"1", 1_000).await.is_some());
    // Idle for three timeouts: the session (and its upstream socket) is dropped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(round_trip(&client, b"2", 1_000).await.is_some());
    assert_eq!(proxy.control().stats().sessions_opened, 2);
    let (first, _) = echo.seen.recv().await.unwrap();
    let (second, _) = echo.seen.recv().await.unwrap();
    assert_ne!(first, second, "a new upstream socket was opened");
}
