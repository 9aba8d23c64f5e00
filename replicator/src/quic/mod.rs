//! The IO shell of the replicator: QUIC endpoints (quinn) with mutual TLS (rustls, ring
//! provider), one outbound link task per peer region and one inbound session per accepted link,
//! each driving the sans-IO state machines of [`crate::link`] against the cell's `Storage`.
//!
//! **One bidirectional stream per link connection.** The link carries one ordered log; batches
//! must be applied in origin order, and a single stream gives that order without resequencing.
//! Head-of-line blocking between independent flows, the usual reason for several streams, does
//! not arise: there is one flow per link, and control traffic (acks, pongs, digests) runs the
//! other way on the same stream, so it never queues behind data. Flow control is the link's own
//! credit window, which bounds what QUIC has to buffer. Consumer-state records, when they come,
//! travel in the same log and so in the same stream.
//!
//! Each side reads its stream in a separate task that hands whole frames to the session loop
//! through a small bounded channel: quinn's `read_exact` is not cancel-safe, so it must not sit
//! in a `select!` next to timers. The session loop writes inline. This cannot deadlock: what
//! the receiver writes (acks, pongs) is a few dozen bytes per batch, bounded by the window, and
//! fits in QUIC's stream receive buffer even while the sender's loop is busy writing.

mod identity;
pub mod metrics;
mod quorum;
mod receiver;
mod replica_index;
mod sender;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_cell::Storage;
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::ReplicatorError;
use crate::link::filter::DestinationFilter;
use crate::link::frame::{self, FRAME_HEADER_BYTES, Frame, Limits};
use crate::link::receiver::ReceiverConfig;
use crate::link::sender::SenderConfig;
use crate::link::verify::VerifyConfig;

pub use identity::certificate_names_region;
pub use metrics::{LinkMetrics, LinkMetricsSnapshot};
pub use quorum::{LinkQuorum, PeerAcks};
pub use receiver::LinkStats;

/// The ALPN protocol name of replication links; a peer offering anything else is refused.
pub const ALPN: &[u8] = b"meridian-repl/1";
/// Longest wait for the peer to take the last frames of a session before the connection closes.
const CLOSE_LINGER_MS: u64 = 500;
/// Frames buffered between a stream's reader task and its session loop.
const READ_QUEUE_FRAMES: usize = 64;

/// A region this replicator sends its records to.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's region name (the destination in Hello).
    pub region: String,
    /// Its replicator's UDP address.
    pub addr: SocketAddr,
    /// The name its certificate must carry.
    pub server_name: String,
}

/// Settings of one region's replicator.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// This region (must equal the storage's region).
    pub region: String,
    /// UDP address to accept inbound links on (port 0 picks one).
    pub listen_addr: SocketAddr,
    /// TLS for accepted links: must verify client certificates against the cluster CA.
    pub server_tls: Arc<rustls::ServerConfig>,
    /// TLS for outbound links: must present this node's certificate.
    pub client_tls: Arc<rustls::ClientConfig>,
    /// Regions to send to.
    pub peers: Vec<PeerConfig>,
    /// Sending side of every outbound link.
    pub sender: SenderConfig,
    /// Receiving side of every inbound link.
    pub receiver: ReceiverConfig,
    /// First reconnect delay.
    pub reconnect_base_delay_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_max_delay_ms: u64,
    /// Seed of the reconnect jitter and link ids (fixed in tests for reproducible runs).
    pub rng_seed: u64,
    /// How long a graceful shutdown lets sessions finish before it aborts them.
    pub shutdown_grace_ms: u64,
    /// When set, each outbound link asks its peer this often for the digest of the next origin
    /// range it acknowledged and compares it with its own log (see [`crate::link::verify`]);
    /// `None` turns verification off.
    pub verify_interval_ms: Option<u64>,
    /// Range sizes and narrowing limits of the verification loop.
    pub verify: VerifyConfig,
    /// Origin log bytes per entry of the receiver's sparse index from origin positions to its
    /// own log, which bounds the scan of a digest request (smaller: tighter scans, more keys).
    pub replica_index_stride_bytes: u64,
    /// Selective replication: what each destination region receives (by region name; a region
    /// without an entry receives everything). Read when a link starts.
    pub destination_filters: HashMap<String, DestinationFilter>,
}

impl ReplicatorConfig {
    /// Defaults for `region` listening on `listen_addr`.
    pub fn new(
        region: impl Into<String>,
        listen_addr: SocketAddr,
        server_tls: Arc<rustls::ServerConfig>,
        client_tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        ReplicatorConfig {
            region: region.into(),
            listen_addr,
            server_tls,
            client_tls,
            peers: Vec::new(),
            sender: SenderConfig::default(),
            receiver: ReceiverConfig::default(),
            reconnect_base_delay_ms: 100,
            reconnect_max_delay_ms: 10_000,
            rng_seed: rand::random(),
            shutdown_grace_ms: 5_000,
            verify_interval_ms: Some(5_000),
            verify: VerifyConfig::default(),
            replica_index_stride_bytes: 1 << 20,
            destination_filters: HashMap::new(),
        }
    }

    /// Defaults for `region`, with TLS from a node identity of the cluster's PKI: this node's
    /// certificate on both sides, the cluster CA as the only trust anchor.
    pub fn with_identity(
        region: impl Into<String>,
        listen_addr: SocketAddr,
        identity: &meridian_pki::NodeIdentity,
    ) -> Result<Self, ReplicatorError> {
        let alpn = [ALPN.to_vec()];
        let server = identity.rustls_server_config(&alpn)?;
        let client = identity.rustls_client_config(&alpn)?;
        Ok(Self::new(
            region,
            listen_addr,
            Arc::new(server),
            Arc::new(client),
        ))
    }

    fn validate(&self, storage_region: &str) -> Result<(), ReplicatorError> {
        let invalid = |field, reason: String| Err(ReplicatorError::InvalidConfig { field, reason });
        if self.region != storage_region {
            return invalid(
                "region",
                format!(
                    "{:?} differs from the storage's region {storage_region:?}",
                    self.region
                ),
            );
        }
        self.sender.limits.validate()?;
        self.receiver.limits.validate()?;
        if self.sender.limits != self.receiver.limits {
            return invalid(
                "sender.limits",
                "must equal receiver.limits: both ends of a link decode with the same limits"
                    .into(),
            );
        }
        if self.sender.ping_interval_ms == 0
            || self.sender.ping_interval_ms >= self.receiver.idle_timeout_ms
        {
            return invalid(
                "sender.ping_interval_ms",
                format!(
                    "{} must be positive and below receiver.idle_timeout_ms ({})",
                    self.sender.ping_interval_ms, self.receiver.idle_timeout_ms
                ),
            );
        }
        if self.verify_interval_ms == Some(0) {
            return invalid("verify_interval_ms", "must be positive (or None)".into());
        }
        if self.replica_index_stride_bytes == 0 {
            return invalid("replica_index_stride_bytes", "must be positive".into());
        }
        if self.receiver.window_bytes == 0 || self.receiver.window_entries == 0 {
            return invalid(
                "receiver.window_bytes",
                "the window must be positive".into(),
            );
        }
        Ok(())
    }
}

/// Progress of the inbound link of one origin region.
#[derive(Debug, Default)]
struct Progress {
    /// Applied through here, as this process knows it; `None` until loaded.
    applied: Option<u64>,
    /// The persisted checkpoint; `None` until loaded.
    persisted: Option<u64>,
}

/// One origin's progress, and the stop signal of the session that owns it.
#[derive(Debug, Default)]
struct OriginSlot {
    progress: Arc<tokio::sync::Mutex<Progress>>,
    current: Mutex<Option<watch::Sender<bool>>>,
}

/// State shared by the replicator's tasks.
struct Shared {
    config: ReplicatorConfig,
    storage: Arc<Storage>,
    endpoint: quinn::Endpoint,
    shutdown: watch::Receiver<bool>,
    origins: Mutex<HashMap<String, Arc<OriginSlot>>>,
    stats: LinkStats,
    /// One entry per outbound link, in the order they were added.
    links: Mutex<Vec<Arc<LinkMetrics>>>,
    /// How far each peer has acknowledged this region's log (for `sync-quorum` sends).
    peer_acks: Arc<PeerAcks>,
}

/// A running replicator: accepts inbound links and keeps one outbound link per peer.
pub struct Replicator {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Replicator")
            .field("region", &self.shared.config.region)
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// Binds the endpoint and starts the links. Must be called within a tokio runtime.
    pub fn start(config: ReplicatorConfig, storage: Arc<Storage>) -> Result<Self, ReplicatorError> {
        config.validate(storage.region())?;
        let server = server_config(&config)?;
        let mut endpoint =
            quinn::Endpoint::server(server, config.listen_addr).map_err(|source| {
                ReplicatorError::Io {
                    operation: "bind the replication endpoint",
                    source,
                }
            })?;
        endpoint.set_default_client_config(client_config(&config)?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            storage,
            endpoint,
            shutdown: shutdown_rx,
            origins: Mutex::new(HashMap::new()),
            stats: LinkStats::default(),
            links: Mutex::new(Vec::new()),
            peer_acks: Arc::new(PeerAcks::default()),
        });
        let replicator = Replicator {
            tasks: Mutex::new(vec![tokio::spawn(receiver::accept_loop(Arc::clone(
                &shared,
            )))]),
            shared,
            shutdown,
        };
        for peer in replicator.shared.config.peers.clone() {
            replicator.add_peer(peer)?;
        }
        Ok(replicator)
    }

    /// What a broker's `sync-quorum` sends wait on: a majority of the regions (this one and
    /// its peers) holding this region's log past a position (see [`LinkQuorum`]).
    pub fn quorum(&self) -> LinkQuorum {
        LinkQuorum::new(Arc::clone(&self.shared.peer_acks))
    }

    /// Starts an outbound link to one more region.
    pub fn add_peer(&self, peer: PeerConfig) -> Result<(), ReplicatorError> {
        if peer.region == self.shared.config.region {
            return Err(ReplicatorError::InvalidConfig {
                field: "peers",
                reason: format!("{:?} is this region", peer.region),
            });
        }
        self.shared.peer_acks.register(&peer.region);
        let metrics = Arc::new(LinkMetrics::new(format!(
            "{}->{}",
            self.shared.config.region, peer.region
        )));
        self.shared.links.lock().push(Arc::clone(&metrics));
        let mut tasks = self.tasks.lock();
        // Each link gets its own reproducible jitter and link-id stream.
        let seed = self.shared.config.rng_seed.wrapping_add(tasks.len() as u64);
        tasks.push(tokio::spawn(sender::link_loop(
            Arc::clone(&self.shared),
            peer,
            seed,
            metrics,
        )));
        Ok(())
    }

    /// The UDP address inbound links reach.
    pub fn local_addr(&self) -> Result<SocketAddr, ReplicatorError> {
        self.shared
            .endpoint
            .local_addr()
            .map_err(|source| ReplicatorError::Io {
                operation: "read the endpoint's address",
                source,
            })
    }

    /// Counters of this replicator's links.
    pub fn stats(&self) -> &LinkStats {
        &self.shared.stats
    }

    /// The figures of each outbound link (see [`metrics`]), in the order the links were added.
    pub fn link_metrics(&self) -> Vec<LinkMetricsSnapshot> {
        self.shared
            .links
            .lock()
            .iter()
            .map(|link| link.snapshot())
            .collect()
    }

    /// Stops the links: sessions finish the append or checkpoint write they are in, tell their
    /// peers, and end; then the endpoint closes.
    ///
    /// A session that has not ended within `shutdown_grace_ms` (e.g. one blocked writing to a
    /// peer that stopped reading) is aborted, which is as safe as a crash: the checkpoint never
    /// covers more than the log holds.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.shared.config.shutdown_grace_ms);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        for mut task in tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "replicator task failed"),
                Err(_) => {
                    tracing::warn!(
                        grace_ms = self.shared.config.shutdown_grace_ms,
                        "replicator task did not stop within the grace period; aborting it"
                    );
                    task.abort();
                }
            }
        }
        self.shared.endpoint.close(0u32.into(), b"shutdown");
        // Draining lasts a few round trips; a peer that vanished is not waited for beyond it.
        let _ = tokio::time::timeout_at(
            deadline + Duration::from_millis(self.shared.config.shutdown_grace_ms),
            self.shared.endpoint.wait_idle(),
        )
        .await;
    }

    /// Stops everything at once, as a crash of the replicator would: tasks are dropped wherever
    /// they are (an append already handed to the storage still completes there).
    pub fn abort(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.shared.endpoint.close(1u32.into(), b"abort");
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        self.abort();
    }
}

fn transport(config: &ReplicatorConfig) -> Result<Arc<quinn::TransportConfig>, ReplicatorError> {
    let mut transport = quinn::TransportConfig::default();
    // QUIC's own idle timeout backs up the link's: a peer that vanished without a word is
    // detected even when no frame is due.
    let idle_ms = config
        .sender
        .idle_timeout_ms
        .max(config.receiver.idle_timeout_ms);
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(idle_ms.saturating_mul(2)))
        .map_err(|error| ReplicatorError::InvalidConfig {
            field: "idle_timeout_ms",
            reason: error.to_string(),
        })?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(Duration::from_millis(config.sender.ping_interval_ms)));
    // QUIC's flow-control windows sized from the link's credit window (twice it, for frame
    // overhead and the acks coming back), so that the credit window, which the receiver
    // chooses, is what bounds the bytes in flight. quinn's defaults (about 1.25 MB per stream)
    // would cap a link at ~15 MB/s on an 80 ms round trip, below what inter-region links carry.
    let window_bytes = config.receiver.window_bytes.saturating_mul(2);
    let window =
        quinn::VarInt::from_u64(window_bytes).map_err(|error| ReplicatorError::InvalidConfig {
            field: "receiver.window_bytes",
            reason: error.to_string(),
        })?;
    transport.stream_receive_window(window);
    transport.receive_window(window);
    transport.send_window(window_bytes);
    // One stream per connection is all a link uses.
    transport.max_concurrent_bidi_streams(1u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    Ok(Arc::new(transport))
}

fn server_config(config: &ReplicatorConfig) -> Result<quinn::ServerConfig, ReplicatorError> {
    let mut tls = (*config.server_tls).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|error| ReplicatorError::Tls(error.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(config)?);
    Ok(server)
}

fn client_config(config: &ReplicatorConfig) -> Result<quinn::ClientConfig, ReplicatorError> {
    let mut tls = (*config.client_tls).clone();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|error| ReplicatorError::Tls(error.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport(config)?);
    Ok(client)
}

/// Key of an origin's checkpoint in `CF_REPLICATION_CHECKPOINTS`.
fn checkpoint_key(origin_region: &str) -> Vec<u8> {
    let mut key = b"origin/".to_vec();
    key.extend_from_slice(origin_region.as_bytes());
    key
}

/// Reads the persisted checkpoint of an origin: applied through this position (0 if none).
pub fn load_checkpoint(storage: &Storage, origin_region: &str) -> Result<u64, ReplicatorError> {
    let value = storage.get_state(
        meridian_cell::storage::CF_REPLICATION_CHECKPOINTS,
        &checkpoint_key(origin_region),
    )?;
    match value {
        None => Ok(0),
        Some(bytes) => {
            let array: [u8; 8] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| ReplicatorError::BadCheckpoint {
                        origin_region: origin_region.to_string(),
                        len: bytes.len(),
                    })?;
            Ok(u64::from_le_bytes(array))
        }
    }
}

/// Key of an outbound link's "verified up to" position in `CF_REPLICATION_CHECKPOINTS` (kept
/// by the origin, per destination).
fn verified_key(destination_region: &str) -> Vec<u8> {
    let mut key = b"verified/".to_vec();
    key.extend_from_slice(destination_region.as_bytes());
    key
}

/// Reads the persisted "verified up to" of the link to `destination_region` (0 if none or
/// unreadable: verification then starts over, which costs only time).
fn load_verified(storage: &Storage, destination_region: &str) -> Result<u64, ReplicatorError> {
    let value = storage.get_state(
        meridian_cell::storage::CF_REPLICATION_CHECKPOINTS,
        &verified_key(destination_region),
    )?;
    Ok(value
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map_or(0, u64::from_le_bytes))
}

/// Stores "verified up to" without an fsync: losing it only repeats checks.
fn store_verified(
    storage: &Storage,
    destination_region: &str,
    position: u64,
) -> Result<(), ReplicatorError> {
    storage.put_state_unsynced(
        meridian_cell::storage::CF_REPLICATION_CHECKPOINTS,
        &verified_key(destination_region),
        &position.to_le_bytes(),
    )?;
    Ok(())
}

fn store_checkpoint(
    storage: &Storage,
    origin_region: &str,
    position: u64,
) -> Result<(), ReplicatorError> {
    storage.put_state(
        meridian_cell::storage::CF_REPLICATION_CHECKPOINTS,
        &checkpoint_key(origin_region),
        &position.to_le_bytes(),
    )?;
    Ok(())
}

/// Reads frames from a stream into a channel until the stream ends or fails; the last item
/// says why it ended.
fn spawn_reader(
    mut recv: quinn::RecvStream,
    limits: Limits,
) -> (
    mpsc::Receiver<Result<Frame, ReplicatorError>>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(READ_QUEUE_FRAMES);
    let task = tokio::spawn(async move {
        loop {
            let result = read_frame(&mut recv, &limits).await;
            let end = result.is_err();
            if tx.send(result).await.is_err() || end {
                return;
            }
        }
    });
    (rx, task)
}

async fn read_frame(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
) -> Result<Frame, ReplicatorError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(ReplicatorError::StreamClosed),
        Err(error) => return Err(error.into()),
    }
    let Some(total) = frame::frame_len(&header, limits)? else {
        return Err(ReplicatorError::StreamClosed);
    };
    let mut bytes = vec![0u8; total];
    bytes[..FRAME_HEADER_BYTES].copy_from_slice(&header);
    recv.read_exact(&mut bytes[FRAME_HEADER_BYTES..]).await?;
    match frame::decode(&bytes, limits)? {
        Some((frame, _)) => Ok(frame),
        None => Err(ReplicatorError::StreamClosed),
    }
}

async fn write_frame(
    send: &mut quinn::SendStream,
    frame: &Frame,
    limits: &Limits,
) -> Result<(), ReplicatorError> {
    let bytes = frame.encode(limits)?;
    send.write_all(&bytes).await?;
    Ok(())
}

/// Ends this side of a link's stream and waits, at most [`CLOSE_LINGER_MS`], until the peer has
/// read it to the end or stopped it. Closing the connection at once would discard stream data
/// still in flight, and with it the Refuse frame that tells the peer why the session ended.
async fn finish_and_linger(send: &mut quinn::SendStream) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(CLOSE_LINGER_MS), send.stopped()).await;
    }
}

/// Milliseconds on the runtime's monotonic clock since `epoch`: the `now_ms` of the state
/// machines.
fn now_ms(epoch: tokio::time::Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
