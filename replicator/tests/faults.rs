//! Fault tests: three regions in an active-active full mesh, each link through a chaos UDP proxy
//! on loopback, real QUIC with mutual TLS, real storage. About 20,000 records are produced across
//! the regions while a fault is in force; afterwards every region must hold every other region's
//! records exactly once, in origin order (which implies origin order per queue).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{Cell, assert_replica_exact, init_tracing, wait_for_records};
use meridian_cell::Durability;
use meridian_chaos::{LinkFaults, ProxyControl, ProxyHandle, UdpProxy, UdpProxyConfig};
use meridian_pki::DevCa;
use meridian_replicator::quic::{PeerConfig, ReplicatorConfig};

/// Records each region produces (three regions: 20,100 in all).
const PER_REGION: usize = 6_700;
/// Records per production step; faults change between steps.
const STEP: usize = 670;

/// A fault test that runs longer than this is ended by its watchdog (see [`watchdog`]).
const WATCHDOG_LIMIT: Duration = Duration::from_secs(150);

/// Ends the process with a clear message if the test is still running after
/// [`WATCHDOG_LIMIT`]. The waits inside the test have their own limits, but they run on the
/// test's runtime; this one runs on its own thread, so it fires even if every worker thread is
/// stuck (once seen, intermittently, under heavy load: not yet explained).
fn watchdog() -> std::sync::mpsc::Sender<()> {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(WATCHDOG_LIMIT)
        {
            eprintln!(
                "fault test still running after {} s: it hangs; every thread's stack follows \
                 (when gdb is installed), then the process ends",
                WATCHDOG_LIMIT.as_secs()
            );
            // The stacks say where the runtime is stuck; without gdb this is skipped.
            let _ = std::process::Command::new("gdb")
                .args(["-p", &std::process::id().to_string(), "-batch", "-nx"])
                .args(["-ex", "thread apply all bt 25"])
                .stdin(std::process::Stdio::null())
                .status();
            std::process::exit(101);
        }
    });
    done
}

struct Fabric {
    cells: Vec<Cell>,
    /// Proxy of the link from `cells[from]` to `cells[to]`, by (from, to).
    proxies: HashMap<(usize, usize), ProxyHandle>,
    /// Dropped last (fields drop in order), which stops the watchdog once the cells are gone.
    _watchdog: std::sync::mpsc::Sender<()>,
}

impl Fabric {
    /// Three cells on `ips`, every directed link through its own proxy with `faults`.
    async fn start(ips: [&str; 3], faults: LinkFaults, seed: u64) -> Self {
        init_tracing();
        let watchdog = watchdog();
        let ca = DevCa::generate("meridian fault test CA").expect("CA");
        let mut cells = vec![
            Cell::new(&ca, "eu", ips[0], Durability::Sync),
            Cell::new(&ca, "us", ips[1], Durability::Async),
            Cell::new(&ca, "ap", ips[2], Durability::Sync),
        ];
        for cell in &mut cells {
            cell.bind().await;
        }
        let mut proxies = HashMap::new();
        let upstreams: Vec<_> = cells.iter().map(|cell| cell.addr).collect();
        for (from, ip) in ips.iter().enumerate() {
            for (to, upstream) in upstreams.iter().enumerate() {
                if from == to {
                    continue;
                }
                let socket = tokio::net::UdpSocket::bind(format!("{ip}:0"))
                    .await
                    .expect("bind a proxy socket");
                let mut config = UdpProxyConfig::new(*upstream);
                config.faults = faults.clone();
                config.seed = seed + (from * 3 + to) as u64;
                proxies.insert(
                    (from, to),
                    UdpProxy::spawn(socket, config).expect("start a proxy"),
                );
            }
        }
        let mut fabric = Fabric {
            cells,
            proxies,
            _watchdog: watchdog,
        };
        for index in 0..fabric.cells.len() {
            // The first replicator only reserved the address the proxies point at; the real
            // one (peers through the proxies, tuned timeouts) takes the same address.
            fabric.cells[index].shutdown_replicator().await;
            fabric.start_replicator(index).await;
        }
        fabric
    }

    fn config(&self, index: usize) -> ReplicatorConfig {
        let cell = &self.cells[index];
        let mut config = cell.config(&[]);
        config.peers = (0..self.cells.len())
            .filter(|other| *other != index)
            .map(|other| PeerConfig {
                region: self.cells[other].region.clone(),
                addr: self.proxies[&(index, other)].local_addr(),
                server_name: self.cells[other].region.clone(),
            })
            .collect();
        // Larger batches and windows than the other tests (20,000 records), short timeouts so
        // that a cut link is noticed and redialled within a test's time.
        config.sender.max_batch_entries = 512;
        config.receiver.window_entries = 4_096;
        config.receiver.window_bytes = 4 << 20;
        config.sender.ping_interval_ms = 250;
        config.sender.idle_timeout_ms = 1_500;
        config.receiver.idle_timeout_ms = 1_500;
        config.sender.handshake_timeout_ms = 1_500;
        config.receiver.handshake_timeout_ms = 1_500;
        config
    }

    async fn start_replicator(&mut self, index: usize) {
        let config = self.config(index);
        self.cells[index].start_with(config).await;
    }

    /// Both directions between two cells.
    fn pair(&self, a: usize, b: usize) -> [ProxyControl; 2] {
        [
            self.proxies[&(a, b)].control(),
            self.proxies[&(b, a)].control(),
        ]
    }

    /// One production step in every running region.
    async fn produce_step(&self, step: usize) {
        for cell in &self.cells {
            if cell.storage.is_some() {
                cell.produce(&format!("s{step}"), STEP).await;
            }
        }
    }

    /// Waits until every region holds every other's records, then checks them exactly.
    async fn converge_and_check(&mut self) {
        for replica in &self.cells {
            for origin in &self.cells {
                if origin.region != replica.region {
                    wait_for_records(replica, &origin.region, PER_REGION).await;
                }
            }
        }
        for replica in &self.cells {
            for origin in &self.cells {
                if origin.region != replica.region {
                    assert_replica_exact(origin, replica);
                    assert_order_per_queue(origin, replica);
                }
            }
            assert_eq!(replica.records().len(), 3 * PER_REGION, "no extra records");
        }
        for cell in &mut self.cells {
            cell.shutdown_replicator().await;
        }
    }
}

/// Per (origin, queue), the replica's copies are in the origin's order, each id once.
fn assert_order_per_queue(origin: &Cell, replica: &Cell) {
    let mut last: HashMap<(String, u32), u64> = HashMap::new();
    let mut seen = HashSet::new();
    for record in replica.records_from(&origin.region) {
        assert!(
            seen.insert(record.message_id.clone()),
            "duplicate {}",
            record.message_id
        );
        let key = (record.topic.clone(), record.queue_id);
        if let Some(previous) = last.insert(key, record.origin.offset) {
            assert!(
                previous < record.origin.offset,
                "{} out of order",
                record.message_id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_and_healed_loses_and_duplicates_nothing() {
    let mut fabric = Fabric::start(
        ["127.0.0.50", "127.0.0.51", "127.0.0.52"],
        LinkFaults::clean(),
        1,
    )
    .await;
    let cut = fabric.pair(0, 1);
    for step in 0..PER_REGION / STEP {
        if step == 2 {
            for control in &cut {
                control.set_faults(LinkFaults::blackholed()).expect("cut");
            }
        }
        fabric.produce_step(step).await;
        if step == 5 {
            // Long enough for both ends to give the sessions up (idle timeout) and redial.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            for control in &cut {
                control.heal();
            }
        }
    }
    fabric.converge_and_check_with_reconnects(0, 1).await;
}

impl Fabric {
    async fn converge_and_check_with_reconnects(&mut self, a: usize, b: usize) {
        for replica in &self.cells {
            for origin in &self.cells {
                if origin.region != replica.region {
                    wait_for_records(replica, &origin.region, PER_REGION).await;
                }
            }
        }
        for (from, to) in [(a, b), (b, a)] {
            let link = format!("{}->{}", self.cells[from].region, self.cells[to].region);
            let metrics = self.cells[from]
                .replicator()
                .link_metrics()
                .into_iter()
                .find(|metrics| metrics.link == link)
                .expect("the link's metrics");
            assert!(metrics.reconnects_total >= 1, "{link} never reconnected");
        }
        self.converge_and_check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_percent_datagram_loss_loses_and_duplicates_nothing() {
    let lossy = LinkFaults {
        loss_percent: 2.0,
        ..LinkFaults::clean()
    };
    let mut fabric = Fabric::start(["127.0.0.53", "127.0.0.54", "127.0.0.55"], lossy, 2).await;
    for step in 0..PER_REGION / STEP {
        fabric.produce_step(step).await;
    }
    let dropped: u64 = fabric
        .proxies
        .values()
        .map(|proxy| {
            let stats = proxy.control().stats();
            stats.upstream.dropped_loss + stats.downstream.dropped_loss
        })
        .sum();
    assert!(dropped > 0, "the proxies dropped no datagram");
    fabric.converge_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_shut_down_and_restarted_on_its_data_loses_and_duplicates_nothing() {
    let mut fabric = Fabric::start(
        ["127.0.0.56", "127.0.0.57", "127.0.0.58"],
        LinkFaults::clean(),
        3,
    )
    .await;
    for step in 0..PER_REGION / STEP {
        if step == 3 {
            // Graceful stop of region us: it stops receiving from and sending to both others.
            fabric.cells[1].shutdown_replicator().await;
            fabric.cells[1].close_storage().await;
        }
        if step == 6 {
            fabric.cells[1].open_storage();
            fabric.start_replicator(1).await;
            // What us would have produced while down, produced now.
            for missed in 3..6 {
                fabric.cells[1].produce(&format!("s{missed}"), STEP).await;
            }
        }
        fabric.produce_step(step).await;
    }
    fabric.converge_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_killed_and_restarted_on_its_data_loses_and_duplicates_nothing() {
    let mut fabric = Fabric::start(
        ["127.0.0.59", "127.0.0.60", "127.0.0.61"],
        LinkFaults::clean(),
        4,
    )
    .await;
    for step in 0..PER_REGION / STEP {
        if step == 4 {
            // Region eu's replicator dies mid-stream as in a crash, sending and receiving.
            fabric.cells[0].abort_replicator();
            fabric.cells[0].close_storage().await;
            fabric.cells[0].open_storage();
            fabric.start_replicator(0).await;
        }
        fabric.produce_step(step).await;
    }
    fabric.converge_and_check().await;
}
