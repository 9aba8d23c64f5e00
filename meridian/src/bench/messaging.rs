//! `meridian bench messaging`: the messaging layer's figures (issue 3).
//!
//! Each case opens a real storage and [`Broker`] in a fresh directory, spawns the broker's
//! background loop (which releases delay timers) and runs producers and per-message consumers
//! (receive, then ack every message) as tokio tasks in this process, for a bounded time:
//! - `normal` and `fifo`: send and receive+ack throughput, and latency percentiles of send,
//!   end-to-end (born in the producer → returned by a receive) and ack. FIFO messages spread over
//!   many message groups, consumed by a FIFO consumer group.
//! - `timers`: delay-timer lateness with many pending timers (`messaging_timers`).
//!
//! Every message body starts with a header (producer, sequence, born time, message group and its
//! sequence), so that at the end each case checks that every sent message was received and acked
//! exactly once, and, for FIFO, in order within its group. A case whose counts do not add up
//! says so in capitals; the figures of such a run are not to be quoted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_cell::messaging::{
    Broker, BrokerConfig, Filter, GroupConfig, OutgoingMessage, ReceiveRequest, ReceivedMessage,
    SystemClock, TopicMessageType,
};
use meridian_cell::storage::MessageType;
use meridian_cell::{Durability, Hlc, Storage, StorageConfig};
use tokio::sync::watch;

use super::messaging_timers;

/// One measured scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Case {
    /// NORMAL topic, clustering group.
    Normal,
    /// FIFO topic with many message groups, FIFO consumer group.
    Fifo,
    /// Delay-timer lateness with many pending timers.
    Timers,
}

/// Arguments of `meridian bench messaging`.
#[derive(Debug, clap::Args)]
pub(crate) struct MessagingBenchArgs {
    /// Directory for benchmark data; each case uses a fresh subdirectory, removed afterwards.
    /// Default: a new directory under the system's temporary directory.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Cases to run.
    #[arg(long, value_delimiter = ',', default_value = "normal,fifo,timers")]
    pub(crate) cases: Vec<Case>,
    /// Durability mode of the storage.
    #[arg(long, default_value = "sync")]
    pub(crate) mode: Durability,
    /// Record message trace events (the broker's default; one more append per send, receive,
    /// ack and timer release).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) trace: bool,
    /// Worker threads of the runtime that runs producers, consumers and the broker.
    #[arg(long, default_value_t = 4)]
    pub(crate) runtime_threads: usize,
    /// Producer tasks.
    #[arg(long, default_value_t = 16)]
    pub(crate) producers: usize,
    /// Consumer tasks.
    #[arg(long, default_value_t = 16)]
    pub(crate) consumers: usize,
    /// Queues per topic.
    #[arg(long, default_value_t = 8)]
    pub(crate) queues: u32,
    /// Most messages per receive call.
    #[arg(long, default_value_t = 32)]
    pub(crate) receive_batch: usize,
    /// Invisible duration of received messages, ms (longer than any ack takes, so that a
    /// redelivery in the run would be a broker fault).
    #[arg(long, default_value_t = 300_000)]
    pub(crate) invisible_ms: u64,
    /// Long-polling timeout of receive calls, ms.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) long_polling_ms: u64,
    /// Longest wait after the producers stop for consumers to receive and ack the rest; what is
    /// still missing then is reported as lost.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) drain_seconds: f64,
    /// Throughput cases: measured seconds (after a warm-up of a tenth of that).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Throughput cases: body bytes (at least the 32-byte header the checks read).
    #[arg(long, default_value_t = 1024)]
    pub(crate) body_bytes: usize,
    /// Throughput cases: messages per send call.
    #[arg(long, default_value_t = 1)]
    pub(crate) send_batch: usize,
    /// Throughput cases: cap on the total send rate, messages/s (0: as fast as producers go).
    #[arg(long, default_value_t = 0)]
    pub(crate) rate: u64,
    /// FIFO case: message groups (each owned by one producer, which numbers its messages).
    #[arg(long, default_value_t = 1024)]
    pub(crate) fifo_groups: usize,
    /// Timers case: delay messages sent.
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) timers: u64,
    /// Timers case: the earliest delivery time, seconds after the first send.
    #[arg(long, default_value_t = 20.0)]
    pub(crate) timer_first_due_s: f64,
    /// Timers case: the latest delivery time, seconds after the first send.
    #[arg(long, default_value_t = 80.0)]
    pub(crate) timer_last_due_s: f64,
    /// Timers case: consumer tasks (default: --consumers). With 0 only the release stage runs
    /// and is checked (on the log).
    #[arg(long)]
    pub(crate) timer_consumers: Option<usize>,
    /// Most delay messages the broker releases in one append (`max_timer_release_batch`;
    /// default: the broker's).
    #[arg(long)]
    pub(crate) timer_release_batch: Option<usize>,
    /// Timers case: extra delay messages, sent first to another topic and due long after the
    /// run, that stay pending throughout: the measured timers then come due among this many
    /// others (a large pending population with a due rate the consumers can keep up with).
    #[arg(long, default_value_t = 0)]
    pub(crate) timer_background: u64,
    /// Timers case: messages per send call.
    #[arg(long, default_value_t = 512)]
    pub(crate) timer_send_batch: usize,
    /// Timers case: body bytes.
    #[arg(long, default_value_t = 128)]
    pub(crate) timer_body_bytes: usize,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Bytes of the header at the start of every benchmark body.
pub(crate) const HEADER_BYTES: usize = 32;
/// Most send calls one producer makes in a case, whatever the duration.
const MAX_SENDS_PER_PRODUCER: u64 = 10_000_000;
/// Most receive calls one consumer makes in a case, whatever the duration.
pub(crate) const MAX_RECEIVES_PER_CONSUMER: u64 = 100_000_000;
/// Consumer group of every case.
pub(crate) const GROUP: &str = "bench-group";

/// What the body of every benchmark message starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Producer index.
    pub(crate) producer: u32,
    /// Message group index (FIFO), else 0.
    pub(crate) group: u32,
    /// Dense per-producer sequence number.
    pub(crate) seq: u64,
    /// Nanoseconds since the case's epoch when the producer built the message.
    pub(crate) born_ns: u64,
    /// Dense per-message-group sequence number (FIFO), else 0.
    pub(crate) group_seq: u64,
}

impl Header {
    pub(crate) fn body(&self, body_bytes: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(body_bytes.max(HEADER_BYTES));
        body.extend_from_slice(&self.producer.to_le_bytes());
        body.extend_from_slice(&self.group.to_le_bytes());
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&self.born_ns.to_le_bytes());
        body.extend_from_slice(&self.group_seq.to_le_bytes());
        body.resize(body_bytes.max(HEADER_BYTES), 0x5a);
        body
    }

    pub(crate) fn decode(body: &[u8]) -> Option<Self> {
        let u32_at = |at: usize| Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
        Some(Header {
            producer: u32_at(0)?,
            group: u32_at(4)?,
            seq: u64_at(8)?,
            born_ns: u64_at(16)?,
            group_seq: u64_at(24)?,
        })
    }
}

/// What happened to each message: sent (1 ok, 2 failed), received and acked counts, per
/// producer and sequence number.
#[derive(Debug)]
pub(crate) struct Ledger {
    producers: Vec<Mutex<Tally>>,
}

#[derive(Debug, Default)]
struct Tally {
    sent: Vec<u8>,
    received: Vec<u8>,
    acked: Vec<u8>,
}

const SENT_OK: u8 = 1;
const SENT_FAILED: u8 = 2;

fn bump(counts: &mut Vec<u8>, seq: u64) {
    let index = seq as usize;
    if counts.len() <= index {
        counts.resize(index + 1, 0);
    }
    counts[index] = counts[index].saturating_add(1);
}

fn set(counts: &mut Vec<u8>, seq: u64, value: u8) {
    let index = seq as usize;
    if counts.len() <= index {
        counts.resize(index + 1, 0);
    }
    counts[index] = value;
}

/// The exactly-once check of one case.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Verdict {
    pub(crate) sent: u64,
    pub(crate) send_failures: u64,
    /// Sent and never received.
    pub(crate) lost: u64,
    /// Received but never acked.
    pub(crate) unacked: u64,
    /// Deliveries beyond the first.
    pub(crate) duplicates: u64,
    /// Successful acks beyond the first.
    pub(crate) double_acks: u64,
    /// Received though its send failed or was never made.
    pub(crate) phantoms: u64,
    pub(crate) receive_errors: u64,
    pub(crate) ack_errors: u64,
    /// Bodies without a readable header.
    pub(crate) malformed: u64,
    /// FIFO: deliveries that were not the next of their group.
    pub(crate) order_violations: u64,
    /// Whether per-group order was checked (FIFO).
    pub(crate) order_checked: bool,
    pub(crate) ok: bool,
}

impl Verdict {
    pub(crate) fn describe(&self) -> String {
        if self.ok {
            return format!(
                "CHECK OK: all {} sent messages received and acked exactly once{}",
                self.sent,
                if self.order_checked {
                    ", each in order within its message group"
                } else {
                    ""
                }
            );
        }
        format!(
            "!!! CHECK FAILED — COUNTS DO NOT ADD UP: sent {} (failed sends {}), lost {}, received \
             but unacked {}, duplicate deliveries {}, double acks {}, phantoms {}, FIFO order \
             violations {}, receive errors {}, ack errors {}, malformed {} !!!",
            self.sent,
            self.send_failures,
            self.lost,
            self.unacked,
            self.duplicates,
            self.double_acks,
            self.phantoms,
            self.order_violations,
            self.receive_errors,
            self.ack_errors,
            self.malformed
        )
    }
}

impl Ledger {
    pub(crate) fn new(producers: usize) -> Self {
        Ledger {
            producers: (0..producers).map(|_| Mutex::default()).collect(),
        }
    }

    fn with(&self, producer: u32, change: impl FnOnce(&mut Tally)) -> bool {
        let Some(tally) = self.producers.get(producer as usize) else {
            return false;
        };
        // A poisoned lock only means another task panicked; its counts are still usable.
        let mut tally = tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut tally);
        true
    }

    pub(crate) fn sent(&self, producer: u32, seqs: impl Iterator<Item = u64>, ok: bool) {
        self.with(producer, |tally| {
            for seq in seqs {
                set(&mut tally.sent, seq, if ok { SENT_OK } else { SENT_FAILED });
            }
        });
    }

    /// False when the producer index is out of range (a malformed body).
    pub(crate) fn received(&self, header: &Header) -> bool {
        self.with(header.producer, |tally| {
            bump(&mut tally.received, header.seq)
        })
    }

    pub(crate) fn acked(&self, header: &Header) {
        self.with(header.producer, |tally| bump(&mut tally.acked, header.seq));
    }

    /// Compares sent, received and acked message by message.
    pub(crate) fn verdict(&self, errors: &ErrorCounts, order_violations: Option<u64>) -> Verdict {
        let mut verdict = Verdict {
            receive_errors: errors.receive.load(Ordering::Relaxed),
            ack_errors: errors.ack.load(Ordering::Relaxed),
            malformed: errors.malformed.load(Ordering::Relaxed),
            order_violations: order_violations.unwrap_or(0),
            order_checked: order_violations.is_some(),
            ..Verdict::default()
        };
        for tally in &self.producers {
            let tally = tally
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let len = tally
                .sent
                .len()
                .max(tally.received.len())
                .max(tally.acked.len());
            for index in 0..len {
                let sent = tally.sent.get(index).copied().unwrap_or(0);
                let received = u64::from(tally.received.get(index).copied().unwrap_or(0));
                let acked = u64::from(tally.acked.get(index).copied().unwrap_or(0));
                match sent {
                    SENT_OK => verdict.sent += 1,
                    SENT_FAILED => verdict.send_failures += 1,
                    _ => {}
                }
                if sent != SENT_OK && received > 0 {
                    verdict.phantoms += 1;
                }
                if sent == SENT_OK && received == 0 {
                    verdict.lost += 1;
                }
                if received > 0 && acked == 0 {
                    verdict.unacked += 1;
                }
                verdict.duplicates += received.saturating_sub(1);
                verdict.double_acks += acked.saturating_sub(1);
            }
        }
        verdict.ok = verdict.send_failures == 0
            && verdict.lost == 0
            && verdict.unacked == 0
            && verdict.duplicates == 0
            && verdict.double_acks == 0
            && verdict.phantoms == 0
            && verdict.receive_errors == 0
            && verdict.ack_errors == 0
            && verdict.malformed == 0
            && verdict.order_violations == 0;
        verdict
    }
}

/// Errors seen by producers and consumers (the first of each kind is logged).
#[derive(Debug, Default)]
pub(crate) struct ErrorCounts {
    pub(crate) receive: AtomicU64,
    pub(crate) ack: AtomicU64,
    pub(crate) malformed: AtomicU64,
}

/// Latency percentiles of one operation.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
}

impl Latency {
    pub(crate) fn of(histogram: &hdrhistogram::Histogram<u64>) -> Self {
        let (p50_us, p99_us, p999_us) = super::percentiles_us(histogram);
        Latency {
            count: histogram.len(),
            p50_us,
            p99_us,
            p999_us,
            max_us: histogram.max() as f64 / 1000.0,
        }
    }

    pub(crate) fn row(&self, name: &str) -> String {
        format!(
            "  {name:<24} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>10}",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.count
        )
    }
}

pub(crate) fn latency_header() -> String {
    format!(
        "  {:<24} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "latency", "p50 us", "p99 us", "p99.9 us", "max us", "samples"
    )
}

/// A storage and broker in a scratch directory, with the broker's background loop running.
pub(crate) struct Cell {
    pub(crate) broker: Arc<Broker>,
    dir: PathBuf,
    shutdown: watch::Sender<bool>,
    background: tokio::task::JoinHandle<()>,
}

impl Cell {
    /// Opens a fresh cell in `root/name`; call inside the runtime (it spawns the loop).
    pub(crate) fn open(root: &Path, name: &str, args: &MessagingBenchArgs) -> anyhow::Result<Self> {
        let dir = root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        let mut config = StorageConfig::new(&dir, "bench");
        config.durability = args.mode;
        let storage = Arc::new(
            Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500))))
                .context("opening the storage")?,
        );
        let mut broker_config = BrokerConfig {
            trace_enabled: args.trace,
            ..BrokerConfig::default()
        };
        if let Some(batch) = args.timer_release_batch {
            broker_config.max_timer_release_batch = batch.max(1);
        }
        let broker = Broker::open(storage, broker_config, Arc::new(SystemClock))
            .context("opening the broker")?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let background = tokio::spawn(Arc::clone(&broker).run(shutdown_rx));
        Ok(Cell {
            broker,
            dir,
            shutdown,
            background,
        })
    }

    /// Stops the background loop, closes the storage and removes the directory.
    pub(crate) async fn close(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.background.await.context("broker background loop")?;
        let storage = Arc::clone(self.broker.storage());
        drop(self.broker);
        if let Ok(storage) = Arc::try_unwrap(storage) {
            storage.close().context("closing the storage")?;
        }
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        Ok(())
    }
}

/// Figures of one throughput case.
#[derive(Debug, Clone, serde::Serialize)]
struct ThroughputFigures {
    case: String,
    mode: String,
    trace: bool,
    producers: usize,
    consumers: usize,
    queues: u32,
    fifo_groups: usize,
    body_bytes: usize,
    measured_s: f64,
    sends_per_s: f64,
    acks_per_s: f64,
    /// Sent but not yet acked when the producers stopped.
    backlog_at_stop: u64,
    /// Seconds from the producers' stop until every message was acked (or the drain ran out).
    drain_s: f64,
    send: Latency,
    end_to_end: Latency,
    ack: Latency,
    verdict: Verdict,
}

/// State shared by the tasks of a throughput case.
struct Shared {
    broker: Arc<Broker>,
    topic: String,
    fifo: bool,
    epoch: Instant,
    measure_from: Instant,
    deadline: Instant,
    drain_deadline: Instant,
    ledger: Ledger,
    errors: ErrorCounts,
    sent_ok: AtomicU64,
    acked: AtomicU64,
    sent_in_window: AtomicU64,
    acked_in_window: AtomicU64,
    producers_done: AtomicBool,
    /// FIFO: the next expected sequence number of each message group.
    next_in_group: Vec<Mutex<u64>>,
    order_violations: AtomicU64,
}

impl Shared {
    fn since_epoch_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn in_window(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.deadline
    }

    fn finished(&self) -> bool {
        (self.producers_done.load(Ordering::Acquire)
            && self.acked.load(Ordering::Acquire) >= self.sent_ok.load(Ordering::Acquire))
            || Instant::now() >= self.drain_deadline
    }
}

pub(crate) fn run(args: MessagingBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.producers > 0 && args.consumers > 0,
        "at least one producer and one consumer are needed"
    );
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            std::env::temp_dir().join(format!("meridian-bench-messaging-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.runtime_threads.max(1))
        .enable_all()
        .build()
        .context("benchmark runtime")?;
    let mut throughput = Vec::new();
    let mut timers = None;
    let mut all_ok = true;
    for &case in &args.cases {
        match case {
            Case::Normal | Case::Fifo => {
                let figures = runtime.block_on(run_throughput(&args, &root, case == Case::Fifo))?;
                all_ok &= figures.verdict.ok;
                if !args.json {
                    print_throughput(&figures);
                }
                throughput.push(figures);
            }
            Case::Timers => {
                let figures = runtime.block_on(messaging_timers::run(&args, &root))?;
                all_ok &= figures.verdict.ok;
                if !args.json {
                    messaging_timers::print(&figures);
                }
                timers = Some(figures);
            }
        }
    }
    drop(runtime);
    if args.dir.is_none() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    if args.json {
        let document = serde_json::json!({ "throughput": throughput, "timers": timers });
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    anyhow::ensure!(
        all_ok,
        "the exactly-once check failed in at least one case (see above); its figures are void"
    );
    Ok(())
}

async fn run_throughput(
    args: &MessagingBenchArgs,
    root: &Path,
    fifo: bool,
) -> anyhow::Result<ThroughputFigures> {
    anyhow::ensure!(
        !fifo || args.fifo_groups >= args.producers,
        "--fifo-groups must be at least --producers (each group is owned by one producer)"
    );
    let case = if fifo { "fifo" } else { "normal" };
    let cell = Cell::open(root, case, args)?;
    let topic = format!("bench-{case}");
    let topic_type = if fifo {
        TopicMessageType::Fifo
    } else {
        TopicMessageType::Normal
    };
    cell.broker.create_topic(&topic, args.queues, topic_type)?;
    cell.broker.create_group(GroupConfig::new(GROUP, fifo))?;
    let epoch = Instant::now();
    let measure_from = epoch + Duration::from_secs_f64(args.seconds / 10.0);
    let deadline = measure_from + Duration::from_secs_f64(args.seconds);
    let shared = Arc::new(Shared {
        broker: Arc::clone(&cell.broker),
        topic,
        fifo,
        epoch,
        measure_from,
        deadline,
        drain_deadline: deadline + Duration::from_secs_f64(args.drain_seconds),
        ledger: Ledger::new(args.producers),
        errors: ErrorCounts::default(),
        sent_ok: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        sent_in_window: AtomicU64::new(0),
        acked_in_window: AtomicU64::new(0),
        producers_done: AtomicBool::new(false),
        next_in_group: (0..if fifo { args.fifo_groups } else { 0 })
            .map(|_| Mutex::new(0))
            .collect(),
        order_violations: AtomicU64::new(0),
    });
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let shared = Arc::clone(&shared);
        let request = receive_request(args, &shared.topic);
        consumers.push(tokio::spawn(consume(shared, request)));
    }
    let mut producers = Vec::new();
    for producer in 0..args.producers {
        let shared = Arc::clone(&shared);
        let plan = ProducerPlan {
            producer,
            producers: args.producers,
            groups: if fifo { args.fifo_groups } else { 0 },
            body_bytes: args.body_bytes,
            send_batch: args.send_batch.max(1),
            rate_per_producer: args.rate as f64 / args.producers as f64,
        };
        producers.push(tokio::spawn(produce(shared, plan)));
    }
    let mut send = super::new_histogram()?;
    for task in producers {
        send.add(&task.await??)?;
    }
    let stopped = Instant::now();
    shared.producers_done.store(true, Ordering::Release);
    let backlog_at_stop = shared
        .sent_ok
        .load(Ordering::Acquire)
        .saturating_sub(shared.acked.load(Ordering::Acquire));
    let mut end_to_end = super::new_histogram()?;
    let mut ack = super::new_histogram()?;
    for task in consumers {
        let (e2e, acks) = task.await??;
        end_to_end.add(&e2e)?;
        ack.add(&acks)?;
    }
    let drain_s = stopped.elapsed().as_secs_f64();
    let verdict = shared.ledger.verdict(
        &shared.errors,
        fifo.then(|| shared.order_violations.load(Ordering::Relaxed)),
    );
    let measured_s = (deadline - measure_from).as_secs_f64();
    let figures = ThroughputFigures {
        case: case.to_string(),
        mode: args.mode.to_string(),
        trace: args.trace,
        producers: args.producers,
        consumers: args.consumers,
        queues: args.queues,
        fifo_groups: if fifo { args.fifo_groups } else { 0 },
        body_bytes: args.body_bytes.max(HEADER_BYTES),
        measured_s,
        sends_per_s: shared.sent_in_window.load(Ordering::Relaxed) as f64 / measured_s,
        acks_per_s: shared.acked_in_window.load(Ordering::Relaxed) as f64 / measured_s,
        backlog_at_stop,
        drain_s,
        send: Latency::of(&send),
        end_to_end: Latency::of(&end_to_end),
        ack: Latency::of(&ack),
        verdict,
    };
    drop(shared);
    cell.close().await?;
    Ok(figures)
}

pub(crate) fn receive_request(args: &MessagingBenchArgs, topic: &str) -> ReceiveRequest {
    ReceiveRequest {
        group: GROUP.to_string(),
        topic: topic.to_string(),
        queue_id: None,
        filter: Filter::all(),
        max_messages: args.receive_batch,
        invisible_duration_ms: args.invisible_ms,
        long_polling_ms: args.long_polling_ms,
    }
}

struct ProducerPlan {
    producer: usize,
    producers: usize,
    /// FIFO message groups in all (0 for NORMAL); this producer owns those ≡ `producer` modulo
    /// `producers`.
    groups: usize,
    body_bytes: usize,
    send_batch: usize,
    rate_per_producer: f64,
}

/// Sends until the deadline; returns the send latency histogram of the measured window.
async fn produce(
    shared: Arc<Shared>,
    plan: ProducerPlan,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut histogram = super::new_histogram()?;
    let own_groups: Vec<usize> = (plan.producer..plan.groups)
        .step_by(plan.producers)
        .collect();
    let mut group_seqs = vec![0u64; own_groups.len()];
    let mut next_group = 0;
    let mut seq = 0u64;
    let interval = (plan.rate_per_producer > 0.0)
        .then(|| Duration::from_secs_f64(plan.send_batch as f64 / plan.rate_per_producer));
    let mut next_send = Instant::now();
    let producer = plan.producer as u32;
    for _ in 0..MAX_SENDS_PER_PRODUCER {
        if let Some(interval) = interval {
            tokio::time::sleep_until(next_send.into()).await;
            next_send += interval;
        }
        let begin = Instant::now();
        if begin >= shared.deadline {
            break;
        }
        let born_ns = shared.since_epoch_ns(begin);
        let born_ms = wall_ms();
        let first_seq = seq;
        let mut batch = Vec::with_capacity(plan.send_batch);
        for _ in 0..plan.send_batch {
            let mut header = Header {
                producer,
                group: 0,
                seq,
                born_ns,
                group_seq: 0,
            };
            let mut message = OutgoingMessage {
                message_id: format!("m-{producer}-{seq}"),
                topic: shared.topic.clone(),
                born_timestamp_ms: born_ms,
                ..OutgoingMessage::default()
            };
            if shared.fifo {
                let slot = next_group % own_groups.len();
                next_group += 1;
                header.group = own_groups[slot] as u32;
                header.group_seq = group_seqs[slot];
                group_seqs[slot] += 1;
                message.message_type = MessageType::Fifo;
                message.message_group = format!("g{}", header.group);
            }
            message.body = header.body(plan.body_bytes);
            batch.push(message);
            seq += 1;
        }
        let count = batch.len() as u64;
        let result = shared.broker.send(batch).await;
        let end = Instant::now();
        let ok = result.is_ok();
        shared.ledger.sent(producer, first_seq..seq, ok);
        match result {
            Ok(_) => {
                shared.sent_ok.fetch_add(count, Ordering::AcqRel);
                if shared.in_window(begin) {
                    histogram.saturating_record((end - begin).as_nanos() as u64);
                }
                if shared.in_window(end) {
                    shared.sent_in_window.fetch_add(count, Ordering::Relaxed);
                }
            }
            Err(error) => {
                // A failed send leaves a gap in its FIFO groups: those are then reported as order
                // violations too, which is right (the run is void anyway).
                tracing::warn!(%error, producer, "send failed");
            }
        }
    }
    Ok(histogram)
}

/// Receives and acks until every sent message is acked or the drain time is over; returns the
/// end-to-end and ack latency histograms of messages born in the measured window.
async fn consume(
    shared: Arc<Shared>,
    request: ReceiveRequest,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>)> {
    let mut end_to_end = super::new_histogram()?;
    let mut ack = super::new_histogram()?;
    for _ in 0..MAX_RECEIVES_PER_CONSUMER {
        if shared.finished() {
            break;
        }
        let messages = match shared.broker.receive(&request).await {
            Ok(messages) => messages,
            Err(error) => {
                if shared.errors.receive.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(%error, "receive failed");
                }
                // Do not spin on a failing broker.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let received_at = Instant::now();
        for message in messages {
            let Some(header) = accept(&shared, &message) else {
                continue;
            };
            let born = shared.epoch + Duration::from_nanos(header.born_ns);
            let measured = shared.in_window(born);
            if measured {
                end_to_end.saturating_record(shared.since_epoch_ns(received_at) - header.born_ns);
            }
            let begin = Instant::now();
            match shared
                .broker
                .ack(&request.group, &request.topic, &message.receipt_handle)
                .await
            {
                Ok(()) => {
                    let end = Instant::now();
                    shared.ledger.acked(&header);
                    shared.acked.fetch_add(1, Ordering::AcqRel);
                    if shared.in_window(end) {
                        shared.acked_in_window.fetch_add(1, Ordering::Relaxed);
                    }
                    if measured {
                        ack.saturating_record((end - begin).as_nanos() as u64);
                    }
                }
                Err(error) => {
                    if shared.errors.ack.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(%error, "ack failed");
                    }
                }
            }
        }
    }
    Ok((end_to_end, ack))
}

/// Books a received message in the ledger and, for FIFO, checks it is its group's next.
fn accept(shared: &Shared, message: &ReceivedMessage) -> Option<Header> {
    let header = Header::decode(&message.record.body);
    let Some(header) = header.filter(|header| shared.ledger.received(header)) else {
        shared.errors.malformed.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    if shared.fifo {
        match shared.next_in_group.get(header.group as usize) {
            Some(next) => {
                let mut next = next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if header.group_seq != *next {
                    shared.order_violations.fetch_add(1, Ordering::Relaxed);
                }
                *next = (*next).max(header.group_seq + 1);
            }
            None => {
                shared.errors.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Some(header)
}

/// Wall-clock milliseconds since the UNIX epoch (the clock delivery times are given in).
pub(crate) fn wall_ms() -> u64 {
    wall_us() / 1000
}

/// Wall-clock microseconds since the UNIX epoch.
pub(crate) fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

fn print_throughput(figures: &ThroughputFigures) {
    println!(
        "{} topic: {} producers, {} consumers, {} queues{}, {} B bodies, {} mode, trace {}, {:.1} s measured",
        figures.case.to_uppercase(),
        figures.producers,
        figures.consumers,
        figures.queues,
        if figures.fifo_groups > 0 {
            format!(", {} message groups", figures.fifo_groups)
        } else {
            String::new()
        },
        figures.body_bytes,
        figures.mode,
        if figures.trace { "on" } else { "off" },
        figures.measured_s
    );
    println!(
        "  send {:.0} msg/s, receive+ack {:.0} msg/s; backlog when producers stopped {}, drained in {:.1} s",
        figures.sends_per_s, figures.acks_per_s, figures.backlog_at_stop, figures.drain_s
    );
    println!("{}", latency_header());
    println!("{}", figures.send.row("send"));
    println!("{}", figures.end_to_end.row("end-to-end"));
    println!("{}", figures.ack.row("ack"));
    println!("  {}", figures.verdict.describe());
    println!();
}
