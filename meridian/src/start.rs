//! `meridian start --config FILE [--data-dir DIR]`: one region of a fabric in its own process.
//!
//! The configuration is the fabric's file (see `docs/configuration.md`); its `[node] region`
//! names the region this process runs, through the same [`crate::region`] module `meridian
//! dev` uses (meta node, cell, replicator, meta agent). `meridian start` needs `[tls]` (the
//! region's certificate, key and the fabric CA: replication and meta are mutual TLS only) and
//! `[auth] admin_token` (meta refuses admin writes without it, and the agent registers the
//! region with it). The meta Raft timers derive from the largest round trip of `[[links]]`
//! (`meridian_meta::MetaConfig::new`); `[meta]` timings are not used yet. The region's data
//! goes to `--data-dir`, else to its `data_dir` in the file. `ready` is printed once the region
//! is registered in meta (which needs a meta quorum); SIGTERM or Ctrl-C stops it cleanly, and
//! a restart on the same data directory rejoins the meta group with what is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use meridian_cell::storage::Durability;
use meridian_pki::NodeIdentity;
use meridian_topology::{Fabric, FabricConfig, SecretRef};

use crate::dev::wait_for_stop;
use crate::region::{RegionOptions, RunningRegion};

/// Queues of topics created on first use.
const AUTO_CREATE_QUEUES: u32 = 4;
/// Cell heartbeat period.
const HEARTBEAT_INTERVAL_MS: u64 = meridian_router::health::DEFAULT_HEARTBEAT_INTERVAL_MS;

/// Arguments of `meridian start`.
#[derive(Debug, clap::Args)]
pub(crate) struct StartArgs {
    /// The fabric configuration (TOML); its `[node] region` is the region this process runs.
    #[arg(long)]
    config: PathBuf,
    /// The region's data directory; overrides the region's `data_dir` in the configuration.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides `[cell] durability`: `sync` or `async`.
    #[arg(long)]
    durability: Option<Durability>,
    /// Refuse unknown topics and consumer groups instead of creating them on first use.
    #[arg(long)]
    no_auto_create_topics: bool,
    /// Dial another region's endpoint through another address, as ENDPOINT=VIA (both
    /// `host:port`; repeatable): how drills put fault proxies between regions. A meta or gRPC
    /// proxy must listen on the peer's own host address, so its TLS name still matches.
    #[arg(long = "dial-via", value_parser = parse_dial_via)]
    dial_via: Vec<(String, String)>,
    /// Run the cell's clock (record stamps, timers, invisibility) this many ms ahead of the
    /// wall clock (negative: behind); for clock-skew drills.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    clock_offset_ms: i64,
}

fn parse_dial_via(text: &str) -> Result<(String, String), String> {
    let (endpoint, via) = text
        .split_once('=')
        .ok_or_else(|| format!("--dial-via {text:?}: write ENDPOINT=VIA, both host:port"))?;
    for (what, value) in [("ENDPOINT", endpoint), ("VIA", via)] {
        value.parse::<std::net::SocketAddr>().map_err(|error| {
            format!("--dial-via {text:?}: {what} {value:?} is not an IP address and port ({error})")
        })?;
    }
    Ok((endpoint.to_string(), via.to_string()))
}

pub(crate) fn run(args: StartArgs) -> anyhow::Result<()> {
    let options = options(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(options))
}

/// Reads and checks the configuration; every error names the file and the field.
fn options(args: &StartArgs) -> anyhow::Result<RegionOptions> {
    let path = &args.config;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read it", path.display()))?;
    let fabric = parse(&text).with_context(|| format!("--config {}", path.display()))?;
    options_from(&fabric, args).with_context(|| format!("--config {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Fabric> {
    let config = FabricConfig::from_toml_str(text)?;
    Ok(config.validate()?)
}

fn options_from(fabric: &Fabric, args: &StartArgs) -> anyhow::Result<RegionOptions> {
    let config = fabric.config();
    let Some(node) = fabric.node() else {
        bail!("[node] is missing: add `[node]` with `region = \"NAME\"`, the region to run");
    };
    let Some(region) = fabric.local_region() else {
        bail!(
            "node.region {:?} is not among [[regions]]",
            node.region.as_str()
        );
    };
    let name = region.name.as_str();
    let data_dir = match (&args.data_dir, &region.data_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir.clone(),
        (None, None) => {
            bail!("regions.{name}.data_dir is not set: set it in the file or give --data-dir DIR")
        }
    };
    let Some(tls) = &config.tls else {
        bail!(
            "[tls] is missing: `meridian start` needs ca_cert, cert and key (replication and \
             meta run on mutual TLS only)"
        );
    };
    let identity = NodeIdentity::load(&tls.cert, &tls.key, &tls.ca_cert).with_context(|| {
        format!(
            "tls.cert {}, tls.key {}, tls.ca_cert {}",
            tls.cert.display(),
            tls.key.display(),
            tls.ca_cert.display()
        )
    })?;
    let Some(auth) = &config.auth else {
        bail!(
            "[auth] is missing: `meridian start` needs admin_token = {{ env = \"NAME\" }} or \
             {{ file = \"PATH\" }} (meta refuses admin writes without it)"
        );
    };
    let admin_token = read_secret(&auth.admin_token).context("auth.admin_token")?;
    Ok(RegionOptions {
        regions: config.regions.clone(),
        cell: config.cell.clone(),
        region: name.to_string(),
        data_dir,
        identity: Arc::new(identity),
        admin_token,
        durability: args.durability,
        auto_create_queues: (!args.no_auto_create_topics).then_some(AUTO_CREATE_QUEUES),
        meta_expected_rtt_ms: fabric.latency().max_rtt_ms(),
        heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
        proximity: crate::region::proximity(fabric.latency()),
        dial_via: args.dial_via.iter().cloned().collect::<BTreeMap<_, _>>(),
        clock_offset_ms: args.clock_offset_ms,
    })
}

/// The secret a [`SecretRef`] points at, trailing newline removed; never empty.
fn read_secret(secret: &SecretRef) -> anyhow::Result<String> {
    let value = match secret {
        SecretRef::Env(name) => std::env::var(name)
            .with_context(|| format!("environment variable {name} is not set"))?,
        SecretRef::File(path) => read_file(path)?,
    };
    let value = value.trim_end_matches(['\n', '\r']).to_string();
    if value.is_empty() {
        bail!("the token is empty");
    }
    Ok(value)
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

async fn serve(options: RegionOptions) -> anyhow::Result<()> {
    let region = RunningRegion::start(&options).await?;
    let mut status = region.status();
    // Registration needs a meta quorum: with the other regions down this waits until they
    // come, or until the process is told to stop.
    let registered = tokio::select! {
        result = status.wait_for(|status| status.registered) => result.is_ok(),
        stop = wait_for_stop() => {
            stop?;
            false
        }
    };
    let stopped = if registered {
        println!("ready");
        wait_for_stop().await
    } else {
        Ok(())
    };
    println!("stopping");
    region.replicator().shutdown().await;
    region.close().await?;
    stopped
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FABRIC: &str = r#"
[[regions]]
name = "a"
zone = "z"
grpc = "127.0.0.1:1"
meta = "127.0.0.1:2"
replication = "127.0.0.1:3"
metrics = "127.0.0.1:4"
"#;

    fn args() -> StartArgs {
        StartArgs {
            config: "fabric.toml".into(),
            data_dir: None,
            durability: None,
            no_auto_create_topics: false,
            dial_via: Vec::new(),
            clock_offset_ms: 0,
        }
    }

    #[test]
    fn dial_via_needs_two_socket_addresses() {
        assert_eq!(
            parse_dial_via("127.0.0.2:9102=127.0.0.2:40001"),
            Ok(("127.0.0.2:9102".to_string(), "127.0.0.2:40001".to_string()))
        );
        assert!(
            parse_dial_via("127.0.0.2:9102")
                .unwrap_err()
                .contains("ENDPOINT=VIA")
        );
        assert!(
            parse_dial_via("eu-west=127.0.0.2:1")
                .unwrap_err()
                .contains("ENDPOINT \"eu-west\"")
        );
    }

    fn error_of(text: &str, args: &StartArgs) -> String {
        let fabric = parse(text).unwrap();
        format!("{:#}", options_from(&fabric, args).err().unwrap())
    }

    #[test]
    fn a_config_without_node_tls_or_auth_names_the_missing_field() {
        assert!(error_of(FABRIC, &args()).contains("[node]"));
        let with_node = format!("[node]\nregion = \"a\"\n{FABRIC}");
        assert!(error_of(&with_node, &args()).contains("regions.a.data_dir"));
        let mut with_dir = args();
        with_dir.data_dir = Some("/tmp/x".into());
        assert!(error_of(&with_node, &with_dir).contains("[tls]"));
        let with_tls = format!(
            "{with_node}\n[tls]\nca_cert = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n"
        );
        assert!(error_of(&with_tls, &with_dir).contains("tls.cert"));
    }

    #[test]
    fn an_unknown_node_region_is_refused_by_validation() {
        let text = format!("[node]\nregion = \"b\"\n{FABRIC}");
        let error = format!("{:#}", parse(&text).err().unwrap());
        assert!(error.contains("node"), "{error}");
    }

    #[test]
    fn secrets_come_from_a_file_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_secret(&SecretRef::File(path)).unwrap(), "s3cret");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(
            format!("{:#}", read_secret(&SecretRef::File(empty)).unwrap_err()).contains("empty")
        );
    }
}
