//! The admin and test CLI: `meridian topic|group|send|receive|message|region ...`.
//!
//! Every command talks gRPC to one or more cells: Meridian's admin API
//! (`meridian.admin.v1.Admin`) for topics, groups, queries and status, and the RocketMQ v2
//! `MessagingService` (the protocol the official clients speak) for `send` and `receive`.
//! Where to connect comes from `--endpoint HOST:PORT` (repeatable) or `--endpoints-file
//! DATA_DIR/endpoints.json` (written by `meridian dev`; every region in it, narrowed with
//! `--region`). Commands that change settings (topic create, group create, group rewind) apply
//! to every target; read commands report every target; `send` and `receive` use exactly one.
//! Human output by default, one JSON document with `--json`. Errors name the flag and the fix.
//!
//! Topics go through meta when the endpoints file names it (`meridian dev` writes each
//! region's `meta` endpoint, certificate directory and admin token file): `topic create`
//! (`--regions`, `--replication async|sync-quorum`, `--topology active-active|active-standby
//! --home REGION`) writes the topic into meta, then waits until each selected cell among the
//! topic's regions holds it, and `topic list` prints meta's view (regions, replication,
//! topology, home, epoch). `--cells` keeps the per-cell path, as does an `--endpoint` target.

mod admin;
mod messaging;
mod meta;
mod switchover;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// Default `--endpoints-file` when neither flag is given: where `meridian dev` writes it by
/// default.
const DEFAULT_ENDPOINTS_FILE: &str = "./meridian-dev-data/endpoints.json";
/// How long a connection attempt to a cell may take.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long one unary call may take.
const CALL_TIMEOUT_MS: u64 = 30_000;

/// Which cells a command talks to, and how it prints.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// gRPC endpoint of a cell, HOST:PORT or http://HOST:PORT (repeatable).
    #[arg(long = "endpoint", global = true)]
    endpoints: Vec<String>,
    /// The endpoints.json that `meridian dev` writes into its data directory; every region in
    /// it is a target (default ./meridian-dev-data/endpoints.json when no --endpoint is given).
    #[arg(long, global = true)]
    endpoints_file: Option<PathBuf>,
    /// With --endpoints-file: only these regions (repeatable).
    #[arg(long = "region", global = true)]
    regions: Vec<String>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
}

/// One cell to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// Region name (from an endpoints file) or the endpoint as given.
    pub(crate) label: String,
    /// `http://host:port`.
    pub(crate) url: String,
}

impl Target {
    /// The cells to talk to, in the order given (an endpoints file: sorted by region).
    pub(crate) fn resolve(&self) -> anyhow::Result<Vec<Endpoint>> {
        if !self.endpoints.is_empty() {
            if self.endpoints_file.is_some() {
                bail!("give --endpoint or --endpoints-file, not both");
            }
            if !self.regions.is_empty() {
                bail!(
                    "--region selects regions of --endpoints-file; with --endpoint, name the \
                     endpoint itself"
                );
            }
            return self
                .endpoints
                .iter()
                .map(|endpoint| {
                    Ok(Endpoint {
                        label: endpoint.clone(),
                        url: endpoint_url(endpoint)?,
                    })
                })
                .collect();
        }
        let (path, explicit) = match &self.endpoints_file {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_ENDPOINTS_FILE), false),
        };
        let text = std::fs::read_to_string(&path).map_err(|error| {
            if explicit {
                anyhow::anyhow!("--endpoints-file {}: {error}", path.display())
            } else {
                anyhow::anyhow!(
                    "no target: give --endpoint HOST:PORT or --endpoints-file \
                     DATA_DIR/endpoints.json (the default {} is unreadable: {error})",
                    path.display()
                )
            }
        })?;
        let targets = parse_endpoints_file(&text)
            .with_context(|| format!("--endpoints-file {}", path.display()))?;
        if self.regions.is_empty() {
            return Ok(targets);
        }
        let mut chosen = Vec::with_capacity(self.regions.len());
        for region in &self.regions {
            match targets.iter().find(|target| &target.label == region) {
                Some(target) => chosen.push(target.clone()),
                None => bail!(
                    "--region {region}: not in {}; regions there: {}",
                    path.display(),
                    targets
                        .iter()
                        .map(|target| target.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        Ok(chosen)
    }

    /// The one cell `send` and `receive` use.
    pub(crate) fn single(&self, command: &str) -> anyhow::Result<Endpoint> {
        let mut targets = self.resolve()?;
        match targets.len() {
            1 => Ok(targets.remove(0)),
            0 => bail!("{command}: no endpoint; give --endpoint HOST:PORT"),
            count => bail!(
                "{command} talks to one cell but {count} are selected ({}); give one --endpoint, \
                 or --endpoints-file with one --region",
                targets
                    .iter()
                    .map(|target| target.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// `http://host:port` from what the user typed.
fn endpoint_url(text: &str) -> anyhow::Result<String> {
    let trimmed = text.trim();
    let rest = trimmed
        .strip_prefix("http://")
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if trimmed.starts_with("https://") {
        bail!("--endpoint {text}: TLS endpoints are not supported by the CLI yet; use http://");
    }
    let valid = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid {
        bail!("--endpoint {text}: write HOST:PORT, e.g. 127.0.0.1:8081");
    }
    Ok(format!("http://{rest}"))
}

/// Regions and their gRPC endpoints from an endpoints.json, sorted by region.
fn parse_endpoints_file(text: &str) -> anyhow::Result<Vec<Endpoint>> {
    let value: serde_json::Value =
        serde_json::from_str(text).context("not JSON; rewrite it by restarting `meridian dev`")?;
    let Some(regions) = value.as_object() else {
        bail!("expected an object of regions, as `meridian dev` writes");
    };
    let mut targets = Vec::with_capacity(regions.len());
    for (region, entry) in regions {
        let Some(grpc) = entry.get("grpc").and_then(|grpc| grpc.as_str()) else {
            bail!("region {region} has no \"grpc\" endpoint");
        };
        targets.push(Endpoint {
            label: region.clone(),
            url: endpoint_url(grpc).with_context(|| format!("region {region}"))?,
        });
    }
    if targets.is_empty() {
        bail!("lists no region");
    }
    targets.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(targets)
}

/// A gRPC channel to `endpoint`.
pub(crate) async fn connect(endpoint: &Endpoint) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(endpoint.url.clone())
        .with_context(|| format!("endpoint {}: not a valid URL", endpoint.url))?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(CALL_TIMEOUT_MS))
        .connect()
        .await
        .with_context(|| {
            format!(
                "connecting to {} ({}); is `meridian dev` running, and is the endpoint right?",
                endpoint.label, endpoint.url
            )
        })
}

/// The subcommands of the CLI.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CliCommand {
    /// Topics: create, describe, list.
    Topic {
        #[command(subcommand)]
        command: admin::TopicCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Consumer groups: create, describe (lag per queue), rewind.
    Group {
        #[command(subcommand)]
        command: admin::GroupCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Messages: query by id or key, trace.
    Message {
        #[command(subcommand)]
        command: admin::MessageCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Regions: status.
    Region {
        #[command(subcommand)]
        command: admin::RegionCommand,
        #[command(flatten)]
        target: Target,
    },
    /// Send messages through the RocketMQ protocol (for quick tests).
    Send {
        #[command(flatten)]
        args: messaging::SendArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Receive (and acknowledge) messages through the RocketMQ protocol (for quick tests).
    Receive {
        #[command(flatten)]
        args: messaging::ReceiveArgs,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs one CLI command.
pub(crate) fn run(command: CliCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        match command {
            CliCommand::Topic { command, target } => admin::topic(command, &target).await,
            CliCommand::Group { command, target } => admin::group(command, &target).await,
            CliCommand::Message { command, target } => admin::message(command, &target).await,
            CliCommand::Region { command, target } => admin::region(command, &target).await,
            CliCommand::Send { args, target } => messaging::send(args, &target).await,
            CliCommand::Receive { args, target } => messaging::receive(args, &target).await,
        }
    })
}

/// Prints a JSON document.
pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_name_the_fix() {
        assert_eq!(
            endpoint_url("127.0.0.1:8081").unwrap(),
            "http://127.0.0.1:8081"
        );
        assert_eq!(
            endpoint_url("http://127.0.0.2:8082/").unwrap(),
            "http://127.0.0.2:8082"
        );
        assert!(
            endpoint_url("127.0.0.1")
                .unwrap_err()
                .to_string()
                .contains("HOST:PORT")
        );
        assert!(endpoint_url("https://x:1").is_err());
    }

    #[test]
    fn endpoints_file_lists_regions_sorted() {
        let text =
            r#"{"us-east": {"grpc": "127.0.0.1:8081"}, "eu-west": {"grpc": "127.0.0.2:8082"}}"#;
        let targets = parse_endpoints_file(text).unwrap();
        assert_eq!(
            targets,
            vec![
                Endpoint {
                    label: "eu-west".into(),
                    url: "http://127.0.0.2:8082".into()
                },
                Endpoint {
                    label: "us-east".into(),
                    url: "http://127.0.0.1:8081".into()
                },
            ]
        );
        assert!(
            parse_endpoints_file(r#"{"a": {}}"#)
                .unwrap_err()
                .to_string()
                .contains("no \"grpc\"")
        );
    }
}
