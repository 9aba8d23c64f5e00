//! Sans-IO fault model for one link: given a packet (or a stream chunk) and `now`, decides whether
//! it is dropped, duplicated, and when it is delivered. Randomness comes from a seeded `StdRng`,
//! so the same seed and the same sequence of inputs always give the same decisions.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ChaosError, Result};

/// Upper bound on `latency_ms + jitter_ms + reorder_hold_ms`; keeps every queued packet's
/// residency bounded (a minute is far beyond any WAN round trip we emulate).
pub const MAX_DELAY_MS: u64 = 60_000;

/// Which way a packet travels through a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client (the side that connects to the proxy) to the upstream server.
    Upstream,
    /// From the upstream server back to the client.
    Downstream,
}

impl Direction {
    /// Index into per-direction arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Upstream => 0,
            Self::Downstream => 1,
        }
    }
}

/// Faults applied to one link. The default is a clean link.
///
/// Latency, jitter, bandwidth and the partitions apply to UDP and TCP; loss, duplication and
/// reordering only make sense for datagrams and are ignored by the TCP proxy (TCP would hide them
/// by retransmitting, which is what latency already models).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkFaults {
    /// One-way base delay added to every packet or chunk.
    pub latency_ms: u64,
    /// Each packet's delay is drawn uniformly from `latency_ms ± jitter_ms` (clamped at zero).
    pub jitter_ms: u64,
    /// Probability in percent (0..=100) that a datagram is dropped.
    pub loss_percent: f64,
    /// Probability in percent that a datagram is delivered twice.
    pub duplicate_percent: f64,
    /// Probability in percent that a datagram is held back by `reorder_hold_ms`, so later ones overtake it.
    pub reorder_percent: f64,
    /// Extra hold for a reordered datagram; 0 means "use `max(2 * jitter_ms, 10)`".
    pub reorder_hold_ms: u64,
    /// Serialisation rate of the link; 0 means unlimited.
    pub bandwidth_bytes_per_s: u64,
    /// Full partition: nothing passes in either direction (TCP connections are kept but stall).
    pub blackhole: bool,
    /// One-way partition: nothing passes from client to upstream.
    pub partition_upstream: bool,
    /// One-way partition: nothing passes from upstream to client.
    pub partition_downstream: bool,
}

impl LinkFaults {
    /// A clean link.
    pub fn clean() -> Self {
        Self::default()
    }

    /// Full partition: nothing passes either way.
    pub fn blackholed() -> Self {
        Self {
            blackhole: true,
            ..Self::default()
        }
    }

    /// One-way partition: nothing passes in `direction`, the other way is clean.
    pub fn partitioned(direction: Direction) -> Self {
        Self {
            partition_upstream: direction == Direction::Upstream,
            partition_downstream: direction == Direction::Downstream,
            ..Self::default()
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("loss_percent", self.loss_percent),
            ("duplicate_percent", self.duplicate_percent),
            ("reorder_percent", self.reorder_percent),
        ] {
            if !value.is_finite() || !(0.0..=100.0).contains(&value) {
                return Err(ChaosError::InvalidFaults(format!(
                    "{name} must be within 0..=100, got {value}"
                )));
            }
        }
        let total_delay_ms = self
            .latency_ms
            .saturating_add(self.jitter_ms)
            .saturating_add(self.effective_reorder_hold_ms());
        if total_delay_ms > MAX_DELAY_MS {
            return Err(ChaosError::InvalidFaults(format!(
                "latency_ms + jitter_ms + reorder hold = {total_delay_ms} exceeds {MAX_DELAY_MS}"
            )));
        }
        Ok(())
    }

    /// True when nothing may pass in `direction`.
    pub fn blocks(&self, direction: Direction) -> bool {
        self.blackhole
            || match direction {
                Direction::Upstream => self.partition_upstream,
                Direction::Downstream => self.partition_downstream,
            }
    }

    fn effective_reorder_hold_ms(&self) -> u64 {
        if self.reorder_percent <= 0.0 {
            0
        } else if self.reorder_hold_ms > 0 {
            self.reorder_hold_ms
        } else {
            self.jitter_ms.saturating_mul(2).max(10)
        }
    }
}

/// Why a datagram was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCause {
    /// Random loss (`loss_percent`).
    Loss,
    /// Blackhole or one-way partition in this direction.
    Partition,
}

/// The model's verdict for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Do not deliver.
    Drop(DropCause),
    /// Deliver at `at` (time since the model's origin); deliver a second copy at `duplicate_at` if set.
    Deliver {
        /// When the packet leaves the proxy.
        at: Duration,
        /// When the duplicate leaves the proxy, if the packet is duplicated.
        duplicate_at: Option<Duration>,
        /// Whether the packet was held back to be reordered.
        reordered: bool,
    },
}

/// The model's verdict for one chunk of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamDecision {
    /// The direction is partitioned: keep the chunk and ask again once faults change.
    Hold,
    /// Deliver at this time (never earlier than the previous chunk, so byte order is kept).
    DeliverAt(Duration),
}

#[derive(Debug, Clone, Copy, Default)]
struct DirectionState {
    /// When the emulated link finishes serialising what it has accepted so far.
    link_busy_until: Duration,
    /// Latest delivery time handed out for a stream chunk (keeps byte order under jitter).
    last_stream_delivery: Duration,
}

/// Seeded, deterministic fault model for one link (both directions).
#[derive(Debug)]
pub struct FaultModel {
    faults: LinkFaults,
    rng: StdRng,
    directions: [DirectionState; 2],
}

impl FaultModel {
    /// Creates a model; `faults` must be valid.
    pub fn new(faults: LinkFaults, seed: u64) -> Result<Self> {
        faults.validate()?;
        Ok(Self {
            faults,
            rng: StdRng::seed_from_u64(seed),
            directions: [DirectionState::default(); 2],
        })
    }

    /// The faults in force.
    pub fn faults(&self) -> &LinkFaults {
        &self.faults
    }

    /// Replaces the faults; the random stream and link occupancy carry on.
    pub fn set_faults(&mut self, faults: LinkFaults) -> Result<()> {
        faults.validate()?;
        self.faults = faults;
        Ok(())
    }

    /// Decides the fate of a datagram of `len_bytes` that arrived at `now`.
    ///
    /// Every call draws the same number of random values whatever the faults are, so two runs with
    /// the same seed stay in step even if a fault is switched on at a different packet.
    pub fn on_datagram(
        &mut self,
        direction: Direction,
        len_bytes: usize,
        now: Duration,
    ) -> Decision {
        let draws = self.draw();
        if self.faults.blocks(direction) {
            return Decision::Drop(DropCause::Partition);
        }
        if draws.loss < self.faults.loss_percent / 100.0 {
            return Decision::Drop(DropCause::Loss);
        }
        let reordered = draws.reorder < self.faults.reorder_percent / 100.0;
        let hold = if reordered {
            Duration::from_millis(self.faults.effective_reorder_hold_ms())
        } else {
            Duration::ZERO
        };
        let sent = self.serialise(direction, len_bytes, now);
        let at = sent + self.delay(draws.jitter) + hold;
        let duplicate_at = (draws.duplicate < self.faults.duplicate_percent / 100.0).then(|| {
            let dup_sent = self.serialise(direction, len_bytes, now);
            dup_sent + self.delay(draws.duplicate_jitter) + hold
        });
        Decision::Deliver {
            at,
            duplicate_at,
            reordered,
        }
    }

    /// Decides when a stream chunk of `len_bytes` read at `now` may be written on.
    pub fn on_stream_chunk(
        &mut self,
        direction: Direction,
        len_bytes: usize,
        now: Duration,
    ) -> StreamDecision {
        let draws = self.draw();
        if self.faults.blocks(direction) {
            return StreamDecision::Hold;
        }
        let sent = self.serialise(direction, len_bytes, now);
        let at = sent + self.delay(draws.jitter);
        let state = &mut self.directions[direction.index()];
        let at = at.max(state.last_stream_delivery);
        state.last_stream_delivery = at;
        StreamDecision::DeliverAt(at)
    }

    /// Advances the emulated link's serialiser and returns when the last byte has left it.
    fn serialise(&mut self, direction: Direction, len_bytes: usize, now: Duration) -> Duration {
        let state = &mut self.directions[direction.index()];
        let bandwidth = self.faults.bandwidth_bytes_per_s;
        if bandwidth == 0 {
            state.link_busy_until = state.link_busy_until.max(now);
            return now;
        }
        let start = state.link_busy_until.max(now);
        let len = u64::try_from(len_bytes).unwrap_or(u64::MAX);
        let tx_nanos = u128::from(len) * 1_000_000_000 / u128::from(bandwidth);
        let tx = Duration::from_nanos(u64::try_from(tx_nanos).unwrap_or(u64::MAX));
        state.link_busy_until = start + tx;
        state.link_busy_until
    }

    /// Latency plus jitter, with `unit` in [0, 1) picking the point in `latency ± jitter`.
    fn delay(&self, unit: f64) -> Duration {
        let latency = self.faults.latency_ms as f64;
        let jitter = self.faults.jitter_ms as f64;
        let ms = (latency + (unit * 2.0 - 1.0) * jitter).max(0.0);
        Duration::from_secs_f64(ms / 1000.0)
    }

    fn draw(&mut self) -> Draws {
        Draws {
            loss: self.rng.random(),
            duplicate: self.rng.random(),
            reorder: self.rng.random(),
            jitter: self.rng.random(),
            duplicate_jitter: self.rng.random(),
        }
    }
}

struct Draws {
    loss: f64,
    duplicate: f64,
    reorder: f64,
    jitter: f64,
    duplicate_jitter: f64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn run(model: &mut FaultModel, packets_count: u64) -> Vec<Decision> {
        (0..packets_count)
            .map(|i| model.on_datagram(Direction::Upstream, 1200, ms(i)))
            .collect()
    }

    fn lossy() -> LinkFaults {
        LinkFaults {
            latency_ms: 20,
            jitter_ms: 5,
            loss_percent: 10.0,
            duplicate_percent: 5.0,
            reorder_percent: 5.0,
            ..LinkFaults::default()
        }
    }

    #[test]
    fn validation_rejects_out_of_range_values() {
        assert!(LinkFaults::clean().validate().is_ok());
        assert!(lossy().validate().is_ok());
        for bad in [
            LinkFaults {
                loss_percent: 100.5,
                ..LinkFaults::default()
            },
            LinkFaults {
                duplicate_percent: -1.0,
                ..LinkFaults::default()
            },
            LinkFaults {
                reorder_percent: f64::NAN,
                ..LinkFaults::default()
            },
            LinkFaults {
                latency_ms: MAX_DELAY_MS,
                jitter_ms: 1,
                ..LinkFaults::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(ChaosError::InvalidFaults(_))),
                "{bad:?}"
            );
            assert!(FaultModel::new(bad, 1).is_err());
        }
    }

    #[test]
    fn same_seed_gives_same_decisions_and_other_seed_differs() {
        let a = run(&mut FaultModel::new(lossy(), 42).unwrap(), 2000);
        let b = run(&mut FaultModel::new(lossy(), 42).unwrap(), 2000);
        let c = run(&mut FaultModel::new(lossy(), 43).unwrap(), 2000);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn loss_duplicate_and_reorder_rates_are_within_tolerance() {
        let packets_count = 20_000;
        let decisions = run(&mut FaultModel::new(lossy(), 7).unwrap(), packets_count);
        let lost = decisions
            .iter()
            .filter(|d| matches!(d, Decision::Drop(DropCause::Loss)))
            .count() as f64;
        let duplicated = decisions
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    Decision::Deliver {
                        duplicate_at: Some(_),
                        ..
                    }
                )
            })
            .count() as f64;
        let reordered = decisions
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    Decision::Deliver {
                        reordered: true,
                        ..
                    }
                )
            })
            .count() as f64;
        let n = packets_count as f64;
        // 10% loss over 20k draws: standard deviation is ~0.2 percentage points; allow 1.
        assert!((lost / n - 0.10).abs() < 0.01, "loss rate {}", lost / n);
        // Duplicates and reorders are drawn only among the 90% delivered.
        let delivered = n - lost;
        assert!((duplicated / delivered - 0.05).abs() < 0.01);
        assert!((reordered / delivered - 0.05).abs() < 0.01);
    }

    #[test]
    fn delay_stays_within_latency_plus_minus_jitter() {
        let faults = LinkFaults {
            latency_ms: 50,
            jitter_ms: 10,
            ..LinkFaults::default()
        };
        let mut model = FaultModel::new(faults, 3).unwrap();
        let now = ms(1000);
        let mut min = Duration::MAX;
        let mut max = Duration::ZERO;
        for _ in 0..1000 {
            match model.on_datagram(Direction::Downstream, 100, now) {
                Decision::Deliver { at, .. } => {
                    min = min.min(at - now);
                    max = max.max(at - now);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(min >= ms(40) && max <= ms(60), "{min:?}..{max:?}");
        // Jitter is actually applied, not a constant delay.
        assert!(max - min > ms(15));
    }

    #[test]
    fn bandwidth_cap_spaces_deliveries() {
        // 100 kB/s: a 1000-byte packet takes 10 ms on the wire.
        let faults = LinkFaults {
            bandwidth_bytes_per_s: 100_000,
            ..LinkFaults::default()
        };
        let mut model = FaultModel::new(faults, 1).unwrap();
        let times: Vec<Duration> = (0..5)
            .map(
                |_| match model.on_datagram(Direction::Upstream, 1000, ms(0)) {
                    Decision::Deliver { at, .. } => at,
                    other => panic!("unexpected {other:?}"),
                },
            )
            .collect();
        assert_eq!(times, vec![ms(10), ms(20), ms(30), ms(40), ms(50)]);
        // The other direction has its own serialiser.
        match model.on_datagram(Direction::Downstream, 1000, ms(0)) {
            Decision::Deliver { at, .. } => assert_eq!(at, ms(10)),
            other => panic!("unexpected {other:?}"),
        }
        // After the link drains, a packet is not delayed by past traffic.
        match model.on_datagram(Direction::Upstream, 1000, ms(500)) {
            Decision::Deliver { at, .. } => assert_eq!(at, ms(510)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn blackhole_and_one_way_partition_drop_the_right_directions() {
        let mut model = FaultModel::new(LinkFaults::partitioned(Direction::Upstream), 1).unwrap();
        assert_eq!(
            model.on_datagram(Direction::Upstream, 10, ms(0)),
            Decision::Drop(DropCause::Partition)
        );
        assert!(matches!(
            model.on_datagram(Direction::Downstream, 10, ms(0)),
            Decision::Deliver { .. }
        ));
        assert_eq!(
            model.on_stream_chunk(Direction::Upstream, 10, ms(0)),
            StreamDecision::Hold
        );
        model.set_faults(LinkFaults::blackholed()).unwrap();
        for dir in [Direction::Upstream, Direction::Downstream] {
            assert_eq!(
                model.on_datagram(dir, 10, ms(0)),
                Decision::Drop(DropCause::Partition)
            );
        }
        model.set_faults(LinkFaults::clean()).unwrap();
        assert_eq!(
            model.on_datagram(Direction::Upstream, 10, ms(5)),
            Decision::Deliver {
                at: ms(5),
                duplicate_at: None,
                reordered: false
            }
        );
    }

    #[test]
    fn stream_chunks_keep_order_under_jitter() {
        let faults = LinkFaults {
            latency_ms: 20,
            jitter_ms: 20,
            ..LinkFaults::default()
        };
        let mut model = FaultModel::new(faults, 9).unwrap();
        let mut last = Duration::ZERO;
        for i in 0..500 {
            match model.on_stream_chunk(Direction::Upstream, 100, ms(i)) {
                StreamDecision::DeliverAt(at) => {
                    assert!(at >= last);
                    assert!(at >= ms(i));
                    last = at;
                }
                StreamDecision::Hold => panic!("not partitioned"),
            }
        }
    }

    #[test]
    fn reordered_packets_are_overtaken() {
        let faults = LinkFaults {
            latency_ms: 5,
            reorder_percent: 30.0,
            reorder_hold_ms: 50,
            ..LinkFaults::default()
        };
        let mut model = FaultModel::new(faults, 11).unwrap();
        let decisions = run(&mut model, 200);
        let held = decisions.iter().enumerate().find_map(|(i, d)| match d {
            Decision::Deliver {
                at,
                reordered: true,
                ..
            } => Some((i, *at)),
            _ => None,
        });
        let (index, held_at) = held.unwrap();
        match decisions[index + 1] {
            Decision::Deliver {
                at,
                reordered: false,
                ..
            } => assert!(at < held_at),
            // The next one may be held as well; then the one after must still overtake.
            _ => {
                let overtaken = decisions[index + 1..].iter().any(|d| {
                    matches!(d, Decision::Deliver { at, reordered: false, .. } if *at < held_at)
                });
                assert!(overtaken);
            }
        }
    }

    #[test]
    fn faults_parse_from_toml_and_reject_unknown_fields() {
        let faults: LinkFaults = toml::from_str("latency_ms = 30\nloss_percent = 1.5\n").unwrap();
        assert_eq!(faults.latency_ms, 30);
        assert_eq!(faults.loss_percent, 1.5);
        assert!(!faults.blackhole);
        assert!(toml::from_str::<LinkFaults>("latnecy_ms = 30\n").is_err());
    }
}
