//! `meridian dev`: a local cell for trying Meridian on one machine.
//!
//! Today it runs one cell's storage engine and serves its metrics; the RocketMQ gRPC endpoint,
//! meta and the other regions join as those layers land.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use meridian_cell::Hlc;
use meridian_cell::storage::{Durability, Storage, StorageConfig};

/// Arguments of `meridian dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Directory for all data; reused on restart.
    #[arg(long, default_value = "./meridian-dev-data")]
    data_dir: PathBuf,
    /// Durability of the cell's log: `sync` (fsync before acknowledging) or `async`.
    #[arg(long, default_value = "sync")]
    durability: Durability,
    /// Address of the Prometheus metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
}

pub(crate) fn run(args: DevArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: DevArgs) -> anyhow::Result<()> {
    let cell_dir = args.data_dir.join("us-east").join("cell");
    let mut config = StorageConfig::new(&cell_dir, "us-east");
    config.durability = args.durability;
    let storage = Arc::new(
        Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500))))
            .with_context(|| format!("opening the cell storage in {}", cell_dir.display()))?,
    );
    let report = storage.recovery_report();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "binding the metrics endpoint {} (flag --metrics-addr)",
                args.metrics_addr
            )
        })?;
    let metrics_addr = listener.local_addr().context("metrics address")?;
    let endpoints = serde_json::json!({
        "us-east": { "metrics": format!("http://{metrics_addr}/metrics"), "data_dir": cell_dir },
    });
    std::fs::create_dir_all(&args.data_dir).context("creating the data directory")?;
    let endpoints_path = args.data_dir.join("endpoints.json");
    std::fs::write(&endpoints_path, serde_json::to_vec_pretty(&endpoints)?)
        .with_context(|| format!("writing {}", endpoints_path.display()))?;
    println!(
        "region us-east: cell storage at {} ({} durability)",
        cell_dir.display(),
        args.durability
    );
    println!(
        "  recovered in {} ms, re-indexed {} records",
        report.duration.as_millis(),
        report.reindexed_records
    );
    println!("  metrics: http://{metrics_addr}/metrics");
    println!("  endpoints written to {}", endpoints_path.display());
    println!("ready");
    let server = tokio::spawn(serve_metrics(listener, Arc::clone(&storage)));
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("stopping");
    server.abort();
    storage.close().context("closing the cell storage")?;
    Ok(())
}

/// Serves `GET /metrics` in the Prometheus text format.
async fn serve_metrics(listener: tokio::net::TcpListener, storage: Arc<Storage>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let storage = Arc::clone(&storage);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    render_metrics(&storage),
                )
            }
        }),
    );
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics endpoint stopped");
    }
}

fn render_metrics(storage: &Storage) -> String {
    let counters = storage.counters();
    let (start, end) = storage.log_range();
    let mut out = String::new();
    for (name, help, value) in [
        (
            "meridian_storage_appended_records_total",
            "Records appended to the commit log.",
            counters.appended_records.load(Ordering::Relaxed),
        ),
        (
            "meridian_storage_appended_bytes_total",
            "Bytes appended to the commit log.",
            counters.appended_bytes.load(Ordering::Relaxed),
        ),
        (
            "meridian_storage_fsync_total",
            "fsync calls on segment files.",
            counters.fsync_calls.load(Ordering::Relaxed),
        ),
        (
            "meridian_storage_write_calls_total",
            "write calls on segment files.",
            counters.write_calls.load(Ordering::Relaxed),
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{region=\"us-east\"}} {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP meridian_storage_log_bytes Bytes retained in the commit log.\n# TYPE meridian_storage_log_bytes gauge\nmeridian_storage_log_bytes{{region=\"us-east\"}} {}\n",
        end - start
    ));
    out
}
