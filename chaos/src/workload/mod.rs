//! The workload generator: producers and consumers per region against a running fabric,
//! recording every send, acknowledgement, receive and ack in a [`Recorder`] for the checker.
//!
//! Producers send at a fixed rate (normal or FIFO messages over `message_groups` groups), each
//! message with an id unique to the run. A send that fails is retried with the **same id** on
//! the next region in the producer's preference list (its own region first, then the others in
//! the order given), after a pause growing by 100 ms per attempt, at most `max_send_attempts`
//! times: so a retried send is deduplicated by
//! the fabric, never stored twice, and a dead region costs the producer one
//! `request_timeout_ms` per message until it moves on. A producer stays on the region that last
//! acknowledged, so after a failover it keeps using the survivor. Consumers long-poll their own
//! region and ack what they receive (`ack_probability_percent` below 100 leaves some unacked to
//! exercise redelivery). Every loop is bounded by `max_messages` and `duration_ms`.

mod client;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ChaosError, Result};
use crate::history::{Event, Recorder};

use client::RegionClient;

/// A region of the fabric under test, as the workload reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionTarget {
    /// Region name.
    pub name: String,
    /// Its RocketMQ endpoint, `host:port`.
    pub endpoint: String,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Every region, in failover order for producers that lose theirs.
    pub regions: Vec<RegionTarget>,
    /// Regions that run producers (default: all).
    #[serde(default)]
    pub producer_regions: Vec<String>,
    /// Regions that run consumers (default: all).
    #[serde(default)]
    pub consumer_regions: Vec<String>,
    /// Topic (must exist, or the fabric must create it on first use).
    pub topic: String,
    /// Consumer group.
    pub consumer_group: String,
    /// FIFO message groups to spread messages over; 0 sends normal messages.
    #[serde(default)]
    pub message_groups: u32,
    /// Producers per producing region.
    #[serde(default = "one")]
    pub producers_per_region: u32,
    /// Messages per second per producer.
    pub rate_per_s: u32,
    /// Messages per producer at most.
    pub max_messages: u64,
    /// Producers stop after this long; consumers drain `drain_ms` longer.
    pub duration_ms: u64,
    /// How long consumers keep receiving after the producers stopped.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// Each RPC waits at most this long.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Attempts per message across regions before it counts as failed.
    #[serde(default = "default_max_send_attempts")]
    pub max_send_attempts: u32,
    /// Consumers' long poll.
    #[serde(default = "default_long_poll_ms")]
    pub long_poll_ms: u64,
    /// Invisible duration of received messages.
    #[serde(default = "default_invisible_ms")]
    pub invisible_ms: u64,
    /// Percentage of deliveries acknowledged (the rest reappear after `invisible_ms`).
    #[serde(default = "hundred")]
    pub ack_probability_percent: u8,
    /// Body size, bytes.
    #[serde(default = "default_body_bytes")]
    pub body_bytes: usize,
    /// Seed of the ack choices.
    #[serde(default)]
    pub seed: u64,
}

fn one() -> u32 {
    1
}
fn hundred() -> u8 {
    100
}
fn default_drain_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    2_000
}
fn default_max_send_attempts() -> u32 {
    6
}
fn default_long_poll_ms() -> u64 {
    1_000
}
fn default_invisible_ms() -> u64 {
    10_000
}
fn default_body_bytes() -> usize {
    256
}

/// Pause after a failed attempt grows by this much per attempt, ms.
const RETRY_PAUSE_MS_STEP: u64 = 100;
/// Longest pause between two attempts, ms.
const RETRY_PAUSE_MS_MAX: u64 = 1_000;

/// Most producers or consumers one workload may start.
pub const MAX_WORKERS: usize = 256;
/// Largest body a workload sends, bytes.
pub const MAX_BODY_BYTES: usize = 4 << 20;

impl WorkloadSpec {
    /// Checks the spec, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |field: &'static str, reason: String| Err(ChaosError::InvalidSpec { field, reason });
        if self.regions.is_empty() {
            return invalid("regions", "at least one region is needed".into());
        }
        for name in self.producer_regions.iter().chain(&self.consumer_regions) {
            if !self.regions.iter().any(|region| &region.name == name) {
                return invalid("producer_regions", format!("{name:?} is not in `regions`"));
            }
        }
        if self.topic.is_empty() || self.consumer_group.is_empty() {
            return invalid("topic", "topic and consumer_group must be named".into());
        }
        if self.rate_per_s == 0 {
            return invalid("rate_per_s", "must be positive".into());
        }
        if self.max_send_attempts == 0 {
            return invalid("max_send_attempts", "must be positive".into());
        }
        if self.body_bytes > MAX_BODY_BYTES {
            return invalid("body_bytes", format!("at most {MAX_BODY_BYTES}"));
        }
        if self.ack_probability_percent > 100 {
            return invalid("ack_probability_percent", "at most 100".into());
        }
        let workers =
            (self.producing().len() * self.producers_per_region as usize) + self.consuming().len();
        if workers > MAX_WORKERS {
            return invalid(
                "producers_per_region",
                format!("at most {MAX_WORKERS} workers"),
            );
        }
        Ok(())
    }

    fn producing(&self) -> Vec<&RegionTarget> {
        self.regions
            .iter()
            .filter(|region| {
                self.producer_regions.is_empty() || self.producer_regions.contains(&region.name)
            })
            .collect()
    }

    fn consuming(&self) -> Vec<&RegionTarget> {
        self.regions
            .iter()
            .filter(|region| {
                self.consumer_regions.is_empty() || self.consumer_regions.contains(&region.name)
            })
            .collect()
    }
}

/// Counts of one run (the history has the details).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadTotals {
    /// Messages acknowledged by some region.
    pub acknowledged: u64,
    /// Messages that failed every attempt.
    pub failed: u64,
    /// Deliveries received (including redeliveries).
    pub received: u64,
}

/// Runs the workload to its end, recording into `recorder`. `stop` ends it early.
pub async fn run(
    spec: &WorkloadSpec,
    run_id: &str,
    recorder: &Recorder,
    stop: Arc<AtomicBool>,
) -> Result<WorkloadTotals> {
    spec.validate()?;
    let mut producers = Vec::new();
    for region in spec.producing() {
        for index in 0..spec.producers_per_region {
            let name = format!("{run_id}-p-{}-{index}", region.name);
            let mut order: Vec<&RegionTarget> = vec![region];
            order.extend(
                spec.regions
                    .iter()
                    .filter(|other| other.name != region.name),
            );
            let clients = order
                .iter()
                .map(|target| {
                    RegionClient::new(
                        &target.name,
                        &target.endpoint,
                        &name,
                        spec.request_timeout_ms,
                    )
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|reason| ChaosError::InvalidSpec {
                    field: "regions",
                    reason,
                })?;
            producers.push(tokio::spawn(produce(
                spec.clone(),
                name,
                clients,
                recorder.clone(),
                Arc::clone(&stop),
            )));
        }
    }
    let mut consumers = Vec::new();
    for (index, region) in spec.consuming().into_iter().enumerate() {
        let name = format!("{run_id}-c-{}", region.name);
        // Its own region first, then the others: where it moves when its region stops
        // answering (the group's progress is replicated).
        let mut order: Vec<&RegionTarget> = vec![region];
        order.extend(
            spec.regions
                .iter()
                .filter(|other| other.name != region.name),
        );
        // The channel's deadline must outlast the cell's longest long poll.
        let clients = order
            .iter()
            .map(|target| {
                RegionClient::new(
                    &target.name,
                    &target.endpoint,
                    &name,
                    client::RECEIVE_TIMEOUT_MS.max(spec.request_timeout_ms),
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|reason| ChaosError::InvalidSpec {
                field: "regions",
                reason,
            })?;
        consumers.push(tokio::spawn(consume(
            spec.clone(),
            name,
            clients,
            recorder.clone(),
            Arc::clone(&stop),
            spec.seed.wrapping_add(index as u64),
        )));
    }
    let mut totals = WorkloadTotals::default();
    for producer in producers {
        let (acknowledged, failed) = producer.await.unwrap_or((0, 0));
        totals.acknowledged += acknowledged;
        totals.failed += failed;
    }
    for consumer in consumers {
        totals.received += consumer.await.unwrap_or(0);
    }
    Ok(totals)
}

/// One producer: returns (acknowledged, failed).
async fn produce(
    spec: WorkloadSpec,
    name: String,
    mut clients: Vec<RegionClient>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let interval = Duration::from_micros(1_000_000 / u64::from(spec.rate_per_s.max(1)));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = vec![b'm'; spec.body_bytes];
    let mut current = 0usize;
    let (mut acknowledged, mut failed) = (0, 0);
    let mut sequences = vec![0u64; spec.message_groups as usize];
    for number in 0..spec.max_messages {
        if stop.load(Ordering::Relaxed) || recorder.now_ms() >= spec.duration_ms {
            break;
        }
        ticker.tick().await;
        let id = format!("{name}-{number}");
        let (group, seq) = if spec.message_groups > 0 {
            let slot = (number % u64::from(spec.message_groups)) as usize;
            let seq = sequences[slot];
            sequences[slot] += 1;
            (Some(format!("{name}-g{slot}")), Some(seq))
        } else {
            (None, None)
        };
        let mut done = false;
        let mut last_error = String::new();
        for attempt in 1..=spec.max_send_attempts {
            let client = &mut clients[current];
            recorder.record(Event::Send {
                id: id.clone(),
                region: client.region.clone(),
                topic: spec.topic.clone(),
                group: group.clone(),
                seq,
                producer: Some(name.clone()),
                attempt,
                at_ms: recorder.now_ms(),
            });
            match client
                .send(&spec.topic, &id, group.as_deref(), body.clone())
                .await
            {
                Ok(()) => {
                    recorder.record(Event::SendAck {
                        id: id.clone(),
                        region: client.region.clone(),
                        at_ms: recorder.now_ms(),
                    });
                    done = true;
                    break;
                }
                Err(error) => {
                    last_error = error;
                    // Move on: the same id goes to the next region of the preference list,
                    // after a pause that grows with the attempts (a failover takes a moment).
                    current = (current + 1) % clients.len();
                    if attempt < spec.max_send_attempts {
                        let pause_ms =
                            (RETRY_PAUSE_MS_STEP * u64::from(attempt)).min(RETRY_PAUSE_MS_MAX);
                        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    }
                }
            }
        }
        if done {
            acknowledged += 1;
        } else {
            failed += 1;
            recorder.record(Event::SendFailed {
                id,
                region: clients[current].region.clone(),
                reason: last_error,
                at_ms: recorder.now_ms(),
            });
        }
    }
    (acknowledged, failed)
}

/// Failed receives in a row after which a consumer moves to the next region.
const CONSUMER_FAILOVER_AFTER_FAILURES: u32 = 3;

/// One consumer: returns the deliveries received. It reads from its own region and moves to
/// the next one after `CONSUMER_FAILOVER_AFTER_FAILURES` failed receives in a row, as a client
/// that fails over would.
async fn consume(
    spec: WorkloadSpec,
    name: String,
    mut clients: Vec<RegionClient>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut received = 0;
    let mut current = 0;
    let mut failures_in_row = 0;
    let end_ms = spec.duration_ms + spec.drain_ms;
    // Bounded by time: every round is one long poll or one failed call.
    while !stop.load(Ordering::Relaxed) && recorder.now_ms() < end_ms {
        let poll_ms = spec
            .long_poll_ms
            .min(end_ms.saturating_sub(recorder.now_ms()))
            .max(100);
        let Some(client) = clients.get_mut(current) else {
            break;
        };
        match client
            .receive(
                &spec.topic,
                &spec.consumer_group,
                32,
                poll_ms,
                spec.invisible_ms,
            )
            .await
        {
            Ok(batch) => {
                failures_in_row = 0;
                let mut to_ack = Vec::with_capacity(batch.len());
                for delivered in &batch {
                    received += 1;
                    recorder.record(Event::Receive {
                        id: delivered.id.clone(),
                        region: client.region.clone(),
                        consumer_group: spec.consumer_group.clone(),
                        consumer: name.clone(),
                        attempt: delivered.attempt,
                        at_ms: recorder.now_ms(),
                    });
                    if rng.random_range(0..100u8) < spec.ack_probability_percent {
                        to_ack.push(delivered);
                    }
                }
                if to_ack.is_empty() {
                    continue;
                }
                // One call per batch: acking one by one would make the consumer the bottleneck.
                if let Ok(acked) = client.ack(&spec.topic, &spec.consumer_group, &to_ack).await {
                    for id in acked {
                        recorder.record(Event::Ack {
                            id,
                            region: client.region.clone(),
                            consumer_group: spec.consumer_group.clone(),
                            at_ms: recorder.now_ms(),
                        });
                    }
                }
            }
            Err(_) => {
                failures_in_row += 1;
                if failures_in_row >= CONSUMER_FAILOVER_AFTER_FAILURES && clients.len() > 1 {
                    current = (current + 1) % clients.len();
                    failures_in_row = 0;
                    continue;
                }
                // The region is down or unreachable: wait a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    received
}
