//! A replayable fault schedule: timed steps that set a named link's faults. The schedule is data
//! (TOML or JSON), can be generated from a seed, and is driven by a sans-IO cursor; `run_schedule`
//! is the thin async shell that applies it to live proxies.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{ChaosError, Result};
use crate::fault::LinkFaults;
use crate::proxy::ProxyControl;

/// Upper bound on steps in one schedule; a schedule is hand-written or generated for one test run.
pub const MAX_SCHEDULE_STEPS: usize = 10_000;

/// One timed change: at `at_ms` after the run starts, link `link` gets `faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleStep {
    /// Milliseconds since the start of the run.
    pub at_ms: u64,
    /// Name of the link (the key the runner maps to a proxy).
    pub link: String,
    /// Faults to put in force; they replace the link's previous faults entirely.
    #[serde(default)]
    pub faults: LinkFaults,
}

/// A list of steps plus the seed that the proxies' fault models use, so a run can be replayed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Seed for the links' fault models (each link derives its own from it and its name).
    #[serde(default)]
    pub seed: u64,
    /// Steps; they need not be sorted in the file, `validate` sorts them stably by `at_ms`.
    #[serde(default, rename = "step")]
    pub steps: Vec<ScheduleStep>,
}

/// Parameters for [`Schedule::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateSpec {
    /// Links to disturb.
    pub links: Vec<String>,
    /// Length of the run.
    pub duration_ms: u64,
    /// Time between two changes of one link.
    pub step_every_ms: u64,
    /// Ceiling for generated latency.
    pub max_latency_ms: u64,
    /// Ceiling for generated loss.
    pub max_loss_percent: f64,
    /// Probability in percent that a step is a blackhole.
    pub blackhole_percent: f64,
}

impl Schedule {
    /// Parses and validates a TOML schedule (`seed = 1` and `[[step]]` tables).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let mut schedule: Self = toml::from_str(text).map_err(|source| ChaosError::Toml {
            what: "schedule",
            source,
        })?;
        schedule.validate()?;
        Ok(schedule)
    }

    /// Parses and validates a JSON schedule (`{"seed": 1, "step": [...]}`).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let mut schedule: Self = serde_json::from_str(text).map_err(ChaosError::Json)?;
        schedule.validate()?;
        Ok(schedule)
    }

    /// Checks limits and faults, and sorts the steps by time (stable, so file order breaks ties).
    pub fn validate(&mut self) -> Result<()> {
        if self.steps.len() > MAX_SCHEDULE_STEPS {
            return Err(ChaosError::InvalidSchedule(format!(
                "{} steps, at most {MAX_SCHEDULE_STEPS} allowed",
                self.steps.len()
            )));
        }
        for (index, step) in self.steps.iter().enumerate() {
            if step.link.is_empty() {
                return Err(ChaosError::InvalidSchedule(format!(
                    "step {index} has an empty link name"
                )));
            }
            step.faults.validate().map_err(|e| {
                ChaosError::InvalidSchedule(format!("step {index} ({}): {e}", step.link))
            })?;
        }
        self.steps.sort_by_key(|step| step.at_ms);
        Ok(())
    }

    /// The distinct link names the schedule touches, sorted.
    pub fn links(&self) -> Vec<String> {
        let mut links: Vec<String> = self.steps.iter().map(|s| s.link.clone()).collect();
        links.sort();
        links.dedup();
        links
    }

    /// Seed for one link's fault model: stable across runs, different per link.
    pub fn link_seed(&self, link: &str) -> u64 {
        // FNV-1a over the name, mixed with the schedule seed; std's hasher is not stable across releases.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        for byte in link.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    /// Generates a random schedule from a seed; the same seed and spec give the same schedule.
    /// Every link ends clean at `duration_ms`, so a run always finishes healed.
    pub fn generate(seed: u64, spec: &GenerateSpec) -> Result<Self> {
        if spec.step_every_ms == 0 {
            return Err(ChaosError::InvalidSchedule(
                "step_every_ms must be positive".into(),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut steps = Vec::new();
        let mut at_ms = 0;
        while at_ms < spec.duration_ms {
            for link in &spec.links {
                let faults = if rng.random::<f64>() * 100.0 < spec.blackhole_percent {
                    LinkFaults {
                        blackhole: true,
                        ..LinkFaults::default()
                    }
                } else {
                    let latency_ms = rng.random_range(0..=spec.max_latency_ms);
                    LinkFaults {
                        latency_ms,
                        jitter_ms: latency_ms / 4,
                        loss_percent: rng.random::<f64>() * spec.max_loss_percent.clamp(0.0, 100.0),
                        ..LinkFaults::default()
                    }
                };
                steps.push(ScheduleStep {
                    at_ms,
                    link: link.clone(),
                    faults,
                });
            }
            at_ms = at_ms.saturating_add(spec.step_every_ms);
        }
        for link in &spec.links {
            steps.push(ScheduleStep {
                at_ms: spec.duration_ms,
                link: link.clone(),
                faults: LinkFaults::clean(),
            });
        }
        let mut schedule = Self { seed, steps };
        schedule.validate()?;
        Ok(schedule)
    }

    /// A sans-IO cursor over the (validated) steps.
    pub fn cursor(&self) -> ScheduleCursor<'_> {
        ScheduleCursor {
            steps: &self.steps,
            next_index: 0,
        }
    }
}

/// Walks a schedule's steps in time order; fed `now_ms`, hands out the steps that are due.
#[derive(Debug, Clone)]
pub struct ScheduleCursor<'a> {
    steps: &'a [ScheduleStep],
    next_index: usize,
}

impl<'a> ScheduleCursor<'a> {
    /// Steps with `at_ms <= now_ms` not handed out before, in order.
    pub fn due(&mut self, now_ms: u64) -> &'a [ScheduleStep] {
        let start = self.next_index;
        while self
            .steps
            .get(self.next_index)
            .is_some_and(|step| step.at_ms <= now_ms)
        {
            self.next_index += 1;
        }
        &self.steps[start..self.next_index]
    }

    /// When the next step is due, if any is left.
    pub fn next_at_ms(&self) -> Option<u64> {
        self.steps.get(self.next_index).map(|step| step.at_ms)
    }

    /// True when every step has been handed out.
    pub fn is_done(&self) -> bool {
        self.next_index >= self.steps.len()
    }
}

/// A step as it was applied by [`run_schedule`].
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedStep {
    /// The step.
    pub step: ScheduleStep,
    /// When it was actually applied, in milliseconds since `start`.
    pub applied_at_ms: u64,
}

/// Applies `schedule` to the proxies in `links` (by link name), starting from `start`.
/// Every step's link must be present. Calls `on_step` after each step so the workload can record a
/// fault event in its history.
pub async fn run_schedule(
    schedule: &Schedule,
    links: &HashMap<String, ProxyControl>,
    start: Instant,
    mut on_step: impl FnMut(&AppliedStep),
) -> Result<Vec<AppliedStep>> {
    if let Some(missing) = schedule
        .links()
        .into_iter()
        .find(|l| !links.contains_key(l))
    {
        return Err(ChaosError::InvalidSchedule(format!(
            "no proxy for link {missing}"
        )));
    }
    let mut cursor = schedule.cursor();
    let mut applied = Vec::with_capacity(schedule.steps.len());
    while let Some(next_at_ms) = cursor.next_at_ms() {
        tokio::time::sleep_until(start + Duration::from_millis(next_at_ms)).await;
        let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        for step in cursor.due(now_ms) {
            if let Some(control) = links.get(&step.link) {
                control.set_faults(step.faults.clone())?;
            }
            tracing::info!(link = %step.link, at_ms = step.at_ms, faults = ?step.faults, "fault step applied");
            let record = AppliedStep {
                step: step.clone(),
                applied_at_ms: now_ms,
            };
            on_step(&record);
            applied.push(record);
        }
    }
    Ok(applied)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TOML_SCHEDULE: &str = r#"
seed = 99

[[step]]
at_ms = 500
link = "us-eu-quic"
faults = { blackhole = true }

[[step]]
at_ms = 0
link = "us-eu-quic"
faults = { latency_ms = 40, jitter_ms = 5, loss_percent = 1.0 }

[[step]]
at_ms = 900
link = "us-eu-quic"
"#;

    #[test]
    fn toml_schedule_parses_sorts_and_defaults_to_clean() {
        let schedule = Schedule::from_toml_str(TOML_SCHEDULE).unwrap();
        assert_eq!(schedule.seed, 99);
        let times: Vec<u64> = schedule.steps.iter().map(|s| s.at_ms).collect();
        assert_eq!(times, vec![0, 500, 900]);
        assert_eq!(schedule.steps[0].faults.latency_ms, 40);
        assert!(schedule.steps[1].faults.blackhole);
        assert_eq!(schedule.steps[2].faults, LinkFaults::clean());
        assert_eq!(schedule.links(), vec!["us-eu-quic".to_string()]);
    }

    #[test]
    fn json_round_trip_is_identical() {
        let schedule = Schedule::from_toml_str(TOML_SCHEDULE).unwrap();
        let json = serde_json::to_string(&schedule).unwrap();
        assert_eq!(Schedule::from_json_str(&json).unwrap(), schedule);
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        let bad_faults = "[[step]]\nat_ms = 1\nlink = \"a\"\nfaults = { loss_percent = 200.0 }\n";
        assert!(matches!(
            Schedule::from_toml_str(bad_faults),
            Err(ChaosError::InvalidSchedule(_))
        ));
        let empty_link = "[[step]]\nat_ms = 1\nlink = \"\"\n";
        assert!(Schedule::from_toml_str(empty_link).is_err());
        let unknown_key = "[[step]]\nat_ms = 1\nlink = \"a\"\nwhen = 3\n";
        assert!(matches!(
            Schedule::from_toml_str(unknown_key),
            Err(ChaosError::Toml { .. })
        ));
    }

    #[test]
    fn cursor_hands_out_each_step_once_in_order() {
        let schedule = Schedule::from_toml_str(TOML_SCHEDULE).unwrap();
        let mut cursor = schedule.cursor();
        assert_eq!(cursor.next_at_ms(), Some(0));
        assert_eq!(cursor.due(0).len(), 1);
        assert!(cursor.due(100).is_empty());
        assert_eq!(cursor.next_at_ms(), Some(500));
        let late = cursor.due(10_000);
        assert_eq!(
            late.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
            vec![500, 900]
        );
        assert!(cursor.is_done());
        assert!(cursor.due(20_000).is_empty());
    }

    #[test]
    fn generated_schedule_is_reproducible_and_ends_clean() {
        let spec = GenerateSpec {
            links: vec!["a".into(), "b".into()],
            duration_ms: 10_000,
            step_every_ms: 1_000,
            max_latency_ms: 200,
            max_loss_percent: 5.0,
            blackhole_percent: 20.0,
        };
        let one = Schedule::generate(5, &spec).unwrap();
        let two = Schedule::generate(5, &spec).unwrap();
        let other = Schedule::generate(6, &spec).unwrap();
        assert_eq!(one, two);
        assert_ne!(one, other);
        assert_eq!(one.steps.len(), 22);
        let tail: Vec<&ScheduleStep> = one.steps.iter().filter(|s| s.at_ms == 10_000).collect();
        assert_eq!(tail.len(), 2);
        assert!(tail.iter().all(|s| s.faults == LinkFaults::clean()));
        assert!(one.steps.iter().any(|s| s.faults.blackhole));
        assert!(one.steps.iter().all(|s| s.faults.latency_ms <= 200));
        assert_ne!(one.link_seed("a"), one.link_seed("b"));
        assert_eq!(one.link_seed("a"), two.link_seed("a"));
    }
}
