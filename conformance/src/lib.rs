//! Conformance tests that drive a cell through the official RocketMQ 5 clients.
//!
//! **Owns** the [`TestCell`] fixture (a real cell: storage in a temporary directory, the
//! broker with its background duties, and the RocketMQ gRPC front on `127.0.0.1:0`) and the
//! tests under `tests/` that run the Rust crate `rocketmq` 5.0.0 and the Python package
//! `rocketmq-python-client` 5.1.2 against it, unchanged. The checklist they exercise is
//! `proto/CONFORMANCE.md`.
//!
//! **Depends on** `meridian-cell` (storage, broker, gRPC front). The official Rust client is a
//! dev-dependency only, so its tonic 0.9 / prost 0.11 stay out of every other build; the
//! Python client runs as a child process from a virtual environment that `scripts/setup.sh`
//! creates.
//!
//! **Must not touch** the cell's internals: everything goes through the same public API a
//! deployment uses, so a passing test means an unmodified official client works.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use meridian_cell::grpc::{AuthConfig, GrpcConfig, GrpcError};
use meridian_cell::messaging::{
    Broker, BrokerConfig, GroupConfig, MessagingError, SystemClock, TopicMessageType,
};
use meridian_cell::{Hlc, Storage, StorageConfig, StorageError};
use tokio::sync::watch;

/// Errors of the fixture.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The temporary directory or the listener could not be created.
    #[error("fixture IO failed: {0}")]
    Io(#[from] std::io::Error),
    /// The storage did not open.
    #[error("opening the cell storage failed: {0}")]
    Storage(#[from] StorageError),
    /// The broker refused to open or to create a topic or group.
    #[error("broker setup failed: {0}")]
    Messaging(#[from] MessagingError),
    /// The gRPC front refused its configuration or failed while serving.
    #[error("gRPC front failed: {0}")]
    Grpc(#[from] GrpcError),
    /// The cell's thread ended before reporting that it was listening.
    #[error("the cell thread ended during start-up")]
    StartAborted,
}

/// A topic the cell starts with.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Name.
    pub name: String,
    /// Number of queues.
    pub queues: u32,
    /// Accepted message type.
    pub message_type: TopicMessageType,
}

/// What a [`TestCell`] starts with.
#[derive(Debug, Clone, Default)]
pub struct CellSpec {
    /// Topics created before the listener opens.
    pub topics: Vec<TopicSpec>,
    /// Consumer groups created before the listener opens.
    pub groups: Vec<GroupConfig>,
    /// Request-signature authentication; `None` for an open cell.
    pub auth: Option<AuthConfig>,
    /// Broker settings (tests shorten the transaction check-back delay here).
    pub broker: BrokerConfig,
    /// gRPC front settings; `auth` above overrides its `auth` field.
    pub grpc: GrpcConfig,
}

impl CellSpec {
    /// Adds a topic.
    pub fn topic(mut self, name: &str, queues: u32, message_type: TopicMessageType) -> Self {
        self.topics.push(TopicSpec {
            name: name.to_string(),
            queues,
            message_type,
        });
        self
    }

    /// Adds a consumer group; `fifo` makes it deliver each message group in order.
    pub fn group(mut self, name: &str, fifo: bool) -> Self {
        self.groups.push(GroupConfig::new(name, fifo));
        self
    }

    /// Secures the cell.
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Sets the delay before the broker first asks a producer about an open transaction, and
    /// between later asks.
    pub fn transaction_check_delay_ms(mut self, delay_ms: u64) -> Self {
        self.broker.transactions.first_check_delay_ms = delay_ms;
        self.broker.transactions.check_interval_ms = delay_ms;
        self
    }
}

/// Longest the fixture waits for the cell thread to stop on drop; past it the thread is left
/// to finish on its own (a client that never closed its Telemetry stream must not hang a
/// test's teardown).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running cell on loopback. Dropping it stops the server and the broker, closes the storage
/// and removes its directory.
///
/// The cell runs on its own thread with its own tokio runtime, as a separate process would: the
/// clients under test share nothing with it but the socket, and its teardown cannot be
/// starved by a test's runtime.
pub struct TestCell {
    endpoint: SocketAddr,
    /// `None` once stopping: the cell thread must hold the last reference so that the storage
    /// closes before its directory is removed.
    broker: Option<Arc<Broker>>,
    shutdown: watch::Sender<bool>,
    stopped: Option<mpsc::Receiver<Result<(), ConformanceError>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TestCell {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestCell")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl TestCell {
    /// Starts a cell with `spec` and returns once its listener accepts connections. Blocks the
    /// calling thread for the start-up (opening RocksDB takes tens of milliseconds).
    pub fn start(spec: CellSpec) -> Result<TestCell, ConformanceError> {
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let (stopped_tx, stopped_rx) = mpsc::sync_channel(1);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("conformance-cell".to_string())
            .spawn(move || {
                let mut started = Some(started_tx);
                let result = run_cell(spec, shutdown_rx, &mut started);
                match (started.take(), result) {
                    // Failed before listening: the error is the answer to `start`.
                    (Some(started), Err(error)) => {
                        let _ = started.send(Err(error));
                    }
                    (Some(started), Ok(())) => {
                        let _ = started.send(Err(ConformanceError::StartAborted));
                    }
                    (None, result) => {
                        if let Err(error) = &result {
                            tracing::warn!(%error, "conformance cell stopped with an error");
                        }
                        // The receiver is gone when the fixture gave up waiting.
                        let _ = stopped_tx.send(result);
                    }
                }
            })?;
        match started_rx.recv() {
            Ok(Ok((endpoint, broker))) => Ok(TestCell {
                endpoint,
                broker: Some(broker),
                shutdown: shutdown_tx,
                stopped: Some(stopped_rx),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ConformanceError::StartAborted)
            }
        }
    }

    /// The address clients dial.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// `127.0.0.1:<port>`, the access point string both official clients take.
    pub fn access_point(&self) -> String {
        self.endpoint.to_string()
    }

    /// The broker behind the front, for checks a client cannot make (e.g. that no transaction
    /// is left open).
    pub fn broker(&self) -> &Arc<Broker> {
        match &self.broker {
            Some(broker) => broker,
            // Only `stop_inner` clears it, and it consumes or drops the fixture.
            None => unreachable!("the broker is only taken while the fixture is stopping"),
        }
    }

    /// Stops the cell and reports how the server ended.
    pub fn stop(mut self) -> Result<(), ConformanceError> {
        self.stop_inner().unwrap_or(Ok(()))
    }

    fn stop_inner(&mut self) -> Option<Result<(), ConformanceError>> {
        self.broker = None;
        let _ = self.shutdown.send(true);
        let stopped = self.stopped.take()?;
        match stopped.recv_timeout(STOP_TIMEOUT) {
            Ok(result) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                Some(result)
            }
            Err(_) => {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    "conformance cell did not stop within {STOP_TIMEOUT:?}; leaving its thread"
                );
                None
            }
        }
    }
}

impl Drop for TestCell {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

type Started = Result<(SocketAddr, Arc<Broker>), ConformanceError>;

/// The cell thread: opens everything, reports the endpoint, serves until shutdown, then closes
/// the storage before the temporary directory goes.
fn run_cell(
    spec: CellSpec,
    shutdown: watch::Receiver<bool>,
    started: &mut Option<mpsc::SyncSender<Started>>,
) -> Result<(), ConformanceError> {
    let dir = tempfile::Builder::new()
        .prefix("meridian-conformance-")
        .tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("conformance-cell-rt")
        .enable_all()
        .build()?;
    let mut storage_config = StorageConfig::new(dir.path(), "conformance");
    // Loopback tests do not need fsync per append; async mode still survives a process crash.
    storage_config.durability = meridian_cell::Durability::Async;
    storage_config.index_block_cache_bytes = 8 << 20;
    storage_config.index_write_buffer_bytes = 4 << 20;
    let storage = Arc::new(Storage::open(
        storage_config,
        Arc::new(Hlc::system(Duration::from_millis(500))),
    )?);
    let broker = Broker::open(storage, spec.broker, Arc::new(SystemClock))?;
    for topic in &spec.topics {
        broker.create_topic(&topic.name, topic.queues, topic.message_type)?;
    }
    for group in spec.groups {
        broker.create_group(group)?;
    }
    let mut grpc = spec.grpc;
    if spec.auth.is_some() {
        grpc.auth = spec.auth;
    }
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = listener.local_addr()?;
        let background = tokio::spawn(Arc::clone(&broker).run(shutdown.clone()));
        let server = tokio::spawn(meridian_cell::grpc::serve(
            Arc::clone(&broker),
            listener,
            grpc,
            shutdown,
        ));
        // The listener is bound, so connections queue in the backlog from here on even if the
        // server task has not polled it yet.
        if let Some(started) = started.take() {
            let _ = started.send(Ok((endpoint, Arc::clone(&broker))));
        }
        let served = server.await;
        background.abort();
        match served {
            Ok(result) => result.map_err(ConformanceError::from),
            Err(join) => {
                tracing::warn!(%join, "gRPC server task ended abnormally");
                Ok(())
            }
        }
    });
    // Pending client streams die with the runtime; give them a moment, bounded.
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Flush and stop the storage threads even if a stray reference keeps the broker alive, so
    // nothing writes into the directory once it is removed.
    let closed = broker.storage().close();
    drop(broker);
    drop(dir);
    result.and(closed.map_err(ConformanceError::from))
}
