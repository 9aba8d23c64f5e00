//! TCP proxy on loopback: an echo server behind the proxy, with latency, jitter (order kept),
//! bandwidth cap, blackhole and heal on a live connection, one-way partitions, EOF and limits.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_chaos::{LinkFaults, ProxyHandle, TcpProxy, TcpProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Echo server that also reports every chunk it receives.
struct Echo {
    addr: SocketAddr,
    seen: mpsc::Receiver<Vec<u8>>,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = mpsc::channel(4096);
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            connections.spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(len) => {
                            let _ = tx.try_send(buf[..len].to_vec());
                            if stream.write_all(&buf[..len]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Echo { addr, seen, task }
}

async fn proxy(upstream: SocketAddr, faults: LinkFaults) -> ProxyHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = TcpProxyConfig::new(upstream);
    config.faults = faults;
    config.seed = 11;
    TcpProxy::spawn(listener, config).unwrap()
}

async fn connect(proxy: &ProxyHandle) -> TcpStream {
    tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(proxy.local_addr()),
    )
    .await
    .unwrap()
    .unwrap()
}

/// Reads exactly `len` bytes within `wait_ms`, or returns None.
async fn read_exact_within(stream: &mut TcpStream, len: usize, wait_ms: u64) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    match tokio::time::timeout(Duration::from_millis(wait_ms), stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// One echoed byte, so the proxy's upstream connection is known to be up.
async fn warm_up(stream: &mut TcpStream, echo: &mut Echo) {
    stream.write_all(b"w").await.unwrap();
    assert_eq!(read_exact_within(stream, 1, 2_000).await.unwrap(), b"w");
    assert_eq!(echo.seen.recv().await.unwrap(), b"w");
}

#[tokio::test]
async fn latency_is_applied_each_way() {
    let echo = echo_server().await;
    let proxy = proxy(
        echo.addr,
        LinkFaults {
            latency_ms: 40,
            ..LinkFaults::default()
        },
    )
    .await;
    let mut stream = connect(&proxy).await;
    let start = Instant::now();
    stream.write_all(b"ping").await.unwrap();
    assert_eq!(
        read_exact_within(&mut stream, 4, 2_000).await.unwrap(),
        b"ping"
    );
    let rtt = start.elapsed();
    assert!(rtt >= Duration::from_millis(80), "rtt {rtt:?}");
    let stats = proxy.control().stats();
    assert_eq!(stats.upstream.forwarded_bytes, 4);
    assert_eq!(stats.downstream.forwarded_bytes, 4);
    assert_eq!(stats.sessions_opened, 1);
}

#[tokio::test]
async fn jitter_keeps_bytes_in_order_and_intact() {
    let echo = echo_server().await;
    let proxy = proxy(
        echo.addr,
        LinkFaults {
            latency_ms: 5,
            jitter_ms: 5,
            // Stream links ignore datagram faults: nothing may be lost or duplicated.
            loss_percent: 50.0,
            duplicate_percent: 50.0,
            ..LinkFaults::default()
        },
    )
    .await;
    let mut stream = connect(&proxy).await;
    let payload: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut read_half, mut write_half) = stream.split();
    let write = async {
        write_half.write_all(&payload).await.unwrap();
    };
    let read = async {
        let mut got = vec![0u8; payload.len()];
        tokio::time::timeout(Duration::from_secs(20), read_half.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert!(got == payload, "echoed bytes differ");
}

#[tokio::test]
async fn bandwidth_cap_slows_a_transfer() {
    let echo = echo_server().await;
    // 40 kB/s each way: 20 kB needs about 0.5 s upstream, and the echo streams back alongside.
    let proxy = proxy(
        echo.addr,
        LinkFaults {
            bandwidth_bytes_per_s: 40_000,
            ..LinkFaults::default()
        },
    )
    .await;
    let mut stream = connect(&proxy).await;
    let start = Instant::now();
    stream.write_all(&[1u8; 20_000]).await.unwrap();
    let got = read_exact_within(&mut stream, 20_000, 10_000)
        .await
        .unwrap();
    assert_eq!(got.len(), 20_000);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(480), "{elapsed:?}");
}

#[tokio::test]
async fn blackhole_stalls_the_connection_and_heal_resumes_it() {
    let mut echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean()).await;
    let control = proxy.control();
    let mut stream = connect(&proxy).await;
    stream.write_all(b"one").await.unwrap();
    assert_eq!(
        read_exact_within(&mut stream, 3, 1_000).await.unwrap(),
        b"one"
    );
    assert_eq!(echo.seen.recv().await.unwrap(), b"one");

    control
        .set_faults(LinkFaults {
            blackhole: true,
            ..LinkFaults::default()
        })
        .unwrap();
    stream.write_all(b"two").await.unwrap();
    assert!(read_exact_within(&mut stream, 3, 300).await.is_none());
    assert!(echo.seen.try_recv().is_err(), "nothing crosses a blackhole");

    control.heal();
    // Same connection: the bytes held during the partition now flow.
    assert_eq!(
        read_exact_within(&mut stream, 3, 2_000).await.unwrap(),
        b"two"
    );
    let stats = control.stats();
    assert_eq!(stats.upstream.forwarded_bytes, 6);
    assert_eq!(stats.sessions_opened, 1);
}

#[tokio::test]
async fn one_way_partition_blocks_only_replies() {
    let mut echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean()).await;
    let control = proxy.control();
    let mut stream = connect(&proxy).await;
    // Establish the upstream connection first: a partition at connect time holds it back.
    warm_up(&mut stream, &mut echo).await;
    control
        .set_faults(LinkFaults {
            partition_downstream: true,
            ..LinkFaults::default()
        })
        .unwrap();
    stream.write_all(b"req").await.unwrap();
    // The server gets the request...
    let seen = tokio::time::timeout(Duration::from_secs(2), echo.seen.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, b"req");
    // ...but the reply does not come back until the partition heals.
    assert!(read_exact_within(&mut stream, 3, 300).await.is_none());
    control.heal();
    assert_eq!(
        read_exact_within(&mut stream, 3, 2_000).await.unwrap(),
        b"req"
    );
}

#[tokio::test]
async fn one_way_partition_blocks_only_requests() {
    let mut echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean()).await;
    let control = proxy.control();
    let mut stream = connect(&proxy).await;
    warm_up(&mut stream, &mut echo).await;
    control
        .set_faults(LinkFaults {
            partition_upstream: true,
            ..LinkFaults::default()
        })
        .unwrap();
    stream.write_all(b"req").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(echo.seen.try_recv().is_err());
    control.heal();
    assert_eq!(
        read_exact_within(&mut stream, 3, 2_000).await.unwrap(),
        b"req"
    );
}

#[tokio::test]
async fn eof_is_passed_through() {
    let echo = echo_server().await;
    let proxy = proxy(echo.addr, LinkFaults::clean()).await;
    let mut stream = connect(&proxy).await;
    stream.write_all(b"bye").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    // The server echoed, saw our EOF, closed; the proxy passed its EOF back.
    assert_eq!(rest, b"bye");
}

#[tokio::test]
async fn connection_limit_and_unreachable_upstream_are_rejected() {
    let echo = echo_server().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = TcpProxyConfig::new(echo.addr);
    config.max_connections = 1;
    let proxy = TcpProxy::spawn(listener, config).unwrap();
    let mut first = connect(&proxy).await;
    first.write_all(b"a").await.unwrap();
    assert_eq!(read_exact_within(&mut first, 1, 1_000).await.unwrap(), b"a");
    let mut second = connect(&proxy).await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "second connection is closed"
    );
    assert_eq!(proxy.control().stats().sessions_rejected, 1);

    // An upstream that refuses connections: the client's connection is closed, not hung.
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = self::proxy(closed_port, LinkFaults::clean()).await;
    let mut stream = connect(&proxy).await;
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)));
    assert_eq!(proxy.control().stats().sessions_rejected, 1);
}

#[tokio::test]
async fn connection_opened_during_a_partition_reaches_upstream_only_after_heal() {
    let mut echo = echo_server().await;
    let proxy = proxy(
        echo.addr,
        LinkFaults {
            blackhole: true,
            ..LinkFaults::default()
        },
    )
    .await;
    let control = proxy.control();
    // The proxy's listener accepts (the kernel completes the handshake), but nothing goes upstream.
    let mut stream = connect(&proxy).await;
    stream.write_all(b"early").await.unwrap();
    assert!(read_exact_within(&mut stream, 5, 300).await.is_none());
    assert!(echo.seen.try_recv().is_err());
    assert_eq!(control.stats().sessions_opened, 0);
    control.heal();
    assert_eq!(
        read_exact_within(&mut stream, 5, 2_000).await.unwrap(),
        b"early"
    );
    assert_eq!(control.stats().sessions_opened, 1);
}
