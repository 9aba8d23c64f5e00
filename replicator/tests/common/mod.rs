//! Cells for the integration tests: real storage in temp dirs, real replicators on 127.0.0.x,
//! certificates from a development CA.

#![allow(dead_code, unreachable_pub)]

pub mod broker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meridian_cell::storage::NewRecord;
use meridian_cell::{Durability, Hlc, Record, Storage, StorageConfig};
use meridian_pki::{DevCa, NodeIdentity};
use meridian_replicator::quic::{PeerConfig, Replicator, ReplicatorConfig};

/// Upper bound on waiting for replication to converge; reaching it fails the test (a hang
/// guard, not a speed assertion).
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// One region: its storage, its identity and (while running) its replicator.
///
/// Fields drop in declaration order: the replicator before the storage it uses, the storage
/// before the directory it lives in.
pub struct Cell {
    pub replicator: Option<Replicator>,
    pub storage: Option<Arc<Storage>>,
    pub region: String,
    pub identity: NodeIdentity,
    pub addr: SocketAddr,
    pub durability: Durability,
    pub dir: tempfile::TempDir,
}

impl Cell {
    /// Opens the storage of a new cell `region` on loopback address `ip` (127.0.0.x).
    pub fn new(ca: &DevCa, region: &str, ip: &str, durability: Durability) -> Self {
        let identity = ca
            .issue(region, &[region.to_string(), ip.to_string()])
            .expect("issue a node certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cell = Cell {
            region: region.to_string(),
            dir,
            storage: None,
            identity,
            addr: format!("{ip}:0").parse().expect("address"),
            replicator: None,
            durability,
        };
        cell.open_storage();
        cell
    }

    pub fn storage(&self) -> &Arc<Storage> {
        self.storage.as_ref().expect("storage open")
    }

    pub fn open_storage(&mut self) {
        let mut config = StorageConfig::new(self.dir.path(), &self.region);
        config.durability = self.durability;
        // Small segments so that the links read across segment boundaries.
        config.segment_size_bytes = 256 << 10;
        let hlc = Arc::new(Hlc::system(Duration::from_secs(5)));
        self.storage = Some(Arc::new(Storage::open(config, hlc).expect("open storage")));
    }

    /// Closes the storage as a restart of the cell would (pending appends finish first), once
    /// nothing of a stopped replicator holds it any more (RocksDB allows one open per dir).
    pub async fn close_storage(&mut self) {
        if let Some(storage) = self.storage.take() {
            storage.close().expect("close storage");
            let started = tokio::time::Instant::now();
            while Arc::strong_count(&storage) > 1 {
                assert!(
                    started.elapsed() < CONVERGE_LIMIT,
                    "the stopped replicator still holds the storage"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// How other cells reach this one.
    pub fn peer(&self) -> PeerConfig {
        PeerConfig {
            region: self.region.clone(),
            addr: self.addr,
            server_name: self.region.clone(),
        }
    }

    pub fn config(&self, peers: &[&Cell]) -> ReplicatorConfig {
        let mut config = ReplicatorConfig::with_identity(&self.region, self.addr, &self.identity)
            .expect("replicator config");
        config.peers = peers.iter().map(|peer| peer.peer()).collect();
        config.reconnect_base_delay_ms = 20;
        config.reconnect_max_delay_ms = 500;
        // Reproducible, and different per cell so that link ids differ in the logs.
        config.rng_seed = self
            .region
            .bytes()
            .fold(7, |seed, byte| seed * 31 + u64::from(byte));
        // Small batches and window so that a few hundred records take many round trips.
        config.sender.max_batch_entries = 64;
        config.verify_interval_ms = Some(200);
        // Small index stride so that digest scans are narrowed even in short tests.
        config.replica_index_stride_bytes = 4 << 10;
        config.receiver.window_entries = 256;
        config.receiver.window_bytes = 256 << 10;
        config
    }

    /// Binds the replicator's endpoint (retrying while a previous one on the same address is
    /// still letting go of the port) and remembers the bound address.
    pub async fn bind(&mut self) {
        self.start_with(ReplicatorConfig {
            peers: Vec::new(),
            ..self.config(&[])
        })
        .await;
    }

    pub async fn start_with(&mut self, config: ReplicatorConfig) {
        let storage = Arc::clone(self.storage());
        let mut attempts = 0;
        let replicator = loop {
            match Replicator::start(config.clone(), Arc::clone(&storage)) {
                Ok(replicator) => break replicator,
                Err(error) => {
                    attempts += 1;
                    assert!(attempts < 200, "cannot start the replicator: {error}");
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        };
        self.addr = replicator.local_addr().expect("bound address");
        self.replicator = Some(replicator);
    }

    /// Appends `count` records; ids are unique per region and call.
    pub async fn produce(&self, tag: &str, count: usize) {
        let records = (0..count)
            .map(|index| NewRecord {
                message_id: format!("{}-{tag}-{index}", self.region),
                topic: "orders".into(),
                queue_id: (index % 4) as u32,
                tags: "t".into(),
                keys: vec![format!("k{index}")],
                body: format!("{} {tag} {index}", self.region).into_bytes(),
                born_timestamp_ms: 1_700_000_000_000 + index as u64,
                ..NewRecord::default()
            })
            .collect::<Vec<_>>();
        for chunk in records.chunks(50) {
            self.storage().append(chunk.to_vec()).await.expect("append");
        }
    }

    /// Every record in this cell's log, with its position, in log order.
    pub fn records(&self) -> Vec<(u64, Record)> {
        let storage = self.storage();
        let (mut at, end) = storage.log_range();
        let mut out = Vec::new();
        while at < end {
            let batch = storage.read_log(at, 1024, 1 << 20).expect("read log");
            let Some((last, len, _)) = batch.last() else {
                break;
            };
            at = last + u64::from(*len);
            out.extend(
                batch
                    .into_iter()
                    .map(|(position, _, record)| (position, record)),
            );
        }
        out
    }

    /// This cell's records that originated in `origin`.
    pub fn records_from(&self, origin: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .map(|(_, record)| record)
            .filter(|record| record.origin.region == origin)
            .collect()
    }

    pub fn replicator(&self) -> &Replicator {
        self.replicator.as_ref().expect("replicator running")
    }

    pub async fn shutdown_replicator(&mut self) {
        if let Some(replicator) = self.replicator.take() {
            replicator.shutdown().await;
        }
    }

    pub fn abort_replicator(&mut self) {
        if let Some(replicator) = self.replicator.take() {
            replicator.abort();
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// Starts a full mesh: every cell sends to every other.
pub async fn start_mesh(cells: &mut [Cell]) {
    for cell in cells.iter_mut() {
        cell.bind().await;
    }
    for index in 0..cells.len() {
        for other in 0..cells.len() {
            if other != index {
                let peer = cells[other].peer();
                cells[index]
                    .replicator()
                    .add_peer(peer)
                    .expect("add a peer");
            }
        }
    }
}

/// Waits until `cell` holds `count` records from `origin`; panics past the hang guard.
pub async fn wait_for_records(cell: &Cell, origin: &str, count: usize) {
    let started = tokio::time::Instant::now();
    loop {
        let have = cell.records_from(origin).len();
        if have >= count {
            return;
        }
        assert!(
            started.elapsed() < CONVERGE_LIMIT,
            "{} holds {have} of {count} records from {origin} and is not converging",
            cell.region
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `condition` holds; panics past the hang guard.
pub async fn wait_until(condition: impl Fn() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < CONVERGE_LIMIT, "condition not reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `replica` holds exactly the records `origin` stored itself, once each, in the origin's
/// order, with the origin's position, HLC stamp and content.
pub fn assert_replica_exact(origin: &Cell, replica: &Cell) {
    let originals: Vec<(u64, Record)> = origin
        .records()
        .into_iter()
        .filter(|(_, record)| record.origin.region == origin.region)
        .collect();
    let copies = replica.records_from(&origin.region);
    assert_eq!(
        copies.len(),
        originals.len(),
        "{} holds {} records from {}, which stored {}",
        replica.region,
        copies.len(),
        origin.region,
        originals.len()
    );
    let mut seen = HashMap::new();
    for ((position, original), copy) in originals.iter().zip(&copies) {
        assert_eq!(copy.message_id, original.message_id, "order differs");
        assert_eq!(copy.origin.offset, *position, "origin position not kept");
        assert_eq!(copy.origin.offset, original.origin.offset);
        assert_eq!(copy.hlc, original.hlc, "HLC stamp not kept");
        assert_eq!(copy.body, original.body);
        assert_eq!(copy.topic, original.topic);
        assert_eq!(copy.queue_id, original.queue_id);
        assert_eq!(copy.keys, original.keys);
        assert_eq!(copy.born_timestamp_ms, original.born_timestamp_ms);
        assert!(
            seen.insert(copy.message_id.clone(), ()).is_none(),
            "duplicate {}",
            copy.message_id
        );
    }
}
