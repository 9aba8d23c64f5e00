//! `meridian-chaos` CLI: run fault proxies (controlled on stdin and by a schedule), generate a
//! seeded schedule, and check a recorded history.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_chaos::checker::{CheckSpec, check};
use meridian_chaos::control::{MAX_CONTROL_LINE_BYTES, apply_command, parse_command};
use meridian_chaos::history::History;
use meridian_chaos::links::{LinksFile, start_links};
use meridian_chaos::schedule::{GenerateSpec, Schedule, run_schedule};
use meridian_chaos::{ChaosError, ProxyControl};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
#[command(
    name = "meridian-chaos",
    about = "Fault proxies, schedules and history checks for Meridian"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a JSON-lines history; exit 1 if it has violations.
    Check {
        /// History file (one JSON event per line).
        #[arg(long)]
        history: PathBuf,
        /// Checker settings (TOML); defaults when omitted.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Refuse histories with more events than this.
        #[arg(long, default_value_t = 10_000_000)]
        max_events: usize,
    },
    /// Run the proxies of a links file; read control commands on stdin (`help` lists them).
    Proxy {
        /// Links file (TOML, `[[link]]` tables).
        #[arg(long)]
        links: PathBuf,
        /// Fault schedule (TOML) to apply from start; also seeds the links.
        #[arg(long)]
        schedule: Option<PathBuf>,
    },
    /// Print a random schedule generated from a seed (TOML, or JSON with --json).
    Schedule {
        /// Seed; the same seed and options give the same schedule.
        #[arg(long)]
        seed: u64,
        /// Link names (repeat the flag).
        #[arg(long = "link", required = true)]
        links: Vec<String>,
        /// Length of the run.
        #[arg(long, default_value_t = 60_000)]
        duration_ms: u64,
        /// Time between changes.
        #[arg(long, default_value_t = 5_000)]
        step_every_ms: u64,
        /// Ceiling of generated latency.
        #[arg(long, default_value_t = 200)]
        max_latency_ms: u64,
        /// Ceiling of generated loss.
        #[arg(long, default_value_t = 5.0)]
        max_loss_percent: f64,
        /// Share of steps that are blackholes.
        #[arg(long, default_value_t = 10.0)]
        blackhole_percent: f64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("meridian-chaos: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, ChaosError> {
    match cli.command {
        Command::Check {
            history,
            spec,
            json,
            max_events,
        } => {
            let file = std::fs::File::open(&history)
                .map_err(|e| ChaosError::io(format!("opening {}", history.display()), e))?;
            let history = History::read_jsonl(std::io::BufReader::new(file), max_events)?;
            let spec = match spec {
                Some(path) => {
                    toml::from_str::<CheckSpec>(&read_text(&path)?).map_err(|source| {
                        ChaosError::Toml {
                            what: "checker spec",
                            source,
                        }
                    })?
                }
                None => CheckSpec::default(),
            };
            let report = check(&history, &spec);
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render_table());
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Proxy { links, schedule } => {
            let links = LinksFile::from_toml_str(&read_text(&links)?)?;
            let schedule = match schedule {
                Some(path) => Schedule::from_toml_str(&read_text(&path)?)?,
                None => Schedule::default(),
            };
            run_proxies(links, schedule).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule {
            seed,
            links,
            duration_ms,
            step_every_ms,
            max_latency_ms,
            max_loss_percent,
            blackhole_percent,
            json,
        } => {
            let spec = GenerateSpec {
                links,
                duration_ms,
                step_every_ms,
                max_latency_ms,
                max_loss_percent,
                blackhole_percent,
            };
            let schedule = Schedule::generate(seed, &spec)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&schedule).map_err(ChaosError::Json)?
                );
            } else {
                let text = toml::to_string(&schedule)
                    .map_err(|e| ChaosError::InvalidSchedule(e.to_string()))?;
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_text(path: &PathBuf) -> Result<String, ChaosError> {
    std::fs::read_to_string(path)
        .map_err(|e| ChaosError::io(format!("reading {}", path.display()), e))
}

async fn run_proxies(links: LinksFile, schedule: Schedule) -> Result<(), ChaosError> {
    let handles = start_links(&links.link, &schedule).await?;
    let controls: BTreeMap<String, ProxyControl> = handles
        .iter()
        .map(|(name, handle)| (name.clone(), handle.control()))
        .collect();
    for (name, handle) in &handles {
        println!("{name} listening on {}", handle.local_addr());
    }
    let by_name: HashMap<String, ProxyControl> = controls.clone().into_iter().collect();
    let schedule_task = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        run_schedule(&schedule, &by_name, start, |_| {}).await
    });
    let control_loop = async {
        let mut stdin = BufReader::new(tokio::io::stdin());
        let mut stdout = tokio::io::stdout();
        let mut line = String::new();
        loop {
            line.clear();
            let limit = u64::try_from(MAX_CONTROL_LINE_BYTES).unwrap_or(u64::MAX);
            let read = (&mut stdin).take(limit).read_line(&mut line).await;
            let reply = match read {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') && line.len() >= MAX_CONTROL_LINE_BYTES => {
                    // Skip the rest of an over-long line before going on.
                    let mut rest = Vec::new();
                    let _ = (&mut stdin)
                        .take(16 * limit)
                        .read_until(b'\n', &mut rest)
                        .await;
                    format!("error: line longer than {MAX_CONTROL_LINE_BYTES} bytes")
                }
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => match parse_command(&line).and_then(|c| apply_command(&c, &controls)) {
                    Ok(reply) => reply,
                    Err(message) => format!("error: {message}"),
                },
            };
            let _ = stdout.write_all(format!("{reply}\n").as_bytes()).await;
            let _ = stdout.flush().await;
        }
        // Stdin closed (e.g. run in the background): keep proxying until Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::select! {
        () = control_loop => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    schedule_task.abort();
    for (_, handle) in handles {
        handle.shutdown().await;
    }
    Ok(())
}
