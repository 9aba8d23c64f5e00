//! DR drills: a [`Scenario`] (workload, fault timeline, promises) run against a fabric whose
//! regions the caller started, then checked and judged.
//!
//! The runner starts the workload ([`crate::workload`]), carries out each step at its time
//! (kill -9, stop, pause, resume or restart of a region's processes, or an external command such
//! as a switchover), records each as a fault event, waits for the workload to drain, runs the
//! [`crate::checker`] over the history and compares the result with the scenario's promises.
//! The caller owns the fabric: it starts the region processes (or points at running ones, in
//! which case only `command` steps are possible) and creates the scenario's topic first.

mod scenario;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checker::{CheckSpec, Report, check};
use crate::error::{ChaosError, Result};
use crate::fault::LinkFaults;
use crate::history::{Event, FaultKind, History, Recorder};
use crate::process::{ManagedProcess, ProcessSpec};
use crate::proxy::ProxyControl;
use crate::workload::{self, RegionTarget, WorkloadSpec, WorkloadTotals};

pub use scenario::{
    Action, DrillTopic, DrillWorkload, MAX_DRILL_DURATION_MS, MAX_DRILL_STEPS, Promises, Scenario,
    Step,
};

/// Grace of a graceful stop before SIGKILL, ms.
const STOP_GRACE_MS: u64 = 5_000;
/// Longest a `command` step may run, ms.
const COMMAND_TIMEOUT_MS: u64 = 60_000;
/// Invisible duration the drill's consumers use, ms.
const DRILL_INVISIBLE_MS: u64 = 10_000;
/// Events one drill keeps at most.
pub const MAX_DRILL_EVENTS: usize = 5_000_000;

/// One region of the fabric under drill.
#[derive(Debug)]
pub struct DrillRegion {
    /// Region name.
    pub name: String,
    /// Its RocketMQ endpoint, `host:port`.
    pub endpoint: String,
    /// Its process, when the drill may kill and restart it.
    pub process: Option<ManagedProcess>,
    /// Its Prometheus endpoint (`host:port`, serving `GET /metrics`), where a
    /// `kill-meta-leader` step reads `meridian_meta_is_leader`.
    pub metrics: Option<String>,
    /// The proxies of every link between this region and the others (both directions, every
    /// service), when the fabric runs its links through proxies; partition, heal and degrade
    /// steps act on them.
    pub links: Vec<ProxyControl>,
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Run this long instead of the scenario's `duration_ms`.
    pub duration_ms: Option<u64>,
    /// Use this seed instead of the scenario's.
    pub seed: Option<u64>,
    /// Text replaced in `command` steps, e.g. `("{meridian}", "/path/to/meridian")`.
    pub placeholders: Vec<(String, String)>,
}

/// One promise and how the run did against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Which promise.
    pub promise: String,
    /// Its limit, as text.
    pub limit: String,
    /// What was measured, as text.
    pub measured: String,
    /// Whether it held.
    pub kept: bool,
}

/// What a drill found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Producers' run time, ms.
    pub duration_ms: u64,
    /// Workload counts.
    pub totals: WorkloadTotals,
    /// The checker's findings.
    pub check: Report,
    /// Each promise's outcome.
    pub verdicts: Vec<Verdict>,
}

impl DrillReport {
    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|verdict| verdict.kept)
    }

    /// A table for humans.
    pub fn render(&self) -> String {
        let mut out = format!(
            "drill {} (seed {}, {} ms): {} acknowledged, {} failed sends, {} deliveries\n",
            self.scenario,
            self.seed,
            self.duration_ms,
            self.totals.acknowledged,
            self.totals.failed,
            self.totals.received
        );
        out.push_str(&self.check.render_table());
        out.push_str("\npromise                 limit        measured     result\n");
        for verdict in &self.verdicts {
            out.push_str(&format!(
                "{:<23} {:<12} {:<12} {}\n",
                verdict.promise,
                verdict.limit,
                verdict.measured,
                if verdict.kept { "kept" } else { "BROKEN" }
            ));
        }
        out.push_str(if self.passed() {
            "all promises kept\n"
        } else {
            "a promise was broken\n"
        });
        out
    }
}

/// Runs `scenario` against `regions`; `progress` gets a line per step as it happens. Returns
/// the report and the history.
pub async fn run(
    scenario: &Scenario,
    regions: &mut [DrillRegion],
    options: DrillOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(DrillReport, History)> {
    scenario.validate()?;
    for name in scenario.regions_named() {
        if !regions.iter().any(|region| region.name == name) {
            return Err(ChaosError::InvalidSpec {
                field: "region",
                reason: format!("{name:?} is not a region of the fabric"),
            });
        }
    }
    for step in &scenario.steps {
        let owned = step.region.as_deref().is_none_or(|name| {
            regions
                .iter()
                .any(|region| region.name == name && region.process.is_some())
        });
        let link_step = matches!(
            step.action,
            Action::PartitionRegion | Action::HealRegion | Action::DegradeRegion
        );
        let linked = step.region.as_deref().is_none_or(|name| {
            regions
                .iter()
                .any(|region| region.name == name && !region.links.is_empty())
        });
        if link_step && !linked {
            return Err(ChaosError::InvalidSpec {
                field: "steps.action",
                reason: format!(
                    "{:?} needs the fabric's links to run through proxies, and {}'s do not",
                    step.action,
                    step.region.as_deref().unwrap_or_default()
                ),
            });
        }
        if step.action != Action::Command && !link_step && !owned {
            return Err(ChaosError::InvalidSpec {
                field: "steps.action",
                reason: format!(
                    "{} runs outside the drill; it cannot be {:?}",
                    step.region.as_deref().unwrap_or_default(),
                    step.action
                ),
            });
        }
    }
    let duration_ms = options.duration_ms.unwrap_or(scenario.duration_ms);
    let seed = options.seed.unwrap_or(scenario.seed);
    let spec = workload_spec(scenario, regions, duration_ms, seed);
    spec.validate()?;
    let recorder = Recorder::new(MAX_DRILL_EVENTS);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (spec, recorder, stop) = (spec.clone(), recorder.clone(), Arc::clone(&stop));
        async move { workload::run(&spec, &scenario_run_id(seed), &recorder, stop).await }
    });
    progress(&format!(
        "drill {}: {} regions, {} ms of load, {} steps",
        scenario.name,
        regions.len(),
        duration_ms,
        scenario.steps.len()
    ));
    for step in &scenario.steps {
        let at_ms = duration_ms * u64::from(step.at_percent) / 100;
        let wait_ms = at_ms.saturating_sub(recorder.now_ms());
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let (kind, target, note) = match carry_out(step, regions, &options.placeholders).await {
            Ok(done) => done,
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                return Err(error);
            }
        };
        recorder.record(Event::Fault {
            kind,
            target: target.clone(),
            at_ms: recorder.now_ms(),
            note: note.clone(),
        });
        progress(&format!(
            "  {:>7} ms  {:?} {target} {note}",
            recorder.now_ms(),
            step.action
        ));
    }
    // The workload ends by itself (its loops are bounded by time); this is the hang guard.
    let limit_ms = duration_ms
        + scenario.workload.drain_ms
        + scenario.workload.request_timeout_ms * (spec.max_send_attempts as u64 + 2)
        + 30_000;
    let totals = match tokio::time::timeout(Duration::from_millis(limit_ms), load).await {
        Ok(Ok(result)) => result?,
        Ok(Err(_)) => {
            return Err(ChaosError::InvalidSpec {
                field: "workload",
                reason: "the workload task failed".into(),
            });
        }
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            return Err(ChaosError::InvalidSpec {
                field: "workload",
                reason: format!("did not finish within {limit_ms} ms"),
            });
        }
    };
    let history = recorder.snapshot();
    let check_spec = CheckSpec {
        // The drill's group must receive every acknowledged message of its topic: a consumer
        // that received nothing at all is loss, not an empty expectation.
        expect: vec![crate::checker::Expectation {
            consumer_group: scenario.workload.consumer_group.clone(),
            topics: vec![scenario.topic.name.clone()],
        }],
        invisible_duration_ms: Some(DRILL_INVISIBLE_MS),
        failover_redelivery_window_ms: Some(DRILL_INVISIBLE_MS + scenario.workload.drain_ms),
        ..CheckSpec::default()
    };
    let report = check(&history, &check_spec);
    let verdicts = judge(&scenario.promises, &report, &totals, scenario.topic.fifo);
    Ok((
        DrillReport {
            scenario: scenario.name.clone(),
            seed,
            duration_ms,
            totals,
            check: report,
            verdicts,
        },
        history,
    ))
}

fn scenario_run_id(seed: u64) -> String {
    format!("drill{seed}")
}

fn workload_spec(
    scenario: &Scenario,
    regions: &[DrillRegion],
    duration_ms: u64,
    seed: u64,
) -> WorkloadSpec {
    let load = &scenario.workload;
    WorkloadSpec {
        regions: regions
            .iter()
            .map(|region| RegionTarget {
                name: region.name.clone(),
                endpoint: region.endpoint.clone(),
            })
            .collect(),
        producer_regions: load.producer_regions.clone(),
        consumer_regions: load.consumer_regions.clone(),
        topic: scenario.topic.name.clone(),
        consumer_group: load.consumer_group.clone(),
        message_groups: if scenario.topic.fifo {
            load.message_groups
        } else {
            0
        },
        producers_per_region: load.producers_per_region,
        rate_per_s: load.rate_per_s,
        max_messages: u64::from(load.rate_per_s) * duration_ms / 1000 + 1,
        duration_ms,
        drain_ms: load.drain_ms,
        request_timeout_ms: load.request_timeout_ms,
        max_send_attempts: (regions.len() as u32).saturating_mul(3).max(1),
        long_poll_ms: 1_000,
        invisible_ms: DRILL_INVISIBLE_MS,
        ack_probability_percent: 100,
        body_bytes: 256,
        seed,
    }
}

/// Carries out one step; returns the fault kind, its target and a note.
async fn carry_out(
    step: &Step,
    regions: &mut [DrillRegion],
    placeholders: &[(String, String)],
) -> Result<(FaultKind, String, String)> {
    if step.action == Action::Command {
        let command: Vec<String> = expand(&step.command, regions)
            .into_iter()
            .map(|part| {
                placeholders
                    .iter()
                    .fold(part, |part, (from, to)| part.replace(from.as_str(), to))
            })
            .collect();
        let note = run_command(&command).await?;
        return Ok((FaultKind::Other, command.join(" "), note));
    }
    if step.action == Action::KillMetaLeader {
        let index = meta_leader(regions).await?;
        let region = &mut regions[index];
        let process = region
            .process
            .as_mut()
            .ok_or_else(|| ChaosError::InvalidSpec {
                field: "steps.action",
                reason: format!("the meta leader {} runs outside the drill", region.name),
            })?;
        process.kill9().await?;
        return Ok((
            FaultKind::RegionDown,
            region.name.clone(),
            "meta leader".to_string(),
        ));
    }
    let name = step.region.clone().unwrap_or_default();
    let region = regions
        .iter_mut()
        .find(|region| region.name == name)
        .ok_or_else(|| ChaosError::InvalidSpec {
            field: "steps.region",
            reason: format!("{name:?} is not a region of the fabric"),
        })?;
    let link_faults = match step.action {
        Action::PartitionRegion => Some((LinkFaults::blackholed(), FaultKind::RegionDown)),
        Action::HealRegion => Some((LinkFaults::clean(), FaultKind::RegionUp)),
        Action::DegradeRegion => Some((
            step.faults.clone().unwrap_or_default(),
            FaultKind::LinkFault,
        )),
        _ => None,
    };
    if let Some((faults, kind)) = link_faults {
        for link in &region.links {
            link.set_faults(faults.clone())?;
        }
        let note = format!("{} links", region.links.len());
        return Ok((kind, name, note));
    }
    let process = region
        .process
        .as_mut()
        .ok_or_else(|| ChaosError::InvalidSpec {
            field: "steps.action",
            reason: format!(
                "{name} runs outside the drill; it cannot be {:?}",
                step.action
            ),
        })?;
    let kind = match step.action {
        Action::KillRegion => {
            process.kill9().await?;
            FaultKind::RegionDown
        }
        Action::StopRegion => {
            process.stop(STOP_GRACE_MS).await?;
            FaultKind::RegionDown
        }
        Action::PauseRegion => {
            process.pause()?;
            FaultKind::RegionDown
        }
        Action::ResumeRegion => {
            process.resume()?;
            FaultKind::RegionUp
        }
        Action::RestartRegion => {
            process.restart(STOP_GRACE_MS).await?;
            FaultKind::RegionUp
        }
        Action::Command
        | Action::KillMetaLeader
        | Action::PartitionRegion
        | Action::HealRegion
        | Action::DegradeRegion => FaultKind::Other,
    };
    Ok((kind, name, String::new()))
}

/// Attempts at finding the meta leader (an election may be under way), 200 ms apart.
const META_LEADER_ATTEMPTS_MAX: u32 = 50;
/// Longest one metrics scrape may take.
const SCRAPE_TIMEOUT_MS: u64 = 2_000;
/// Largest metrics page read.
const SCRAPE_MAX_BYTES: u64 = 4 << 20;

/// The index of the running region whose metrics say its meta node leads.
async fn meta_leader(regions: &mut [DrillRegion]) -> Result<usize> {
    for _ in 0..META_LEADER_ATTEMPTS_MAX {
        for (index, region) in regions.iter_mut().enumerate() {
            let running = region
                .process
                .as_mut()
                .is_some_and(|process| process.state() == crate::process::ProcessState::Running);
            let Some(metrics) = region.metrics.as_deref().filter(|_| running) else {
                continue;
            };
            let Ok(page) = scrape(metrics).await else {
                continue;
            };
            let leads = page.lines().any(|line| {
                line.starts_with("meridian_meta_is_leader{") && line.trim_end().ends_with(" 1")
            });
            if leads {
                return Ok(index);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ChaosError::InvalidSpec {
        field: "steps.action",
        reason: "kill-meta-leader: no region's metrics named it the meta leader".into(),
    })
}

/// `GET /metrics` over plain HTTP/1.0 (the body ends when the server closes).
async fn scrape(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut body = String::new();
        stream
            .take(SCRAPE_MAX_BYTES)
            .read_to_string(&mut body)
            .await?;
        Ok(body)
    };
    tokio::time::timeout(Duration::from_millis(SCRAPE_TIMEOUT_MS), fetch)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "metrics scrape"))?
}

/// Replaces `{region:NAME}` by that region's endpoint and `{admin}` by the first region's.
fn expand(command: &[String], regions: &[DrillRegion]) -> Vec<String> {
    command
        .iter()
        .map(|part| {
            let mut out = part.clone();
            if let Some(first) = regions.first() {
                out = out.replace("{admin}", &first.endpoint);
            }
            for region in regions {
                out = out.replace(&format!("{{region:{}}}", region.name), &region.endpoint);
            }
            out
        })
        .collect()
}

async fn run_command(command: &[String]) -> Result<String> {
    let Some((program, args)) = command.split_first() else {
        return Err(ChaosError::InvalidSpec {
            field: "steps.command",
            reason: "empty".into(),
        });
    };
    let spec = ProcessSpec::new(program, args);
    let output = tokio::time::timeout(
        Duration::from_millis(COMMAND_TIMEOUT_MS),
        tokio::process::Command::new(&spec.program)
            .args(&spec.args)
            .output(),
    )
    .await
    .map_err(|_| ChaosError::InvalidSpec {
        field: "steps.command",
        reason: format!("{program} ran longer than {COMMAND_TIMEOUT_MS} ms"),
    })?
    .map_err(|source| ChaosError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let mut note = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        note = format!(
            "exit {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(note.chars().take(200).collect())
}

/// Compares the findings with the promises.
fn judge(
    promises: &Promises,
    report: &Report,
    totals: &WorkloadTotals,
    fifo_topic: bool,
) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let mut limit = |promise: &str, limit: Option<u64>, measured: u64| {
        verdicts.push(Verdict {
            promise: promise.to_string(),
            limit: limit.map_or("-".into(), |limit| limit.to_string()),
            measured: measured.to_string(),
            kept: limit.is_none_or(|limit| measured <= limit),
        });
    };
    limit(
        "lost messages",
        promises.max_lost.map(|n| n as u64),
        report.lost_count as u64,
    );
    limit(
        "duplicates",
        promises.max_duplicates.map(|n| n as u64),
        report.duplicate_count as u64,
    );
    limit("failed sends", promises.max_failed_sends, totals.failed);
    let rpo = report
        .rpo
        .iter()
        .map(|rpo| rpo.missing_count as u64)
        .max()
        .unwrap_or(0);
    limit(
        "RPO (messages)",
        promises.max_rpo_messages.map(|n| n as u64),
        rpo,
    );
    // RTO: until the last displaced producer had a send acknowledged elsewhere; a producer
    // that never recovered counts as the whole run.
    let rto = report
        .rto
        .iter()
        .map(|rto| {
            if rto.displaced_producers == 0 {
                0
            } else {
                rto.producers_recovered_ms.unwrap_or(u64::MAX)
            }
        })
        .max()
        .unwrap_or(0);
    verdicts.push(Verdict {
        promise: "RTO (ms)".into(),
        limit: promises
            .max_rto_ms
            .map_or("-".into(), |limit| limit.to_string()),
        measured: if rto == u64::MAX {
            "never".into()
        } else {
            rto.to_string()
        },
        kept: promises.max_rto_ms.is_none_or(|limit| rto <= limit),
    });
    if fifo_topic || promises.fifo_order {
        verdicts.push(Verdict {
            promise: "FIFO order".into(),
            limit: if promises.fifo_order { "0" } else { "-" }.into(),
            measured: report.fifo_violation_count.to_string(),
            kept: !promises.fifo_order || report.fifo_violation_count == 0,
        });
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::RtoReport;

    #[test]
    fn a_broken_promise_is_reported_with_its_measure() {
        let promises = Promises {
            max_lost: Some(0),
            max_duplicates: Some(0),
            max_rto_ms: Some(3_000),
            fifo_order: true,
            ..Promises::default()
        };
        let report = Report {
            lost_count: 2,
            fifo_violation_count: 1,
            rto: vec![RtoReport {
                region_down: "us-east".into(),
                fault_at_ms: 1_000,
                survivors: Vec::new(),
                displaced_producers: 2,
                producers_recovered_ms: None,
                displaced_consumers: 0,
                consumers_recovered_ms: None,
            }],
            ..Report::default()
        };
        let verdicts = judge(&promises, &report, &WorkloadTotals::default(), true);
        let find = |name: &str| {
            verdicts
                .iter()
                .find(|verdict| verdict.promise == name)
                .cloned()
                .unwrap_or_else(|| panic!("no verdict {name}"))
        };
        assert!(!find("lost messages").kept);
        assert_eq!(find("lost messages").measured, "2");
        assert!(find("duplicates").kept);
        let rto = find("RTO (ms)");
        assert!(!rto.kept, "a producer that never recovered breaks the RTO");
        assert_eq!(rto.measured, "never");
        assert!(!find("FIFO order").kept);
        assert!(
            find("RPO (messages)").kept,
            "an unset promise is only reported"
        );
    }

    #[test]
    fn placeholders_are_replaced_by_endpoints() {
        let regions = vec![
            DrillRegion {
                name: "a".into(),
                endpoint: "127.0.0.1:1".into(),
                process: None,
                links: Vec::new(),
                metrics: None,
            },
            DrillRegion {
                name: "b".into(),
                endpoint: "127.0.0.2:2".into(),
                process: None,
                links: Vec::new(),
                metrics: None,
            },
        ];
        assert_eq!(
            expand(
                &["--to".into(), "{region:b}".into(), "--via={admin}".into()],
                &regions
            ),
            vec!["--to", "127.0.0.2:2", "--via=127.0.0.1:1"]
        );
    }
}
