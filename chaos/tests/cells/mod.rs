//! Real cells (storage, broker, gRPC front on 127.0.0.1) for the workload and drill tests.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use meridian_cell::grpc::{GrpcConfig, serve};
use meridian_cell::messaging::{Broker, BrokerConfig, GroupConfig, SystemClock, TopicMessageType};
use meridian_cell::{Durability, Hlc, Storage, StorageConfig};
use tokio::sync::watch;

pub struct TestCell {
    pub addr: std::net::SocketAddr,
    pub broker: Arc<Broker>,
    pub shutdown: watch::Sender<bool>,
    pub server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

pub async fn start_cell(region: &str) -> TestCell {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StorageConfig::new(dir.path(), region);
    config.durability = Durability::Async;
    config.index_block_cache_bytes = 8 << 20;
    config.index_write_buffer_bytes = 4 << 20;
    let storage =
        Arc::new(Storage::open(config, Arc::new(Hlc::system(Duration::from_millis(500)))).unwrap());
    let broker = Broker::open(storage, BrokerConfig::default(), Arc::new(SystemClock)).unwrap();
    broker
        .create_topic("drill", 4, TopicMessageType::Fifo)
        .unwrap();
    broker
        .create_group(GroupConfig::new("drillers", true))
        .unwrap();
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(broker.clone().run(shutdown_rx.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_broker = broker.clone();
    let server = tokio::spawn(async move {
        serve(server_broker, listener, GrpcConfig::default(), shutdown_rx)
            .await
            .unwrap();
    });
    TestCell {
        addr,
        broker,
        shutdown,
        server,
        _dir: dir,
    }
}
