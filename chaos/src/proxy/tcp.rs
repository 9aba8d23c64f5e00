//! TCP proxy (for gRPC and metadata links): each accepted connection is paired with a fresh
//! upstream connection and two pumps, one per direction. A pump reads chunks, asks its
//! [`FaultModel`] when each may be written, and writes them in order. A partition (blackhole or
//! one-way) stops the pump from reading and writing but keeps both connections open, as a real
//! network partition would until TCP keepalive or the application gives up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Counters, ProxyControl, ProxyHandle, wait_until_open};
use crate::error::{ChaosError, Result};
use crate::fault::{Direction, FaultModel, LinkFaults, StreamDecision};

/// Settings of a [`TcpProxy`].
#[derive(Debug, Clone)]
pub struct TcpProxyConfig {
    /// Where accepted connections are forwarded.
    pub upstream: SocketAddr,
    /// Faults in force at start.
    pub faults: LinkFaults,
    /// Seed; each connection's pumps derive their own from it and the connection's index.
    pub seed: u64,
    /// Connections proxied at once; further ones are closed right after accept.
    pub max_connections: usize,
    /// Largest chunk read from a socket in one go.
    pub max_chunk_bytes: usize,
    /// Chunks in flight per direction per connection (so at most this times `max_chunk_bytes` bytes).
    pub max_queue_chunks: usize,
    /// Deadline for connecting to the upstream.
    pub connect_timeout_ms: u64,
}

impl TcpProxyConfig {
    /// Defaults: 256 connections, 16 KiB chunks, 64 chunks in flight per direction, 5 s connect.
    pub fn new(upstream: SocketAddr) -> Self {
        Self {
            upstream,
            faults: LinkFaults::clean(),
            seed: 0,
            max_connections: 256,
            max_chunk_bytes: 16 * 1024,
            max_queue_chunks: 64,
            connect_timeout_ms: 5_000,
        }
    }
}

/// The TCP fault proxy.
#[derive(Debug)]
pub struct TcpProxy;

impl TcpProxy {
    /// Starts accepting on `listener` and forwarding to `config.upstream`.
    pub fn spawn(listener: TcpListener, config: TcpProxyConfig) -> Result<ProxyHandle> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| ChaosError::io("tcp proxy local_addr", e))?;
        // Validate once here so a bad config fails the caller, not a connection later.
        FaultModel::new(config.faults.clone(), config.seed)?;
        let control = ProxyControl::new(config.faults.clone())?;
        let task = tokio::spawn(accept_loop(listener, config, control.clone()));
        Ok(ProxyHandle::new(control, local_addr, task))
    }
}

async fn accept_loop(listener: TcpListener, config: TcpProxyConfig, control: ProxyControl) {
    let origin = Instant::now();
    let counters = control.counters();
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut connections = JoinSet::new();
    let mut index: u64 = 0;
    loop {
        // Reap finished connections so the set does not grow with the connection count.
        while connections.try_join_next().is_some() {}
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "tcp proxy accept failed");
                // Typically EMFILE; back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            Counters::add(&counters.sessions_rejected, 1);
            tracing::warn!(%peer, "tcp proxy connection limit reached");
            continue;
        };
        index += 1;
        let seed = config.seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let connection = Connection {
            config: config.clone(),
            control: control.clone(),
            counters: Arc::clone(&counters),
            origin,
            seed,
        };
        connections.spawn(async move {
            connection.run(client, peer).await;
            drop(permit);
        });
    }
}

struct Connection {
    config: TcpProxyConfig,
    control: ProxyControl,
    counters: Arc<Counters>,
    origin: Instant,
    seed: u64,
}

impl Connection {
    async fn run(self, client: TcpStream, peer: SocketAddr) {
        // A partitioned link would lose the SYN or the SYN-ACK: do not let the upstream see the
        // connection until both directions are open. The client's own connect timeout applies.
        let mut faults = self.control.subscribe();
        loop {
            wait_until_open(&mut faults, Direction::Upstream).await;
            wait_until_open(&mut faults, Direction::Downstream).await;
            let current = faults.borrow_and_update().clone();
            if !current.blocks(Direction::Upstream) && !current.blocks(Direction::Downstream) {
                break;
            }
        }
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms.max(1));
        let upstream =
            match tokio::time::timeout(connect_timeout, TcpStream::connect(self.config.upstream))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "tcp proxy upstream connect failed");
                    Counters::add(&self.counters.sessions_rejected, 1);
                    return;
                }
                Err(_elapsed) => {
                    tracing::debug!(%peer, "tcp proxy upstream connect timed out");
                    Counters::add(&self.counters.sessions_rejected, 1);
                    return;
                }
            };
        Counters::add(&self.counters.sessions_opened, 1);
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (upstream_read, upstream_write) = upstream.into_split();
        let up = self.pump(Direction::Upstream, client_read, upstream_write);
        let down = self.pump(Direction::Downstream, upstream_read, client_write);
        tokio::pin!(up, down);
        // A clean end of one direction (EOF passed on) lets the other finish; an error ends both.
        tokio::select! {
            result = &mut up => if result.is_ok() { let _ = down.await; },
            result = &mut down => if result.is_ok() { let _ = up.await; },
        }
        tracing::debug!(%peer, "tcp proxy connection closed");
    }

    fn pump<R, W>(
        &self,
        direction: Direction,
        reader: R,
        writer: W,
    ) -> impl Future<Output = std::io::Result<()>> + use<R, W>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let salt = match direction {
            Direction::Upstream => 1,
            Direction::Downstream => 2,
        };
        let model = FaultModel::new(self.config.faults.clone(), self.seed ^ salt);
        let (tx, rx) = mpsc::channel(self.config.max_queue_chunks.max(1));
        let read_side = ReadSide {
            direction,
            faults: self.control.subscribe(),
            origin: self.origin,
            max_chunk_bytes: self.config.max_chunk_bytes.max(1),
        };
        let write_side = WriteSide {
            direction,
            faults: self.control.subscribe(),
            counters: Arc::clone(&self.counters),
        };
        async move {
            let model = model.map_err(std::io::Error::other)?;
            let read = read_side.run(reader, model, tx);
            let write = write_side.run(writer, rx);
            tokio::pin!(read, write);
            // The read side may sit in `read` forever, so a failed write must not wait for it.
            tokio::select! {
                result = &mut read => {
                    result?;
                    write.await
                }
                result = &mut write => result,
            }
        }
    }
}

enum Chunk {
    Data { at: Instant, bytes: Vec<u8> },
    Eof,
}

struct ReadSide {
    direction: Direction,
    faults: watch::Receiver<LinkFaults>,
    origin: Instant,
    max_chunk_bytes: usize,
}

impl ReadSide {
    async fn run<R: AsyncRead + Unpin>(
        mut self,
        mut reader: R,
        mut model: FaultModel,
        tx: mpsc::Sender<Chunk>,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; self.max_chunk_bytes];
        loop {
            // While partitioned, leave the bytes in the kernel so the sender sees back-pressure.
            wait_until_open(&mut self.faults, self.direction).await;
            let len = reader.read(&mut buf).await?;
            if len == 0 {
                let _ = tx.send(Chunk::Eof).await;
                return Ok(());
            }
            let at = loop {
                let current = self.faults.borrow().clone();
                if model.faults() != &current {
                    model.set_faults(current).map_err(std::io::Error::other)?;
                }
                let now = Instant::now().saturating_duration_since(self.origin);
                match model.on_stream_chunk(self.direction, len, now) {
                    StreamDecision::DeliverAt(at) => break self.origin + at,
                    StreamDecision::Hold => wait_until_open(&mut self.faults, self.direction).await,
                }
            };
            let chunk = Chunk::Data {
                at,
                bytes: buf[..len].to_vec(),
            };
            if tx.send(chunk).await.is_err() {
                // The write side is gone (its socket failed); nothing more to do.
                return Ok(());
            }
        }
    }
}

struct WriteSide {
    direction: Direction,
    faults: watch::Receiver<LinkFaults>,
    counters: Arc<Counters>,
}

impl WriteSide {
    async fn run<W: AsyncWrite + Unpin>(
        mut self,
        mut writer: W,
        mut rx: mpsc::Receiver<Chunk>,
    ) -> std::io::Result<()> {
        let stats = self.counters.dir(self.direction);
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Chunk::Data { at, bytes } => {
                    tokio::time::sleep_until(at).await;
                    // Bytes already in flight when a partition starts wait for it to heal,
                    // as TCP would retransmit them afterwards.
                    wait_until_open(&mut self.faults, self.direction).await;
                    if let Err(error) = writer.write_all(&bytes).await {
                        Counters::add(&stats.send_errors, 1);
                        return Err(error);
                    }
                    Counters::add(&stats.forwarded_packets, 1);
                    Counters::add(
                        &stats.forwarded_bytes,
                        u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                    );
                }
                Chunk::Eof => {
                    writer.shutdown().await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
