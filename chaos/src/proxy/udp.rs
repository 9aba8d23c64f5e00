//! UDP proxy (for QUIC replication links): one socket faces the clients, and each client source
//! address gets its own upstream socket, so the server sees one stable peer per client and QUIC's
//! connection migration and stateless resets keep working. Every datagram in either direction goes
//! through one [`FaultModel`], owned by a single scheduler task, so decisions are deterministic for
//! a given arrival order.

use std::cmp::Ordering as CmpOrdering;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Counters, ProxyControl, ProxyHandle};
use crate::error::{ChaosError, Result};
use crate::fault::{Decision, Direction, DropCause, FaultModel, LinkFaults};

/// Settings of a [`UdpProxy`].
#[derive(Debug, Clone)]
pub struct UdpProxyConfig {
    /// Where datagrams from clients are sent.
    pub upstream: SocketAddr,
    /// Faults in force at start.
    pub faults: LinkFaults,
    /// Seed of the fault model.
    pub seed: u64,
    /// Address the per-client upstream sockets bind to (port 0 is chosen by the OS).
    pub upstream_bind_ip: IpAddr,
    /// Client source addresses tracked at once; datagrams from further clients are dropped.
    pub max_sessions: usize,
    /// Datagrams waiting in the delay queue (both directions together); beyond it they are dropped.
    pub max_queue_packets: usize,
    /// Receive buffer size; longer datagrams are truncated by the OS.
    pub max_datagram_bytes: usize,
    /// A client session with no traffic either way for this long is forgotten.
    pub session_idle_timeout_ms: u64,
}

impl UdpProxyConfig {
    /// Defaults sized for a test fabric: 1024 sessions, 8192 queued datagrams, 64 KiB datagrams.
    pub fn new(upstream: SocketAddr) -> Self {
        let upstream_bind_ip = match (upstream.ip().is_loopback(), upstream.ip()) {
            (true, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (true, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (false, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Self {
            upstream,
            faults: LinkFaults::clean(),
            seed: 0,
            upstream_bind_ip,
            max_sessions: 1024,
            max_queue_packets: 8192,
            max_datagram_bytes: 65_535,
            session_idle_timeout_ms: 60_000,
        }
    }
}

/// The UDP fault proxy.
#[derive(Debug)]
pub struct UdpProxy;

impl UdpProxy {
    /// Starts proxying datagrams that arrive on `client_socket` to `config.upstream`.
    pub fn spawn(client_socket: UdpSocket, config: UdpProxyConfig) -> Result<ProxyHandle> {
        let local_addr = client_socket
            .local_addr()
            .map_err(|e| ChaosError::io("udp proxy local_addr", e))?;
        let model = FaultModel::new(config.faults.clone(), config.seed)?;
        let control = ProxyControl::new(config.faults.clone())?;
        let task = tokio::spawn(run(Arc::new(client_socket), config, model, control.clone()));
        Ok(ProxyHandle::new(control, local_addr, task))
    }
}

/// Where a datagram goes once its delay is over.
#[derive(Debug, Clone)]
enum Target {
    /// Through a client session's upstream socket (connected to the upstream).
    Upstream(Arc<UdpSocket>),
    /// Back to a client, through the client-facing socket.
    Downstream(SocketAddr),
}

#[derive(Debug)]
struct Ingress {
    direction: Direction,
    payload: Vec<u8>,
    target: Target,
    received_at: Instant,
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    /// Arrival order, so datagrams due at the same instant leave in the order they came.
    order: u64,
    direction: Direction,
    payload: Vec<u8>,
    target: Target,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.order == other.order
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

struct Session {
    socket: Arc<UdpSocket>,
    /// Milliseconds since the proxy started at the last datagram either way.
    last_active_ms: Arc<AtomicU64>,
}

async fn run(
    client_socket: Arc<UdpSocket>,
    config: UdpProxyConfig,
    model: FaultModel,
    control: ProxyControl,
) {
    let origin = Instant::now();
    let counters = control.counters();
    let mut tasks = JoinSet::new();
    let queue_capacity = config.max_queue_packets.max(1);
    let (ingress_tx, ingress_rx) = mpsc::channel::<Ingress>(queue_capacity);
    tasks.spawn(schedule_loop(
        Arc::clone(&client_socket),
        ingress_rx,
        model,
        control.subscribe(),
        Arc::clone(&counters),
        origin,
        queue_capacity,
    ));
    let (closed_tx, mut closed_rx) = mpsc::channel::<SocketAddr>(config.max_sessions.max(1));
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; config.max_datagram_bytes.max(1)];
    loop {
        tokio::select! {
            closed = closed_rx.recv() => {
                if let Some(addr) = closed {
                    sessions.remove(&addr);
                    tracing::debug!(%addr, "udp proxy session idle, removed");
                }
            }
            received = client_socket.recv_from(&mut buf) => {
                let (len, client) = match received {
                    Ok(ok) => ok,
                    Err(error) => {
                        // ICMP port-unreachable surfaces here on some platforms; keep serving,
                        // with a short pause so a persistent error cannot spin a core.
                        tracing::debug!(%error, "udp proxy client recv failed");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                };
                let now_ms = elapsed_ms(origin);
                let session_count = sessions.len();
                let socket = match sessions.entry(client) {
                    Entry::Occupied(entry) => {
                        entry.get().last_active_ms.store(now_ms, Ordering::Relaxed);
                        Arc::clone(&entry.get().socket)
                    }
                    Entry::Vacant(entry) => {
                        if session_count >= config.max_sessions {
                            Counters::add(&counters.sessions_rejected, 1);
                            continue;
                        }
                        let socket = match open_upstream(&config).await {
                            Ok(socket) => Arc::new(socket),
                            Err(error) => {
                                tracing::warn!(%error, "udp proxy cannot open upstream socket");
                                Counters::add(&counters.sessions_rejected, 1);
                                continue;
                            }
                        };
                        let last_active_ms = Arc::new(AtomicU64::new(now_ms));
                        tasks.spawn(session_loop(SessionTask {
                            client,
                            socket: Arc::clone(&socket),
                            last_active_ms: Arc::clone(&last_active_ms),
                            ingress: ingress_tx.clone(),
                            closed: closed_tx.clone(),
                            counters: Arc::clone(&counters),
                            origin,
                            idle_timeout_ms: config.session_idle_timeout_ms.max(1),
                            max_datagram_bytes: config.max_datagram_bytes.max(1),
                        }));
                        Counters::add(&counters.sessions_opened, 1);
                        entry.insert(Session { socket: Arc::clone(&socket), last_active_ms });
                        socket
                    }
                };
                let ingress = Ingress {
                    direction: Direction::Upstream,
                    payload: buf[..len].to_vec(),
                    target: Target::Upstream(socket),
                    received_at: Instant::now(),
                };
                if ingress_tx.try_send(ingress).is_err() {
                    Counters::add(&counters.dir(Direction::Upstream).dropped_queue_full, 1);
                }
            }
        }
    }
}

async fn open_upstream(config: &UdpProxyConfig) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(config.upstream_bind_ip, 0)).await?;
    socket.connect(config.upstream).await?;
    Ok(socket)
}

struct SessionTask {
    client: SocketAddr,
    socket: Arc<UdpSocket>,
    last_active_ms: Arc<AtomicU64>,
    ingress: mpsc::Sender<Ingress>,
    closed: mpsc::Sender<SocketAddr>,
    counters: Arc<Counters>,
    origin: Instant,
    idle_timeout_ms: u64,
    max_datagram_bytes: usize,
}

/// Reads the upstream's replies for one client until the session has been idle long enough.
/// A datagram from the client that races with the idle exit goes out on the old socket and its
/// reply is lost, which a UDP protocol must tolerate anyway; the next datagram opens a new session.
async fn session_loop(task: SessionTask) {
    let mut buf = vec![0u8; task.max_datagram_bytes];
    let idle = Duration::from_millis(task.idle_timeout_ms);
    loop {
        match tokio::time::timeout(idle, task.socket.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                task.last_active_ms
                    .store(elapsed_ms(task.origin), Ordering::Relaxed);
                let ingress = Ingress {
                    direction: Direction::Downstream,
                    payload: buf[..len].to_vec(),
                    target: Target::Downstream(task.client),
                    received_at: Instant::now(),
                };
                if task.ingress.try_send(ingress).is_err() {
                    Counters::add(
                        &task.counters.dir(Direction::Downstream).dropped_queue_full,
                        1,
                    );
                }
            }
            Ok(Err(error)) => {
                // Connected UDP sockets report ICMP unreachable as errors; the upstream may come back.
                tracing::debug!(%error, client = %task.client, "udp proxy upstream recv failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_elapsed) => {
                let last = task.last_active_ms.load(Ordering::Relaxed);
                if elapsed_ms(task.origin).saturating_sub(last) >= task.idle_timeout_ms {
                    let _ = task.closed.send(task.client).await;
                    return;
                }
            }
        }
    }
}

async fn schedule_loop(
    client_socket: Arc<UdpSocket>,
    mut ingress: mpsc::Receiver<Ingress>,
    mut model: FaultModel,
    faults: watch::Receiver<LinkFaults>,
    counters: Arc<Counters>,
    origin: Instant,
    max_queue_packets: usize,
) {
    let mut queue: BinaryHeap<Scheduled> = BinaryHeap::new();
    let mut order: u64 = 0;
    loop {
        let next_at = queue.peek().map(|s| s.at);
        tokio::select! {
            received = ingress.recv() => {
                let Some(packet) = received else { return };
                let dir = packet.direction;
                // Tail drop before the model sees the datagram, so a full queue does not also
                // push the emulated link's serialiser further into the future.
                if queue.len() >= max_queue_packets {
                    Counters::add(&counters.dir(dir).dropped_queue_full, 1);
                    continue;
                }
                let current = faults.borrow().clone();
                if model.faults() != &current
                    && let Err(error) = model.set_faults(current)
                {
                    tracing::warn!(%error, "udp proxy ignored invalid faults");
                }
                let now = packet.received_at.saturating_duration_since(origin);
                match model.on_datagram(dir, packet.payload.len(), now) {
                    Decision::Drop(DropCause::Loss) => {
                        Counters::add(&counters.dir(dir).dropped_loss, 1);
                    }
                    Decision::Drop(DropCause::Partition) => {
                        Counters::add(&counters.dir(dir).dropped_partition, 1);
                    }
                    Decision::Deliver { at, duplicate_at, .. } => {
                        let mut copies = vec![(at, packet.payload, packet.target)];
                        if let Some(dup_at) = duplicate_at {
                            Counters::add(&counters.dir(dir).duplicated_packets, 1);
                            let (_, payload, target) = &copies[0];
                            copies.push((dup_at, payload.clone(), target.clone()));
                        }
                        for (at, payload, target) in copies {
                            if queue.len() >= max_queue_packets {
                                Counters::add(&counters.dir(dir).dropped_queue_full, 1);
                                continue;
                            }
                            order += 1;
                            queue.push(Scheduled { at: origin + at, order, direction: dir, payload, target });
                        }
                    }
                }
            }
            () = sleep_until_opt(next_at) => {
                let now = Instant::now();
                while queue.peek().is_some_and(|s| s.at <= now) {
                    let Some(packet) = queue.pop() else { break };
                    let dir = packet.direction;
                    // A partition that started while the datagram was in flight drops it too.
                    if faults.borrow().blocks(dir) {
                        Counters::add(&counters.dir(dir).dropped_partition, 1);
                        continue;
                    }
                    let sent = match &packet.target {
                        Target::Upstream(socket) => socket.send(&packet.payload).await,
                        Target::Downstream(addr) => client_socket.send_to(&packet.payload, *addr).await,
                    };
                    let stats = counters.dir(dir);
                    match sent {
                        Ok(len) => {
                            Counters::add(&stats.forwarded_packets, 1);
                            Counters::add(&stats.forwarded_bytes, u64::try_from(len).unwrap_or(u64::MAX));
                        }
                        Err(error) => {
                            tracing::debug!(%error, ?dir, "udp proxy send failed");
                            Counters::add(&stats.send_errors, 1);
                        }
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn elapsed_ms(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}
