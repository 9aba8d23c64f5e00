//! `sync-quorum` for the cell: a send is acknowledged once a majority of the regions hold it.
//!
//! Each outbound link publishes how far its peer has acknowledged this region's log (a peer
//! acknowledges a batch after appending it, so the records are stored there per the peer's
//! durability mode: fsynced in `sync` mode). [`LinkQuorum`] implements the cell's
//! [`ReplicationQuorum`]: it waits until enough peers have acknowledged past a log position. The
//! majority counts this region itself: with `n` peers (`n + 1` regions) it needs `⌈n / 2⌉`
//! peers, so 1 of 2 peers in a 3-region fabric. Every configured peer counts; per-topic region
//! sets arrive with meta's topic policies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_cell::messaging::quorum::QuorumFuture;
use meridian_cell::messaging::{QuorumError, ReplicationQuorum};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// How far each peer has acknowledged this region's log (exclusive end positions).
#[derive(Debug, Default)]
pub struct PeerAcks {
    acked: Mutex<HashMap<String, u64>>,
    changed: Notify,
}

impl PeerAcks {
    /// Counts `peer` among the regions of the quorum (nothing acknowledged yet).
    pub fn register(&self, peer: &str) {
        self.acked.lock().entry(peer.to_string()).or_insert(0);
        self.changed.notify_waiters();
    }

    /// Notes that `peer` acknowledged everything below `acked_through`. Positions only grow:
    /// an older session's late report never moves a peer back.
    pub fn publish(&self, peer: &str, acked_through: u64) {
        let mut acked = self.acked.lock();
        let entry = acked.entry(peer.to_string()).or_insert(0);
        if acked_through > *entry {
            *entry = acked_through;
            drop(acked);
            self.changed.notify_waiters();
        }
    }

    /// Peers that have acknowledged everything below `log_end`.
    pub fn confirmed(&self, log_end: u64) -> usize {
        self.acked
            .lock()
            .values()
            .filter(|acked| **acked >= log_end)
            .count()
    }

    /// Peers a majority of all regions needs besides this one.
    pub fn required(&self) -> usize {
        self.acked.lock().len().div_ceil(2)
    }
}

/// The cell's view of the replicator for `sync-quorum` sends.
#[derive(Debug, Clone)]
pub struct LinkQuorum {
    acks: Arc<PeerAcks>,
}

impl LinkQuorum {
    /// A quorum over the peers registered in `acks` (counted at each wait, so peers added
    /// later count too).
    pub fn new(acks: Arc<PeerAcks>) -> Self {
        LinkQuorum { acks }
    }
}

impl ReplicationQuorum for LinkQuorum {
    fn wait_persisted(&self, log_end: u64, timeout_ms: u64) -> QuorumFuture<'_> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
            // Each round waits for one acknowledgement; the deadline bounds the rounds.
            loop {
                // Registered before the check, so an acknowledgement in between is not missed.
                let changed = self.acks.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let required = self.acks.required();
                if self.acks.confirmed(log_end) >= required {
                    return Ok(());
                }
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(QuorumError::TimedOut {
                            confirmed: self.acks.confirmed(log_end),
                            required,
                            timeout_ms,
                        });
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_majority_counts_this_region() {
        let acks = PeerAcks::default();
        let mut required = Vec::new();
        for peer in ["a", "b", "c", "d"] {
            required.push(acks.required());
            acks.register(peer);
        }
        required.push(acks.required());
        // 1, 2, 3, 4, 5 regions: a majority is 1, 2, 2, 3, 3 of them, this one included.
        assert_eq!(required, [0, 1, 1, 2, 2]);
    }

    #[tokio::test]
    async fn waits_until_enough_peers_pass_the_position() {
        let acks = Arc::new(PeerAcks::default());
        for peer in ["a", "b", "c", "d"] {
            acks.register(peer);
        }
        let quorum = LinkQuorum::new(Arc::clone(&acks));
        acks.publish("a", 100);
        let waiter = {
            let quorum = quorum.clone();
            tokio::spawn(async move { quorum.wait_persisted(100, 60_000).await })
        };
        tokio::task::yield_now().await;
        acks.publish("b", 99);
        acks.publish("a", 50); // never moves back
        assert_eq!(acks.confirmed(100), 1);
        acks.publish("b", 120);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn times_out_with_the_count_it_reached() {
        let acks = Arc::new(PeerAcks::default());
        acks.register("a");
        acks.register("b");
        let quorum = LinkQuorum::new(Arc::clone(&acks));
        acks.publish("a", 10);
        let error = quorum.wait_persisted(11, 200).await.unwrap_err();
        assert_eq!(
            error,
            QuorumError::TimedOut {
                confirmed: 0,
                required: 1,
                timeout_ms: 200
            }
        );
    }
}
