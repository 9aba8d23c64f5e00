//! A drill scenario as data: the workload, the faults on a timeline, and the promises the
//! fabric must keep. One TOML file per scenario; times are percentages of the run's duration so
//! one file serves the seconds-long CI form and the long form run by hand.

use serde::{Deserialize, Serialize};

use crate::error::{ChaosError, Result};
use crate::fault::LinkFaults;

/// Most steps in one scenario.
pub const MAX_DRILL_STEPS: usize = 64;
/// Longest drill, ms (one hour).
pub const MAX_DRILL_DURATION_MS: u64 = 3_600_000;

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (`region-kill`).
    pub name: String,
    /// What it exercises, for the report.
    #[serde(default)]
    pub description: String,
    /// Producers run this long unless the command line says otherwise.
    pub duration_ms: u64,
    /// Seed of the workload's random choices (overridable).
    #[serde(default)]
    pub seed: u64,
    /// Topic settings the fabric must have (the runner creates the topic before the load).
    pub topic: DrillTopic,
    /// The load.
    pub workload: DrillWorkload,
    /// Regions whose cell clock runs skewed for the whole run: region → offset from the wall
    /// clock in ms (negative: behind), e.g. `clock_offsets_ms = { ap-south = 2000 }`.
    #[serde(default)]
    pub clock_offsets_ms: std::collections::BTreeMap<String, i64>,
    /// The faults, in time order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// What must hold at the end.
    #[serde(default)]
    pub promises: Promises,
}

/// The topic a drill writes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillTopic {
    /// Topic name.
    pub name: String,
    /// `active-active` or `active-standby`.
    #[serde(default = "default_topology")]
    pub topology: String,
    /// Home region of an active-standby topic.
    #[serde(default)]
    pub home: Option<String>,
    /// `async` or `sync-quorum`.
    #[serde(default = "default_replication")]
    pub replication: String,
    /// FIFO topic (messages in groups).
    #[serde(default)]
    pub fifo: bool,
}

fn default_topology() -> String {
    "active-active".to_string()
}
fn default_replication() -> String {
    "async".to_string()
}

/// The workload part of a scenario (the regions come from the fabric).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillWorkload {
    /// Consumer group.
    pub consumer_group: String,
    /// Message groups (FIFO topics).
    #[serde(default)]
    pub message_groups: u32,
    /// Messages per second per producer.
    pub rate_per_s: u32,
    /// Producers per producing region.
    #[serde(default = "one")]
    pub producers_per_region: u32,
    /// Regions that produce (default: all).
    #[serde(default)]
    pub producer_regions: Vec<String>,
    /// Regions that consume (default: all).
    #[serde(default)]
    pub consumer_regions: Vec<String>,
    /// Consumers keep receiving this long after the producers stop.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// Each RPC waits at most this long.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn one() -> u32 {
    1
}
fn default_drain_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    1_000
}

/// One fault or action on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When, as a percentage (0-100) of the run's duration.
    pub at_percent: u8,
    /// What.
    pub action: Action,
    /// The region it applies to (all actions but `command`).
    #[serde(default)]
    pub region: Option<String>,
    /// For `command`: the program and its arguments; `{region:NAME}` is replaced by that
    /// region's endpoint, `{admin}` by the first region's, and the runner's own placeholders
    /// (`meridian drill run` gives `{meridian}`, this binary, and `{endpoints}`, the fabric's
    /// endpoints file).
    #[serde(default)]
    pub command: Vec<String>,
    /// For `degrade-region`: the faults put on every link between the region and the others
    /// (latency, jitter, loss, bandwidth; see [`LinkFaults`]).
    #[serde(default)]
    pub faults: Option<LinkFaults>,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// kill -9 of every process of the region.
    KillRegion,
    /// Graceful stop (SIGTERM, then SIGKILL after a grace period).
    StopRegion,
    /// Restart a stopped or killed region on the same data.
    RestartRegion,
    /// SIGSTOP: the region hangs without dying (a grey failure).
    PauseRegion,
    /// SIGCONT.
    ResumeRegion,
    /// Run an external command to its end (a switchover, a failback).
    Command,
    /// Cut every link between the region and the others (replication, meta, forwarded sends),
    /// both ways; its clients still reach it. Needs a fabric whose links run through proxies.
    PartitionRegion,
    /// Remove every fault from the region's links.
    HealRegion,
    /// Put `faults` on every link between the region and the others.
    DegradeRegion,
    /// kill -9 of the region whose meta node leads the meta group at that moment (found from
    /// the regions' metrics); takes no `region`.
    KillMetaLeader,
}

/// What the fabric promises for the scenario. Unset promises are reported, not enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promises {
    /// Acknowledged messages no consumer received.
    #[serde(default)]
    pub max_lost: Option<usize>,
    /// True duplicates (not redeliveries the semantics allow).
    #[serde(default)]
    pub max_duplicates: Option<usize>,
    /// Per-group order kept for FIFO topics.
    #[serde(default)]
    pub fifo_order: bool,
    /// Every producer displaced by a region loss has a send acknowledged elsewhere within this.
    #[serde(default)]
    pub max_rto_ms: Option<u64>,
    /// Acknowledged messages missing after a region loss (RPO, in messages).
    #[serde(default)]
    pub max_rpo_messages: Option<usize>,
    /// Sends that failed after every retry.
    #[serde(default)]
    pub max_failed_sends: Option<u64>,
}

impl Scenario {
    /// Whether a step acts on the links between regions (partition, heal, degrade), so the
    /// fabric must run its links through proxies.
    pub fn needs_links(&self) -> bool {
        self.steps.iter().any(|step| {
            matches!(
                step.action,
                Action::PartitionRegion | Action::HealRegion | Action::DegradeRegion
            )
        })
    }

    /// Parses and checks a scenario file's text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let scenario: Scenario = toml::from_str(text).map_err(|source| ChaosError::Toml {
            what: "scenario",
            source,
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks the scenario, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let invalid =
            |field: &'static str, reason: String| Err(ChaosError::InvalidSpec { field, reason });
        if self.name.is_empty() {
            return invalid("name", "must not be empty".into());
        }
        if self.duration_ms == 0 || self.duration_ms > MAX_DRILL_DURATION_MS {
            return invalid(
                "duration_ms",
                format!("must be within 1..={MAX_DRILL_DURATION_MS}"),
            );
        }
        if self.steps.len() > MAX_DRILL_STEPS {
            return invalid("steps", format!("at most {MAX_DRILL_STEPS}"));
        }
        let mut last = 0;
        for step in &self.steps {
            if step.at_percent > 100 {
                return invalid(
                    "steps.at_percent",
                    format!("{} is above 100", step.at_percent),
                );
            }
            if step.at_percent < last {
                return invalid("steps.at_percent", "steps must be in time order".into());
            }
            last = step.at_percent;
            match step.action {
                Action::Command if step.command.is_empty() => {
                    return invalid("steps.command", "a command step needs a program".into());
                }
                Action::Command | Action::KillMetaLeader => {}
                _ if step.region.is_none() => {
                    return invalid("steps.region", format!("{:?} needs a region", step.action));
                }
                Action::DegradeRegion => match &step.faults {
                    None => {
                        return invalid(
                            "steps.faults",
                            "a degrade-region step needs faults".into(),
                        );
                    }
                    Some(faults) => faults.validate().map_err(|error| ChaosError::InvalidSpec {
                        field: "steps.faults",
                        reason: error.to_string(),
                    })?,
                },
                _ => {}
            }
        }
        match self.topic.topology.as_str() {
            "active-active" => {}
            "active-standby" if self.topic.home.is_some() => {}
            "active-standby" => {
                return invalid("topic.home", "an active-standby topic needs a home".into());
            }
            other => {
                return invalid(
                    "topic.topology",
                    format!("{other:?}: use active-active or active-standby"),
                );
            }
        }
        if !matches!(self.topic.replication.as_str(), "async" | "sync-quorum") {
            return invalid(
                "topic.replication",
                format!("{:?}: use async or sync-quorum", self.topic.replication),
            );
        }
        if self.topic.fifo && self.workload.message_groups == 0 {
            return invalid(
                "workload.message_groups",
                "a FIFO topic needs at least one message group".into(),
            );
        }
        if self.workload.rate_per_s == 0 {
            return invalid("workload.rate_per_s", "must be positive".into());
        }
        Ok(())
    }

    /// Regions the steps name (each must exist in the fabric).
    pub fn regions_named(&self) -> impl Iterator<Item = &str> {
        let skewed = self.clock_offsets_ms.keys().map(String::as_str);
        self.steps
            .iter()
            .filter_map(|step| step.region.as_deref())
            .chain(self.topic.home.as_deref())
            .chain(self.workload.producer_regions.iter().map(String::as_str))
            .chain(self.workload.consumer_regions.iter().map(String::as_str))
            .chain(skewed)
    }
}
