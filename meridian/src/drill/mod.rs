//! `meridian drill run SCENARIO`: a DR drill against a fabric of real processes.
//!
//! It writes a fabric of the dev topology (`meridian fabric init`, free ports) under `--dir` (a
//! temporary directory by default), starts one `meridian start` process per region, waits for
//! each to print `ready`, creates the scenario's topic through meta and its consumer group in
//! every cell with this binary's own CLI, runs the scenario (`meridian_chaos::drill`: the
//! workload, the steps on their timeline, the checker), prints progress and the report, stops
//! the processes and exits non-zero when a promise of the scenario was broken. A scenario that
//! partitions or degrades a region gets a fabric whose links between regions run through fault
//! proxies (`links`).

mod links;
mod repeat;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meridian_cell::storage::Durability;
use meridian_chaos::drill::{self, DrillOptions, DrillRegion, Scenario};
use meridian_chaos::{ManagedProcess, ProcessSpec};

use crate::fabric;

/// How long a region may take to print `ready` (a meta election included).
const READY_TIMEOUT_MS: u64 = 120_000;
/// How long one CLI command of the set-up may run.
const SETUP_COMMAND_TIMEOUT_MS: u64 = 120_000;
/// Grace of the final stop before SIGKILL.
const STOP_GRACE_MS: u64 = 10_000;

/// `meridian drill ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DrillCommand {
    /// Run one scenario file against a fabric this command starts.
    Run(RunArgs),
}

/// Arguments of `meridian drill run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The scenario file (TOML; see `chaos/scenarios/`).
    scenario: PathBuf,
    /// Where the fabric's files, data and logs go (kept); a temporary directory when unset.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run the load this long instead of the scenario's `duration_ms`.
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Seed instead of the scenario's.
    #[arg(long)]
    seed: Option<u64>,
    /// Durability of every region's log: `sync` or `async`.
    #[arg(long, default_value = "sync")]
    durability: Durability,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the history (JSON lines) to this file.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Run the scenario this many times, each on a fresh fabric with the next seed, and print
    /// the RTO, RPO and write-pause distribution over the runs (1..=100).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
}

pub(crate) fn run(command: DrillCommand) -> anyhow::Result<()> {
    let DrillCommand::Run(args) = command;
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("reading {}", args.scenario.display()))?;
    let scenario = Scenario::from_toml(&text)
        .with_context(|| format!("scenario {}", args.scenario.display()))?;
    let temporary = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary directory")?),
    };
    let dir = match (&args.dir, &temporary) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temporary)) => temporary.path().to_path_buf(),
        (None, None) => bail!("no directory"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let first_seed = args.seed.unwrap_or(scenario.seed);
    if args.repeat > 1 {
        return runtime.block_on(repeat::run_repeated(&scenario, &args, &dir, first_seed));
    }
    let outcome = runtime.block_on(drive(&scenario, &args, &dir, first_seed))?;
    if !outcome.report.passed() {
        bail!("drill {}: a promise was broken", scenario.name);
    }
    Ok(())
}

/// One run's report and the write pause a switchover step reported, if any.
pub(crate) struct RunOutcome {
    pub(crate) report: drill::DrillReport,
    pub(crate) write_pause_ms: Option<u64>,
}

async fn drive(
    scenario: &Scenario,
    args: &RunArgs,
    dir: &Path,
    seed: u64,
) -> anyhow::Result<RunOutcome> {
    let files = fabric::init(dir, false, args.durability)?;
    let binary = std::env::current_exe().context("locating this binary")?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let links = if scenario.needs_links() {
        let Some((_, first)) = files.configs.first() else {
            bail!("the fabric has no region");
        };
        let text = std::fs::read_to_string(first)
            .with_context(|| format!("reading {}", first.display()))?;
        let fabric = meridian_topology::Fabric::from_toml_str(&text)
            .with_context(|| format!("the fabric configuration {}", first.display()))?;
        let links = links::DrillLinks::start(&fabric.config().regions).await?;
        eprintln!("links between regions run through fault proxies");
        Some(links)
    } else {
        None
    };
    let mut regions = Vec::new();
    for (((name, config), (_, endpoint)), (_, metrics)) in
        files.configs.iter().zip(&files.grpc).zip(&files.metrics)
    {
        let log_path = logs.join(format!("{name}.log"));
        let mut process_args: Vec<OsString> =
            vec!["start".into(), "--config".into(), config.into()];
        if let Some(links) = &links {
            process_args.extend(links.dial_args(name).into_iter().map(OsString::from));
        }
        if let Some(offset_ms) = scenario.clock_offsets_ms.get(name) {
            process_args.push(format!("--clock-offset-ms={offset_ms}").into());
        }
        let spec = ProcessSpec {
            program: binary.clone(),
            args: process_args,
            env: vec![(
                OsString::from("RUST_LOG"),
                OsString::from("info,rocksdb=warn,openraft=warn"),
            )],
            current_dir: None,
            log_path: Some(log_path),
        };
        let process = ManagedProcess::spawn(spec).with_context(|| format!("starting {name}"))?;
        eprintln!("started {name} (pid {:?})", process.pid());
        regions.push(DrillRegion {
            name: name.clone(),
            endpoint: endpoint.clone(),
            process: Some(process),
            metrics: Some(metrics.clone()),
            links: links
                .as_ref()
                .map(|links| links.controls_of(name))
                .unwrap_or_default(),
        });
    }
    let outcome = drill_on(scenario, args, dir, &files, &mut regions, seed).await;
    // All at once: a region stopping alone may wait for the meta quorum the others just left.
    let stops: Vec<_> = regions
        .iter_mut()
        .filter_map(|region| region.process.take())
        .map(|mut process| {
            tokio::spawn(async move {
                let _ = process.stop(STOP_GRACE_MS).await;
            })
        })
        .collect();
    for stop in stops {
        let _ = stop.await;
    }
    if let Some(links) = links {
        links.shutdown().await;
    }
    outcome
}

async fn drill_on(
    scenario: &Scenario,
    args: &RunArgs,
    dir: &Path,
    files: &fabric::FabricFiles,
    regions: &mut [DrillRegion],
    seed: u64,
) -> anyhow::Result<RunOutcome> {
    for region in regions.iter() {
        wait_ready(&dir.join("logs").join(format!("{}.log", region.name))).await?;
    }
    eprintln!("fabric ready in {}", dir.display());
    set_up_topic(scenario, &files.endpoints_file).await?;
    let binary = std::env::current_exe().context("locating this binary")?;
    let options = DrillOptions {
        duration_ms: args.duration_ms,
        seed: Some(seed),
        placeholders: vec![
            ("{meridian}".to_string(), binary.display().to_string()),
            (
                "{endpoints}".to_string(),
                files.endpoints_file.display().to_string(),
            ),
        ],
    };
    let (report, history) = drill::run(scenario, regions, options, &|line: &str| {
        eprintln!("{line}");
    })
    .await?;
    if let Some(path) = &args.history {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        history.write_jsonl(std::io::BufWriter::new(file))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    let write_pause_ms = history.events.iter().find_map(|event| match event {
        meridian_chaos::Event::Fault { note, .. } => repeat::write_pause_ms(note),
        _ => None,
    });
    Ok(RunOutcome {
        report,
        write_pause_ms,
    })
}

/// Waits until the region's log shows `ready` (or the process's end, or the time limit).
async fn wait_ready(log: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|line| line.trim() == "ready") {
            return Ok(());
        }
        if started.elapsed() > Duration::from_millis(READY_TIMEOUT_MS) {
            bail!(
                "{} did not print `ready` within {READY_TIMEOUT_MS} ms; see the log",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the scenario's topic through meta and its consumer group in every cell, with this
/// binary's own CLI (so a drill also exercises what an operator runs).
async fn set_up_topic(scenario: &Scenario, endpoints_file: &Path) -> anyhow::Result<()> {
    let topic = &scenario.topic;
    let file = endpoints_file.display().to_string();
    let kind = if topic.fifo { "fifo" } else { "normal" };
    let mut create = vec![
        "topic",
        "create",
        topic.name.as_str(),
        "--type",
        kind,
        "--queues",
        "8",
        "--replication",
        topic.replication.as_str(),
        "--topology",
        topic.topology.as_str(),
        "--endpoints-file",
        file.as_str(),
    ];
    if let Some(home) = &topic.home {
        create.extend(["--home", home.as_str()]);
    }
    cli(&create).await?;
    let mut group = vec![
        "group",
        "create",
        scenario.workload.consumer_group.as_str(),
        "--endpoints-file",
        file.as_str(),
    ];
    if topic.fifo {
        group.push("--fifo");
    }
    cli(&group).await?;
    Ok(())
}

async fn cli(args: &[&str]) -> anyhow::Result<()> {
    let binary: PathBuf = std::env::current_exe().context("locating this binary")?;
    let output = tokio::time::timeout(
        Duration::from_millis(SETUP_COMMAND_TIMEOUT_MS),
        tokio::process::Command::new(binary).args(args).output(),
    )
    .await
    .with_context(|| format!("meridian {} ran too long", args.join(" ")))?
    .with_context(|| format!("running meridian {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "meridian {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
