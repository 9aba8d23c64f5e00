//! `meridian drill run SCENARIO --repeat N`: the same scenario N times, each on a fresh fabric
//! with the next seed, and the distribution of what the promises are about: RTO (fault → every
//! displaced producer acknowledged elsewhere; fault → first receive in a survivor), RPO
//! (acknowledged messages missing), loss, duplicates, and the write pause of a switchover step.

use std::path::Path;

use anyhow::bail;
use meridian_chaos::drill::{DrillReport, Scenario};

use super::{RunArgs, RunOutcome, drive};

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct RunFigures {
    run: u32,
    seed: u64,
    passed: bool,
    /// Fault → the last displaced producer's first acknowledged send elsewhere, ms.
    rto_producers_ms: Option<u64>,
    /// Fault → the first message received in a surviving region, ms.
    rto_first_receive_ms: Option<u64>,
    rpo_messages: u64,
    lost: u64,
    duplicates: u64,
    write_pause_ms: Option<u64>,
}

/// The write pause a `topic switchover` step printed ("... writes paused 169 ms").
pub(crate) fn write_pause_ms(note: &str) -> Option<u64> {
    let rest = note.split("writes paused ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn figures(run: u32, seed: u64, outcome: &RunOutcome) -> RunFigures {
    let report: &DrillReport = &outcome.report;
    let check = &report.check;
    let rto_producers_ms = check
        .rto
        .iter()
        .filter(|rto| rto.displaced_producers > 0)
        .map(|rto| rto.producers_recovered_ms.unwrap_or(u64::MAX))
        .max();
    let rto_first_receive_ms = check
        .rto
        .iter()
        .filter_map(|rto| {
            rto.survivors
                .iter()
                .filter_map(|survivor| survivor.first_receive_ms)
                .min()
        })
        .max();
    RunFigures {
        run,
        seed,
        passed: report.passed(),
        rto_producers_ms,
        rto_first_receive_ms,
        rpo_messages: check
            .rpo
            .iter()
            .map(|rpo| rpo.missing_count as u64)
            .max()
            .unwrap_or(0),
        lost: check.lost_count as u64,
        duplicates: check.duplicate_count as u64,
        write_pause_ms: outcome.write_pause_ms,
    }
}

/// Nearest-rank percentile of `values` (sorted here); `None` when empty.
fn percentile(values: &[u64], percent: u64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (percent * sorted.len() as u64).div_ceil(100).max(1) as usize;
    sorted.get(rank - 1).copied()
}

fn distribution(name: &str, values: &[u64]) -> String {
    let show = |value: Option<u64>| match value {
        Some(u64::MAX) => "never".to_string(),
        Some(value) => value.to_string(),
        None => "-".to_string(),
    };
    format!(
        "{name:<28} {:>5} {:>8} {:>8} {:>8}",
        values.len(),
        show(percentile(values, 50)),
        show(percentile(values, 99)),
        show(values.iter().max().copied())
    )
}

pub(super) async fn run_repeated(
    scenario: &Scenario,
    args: &RunArgs,
    dir: &Path,
    first_seed: u64,
) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for run in 0..args.repeat {
        let seed = first_seed.wrapping_add(u64::from(run));
        let run_dir = dir.join(format!("run-{run}"));
        eprintln!(
            "run {}/{} of {} (seed {seed})",
            run + 1,
            args.repeat,
            scenario.name
        );
        let outcome = drive(scenario, args, &run_dir, seed).await?;
        runs.push(figures(run, seed, &outcome));
    }
    let collect = |pick: fn(&RunFigures) -> Option<u64>| -> Vec<u64> {
        runs.iter().filter_map(pick).collect()
    };
    let rto_producers = collect(|run| run.rto_producers_ms);
    let rto_receive = collect(|run| run.rto_first_receive_ms);
    let rpo = collect(|run| Some(run.rpo_messages));
    let lost = collect(|run| Some(run.lost));
    let duplicates = collect(|run| Some(run.duplicates));
    let pauses = collect(|run| run.write_pause_ms);
    let failed = runs.iter().filter(|run| !run.passed).count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "scenario": scenario.name,
                "runs": runs,
                "failed_runs": failed,
            }))?
        );
    } else {
        println!(
            "\n{} over {} runs (seeds {first_seed}..{}):",
            scenario.name,
            runs.len(),
            first_seed.wrapping_add(u64::from(args.repeat) - 1)
        );
        println!(
            "{:<28} {:>5} {:>8} {:>8} {:>8}",
            "measure", "runs", "p50", "p99", "max"
        );
        for (name, values) in [
            ("RTO producers (ms)", &rto_producers),
            ("RTO first receive (ms)", &rto_receive),
            ("RPO (messages)", &rpo),
            ("lost", &lost),
            ("duplicates", &duplicates),
            ("switchover write pause (ms)", &pauses),
        ] {
            println!("{}", distribution(name, values));
        }
        println!("runs with a broken promise: {failed} of {}", runs.len());
    }
    if failed > 0 {
        bail!(
            "drill {}: a promise was broken in {failed} of {} runs",
            scenario.name,
            runs.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&values, 50), Some(5));
        assert_eq!(percentile(&values, 99), Some(10));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn the_switchover_note_gives_the_pause() {
        assert_eq!(
            write_pause_ms("topic t: home moved from a to b (epoch 3); writes paused 169 ms"),
            Some(169)
        );
        assert_eq!(write_pause_ms("done"), None);
    }
}
