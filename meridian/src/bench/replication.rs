//! `meridian bench replication`: one replication link between two cells on this machine.
//!
//! Two storages (regions `bench-origin` on 127.0.0.1 and `bench-replica` on 127.0.0.2), each
//! with its replicator, mutual TLS from a fresh development CA, and real QUIC over loopback;
//! for a delay above 0 ms the link goes through the chaos UDP proxy, which holds every datagram
//! that long in each direction (so the round trip is twice the delay). It prints:
//! - **throughput**: the origin's local append rate for `--records` records of `--body-bytes`
//!   (appended in batches by `--appenders` tasks, no replication running), then the rate at
//!   which the replica receives the same records once the link starts (catch-up), and their
//!   ratio (issue 6's target: ≥ 80% for 1 KiB in `async` mode);
//! - **lag** at a fixed produce rate (`--rate`, default 20,000 messages/s) per injected delay:
//!   for every message, the time from the origin's append call returning to the replica's
//!   reader seeing it (same process, same monotonic clock), as p50/p99/p99.9/max (target: p99
//!   ≤ injected delay + 15 ms);
//! - **sync-quorum produce latency** per injected delay: one message at a time, appended at the
//!   origin and acknowledged once the replica confirmed it (what a broker's `sync-quorum` send
//!   waits for: with two regions the majority is both), against the injected round trip;
//! - an exactly-once, in-order check of everything the replica received per queue.
//!
//! Both cells and the load share the machine's two cores: the figures are for this machine,
//! not for a network.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_cell::Hlc;
use meridian_cell::messaging::ReplicationQuorum;
use meridian_cell::storage::{Durability, NewRecord, Storage, StorageConfig};
use meridian_chaos::fault::LinkFaults;
use meridian_chaos::proxy::{ProxyHandle, UdpProxy, UdpProxyConfig};
use meridian_pki::DevCa;
use meridian_replicator::quic::{PeerConfig, Replicator, ReplicatorConfig};

const ORIGIN: &str = "bench-origin";
const REPLICA: &str = "bench-replica";
const TOPIC: &str = "bench-repl";
/// Longest wait for the replica to hold every record of a phase; past it the phase reports
/// what is missing instead of hanging.
const CONVERGE_LIMIT_S: u64 = 120;
/// Records the replica's reader takes per read.
const READ_BATCH_RECORDS: usize = 4096;
/// Produce ticks per second at the fixed rate (each tick appends rate / ticks records).
const PRODUCE_TICKS_PER_S: u64 = 1000;
/// Datagrams the delay proxy may hold at once.
const PROXY_QUEUE_PACKETS: usize = 262_144;

/// Arguments of `meridian bench replication`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplicationBenchArgs {
    /// Directory for benchmark data; each phase uses fresh subdirectories, removed afterwards.
    #[arg(long, default_value = "./meridian-bench-data")]
    dir: PathBuf,
    /// Durability of both cells' logs.
    #[arg(long, default_value = "async")]
    mode: Durability,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Throughput phase: records appended at the origin, then replicated.
    #[arg(long, default_value_t = 300_000)]
    records: u64,
    /// Throughput phase: concurrent appenders at the origin.
    #[arg(long, default_value_t = 16)]
    appenders: usize,
    /// Records per append call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Lag phase: messages produced per second at the origin.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Lag phase: measured seconds per delay.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Lag phase: injected one-way delays, ms (0 runs without the proxy).
    #[arg(long, value_delimiter = ',', default_value = "0,40")]
    delays_ms: Vec<u64>,
    /// Queues of the benchmark topic.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Sync-quorum phase: sequential writes measured per delay.
    #[arg(long, default_value_t = 200)]
    quorum_writes: u64,
    /// Skip the throughput phase.
    #[arg(long)]
    no_throughput: bool,
}

/// One region of the link.
struct Region {
    storage: Arc<Storage>,
    replicator: Option<Replicator>,
}

/// The two regions, the CA and (for a delayed link) the proxy between them.
struct Link {
    origin: Region,
    replica: Region,
    proxy: Option<ProxyHandle>,
}

pub(crate) fn run(args: ReplicationBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_all(args))
}

async fn run_all(args: ReplicationBenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("--dir {}: cannot create it", args.dir.display()))?;
    println!(
        "REPLICATION: one link {ORIGIN} -> {REPLICA} over QUIC with mutual TLS on loopback, \
         {} mode, {} B bodies, {} queues",
        args.mode, args.body_bytes, args.queues
    );
    let mut all_ok = true;
    if !args.no_throughput {
        all_ok &= throughput(&args).await?;
    }
    println!(
        "  lag at {} messages/s for {:.0} s:",
        args.rate, args.seconds
    );
    println!(
        "  {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "delay ms", "msg/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "target p99"
    );
    for delay_ms in &args.delays_ms {
        all_ok &= lag(&args, *delay_ms).await?;
    }
    println!(
        "  sync-quorum produce latency ({} sequential single-message writes, each acknowledged \
         once the replica confirmed it):",
        args.quorum_writes
    );
    println!(
        "  {:>10} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "delay ms", "round trip", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for delay_ms in &args.delays_ms {
        quorum_latency(&args, *delay_ms).await?;
    }
    anyhow::ensure!(
        all_ok,
        "a replica missed, duplicated or reordered records (see above); the figures are void"
    );
    Ok(())
}

/// A phase's data directory under `--dir`, removed when the phase ends (also on error).
struct PhaseDir(PathBuf);

impl PhaseDir {
    fn create(parent: &Path, phase: &str) -> anyhow::Result<Self> {
        let dir = parent.join(format!("replication-{}-{phase}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(PhaseDir(dir))
    }
}

impl Drop for PhaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_storage(dir: &Path, region: &str, mode: Durability) -> anyhow::Result<Arc<Storage>> {
    let mut config = StorageConfig::new(dir, region);
    config.durability = mode;
    Ok(Arc::new(
        Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500))))
            .with_context(|| format!("opening the {region} storage"))?,
    ))
}

impl Link {
    /// Opens both storages; replicators start with [`Link::connect`].
    fn open(root: &Path, mode: Durability) -> anyhow::Result<Self> {
        Ok(Link {
            origin: Region {
                storage: open_storage(&root.join("origin"), ORIGIN, mode)?,
                replicator: None,
            },
            replica: Region {
                storage: open_storage(&root.join("replica"), REPLICA, mode)?,
                replicator: None,
            },
            proxy: None,
        })
    }

    /// Starts the replica's replicator, the proxy when `delay_ms` > 0, then the origin's
    /// replicator with the replica (or the proxy) as its peer.
    async fn connect(&mut self, delay_ms: u64) -> anyhow::Result<()> {
        let ca = DevCa::generate("meridian bench CA")?;
        let origin_id = ca.issue(ORIGIN, &[ORIGIN.to_string(), "127.0.0.1".to_string()])?;
        let replica_id = ca.issue(REPLICA, &[REPLICA.to_string(), "127.0.0.2".to_string()])?;
        let replica_config =
            ReplicatorConfig::with_identity(REPLICA, "127.0.0.2:0".parse()?, &replica_id)?;
        let replica = Replicator::start(replica_config, Arc::clone(&self.replica.storage))?;
        let mut peer_addr: SocketAddr = replica.local_addr()?;
        self.replica.replicator = Some(replica);
        if delay_ms > 0 {
            let socket = tokio::net::UdpSocket::bind("127.0.0.3:0").await?;
            let mut config = UdpProxyConfig::new(peer_addr);
            config.faults = LinkFaults {
                latency_ms: delay_ms,
                ..LinkFaults::clean()
            };
            config.max_queue_packets = PROXY_QUEUE_PACKETS;
            let proxy = UdpProxy::spawn(socket, config)?;
            peer_addr = proxy.local_addr();
            self.proxy = Some(proxy);
        }
        let mut origin_config =
            ReplicatorConfig::with_identity(ORIGIN, "127.0.0.1:0".parse()?, &origin_id)?;
        origin_config.peers.push(PeerConfig {
            region: REPLICA.to_string(),
            addr: peer_addr,
            server_name: REPLICA.to_string(),
        });
        self.origin.replicator = Some(Replicator::start(
            origin_config,
            Arc::clone(&self.origin.storage),
        )?);
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        for region in [&mut self.origin, &mut self.replica] {
            if let Some(replicator) = region.replicator.take() {
                replicator.shutdown().await;
            }
        }
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown().await;
        }
        for region in [self.origin, self.replica] {
            region.storage.close()?;
        }
        Ok(())
    }
}

/// A record of the benchmark: its body starts with the sequence number and the send time
/// (ns since the phase's start), the rest is filler.
fn record(queue_id: u32, seq: u64, sent_ns: u64, body_bytes: usize) -> NewRecord {
    let mut body = vec![0u8; body_bytes.max(16)];
    body[..8].copy_from_slice(&seq.to_le_bytes());
    body[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    NewRecord {
        message_id: format!("r-{seq}"),
        topic: TOPIC.to_string(),
        queue_id,
        body,
        ..NewRecord::default()
    }
}

fn decode(body: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let sent_ns = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((seq, sent_ns))
}

/// Records at the replica: per queue, the next offset to read and the last sequence seen.
struct ReplicaReader {
    next_offset: Vec<u64>,
    last_seq: Vec<Option<u64>>,
    received: u64,
    out_of_order: u64,
}

impl ReplicaReader {
    fn new(queues: u32) -> Self {
        ReplicaReader {
            next_offset: vec![0; queues as usize],
            last_seq: vec![None; queues as usize],
            received: 0,
            out_of_order: 0,
        }
    }

    /// Reads what arrived since the last call; `on_record` gets each (seq, sent_ns).
    fn poll(
        &mut self,
        storage: &Storage,
        mut on_record: impl FnMut(u64, u64),
    ) -> anyhow::Result<()> {
        for queue in 0..self.next_offset.len() {
            let queue_id = queue as u32;
            // Each round reads one batch; the queue's end bounds the rounds.
            while let Some(range) = storage.queue_range(TOPIC, queue_id) {
                if self.next_offset[queue] >= range.next {
                    break;
                }
                let records = storage.read_queue(
                    TOPIC,
                    queue_id,
                    self.next_offset[queue],
                    READ_BATCH_RECORDS,
                    usize::MAX,
                )?;
                let Some(last) = records.last() else { break };
                self.next_offset[queue] = last.queue_offset + 1;
                for record in &records {
                    let Some((seq, sent_ns)) = decode(&record.body) else {
                        self.out_of_order += 1;
                        continue;
                    };
                    // Sequence numbers rise within a queue at the origin: anything else here
                    // is a duplicate or a reordering.
                    if self.last_seq[queue].is_some_and(|last| seq <= last) {
                        self.out_of_order += 1;
                    }
                    self.last_seq[queue] = Some(seq);
                    self.received += 1;
                    on_record(seq, sent_ns);
                }
            }
        }
        Ok(())
    }
}

/// Waits (on the replica's visibility watch) until `reader` has `expected` records, calling
/// `on_record` for each; false when the converge limit passed first.
async fn drain(
    storage: &Storage,
    reader: &mut ReplicaReader,
    expected: u64,
    deadline: Instant,
    mut on_record: impl FnMut(u64, u64),
) -> anyhow::Result<bool> {
    let mut visible = storage.subscribe();
    // Each round handles one visibility change; the deadline bounds the rounds.
    while reader.received < expected {
        visible.borrow_and_update();
        reader.poll(storage, &mut on_record)?;
        if reader.received >= expected {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), visible.changed()).await;
    }
    Ok(true)
}

fn check_line(reader: &ReplicaReader, expected: u64) -> bool {
    let ok = reader.received == expected && reader.out_of_order == 0;
    if !ok {
        println!(
            "  !!! CHECK FAILED: expected {expected}, received {}, duplicates or out of order {} !!!",
            reader.received, reader.out_of_order
        );
    }
    ok
}

/// The throughput phase (see the module comment).
async fn throughput(args: &ReplicationBenchArgs) -> anyhow::Result<bool> {
    let root = PhaseDir::create(&args.dir, "throughput")?;
    let mut link = Link::open(&root.0, args.mode)?;
    let started = Instant::now();
    let per_appender = args.records / args.appenders.max(1) as u64;
    let total = per_appender * args.appenders.max(1) as u64;
    let mut tasks = Vec::new();
    for appender in 0..args.appenders.max(1) as u64 {
        let storage = Arc::clone(&link.origin.storage);
        let (batch, body_bytes, queues) = (args.batch.max(1) as u64, args.body_bytes, args.queues);
        tasks.push(tokio::spawn(async move {
            let mut seq = 0;
            // Each round appends one batch; `per_appender` bounds the rounds.
            while seq < per_appender {
                let end = (seq + batch).min(per_appender);
                let queue_id = (appender % u64::from(queues)) as u32;
                let records = (seq..end)
                    .map(|local| record(queue_id, appender * per_appender + local, 0, body_bytes))
                    .collect();
                storage.append(records).await?;
                seq = end;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let local_s = started.elapsed().as_secs_f64();
    let local_rate = total as f64 / local_s;
    // Appends return before the indexer makes the records readable; a replica can only go as
    // fast as its own indexer, so the origin's append-to-readable time is printed too.
    let mut origin_reader = ReplicaReader::new(args.queues);
    let deadline = Instant::now() + Duration::from_secs(CONVERGE_LIMIT_S);
    drain(
        &link.origin.storage,
        &mut origin_reader,
        total,
        deadline,
        |_, _| {},
    )
    .await?;
    let indexed_s = started.elapsed().as_secs_f64();
    let indexed_rate = total as f64 / indexed_s;
    let started = Instant::now();
    link.connect(0).await?;
    let mut reader = ReplicaReader::new(args.queues);
    let deadline = Instant::now() + Duration::from_secs(CONVERGE_LIMIT_S);
    // Several appenders share a queue: sequence numbers interleave there, so order is checked
    // in the lag phase (one producer) only.
    let converged = drain(
        &link.replica.storage,
        &mut reader,
        total,
        deadline,
        |_, _| {},
    )
    .await?;
    let replicated_s = started.elapsed().as_secs_f64();
    let replicated_rate = reader.received as f64 / replicated_s;
    println!(
        "  throughput: local append {local_rate:.0} msg/s ({total} records in {local_s:.2} s, \
         {} appenders x {} per append), readable (indexed) {indexed_rate:.0} msg/s; \
         replicated {replicated_rate:.0} msg/s ({} records in {replicated_s:.2} s, catch-up \
         from a cold link, readable at the replica); ratio {:.0}% of the append rate, {:.0}% of \
         the readable rate (target >= 80%)",
        args.appenders,
        args.batch,
        reader.received,
        100.0 * replicated_rate / local_rate,
        100.0 * replicated_rate / indexed_rate
    );
    let ok = converged && reader.received == total;
    if !ok {
        println!(
            "  !!! CHECK FAILED: the replica holds {} of {total} records !!!",
            reader.received
        );
    }
    link.close().await?;
    Ok(ok)
}

/// The lag phase at one injected delay (see the module comment).
async fn lag(args: &ReplicationBenchArgs, delay_ms: u64) -> anyhow::Result<bool> {
    let root = PhaseDir::create(&args.dir, &format!("lag-{delay_ms}ms"))?;
    let mut link = Link::open(&root.0, args.mode)?;
    link.connect(delay_ms).await?;
    let phase_start = Instant::now();
    let total = (args.rate as f64 * args.seconds) as u64;
    let per_tick = (args.rate / PRODUCE_TICKS_PER_S).max(1);
    let origin = Arc::clone(&link.origin.storage);
    let (body_bytes, queues) = (args.body_bytes, args.queues);
    let producer = tokio::spawn(async move {
        let mut ticks =
            tokio::time::interval(Duration::from_micros(1_000_000 / PRODUCE_TICKS_PER_S));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut seq = 0u64;
        // Each round appends one tick's records; `total` bounds the rounds.
        while seq < total {
            ticks.tick().await;
            let end = (seq + per_tick).min(total);
            // One queue per tick keeps each queue's sequence rising (one producer).
            let queue_id = ((seq / per_tick) % u64::from(queues)) as u32;
            let sent_ns = phase_start.elapsed().as_nanos() as u64;
            let records = (seq..end)
                .map(|seq| record(queue_id, seq, sent_ns, body_bytes))
                .collect();
            origin.append(records).await?;
            seq = end;
        }
        anyhow::Ok(phase_start.elapsed())
    });
    let mut histogram = super::new_histogram()?;
    let mut reader = ReplicaReader::new(args.queues);
    let deadline = Instant::now()
        + Duration::from_secs_f64(args.seconds)
        + Duration::from_secs(CONVERGE_LIMIT_S);
    let converged = drain(
        &link.replica.storage,
        &mut reader,
        total,
        deadline,
        |_, sent_ns| {
            let lag_ns = (phase_start.elapsed().as_nanos() as u64).saturating_sub(sent_ns);
            let _ = histogram.record(lag_ns.max(1));
        },
    )
    .await?;
    let produced_in = producer.await??;
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1e6;
    let target_ms = delay_ms as f64 + 15.0;
    println!(
        "  {:>10} {:>10.0} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12}",
        delay_ms,
        total as f64 / produced_in.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1e6,
        format!(
            "<= {target_ms:.0} {}",
            if ms(0.99) <= target_ms {
                "met"
            } else {
                "MISSED"
            }
        )
    );
    let ok = converged && check_line(&reader, total);
    link.close().await?;
    Ok(ok)
}

/// The sync-quorum phase at one injected delay (see the module comment).
async fn quorum_latency(args: &ReplicationBenchArgs, delay_ms: u64) -> anyhow::Result<()> {
    let root = PhaseDir::create(&args.dir, &format!("quorum-{delay_ms}ms"))?;
    let mut link = Link::open(&root.0, args.mode)?;
    link.connect(delay_ms).await?;
    let quorum = link
        .origin
        .replicator
        .as_ref()
        .context("the origin's replicator runs")?
        .quorum();
    let mut histogram = super::new_histogram()?;
    for seq in 0..args.quorum_writes {
        let started = Instant::now();
        let appended = link
            .origin
            .storage
            .append(vec![record(0, seq, 0, args.body_bytes)])
            .await?;
        let last = appended.last().context("one record appended")?;
        quorum
            .wait_persisted(last.position + 1, CONVERGE_LIMIT_S * 1000)
            .await
            .with_context(|| format!("sync-quorum write {seq} at {delay_ms} ms delay"))?;
        histogram.record((started.elapsed().as_nanos() as u64).max(1))?;
    }
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1e6;
    println!(
        "  {:>10} {:>12} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
        delay_ms,
        format!("{} ms", 2 * delay_ms),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1e6
    );
    link.close().await?;
    Ok(())
}
