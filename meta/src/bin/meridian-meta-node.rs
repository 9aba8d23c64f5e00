//! One meta node as its own process: `meridian-meta-node --config FILE` (format in
//! `meridian_meta::node_file`). Prints `listening <host:port>` on stdout once the port is
//! bound (the only line it prints there; logs go to stderr), serves until SIGTERM or Ctrl-C,
//! then stops cleanly. A SIGKILL is a crash; the node restarts from its data directory.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use meridian_meta::node_file::NodeFile;
use meridian_meta::{LinkFaults, NodeOptions, RunningNode, system_clock};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

fn config_path() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--config"), Some(path), None) => Ok(PathBuf::from(path)),
        _ => Err("usage: meridian-meta-node --config FILE".into()),
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let file = NodeFile::read(&config_path()?)?;
    let credentials = file.credentials()?;
    let listener = TcpListener::bind(&file.listen)
        .await
        .map_err(|error| format!("bind {}: {error}", file.listen))?;
    let addr = listener.local_addr()?;
    let options = NodeOptions {
        config: file.meta_config(),
        credentials,
        data_dir: file.data_dir.clone(),
        faults: Arc::new(LinkFaults::default()),
        clock: system_clock(),
    };
    let running = RunningNode::start(options, listener).await?;
    let node = running.node().clone();
    if file.bootstrap && !node.raft().is_initialized().await? {
        node.initialize(BTreeMap::from([(file.node_id, addr.to_string())]))
            .await?;
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {addr}")?;
        stdout.flush()?;
    }
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        result = tokio::signal::ctrl_c() => result?,
    }
    running.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = error.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("meridian-meta-node: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
