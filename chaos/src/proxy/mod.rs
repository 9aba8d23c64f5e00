//! Fault-injecting proxies (IO shells over [`crate::fault::FaultModel`]) and the handle that
//! changes their faults at run time and reads their counters.

mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Result;
use crate::fault::{Direction, LinkFaults};

pub use tcp::{TcpProxy, TcpProxyConfig};
pub use udp::{UdpProxy, UdpProxyConfig};

/// Counters for one direction of a proxy.
#[derive(Debug, Default)]
pub(crate) struct DirectionCounters {
    pub(crate) forwarded_packets: AtomicU64,
    pub(crate) forwarded_bytes: AtomicU64,
    pub(crate) dropped_loss: AtomicU64,
    pub(crate) dropped_partition: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) duplicated_packets: AtomicU64,
    pub(crate) send_errors: AtomicU64,
}

impl DirectionCounters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            forwarded_packets: self.forwarded_packets.load(Ordering::Relaxed),
            forwarded_bytes: self.forwarded_bytes.load(Ordering::Relaxed),
            dropped_loss: self.dropped_loss.load(Ordering::Relaxed),
            dropped_partition: self.dropped_partition.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            duplicated_packets: self.duplicated_packets.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

/// Shared counters of one proxy.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) directions: [DirectionCounters; 2],
    pub(crate) sessions_opened: AtomicU64,
    pub(crate) sessions_rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn dir(&self, direction: Direction) -> &DirectionCounters {
        &self.directions[direction.index()]
    }

    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

/// Snapshot of one direction's counters. For TCP a "packet" is one chunk read from the socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionStats {
    /// Packets (or chunks) written on, duplicates included.
    pub forwarded_packets: u64,
    /// Bytes written on, duplicates included.
    pub forwarded_bytes: u64,
    /// Datagrams dropped by random loss.
    pub dropped_loss: u64,
    /// Datagrams dropped by a blackhole or one-way partition.
    pub dropped_partition: u64,
    /// Datagrams dropped because the proxy's delay queue was full.
    pub dropped_queue_full: u64,
    /// Extra copies scheduled by `duplicate_percent`.
    pub duplicated_packets: u64,
    /// Writes that failed at the socket.
    pub send_errors: u64,
}

/// Snapshot of a proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Client to upstream.
    pub upstream: DirectionStats,
    /// Upstream to client.
    pub downstream: DirectionStats,
    /// UDP client sessions or TCP connections opened.
    pub sessions_opened: u64,
    /// Sessions or connections refused by the session limit or a failed upstream connect.
    pub sessions_rejected: u64,
}

/// Cloneable run-time control of one proxy: change its faults, read its counters.
#[derive(Debug, Clone)]
pub struct ProxyControl {
    faults: Arc<watch::Sender<LinkFaults>>,
    counters: Arc<Counters>,
}

impl ProxyControl {
    pub(crate) fn new(faults: LinkFaults) -> Result<Self> {
        faults.validate()?;
        let (sender, _) = watch::channel(faults);
        Ok(Self {
            faults: Arc::new(sender),
            counters: Arc::new(Counters::default()),
        })
    }

    /// Puts new faults in force; they replace the previous ones entirely.
    pub fn set_faults(&self, faults: LinkFaults) -> Result<()> {
        faults.validate()?;
        tracing::debug!(?faults, "proxy faults changed");
        self.faults.send_replace(faults);
        Ok(())
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.faults.send_replace(LinkFaults::clean());
    }

    /// The faults in force.
    pub fn faults(&self) -> LinkFaults {
        self.faults.borrow().clone()
    }

    /// Current counters.
    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            upstream: self.counters.dir(Direction::Upstream).snapshot(),
            downstream: self.counters.dir(Direction::Downstream).snapshot(),
            sessions_opened: self.counters.sessions_opened.load(Ordering::Relaxed),
            sessions_rejected: self.counters.sessions_rejected.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<LinkFaults> {
        self.faults.subscribe()
    }

    pub(crate) fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }
}

/// A running proxy. Dropping it stops the proxy and every task it started.
#[derive(Debug)]
pub struct ProxyHandle {
    control: ProxyControl,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ProxyHandle {
    pub(crate) fn new(control: ProxyControl, local_addr: SocketAddr, task: JoinHandle<()>) -> Self {
        Self {
            control,
            local_addr,
            task,
        }
    }

    /// The address clients should use instead of the upstream's.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A control handle for this proxy.
    pub fn control(&self) -> ProxyControl {
        self.control.clone()
    }

    /// Stops the proxy and waits for its tasks to finish.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The task owns a JoinSet of its children; dropping it on abort aborts them too.
        let _ = (&mut self.task).await;
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `direction` is not partitioned. Returns at once if it is open, or if the control
/// handle is gone (the proxy is being torn down and the task will be aborted).
pub(crate) async fn wait_until_open(
    faults: &mut watch::Receiver<LinkFaults>,
    direction: Direction,
) {
    loop {
        if !faults.borrow_and_update().blocks(direction) {
            return;
        }
        if faults.changed().await.is_err() {
            return;
        }
    }
}
