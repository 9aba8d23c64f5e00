//! The `timers` case of `meridian bench messaging`: delay-timer lateness with many pending
//! timers (issue 3's target: p99 no later than 100 ms after the delivery time with 1,000,000
//! pending).
//!
//! Producers send the delay messages in batches as fast as they can, with delivery times spread
//! uniformly (by a hash of the message index, so that timers are inserted in random order) over
//! a window that opens after the load is expected to finish. Consumers receive and ack them.
//! Two latenesses are measured per message, so that the slower stage shows:
//! - release lateness: the released copy's store time (the log's clock, 1 ms resolution) minus
//!   the delivery time, i.e. how late the broker's timer loop appended it to its topic;
//! - receive lateness: the wall clock when a consumer's receive returned it minus the delivery
//!   time (1 µs resolution), which adds indexing, long-poll wake-up and consumer queueing.
//!
//! With `--timer-background N`, N more delay messages go first to a second topic, due an hour
//! after the run: they stay pending for the whole run, so the measured timers fire among N + timers
//! pending ones while their own due rate stays within what the consumers can take.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_cell::messaging::{Broker, GroupConfig, OutgoingMessage, TopicMessageType};
use meridian_cell::storage::MessageType;

use super::messaging::{
    Cell, ErrorCounts, GROUP, Header, Latency, Ledger, MAX_RECEIVES_PER_CONSUMER,
    MessagingBenchArgs, Verdict, latency_header, receive_request, wall_ms, wall_us,
};

/// How often the monitor samples the number of pending timers.
const MONITOR_INTERVAL_MS: u64 = 10;
/// Most monitor samples, whatever the duration (10 ms apart: more than a day).
const MAX_MONITOR_SAMPLES: u64 = 10_000_000;
/// The topic of the background timers.
const BACKGROUND_TOPIC: &str = "bench-delay-background";
/// How long after the run's end the background timers come due.
const BACKGROUND_DUE_AFTER_RUN_MS: u64 = 3_600_000;
/// Marks "not measured yet" in the atomics below.
const UNSET: u64 = u64::MAX;

/// Figures of the timers case.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TimerFigures {
    mode: String,
    trace: bool,
    timers: u64,
    /// Delay messages pending throughout, due after the run.
    background_timers: u64,
    producers: usize,
    consumers: usize,
    queues: u32,
    release_batch: usize,
    first_due_s: f64,
    last_due_s: f64,
    /// Average release rate the window asks for, timers/s.
    required_release_per_s: f64,
    /// Seconds the producers took to send every delay message.
    load_s: f64,
    load_per_s: f64,
    /// Pending timers at the first monitor sample at or after the earliest delivery time.
    pending_at_first_due: u64,
    /// Pending timers when the first consumer receive returned a message.
    pending_at_first_receive: u64,
    peak_pending: u64,
    /// Resident set size when pending timers peaked, MiB.
    rss_at_peak_mib: f64,
    /// The process's peak resident set size (VmHWM) at the end, MiB.
    rss_high_water_mib: f64,
    /// Whether consumers ran (with none, only the release stage is measured and checked).
    consumers_ran: bool,
    /// Release lateness of the messages consumers received.
    release_lateness_received: Latency,
    /// Release lateness of every released message, from a scan of the topic after the run.
    release_lateness_all: Latency,
    released: ReleaseCheck,
    receive_lateness: Latency,
    /// Messages a consumer received before their delivery time (must be 0).
    early: u64,
    ack: Latency,
    pub(crate) verdict: Verdict,
}

struct Shared {
    broker: Arc<Broker>,
    topic: String,
    ledger: Ledger,
    errors: ErrorCounts,
    sent_ok: AtomicU64,
    acked: AtomicU64,
    loading_done: AtomicBool,
    drain_deadline: Instant,
    first_due_ms: u64,
    pending_at_first_receive: AtomicU64,
    early: AtomicU64,
    consumers: usize,
    /// Background timers stored, which stay pending.
    background_sent: AtomicU64,
}

impl Shared {
    fn finished(&self) -> bool {
        let done = if self.consumers > 0 {
            self.acked.load(Ordering::Acquire) >= self.sent_ok.load(Ordering::Acquire)
        } else {
            self.broker.pending_timers() as u64 <= self.background_sent.load(Ordering::Acquire)
        };
        (self.loading_done.load(Ordering::Acquire) && done) || Instant::now() >= self.drain_deadline
    }
}

/// A well-mixed 64-bit hash (splitmix64's finaliser), to spread delivery times.
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

pub(crate) async fn run(args: &MessagingBenchArgs, root: &Path) -> anyhow::Result<TimerFigures> {
    anyhow::ensure!(
        args.timer_last_due_s > args.timer_first_due_s && args.timer_first_due_s >= 0.0,
        "--timer-last-due-s must be after --timer-first-due-s"
    );
    let cell = Cell::open(root, "timers", args)?;
    let topic = "bench-delay".to_string();
    cell.broker
        .create_topic(&topic, args.queues, TopicMessageType::Delay)?;
    cell.broker.create_group(GroupConfig::new(GROUP, false))?;
    let background_sent = if args.timer_background > 0 {
        let far_due_ms = wall_ms()
            + ((args.timer_last_due_s + args.drain_seconds) * 1000.0) as u64
            + BACKGROUND_DUE_AFTER_RUN_MS;
        send_background(&cell.broker, args, far_due_ms).await?
    } else {
        0
    };
    let started = Instant::now();
    let start_ms = wall_ms();
    let first_due_ms = start_ms + (args.timer_first_due_s * 1000.0) as u64;
    let window_ms = ((args.timer_last_due_s - args.timer_first_due_s) * 1000.0) as u64;
    let shared = Arc::new(Shared {
        broker: Arc::clone(&cell.broker),
        topic: topic.clone(),
        ledger: Ledger::new(args.producers),
        errors: ErrorCounts::default(),
        sent_ok: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        loading_done: AtomicBool::new(false),
        drain_deadline: started
            + Duration::from_secs_f64(args.timer_last_due_s + args.drain_seconds),
        first_due_ms,
        pending_at_first_receive: AtomicU64::new(UNSET),
        early: AtomicU64::new(0),
        consumers: args.timer_consumers.unwrap_or(args.consumers),
        background_sent: AtomicU64::new(background_sent),
    });
    let monitor = tokio::spawn(monitor(Arc::clone(&shared)));
    let consumers_expected = args.timer_consumers.unwrap_or(args.consumers);
    let mut consumers = Vec::new();
    for _ in 0..args.timer_consumers.unwrap_or(args.consumers) {
        let request = receive_request(args, &topic);
        consumers.push(tokio::spawn(consume(Arc::clone(&shared), request)));
    }
    let mut producers = Vec::new();
    for producer in 0..args.producers {
        let shared = Arc::clone(&shared);
        let count = args.timers / args.producers as u64
            + u64::from((producer as u64) < args.timers % args.producers as u64);
        let plan = Plan {
            producer: producer as u32,
            producers: args.producers as u64,
            count,
            window_ms: window_ms.max(1),
            send_batch: args.timer_send_batch.max(1),
            body_bytes: args.timer_body_bytes,
        };
        producers.push(tokio::spawn(produce(shared, plan)));
    }
    for task in producers {
        task.await??;
    }
    let load_s = started.elapsed().as_secs_f64();
    shared.loading_done.store(true, Ordering::Release);
    if wall_ms() > first_due_ms {
        tracing::warn!(
            load_s,
            "loading the delay messages took past the first delivery time; pending counts are \
             below the target number"
        );
    }
    let mut release = super::new_histogram()?;
    let mut receive = super::new_histogram()?;
    let mut ack = super::new_histogram()?;
    for task in consumers {
        let histograms = task.await??;
        release.add(&histograms.release)?;
        receive.add(&histograms.receive)?;
        ack.add(&histograms.ack)?;
    }
    let sampled = monitor.await?;
    // The index runs slightly behind the last release; give it a moment before the scan.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (released, release_all) = scan_releases(&cell.broker, &topic, args)?;
    let consumed = consumers_expected > 0;
    let verdict = if consumed {
        shared.ledger.verdict(&shared.errors, None)
    } else {
        Verdict {
            sent: shared.sent_ok.load(Ordering::Relaxed),
            ok: true,
            ..Verdict::default()
        }
    };
    let early = shared.early.load(Ordering::Relaxed);
    let figures = TimerFigures {
        mode: args.mode.to_string(),
        trace: args.trace,
        timers: args.timers,
        background_timers: shared.background_sent.load(Ordering::Relaxed),
        producers: args.producers,
        consumers: consumers_expected,
        queues: args.queues,
        release_batch: cell.broker.config().max_timer_release_batch,
        first_due_s: args.timer_first_due_s,
        last_due_s: args.timer_last_due_s,
        required_release_per_s: args.timers as f64 * 1000.0 / window_ms.max(1) as f64,
        load_s,
        load_per_s: shared.sent_ok.load(Ordering::Relaxed) as f64 / load_s,
        pending_at_first_due: sampled.pending_at_first_due,
        pending_at_first_receive: shared.pending_at_first_receive.load(Ordering::Relaxed),
        peak_pending: sampled.peak_pending,
        rss_at_peak_mib: sampled.rss_at_peak_kib as f64 / 1024.0,
        rss_high_water_mib: proc_status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0,
        consumers_ran: consumed,
        release_lateness_received: Latency::of(&release),
        release_lateness_all: Latency::of(&release_all),
        released: released.clone(),
        receive_lateness: Latency::of(&receive),
        early,
        ack: Latency::of(&ack),
        verdict: Verdict {
            ok: verdict.ok && early == 0 && released.ok,
            ..verdict
        },
    };
    drop(shared);
    cell.close().await?;
    Ok(figures)
}

/// Stores the background timers (see the module comment), in batches, before the measured
/// ones: their own send rate is not measured.
async fn send_background(
    broker: &Broker,
    args: &MessagingBenchArgs,
    due_ms: u64,
) -> anyhow::Result<u64> {
    broker.create_topic(BACKGROUND_TOPIC, args.queues, TopicMessageType::Delay)?;
    let batch_size = args.timer_send_batch.max(1) as u64;
    let mut index = 0u64;
    // Each round stores one batch; `timer_background` bounds the rounds.
    while index < args.timer_background {
        let end = (index + batch_size).min(args.timer_background);
        let batch = (index..end)
            .map(|seq| OutgoingMessage {
                message_id: format!("bg-{seq}"),
                topic: BACKGROUND_TOPIC.to_string(),
                message_type: MessageType::Delay,
                body: vec![0; args.timer_body_bytes],
                born_timestamp_ms: wall_ms(),
                delivery_timestamp_ms: due_ms + seq % 1000,
                ..OutgoingMessage::default()
            })
            .collect();
        broker.send(batch).await?;
        index = end;
    }
    Ok(index)
}

struct Plan {
    producer: u32,
    producers: u64,
    count: u64,
    window_ms: u64,
    send_batch: usize,
    body_bytes: usize,
}

/// Sends this producer's share of the delay messages, in batches.
async fn produce(shared: Arc<Shared>, plan: Plan) -> anyhow::Result<()> {
    let mut seq = 0u64;
    // Each round sends one batch; `count` bounds the rounds.
    while seq < plan.count {
        let first_seq = seq;
        let born_ms = wall_ms();
        let mut batch = Vec::with_capacity(plan.send_batch);
        while seq < plan.count && batch.len() < plan.send_batch {
            let index = seq * plan.producers + u64::from(plan.producer);
            let header = Header {
                producer: plan.producer,
                group: 0,
                seq,
                born_ns: 0,
                group_seq: 0,
            };
            batch.push(OutgoingMessage {
                message_id: format!("d-{index}"),
                topic: shared.topic.clone(),
                message_type: MessageType::Delay,
                body: header.body(plan.body_bytes),
                born_timestamp_ms: born_ms,
                delivery_timestamp_ms: shared.first_due_ms + mix(index) % plan.window_ms,
                ..OutgoingMessage::default()
            });
            seq += 1;
        }
        let count = batch.len() as u64;
        let result = shared.broker.send(batch).await;
        shared
            .ledger
            .sent(plan.producer, first_seq..seq, result.is_ok());
        match result {
            Ok(_) => {
                shared.sent_ok.fetch_add(count, Ordering::AcqRel);
            }
            Err(error) => tracing::warn!(%error, producer = plan.producer, "delay send failed"),
        }
    }
    Ok(())
}

struct ConsumerHistograms {
    release: hdrhistogram::Histogram<u64>,
    receive: hdrhistogram::Histogram<u64>,
    ack: hdrhistogram::Histogram<u64>,
}

async fn consume(
    shared: Arc<Shared>,
    request: meridian_cell::messaging::ReceiveRequest,
) -> anyhow::Result<ConsumerHistograms> {
    let mut histograms = ConsumerHistograms {
        release: super::new_histogram()?,
        receive: super::new_histogram()?,
        ack: super::new_histogram()?,
    };
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
        let received_us = wall_us();
        if !messages.is_empty() && shared.pending_at_first_receive.load(Ordering::Relaxed) == UNSET
        {
            let pending = shared.broker.pending_timers() as u64;
            let _ = shared.pending_at_first_receive.compare_exchange(
                UNSET,
                pending,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        for message in messages {
            let header = Header::decode(&message.record.body);
            let Some(header) = header.filter(|header| shared.ledger.received(header)) else {
                shared.errors.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let due_ms = message.record.delivery_timestamp_ms;
            let due_us = due_ms.saturating_mul(1000);
            if received_us < due_us {
                shared.early.fetch_add(1, Ordering::Relaxed);
            }
            histograms
                .receive
                .saturating_record(received_us.saturating_sub(due_us) * 1000);
            histograms.release.saturating_record(
                message.record.store_timestamp_ms.saturating_sub(due_ms) * 1_000_000,
            );
            let begin = Instant::now();
            match shared
                .broker
                .ack(&request.group, &request.topic, &message.receipt_handle)
                .await
            {
                Ok(()) => {
                    histograms
                        .ack
                        .saturating_record(begin.elapsed().as_nanos() as u64);
                    shared.ledger.acked(&header);
                    shared.acked.fetch_add(1, Ordering::AcqRel);
                }
                Err(error) => {
                    if shared.errors.ack.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(%error, "ack failed");
                    }
                }
            }
        }
    }
    Ok(histograms)
}

/// The release stage checked on the log itself: every delay message must appear in its topic
/// exactly once, never before its delivery time.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct ReleaseCheck {
    released: u64,
    not_released: u64,
    duplicates: u64,
    early: u64,
    ok: bool,
}

/// Reads every released copy back from the topic: release lateness (store time − delivery
/// time) of all of them, and the exactly-once check of the release stage.
fn scan_releases(
    broker: &Broker,
    topic: &str,
    args: &MessagingBenchArgs,
) -> anyhow::Result<(ReleaseCheck, hdrhistogram::Histogram<u64>)> {
    let producers = args.producers as u64;
    let mut seen = vec![0u8; args.timers as usize];
    let mut check = ReleaseCheck::default();
    let mut lateness = super::new_histogram()?;
    let storage = broker.storage();
    for queue_id in 0..args.queues {
        let Some(range) = storage.queue_range(topic, queue_id) else {
            continue;
        };
        let mut at = range.earliest;
        // Every read moves `at` forward by at least one record; the range bounds the reads.
        while at < range.next {
            let records = storage.read_queue(topic, queue_id, at, SCAN_BATCH_RECORDS, 8 << 20)?;
            let Some(last) = records.last() else { break };
            at = last.queue_offset + 1;
            for record in &records {
                let Some(header) = Header::decode(&record.body) else {
                    continue;
                };
                let index = header.seq * producers + u64::from(header.producer);
                if let Some(count) = seen.get_mut(index as usize) {
                    *count = count.saturating_add(1);
                }
                if record.store_timestamp_ms < record.delivery_timestamp_ms {
                    check.early += 1;
                }
                lateness.saturating_record(
                    record
                        .store_timestamp_ms
                        .saturating_sub(record.delivery_timestamp_ms)
                        * 1_000_000,
                );
            }
        }
    }
    for count in seen {
        match count {
            0 => check.not_released += 1,
            1 => check.released += 1,
            more => {
                check.released += 1;
                check.duplicates += u64::from(more - 1);
            }
        }
    }
    check.ok = check.not_released == 0 && check.duplicates == 0 && check.early == 0;
    Ok((check, lateness))
}

/// Records per read while scanning the released messages.
const SCAN_BATCH_RECORDS: usize = 1024;

struct Sampled {
    pending_at_first_due: u64,
    peak_pending: u64,
    rss_at_peak_kib: u64,
}

/// Samples the pending timers every few ms until the case is over.
async fn monitor(shared: Arc<Shared>) -> Sampled {
    let mut sampled = Sampled {
        pending_at_first_due: UNSET,
        peak_pending: 0,
        rss_at_peak_kib: 0,
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(MONITOR_INTERVAL_MS));
    for _ in 0..MAX_MONITOR_SAMPLES {
        ticker.tick().await;
        if shared.finished() {
            break;
        }
        let pending = shared.broker.pending_timers() as u64;
        if pending > sampled.peak_pending {
            sampled.peak_pending = pending;
            sampled.rss_at_peak_kib = proc_status_kib("VmRSS:").unwrap_or(0);
        }
        if sampled.pending_at_first_due == UNSET && wall_ms() >= shared.first_due_ms {
            sampled.pending_at_first_due = pending;
        }
    }
    sampled
}

/// A `kB` field of /proc/self/status (VmRSS, VmHWM).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

pub(crate) fn print(figures: &TimerFigures) {
    let shown = |value: u64| {
        if value == UNSET {
            "not seen".to_string()
        } else {
            value.to_string()
        }
    };
    println!(
        "DELAY TIMERS: {} delay messages due {:.0}..{:.0} s after the first send ({:.0} releases/s \
         needed), {} producers, {} consumers, {} queues, {} mode, trace {}, release batch {}",
        figures.timers,
        figures.first_due_s,
        figures.last_due_s,
        figures.required_release_per_s,
        figures.producers,
        figures.consumers,
        figures.queues,
        figures.mode,
        if figures.trace { "on" } else { "off" },
        figures.release_batch
    );
    if figures.background_timers > 0 {
        println!(
            "  plus {} background delay messages pending throughout (due an hour after the run)",
            figures.background_timers
        );
    }
    println!(
        "  loaded in {:.1} s ({:.0} msg/s); pending timers: peak {}, at the first delivery time {}, \
         at the first receive {}",
        figures.load_s,
        figures.load_per_s,
        figures.peak_pending,
        shown(figures.pending_at_first_due),
        shown(figures.pending_at_first_receive)
    );
    println!(
        "  RSS {:.0} MiB at peak pending, high-water {:.0} MiB",
        figures.rss_at_peak_mib, figures.rss_high_water_mib
    );
    println!("{}", latency_header());
    println!("{}", figures.release_lateness_all.row("release late, all"));
    if figures.consumers_ran {
        println!(
            "{}",
            figures
                .release_lateness_received
                .row("release late, received")
        );
        println!("{}", figures.receive_lateness.row("receive late"));
        println!("{}", figures.ack.row("ack"));
    }
    println!("  (release lateness: store time - delivery time, 1 ms resolution)");
    let released = &figures.released;
    if released.ok {
        println!(
            "  RELEASE CHECK OK: all {} delay messages released exactly once, none early",
            released.released
        );
    } else {
        println!(
            "  !!! RELEASE CHECK FAILED: released {}, not released {}, duplicate releases {}, \
             released early {} !!!",
            released.released, released.not_released, released.duplicates, released.early
        );
    }
    if figures.early > 0 {
        println!(
            "  !!! {} MESSAGES WERE RECEIVED BEFORE THEIR DELIVERY TIME !!!",
            figures.early
        );
    }
    let verdict = |p99_us: f64| if p99_us <= 100_000.0 { "met" } else { "MISSED" };
    println!(
        "  target p99 <= 100 ms late: release {}{}",
        verdict(figures.release_lateness_all.p99_us),
        if figures.consumers_ran {
            format!(", receive {}", verdict(figures.receive_lateness.p99_us))
        } else {
            String::new()
        }
    );
    if figures.consumers_ran {
        println!("  {}", figures.verdict.describe());
    } else {
        println!("  (no consumers: the receive stage was not run)");
    }
    println!();
}
