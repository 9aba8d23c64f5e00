//! A running meta node: RocksDB storage, the openraft instance, the gRPC server and the
//! heartbeat flusher, started on a listener the caller binds (so tests choose addresses).

mod forward;
mod ops;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::auth::{Credentials, PeerAuth};
use crate::config::MetaConfig;
use crate::error::NodeError;
use crate::faults::LinkFaults;
use crate::heartbeat::HeartbeatBatcher;
use crate::network::NetworkFactory;
use crate::raft_types::{Node, NodeId, Raft};
use crate::server;
use crate::store::{self, StateView};

pub(crate) use forward::membership_of;
pub use ops::Membership;

/// Wall-clock milliseconds since the Unix epoch. Injected so tests can control lease and
/// heartbeat times; only the node that accepts a command reads it.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    })
}

/// Everything needed to start a node besides its listener.
pub struct NodeOptions {
    pub config: MetaConfig,
    pub credentials: Credentials,
    pub data_dir: PathBuf,
    pub faults: Arc<LinkFaults>,
    pub clock: Clock,
}

pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) config: MetaConfig,
    pub(crate) credentials: Credentials,
    pub(crate) raft: Raft,
    pub(crate) view: StateView,
    pub(crate) faults: Arc<LinkFaults>,
    pub(crate) clock: Clock,
    /// Flips to `true` once when the node stops; every handler and watch stream observes it.
    pub(crate) stop_tx: watch::Sender<bool>,
    pub(crate) heartbeats: Mutex<HeartbeatBatcher>,
    pub(crate) flush_now: Notify,
    pub(crate) watchers: AtomicUsize,
    pub(crate) forward_clients: Mutex<
        BTreeMap<
            String,
            crate::pb::meta_service_client::MetaServiceClient<tonic::transport::Channel>,
        >,
    >,
}

/// Handle on a meta node; cheap to clone.
#[derive(Clone)]
pub struct MetaNode {
    pub(crate) inner: Arc<Inner>,
}

/// A started node with its background tasks.
pub struct RunningNode {
    node: MetaNode,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    flusher: JoinHandle<()>,
}

impl RunningNode {
    /// Opens the node's storage, starts Raft and serves gRPC on `listener`.
    pub async fn start(options: NodeOptions, listener: TcpListener) -> Result<Self, NodeError> {
        let NodeOptions {
            config,
            credentials,
            data_dir,
            faults,
            clock,
        } = options;
        config.validate()?;
        let empty_peer_token =
            matches!(&credentials.peer, PeerAuth::PlaintextToken(token) if token.is_empty());
        if empty_peer_token || credentials.admin_token.is_empty() {
            return Err(NodeError::Config {
                field: "credentials",
                reason: "tokens must not be empty".into(),
            });
        }
        if let PeerAuth::MutualTls(identity) = &credentials.peer {
            // Checks certificate, key and CA before anything is opened, so a bad file is
            // reported as such and not as a failing handshake later.
            identity.rustls_server_config(&[])?;
            identity.rustls_client_config(&[])?;
        }
        let addr = listener.local_addr()?.to_string();
        let (log_store, state_machine) = store::open(
            &data_dir,
            config.limits,
            config.change_log_capacity_revisions,
        )?;
        let view = state_machine.view();
        let network = NetworkFactory::new(
            config.node_id,
            Arc::clone(&faults),
            credentials.peer.clone(),
            Duration::from_millis(config.raft_rpc_timeout_ms),
        )
        .dialling_via(config.dial_via.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(config.raft_config()?),
            network,
            log_store,
            state_machine,
        )
        .await?;
        let (stop_tx, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            id: config.node_id,
            addr: addr.clone(),
            heartbeats: Mutex::new(HeartbeatBatcher::new(
                config.heartbeat_flush_interval_ms,
                config.heartbeat_batch_cells_max,
            )),
            config,
            credentials,
            raft,
            view,
            faults,
            clock,
            stop_tx,
            flush_now: Notify::new(),
            watchers: AtomicUsize::new(0),
            forward_clients: Mutex::new(BTreeMap::new()),
        });
        let node = MetaNode { inner };
        let mut stop_rx = node.inner.stop_tx.subscribe();
        let router = match server::router(node.clone()) {
            Ok(router) => router,
            Err(error) => {
                let _ = node.inner.raft.shutdown().await;
                return Err(error);
            }
        };
        let server = tokio::spawn(async move {
            let stopped = async move {
                // Either the flag flipped or the sender is gone; both mean stop.
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
            };
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped)
                .await
        });
        let flusher = tokio::spawn(node.clone().run_heartbeat_flusher());
        tracing::info!(node_id = node.inner.id, %addr, "meta node started");
        Ok(Self {
            node,
            server,
            flusher,
        })
    }

    pub fn node(&self) -> &MetaNode {
        &self.node
    }

    /// Stops serving and shuts Raft down, as a crash would from the peers' point of view:
    /// handlers refuse, connections are closed, and the storage is released so the same
    /// data directory can be reopened.
    pub async fn stop(self) {
        let inner = &self.node.inner;
        inner.stop_tx.send_replace(true);
        self.flusher.abort();
        if let Err(error) = inner.raft.shutdown().await {
            tracing::warn!(node_id = inner.id, %error, "raft shutdown");
        }
        // Graceful close of the connections is bounded: a peer holding a stream open must not
        // keep a stopped node alive.
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(2), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        tracing::info!(node_id = inner.id, "meta node stopped");
    }
}

impl MetaNode {
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// `host:port` this node serves on.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The Raft handle, for metrics and tests.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The applied state of this replica (not linearizable; see `list` for that).
    pub fn view(&self) -> &StateView {
        &self.inner.view
    }

    /// Makes this node the first member of a new cluster with `members` as voters.
    /// Call on exactly one node of a fresh cluster.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), NodeError> {
        let members: BTreeMap<NodeId, Node> = members
            .into_iter()
            .map(|(id, addr)| (id, Node::new(addr)))
            .collect();
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|error| NodeError::Raft(error.to_string()))
    }

    pub(crate) fn ensure_running(&self) -> Result<(), NodeError> {
        if *self.inner.stop_tx.borrow() {
            return Err(NodeError::Stopped);
        }
        Ok(())
    }

    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop_tx.subscribe()
    }

    /// Reserves one of the `watchers_max` watch slots; released when the guard drops.
    pub(crate) fn watch_slot(&self) -> Option<WatchSlot> {
        let inner = &self.inner;
        let previous = inner.watchers.fetch_add(1, Ordering::AcqRel);
        if previous >= inner.config.watchers_max {
            inner.watchers.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(WatchSlot { node: self.clone() })
    }

    async fn run_heartbeat_flusher(self) {
        let interval_ms = (self.inner.config.heartbeat_flush_interval_ms / 4).max(10);
        let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let now_ms = (self.inner.clock)();
                    if !self.inner.heartbeats.lock().is_due(now_ms) {
                        continue;
                    }
                }
                _ = self.inner.flush_now.notified() => {}
            }
            if let Err(error) = self.flush_heartbeats().await {
                // The beats are dropped; cells beat again well within a failure-detection window.
                tracing::warn!(node_id = self.inner.id, %error, "heartbeat batch not recorded");
            }
        }
    }
}

/// One reserved watch stream.
pub(crate) struct WatchSlot {
    node: MetaNode,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.node.inner.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}
