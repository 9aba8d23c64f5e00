//! Injected link faults for tests and benchmarks: cut links between meta nodes and add a
//! one-way delay to every node-to-node message. Consulted by the Raft network and by write
//! forwarding, never by the client-facing path, so a "cut off" node still answers clients.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::raft_types::NodeId;

/// Faults shared by every node of one test cluster. The default is a healthy network.
#[derive(Debug, Default)]
pub struct LinkFaults {
    blocked: Mutex<BTreeSet<(NodeId, NodeId)>>,
    one_way_delay_ms: AtomicU64,
}

/// The link from one node to another is cut.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("link {from} -> {to} is cut")]
pub struct LinkCut {
    pub from: NodeId,
    pub to: NodeId,
}

impl LinkFaults {
    /// Cuts every link between `node` and each of `others`, both directions.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        let mut blocked = self.blocked.lock();
        for other in others.iter().filter(|other| **other != node) {
            blocked.insert((node, *other));
            blocked.insert((*other, node));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.blocked.lock().clear();
    }

    /// Delay added to each message in each direction (a request and its reply each pay it).
    pub fn set_one_way_delay_ms(&self, delay_ms: u64) {
        self.one_way_delay_ms.store(delay_ms, Ordering::Relaxed);
    }

    /// Waits the one-way delay, then fails if the link is cut.
    pub(crate) async fn traverse(&self, from: NodeId, to: NodeId) -> Result<(), LinkCut> {
        let delay_ms = self.one_way_delay_ms.load(Ordering::Relaxed);
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        if self.blocked.lock().contains(&(from, to)) {
            return Err(LinkCut { from, to });
        }
        Ok(())
    }
}
