//! `meridian fabric init --dir DIR`: writes what a multi-process fabric on this machine needs,
//! one `meridian start --config DIR/REGION.toml` per region of the embedded dev topology
//! (us-east, eu-west, ap-south on 127.0.0.1, .2, .3): a CA and a certificate per region, the
//! admin token, one configuration per region, and `DIR/endpoints.json` for the CLI. Ports are
//! picked free by the OS unless `--dev-ports` asks for the dev fabric's fixed ones. `meridian
//! drill run` uses the same layout for the fabrics it starts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use meridian_cell::storage::Durability;
use meridian_pki::{CA_FILE, CERT_FILE, DevCa, KEY_FILE};
use meridian_topology::{DEV_TOML, FabricConfig};

/// Arguments of `meridian fabric init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Directory to write into (created; existing files are replaced).
    #[arg(long)]
    dir: PathBuf,
    /// Use the dev fabric's fixed ports (8081.., 9101.., 9201.., 9301..) instead of free ones.
    #[arg(long)]
    dev_ports: bool,
    /// `[cell] durability` of every region: `sync` or `async`.
    #[arg(long, default_value = "sync")]
    durability: Durability,
}

/// What was written.
#[derive(Debug, Clone)]
pub(crate) struct FabricFiles {
    /// Region name and its configuration file, in the topology's order.
    pub(crate) configs: Vec<(String, PathBuf)>,
    /// Region name and its RocketMQ endpoint.
    pub(crate) grpc: Vec<(String, String)>,
    /// Region name and its metrics endpoint (`host:port`).
    pub(crate) metrics: Vec<(String, String)>,
    /// The CLI's endpoints file.
    pub(crate) endpoints_file: PathBuf,
}

pub(crate) fn run(args: InitArgs) -> anyhow::Result<()> {
    let files = init(&args.dir, args.dev_ports, args.durability)?;
    for (region, config) in &files.configs {
        println!("{region}: meridian start --config {}", config.display());
    }
    println!("endpoints: {}", files.endpoints_file.display());
    Ok(())
}

fn free_port(ip: &str, udp: bool) -> anyhow::Result<u16> {
    let port = if udp {
        std::net::UdpSocket::bind((ip, 0))
            .and_then(|socket| socket.local_addr())
            .map(|addr| addr.port())
    } else {
        std::net::TcpListener::bind((ip, 0))
            .and_then(|socket| socket.local_addr())
            .map(|addr| addr.port())
    };
    port.with_context(|| format!("finding a free port on {ip}"))
}

/// Writes the fabric's files under `dir`.
pub(crate) fn init(
    dir: &Path,
    dev_ports: bool,
    durability: Durability,
) -> anyhow::Result<FabricFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let dev = FabricConfig::from_toml_str(DEV_TOML).context("the embedded dev fabric")?;
    let ca = DevCa::generate("meridian fabric CA").context("generating the fabric CA")?;
    let token_file = dir.join("admin-token");
    let token: String = (0..32)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::random_range(0..36)]))
        .collect();
    std::fs::write(&token_file, format!("{token}\n"))
        .with_context(|| format!("writing {}", token_file.display()))?;

    let mut regions_toml = String::new();
    let mut endpoints = serde_json::Map::new();
    let mut grpc = Vec::new();
    let mut metrics = Vec::new();
    for region in &dev.regions {
        let name = region.name.as_str();
        let ip = region.grpc.host().to_string();
        let (grpc_port, meta_port, replication_port, metrics_port) = if dev_ports {
            (
                region.grpc.port(),
                region.meta.port(),
                region.replication.port(),
                region.metrics.port(),
            )
        } else {
            (
                free_port(&ip, false)?,
                free_port(&ip, false)?,
                free_port(&ip, true)?,
                free_port(&ip, false)?,
            )
        };
        let pki = dir.join("pki").join(name);
        ca.issue(name, &[name.to_string(), ip.clone()])
            .and_then(|identity| identity.write_to(&pki))
            .with_context(|| format!("writing the certificate of {name}"))?;
        let _ = write!(
            regions_toml,
            "[[regions]]\nname = \"{name}\"\nzone = \"{zone}\"\ngrpc = \"{ip}:{grpc_port}\"\n\
             meta = \"{ip}:{meta_port}\"\nreplication = \"{ip}:{replication_port}\"\n\
             metrics = \"{ip}:{metrics_port}\"\ndata_dir = \"{data}\"\n\n",
            zone = region.zone,
            data = dir.join("data").join(name).display()
        );
        endpoints.insert(
            name.to_string(),
            serde_json::json!({
                "grpc": format!("{ip}:{grpc_port}"),
                "meta": format!("{ip}:{meta_port}"),
                "metrics": format!("{ip}:{metrics_port}"),
                "tls_dir": pki,
                "admin_token_file": token_file,
            }),
        );
        grpc.push((name.to_string(), format!("{ip}:{grpc_port}")));
        metrics.push((name.to_string(), format!("{ip}:{metrics_port}")));
    }
    let mut links = String::new();
    for link in &dev.links {
        let _ = write!(
            links,
            "[[links]]\nfrom = \"{}\"\nto = \"{}\"\nlatency_ms = {}\n\n",
            link.from.as_str(),
            link.to.as_str(),
            link.latency_ms
        );
    }
    let durability = match durability {
        Durability::Sync => "sync",
        Durability::Async => "async",
    };
    let mut configs = Vec::new();
    for region in &dev.regions {
        let name = region.name.as_str();
        let pki = dir.join("pki").join(name);
        let text = format!(
            "# Written by `meridian fabric init`: region {name} of a fabric on this machine.\n\
             [node]\nregion = \"{name}\"\n\n{regions_toml}{links}\
             [cell]\ndurability = \"{durability}\"\n\n\
             [tls]\nca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [auth]\nadmin_token = {{ file = \"{}\" }}\n",
            pki.join(CA_FILE).display(),
            pki.join(CERT_FILE).display(),
            pki.join(KEY_FILE).display(),
            token_file.display()
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        configs.push((name.to_string(), path));
    }
    let endpoints_file = dir.join("endpoints.json");
    std::fs::write(
        &endpoints_file,
        serde_json::to_vec_pretty(&serde_json::Value::Object(endpoints))?,
    )
    .with_context(|| format!("writing {}", endpoints_file.display()))?;
    Ok(FabricFiles {
        configs,
        grpc,
        metrics,
        endpoints_file,
    })
}
