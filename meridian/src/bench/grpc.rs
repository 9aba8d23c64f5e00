//! `meridian bench grpc`: what the RocketMQ gRPC front costs on top of the broker.
//!
//! For each durability mode and number of concurrent senders it starts a fresh cell (storage,
//! broker, gRPC front on `127.0.0.1:0`) and runs the same load twice for a fixed time: once as
//! in-process `Broker::send` calls, once as `SendMessage` RPCs from our own tonic client over
//! loopback HTTP/2. Each send carries one message with a body of `--body-bytes` bytes. It prints
//! sends/s and p50/p99/p99.9 send latency side by side, so the protocol's share is visible.
//! The cell and the load share the machine (and its cores): the figures are a loopback upper
//! bound on overhead, not a network measurement.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meridian_cell::Hlc;
use meridian_cell::grpc::GrpcConfig;
use meridian_cell::messaging::{
    Broker, BrokerConfig, OutgoingMessage, SystemClock, TopicMessageType,
};
use meridian_cell::storage::{Durability, MessageType, Storage, StorageConfig};
use meridian_proto::metadata;
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use meridian_proto::rocketmq::v2::{
    Code, Encoding, Message, MessageType as WireMessageType, Resource, SendMessageRequest,
    SystemProperties,
};
use tokio::sync::watch;
use tonic::transport::Channel;

/// Arguments of `meridian bench grpc`.
#[derive(Debug, clap::Args)]
pub(crate) struct GrpcBenchArgs {
    /// Directory for benchmark data; each case uses a fresh subdirectory, removed afterwards.
    #[arg(long, default_value = "./meridian-bench-data")]
    dir: PathBuf,
    /// Measured seconds per case and path (after a warm-up of a tenth of that).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Numbers of concurrent senders.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    senders: Vec<usize>,
    /// Durability modes.
    #[arg(long, value_delimiter = ',', default_value = "async,sync")]
    modes: Vec<Durability>,
    /// Queues of the benchmark topic.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// HTTP/2 connections the gRPC senders share (round-robin); real clients hold one.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Worker threads of the cell's runtime (gRPC front and broker).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the runtime that drives the senders.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Paths to measure: `in-process` (`Broker::send`) and `grpc` (SendMessage over loopback).
    #[arg(long, value_delimiter = ',', default_value = "in-process,grpc")]
    paths: Vec<SendPath>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// Most sends one case may issue, whatever the duration (every load loop is bounded).
const MAX_SENDS_PER_CASE: u64 = 20_000_000;
/// Longest one RPC may take before the case fails instead of hanging.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "bench-grpc";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
enum SendPath {
    InProcess,
    Grpc,
}

impl std::fmt::Display for SendPath {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            SendPath::InProcess => "broker",
            SendPath::Grpc => "grpc",
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct CaseFigures {
    mode: String,
    path: SendPath,
    senders: usize,
    body_bytes: usize,
    sends: u64,
    sends_per_s: f64,
    mb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

pub(crate) fn run(args: GrpcBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(args.connections > 0, "--connections must be positive");
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    if !args.json {
        println!(
            "{:<6} {:>7} {:>8} {:>12} {:>9} {:>10} {:>10} {:>10}",
            "mode", "path", "senders", "sends/s", "MB/s", "p50 us", "p99 us", "p99.9 us"
        );
    }
    let mut cases = Vec::new();
    for &mode in &args.modes {
        for &senders in &args.senders {
            for &path in &args.paths {
                let figures = run_case(&args, mode, senders, path)?;
                if !args.json {
                    print_case(&figures);
                }
                cases.push(figures);
            }
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "cases": cases }))?
        );
    }
    Ok(())
}

fn print_case(figures: &CaseFigures) {
    println!(
        "{:<6} {:>7} {:>8} {:>12.0} {:>9.1} {:>10.1} {:>10.1} {:>10.1}",
        figures.mode,
        figures.path.to_string(),
        figures.senders,
        figures.sends_per_s,
        figures.mb_per_s,
        figures.p50_us,
        figures.p99_us,
        figures.p999_us
    );
}

/// A cell running on its own runtime for one case.
struct BenchCell {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    endpoint: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<Result<(), meridian_cell::grpc::GrpcError>>,
}

fn start_cell(args: &GrpcBenchArgs, dir: &Path, mode: Durability) -> anyhow::Result<BenchCell> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("bench-cell")
        .enable_all()
        .build()
        .context("cell runtime")?;
    let mut config = StorageConfig::new(dir, "bench");
    config.durability = mode;
    let storage = Arc::new(
        Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500))))
            .context("opening the storage")?,
    );
    let broker = Broker::open(storage, BrokerConfig::default(), Arc::new(SystemClock))
        .context("opening the broker")?;
    broker
        .create_topic(TOPIC, args.queues, TopicMessageType::Normal)
        .context("creating the benchmark topic")?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (endpoint, server) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = listener.local_addr()?;
        tokio::spawn(Arc::clone(&broker).run(shutdown_rx.clone()));
        let server = tokio::spawn(meridian_cell::grpc::serve(
            Arc::clone(&broker),
            listener,
            GrpcConfig::default(),
            shutdown_rx,
        ));
        anyhow::Ok((endpoint, server))
    })?;
    Ok(BenchCell {
        runtime,
        broker,
        endpoint,
        shutdown,
        server,
    })
}

impl BenchCell {
    fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), self.server).await });
        match served {
            Ok(Ok(result)) => result.context("gRPC front")?,
            Ok(Err(join)) => anyhow::bail!("gRPC front task failed: {join}"),
            Err(_) => tracing::warn!("gRPC front did not stop within 10 s"),
        }
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        self.broker
            .storage()
            .close()
            .context("closing the storage")?;
        Ok(())
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

fn outgoing(sender: usize, seq: u64, body: &[u8]) -> OutgoingMessage {
    OutgoingMessage {
        message_id: format!("bench-{sender}-{seq}"),
        topic: TOPIC.to_string(),
        message_type: MessageType::Normal,
        body: body.to_vec(),
        born_timestamp_ms: unix_now().as_millis() as u64,
        ..OutgoingMessage::default()
    }
}

fn wire_request(sender: usize, seq: u64, queues: u32, body: &[u8]) -> SendMessageRequest {
    let born = unix_now();
    SendMessageRequest {
        messages: vec![Message {
            topic: Some(Resource {
                resource_namespace: String::new(),
                name: TOPIC.to_string(),
            }),
            user_properties: Default::default(),
            system_properties: Some(SystemProperties {
                message_id: format!("bench-{sender}-{seq}"),
                body_encoding: Encoding::Identity as i32,
                message_type: WireMessageType::Normal as i32,
                born_timestamp: Some(prost_types::Timestamp {
                    seconds: born.as_secs() as i64,
                    nanos: 0,
                }),
                born_host: "bench".to_string(),
                // Like the Rust client, name a queue; the cell may treat it as a hint.
                queue_id: ((sender as u64 + seq) % u64::from(queues.max(1))) as i32,
                ..SystemProperties::default()
            }),
            body: body.to_vec(),
        }],
    }
}

async fn send_rpc(
    client: &mut MessagingServiceClient<Channel>,
    client_id: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    request: SendMessageRequest,
) -> anyhow::Result<()> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(RPC_TIMEOUT);
    request
        .metadata_mut()
        .insert(metadata::CLIENT_ID, client_id.clone());
    request.metadata_mut().insert(
        metadata::LANGUAGE,
        tonic::metadata::MetadataValue::from_static("RUST"),
    );
    let response = client.send_message(request).await?.into_inner();
    let code = response.status.as_ref().map(|status| status.code);
    anyhow::ensure!(
        code == Some(Code::Ok as i32),
        "SendMessage answered {:?}",
        response.status
    );
    anyhow::ensure!(
        response.entries.len() == 1,
        "SendMessage answered {} entries for one message",
        response.entries.len()
    );
    Ok(())
}

fn run_case(
    args: &GrpcBenchArgs,
    mode: Durability,
    senders: usize,
    path: SendPath,
) -> anyhow::Result<CaseFigures> {
    let dir = args.dir.join("grpc-case");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let cell = start_cell(args, &dir, mode)?;
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("bench-load")
        .enable_all()
        .build()
        .context("load runtime")?;
    let warm_up = Duration::from_secs_f64(args.seconds / 10.0);
    let measured = Duration::from_secs_f64(args.seconds);
    let body = Arc::new(vec![0x42u8; args.body_bytes]);
    let queues = args.queues;
    let endpoint = cell.endpoint;
    let broker = Arc::clone(&cell.broker);
    let connections = args.connections;
    let outcome = load.block_on(async move {
        let mut channels = Vec::new();
        if path == SendPath::Grpc {
            for _ in 0..connections {
                let channel = Channel::from_shared(format!("http://{endpoint}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .context("connecting to the gRPC front")?;
                channels.push(channel);
            }
        }
        let started = Instant::now();
        let measure_from = started + warm_up;
        let deadline = measure_from + measured;
        let mut tasks = Vec::new();
        for sender in 0..senders {
            let body = Arc::clone(&body);
            let broker = Arc::clone(&broker);
            let channel = channels.get(sender % connections.max(1)).cloned();
            let per_sender_limit = MAX_SENDS_PER_CASE / senders as u64;
            tasks.push(tokio::spawn(async move {
                let mut histogram = super::new_histogram()?;
                let mut counted = 0u64;
                let client_id =
                    tonic::metadata::MetadataValue::try_from(format!("bench@{sender}"))?;
                let mut client = channel.map(MessagingServiceClient::new);
                for seq in 0..per_sender_limit {
                    let begin = Instant::now();
                    if begin >= deadline {
                        break;
                    }
                    match client.as_mut() {
                        Some(client) => {
                            send_rpc(client, &client_id, wire_request(sender, seq, queues, &body))
                                .await?
                        }
                        None => {
                            broker.send(vec![outgoing(sender, seq, &body)]).await?;
                        }
                    }
                    if begin >= measure_from {
                        histogram.record(begin.elapsed().as_nanos() as u64)?;
                        counted += 1;
                    }
                }
                anyhow::Ok((histogram, counted))
            }));
        }
        let mut total = super::new_histogram()?;
        let mut sends = 0;
        for task in tasks {
            let (histogram, count) = task.await??;
            total.add(&histogram)?;
            sends += count;
        }
        let elapsed = measure_from
            .elapsed()
            .min(measured + Duration::from_millis(50))
            .as_secs_f64();
        anyhow::Ok((total, sends, elapsed))
    });
    drop(load);
    let stopped = cell.stop();
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    let (histogram, sends, elapsed) = outcome?;
    stopped?;
    let (p50_us, p99_us, p999_us) = super::percentiles_us(&histogram);
    let sends_per_s = sends as f64 / elapsed;
    Ok(CaseFigures {
        mode: mode.to_string(),
        path,
        senders,
        body_bytes: args.body_bytes,
        sends,
        sends_per_s,
        mb_per_s: sends_per_s * args.body_bytes as f64 / 1e6,
        p50_us,
        p99_us,
        p999_us,
    })
}
