//! Sans-IO batching of cell heartbeats: beats are coalesced per cell (latest wins) and flushed
//! as one `RecordHeartbeats` Raft write per interval, or sooner when the batch is full.
//!
//! Why batch: cells beat every few seconds; one Raft write (a quorum round trip and a synced
//! log append on every voter) per beat would make meta's write load grow with the fleet. One
//! write per `flush_interval_ms` keeps it constant, at the cost of liveness being recorded up
//! to one interval late.

use std::collections::BTreeMap;

use crate::state::CellBeat;

/// Pending heartbeats of one meta node.
#[derive(Debug)]
pub struct HeartbeatBatcher {
    flush_interval_ms: u64,
    batch_cells_max: usize,
    /// Cell -> latest beat time; a `BTreeMap` so flushed batches are in a stable order.
    pending: BTreeMap<String, u64>,
    /// When the oldest pending beat arrived.
    oldest_pending_ms: Option<u64>,
}

/// Outcome of recording one beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Added or coalesced into the pending batch.
    Pending,
    /// Added, and the batch is now full: flush it now.
    FlushNow,
    /// The batch was already full and the cell is new to it: the caller must flush first.
    Full,
}

impl HeartbeatBatcher {
    pub fn new(flush_interval_ms: u64, batch_cells_max: usize) -> Self {
        Self {
            flush_interval_ms,
            batch_cells_max: batch_cells_max.max(1),
            pending: BTreeMap::new(),
            oldest_pending_ms: None,
        }
    }

    /// Records that `cell` beat at `now_ms`.
    pub fn record(&mut self, cell: &str, now_ms: u64) -> Recorded {
        if let Some(at_ms) = self.pending.get_mut(cell) {
            *at_ms = (*at_ms).max(now_ms);
            return Recorded::Pending;
        }
        if self.pending.len() >= self.batch_cells_max {
            return Recorded::Full;
        }
        self.pending.insert(cell.to_string(), now_ms);
        self.oldest_pending_ms.get_or_insert(now_ms);
        if self.pending.len() >= self.batch_cells_max {
            Recorded::FlushNow
        } else {
            Recorded::Pending
        }
    }

    /// Whether the pending batch has waited a full interval.
    pub fn is_due(&self, now_ms: u64) -> bool {
        self.oldest_pending_ms
            .is_some_and(|oldest| now_ms.saturating_sub(oldest) >= self.flush_interval_ms)
    }

    pub fn pending_cells(&self) -> usize {
        self.pending.len()
    }

    /// Takes the pending batch (possibly empty).
    pub fn take(&mut self) -> Vec<CellBeat> {
        self.oldest_pending_ms = None;
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(cell, at_ms)| CellBeat { cell, at_ms })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_beats_of_one_cell_and_keeps_the_latest() {
        let mut batcher = HeartbeatBatcher::new(1_000, 10);
        assert_eq!(batcher.record("c1", 100), Recorded::Pending);
        assert_eq!(batcher.record("c1", 300), Recorded::Pending);
        assert_eq!(batcher.record("c1", 200), Recorded::Pending);
        assert_eq!(
            batcher.take(),
            vec![CellBeat {
                cell: "c1".into(),
                at_ms: 300
            }]
        );
        assert_eq!(batcher.pending_cells(), 0);
    }

    #[test]
    fn due_after_one_interval_from_the_oldest_beat() {
        let mut batcher = HeartbeatBatcher::new(1_000, 10);
        assert!(!batcher.is_due(5_000), "an empty batch is never due");
        batcher.record("c1", 100);
        batcher.record("c2", 900);
        assert!(!batcher.is_due(1_099));
        assert!(batcher.is_due(1_100));
        batcher.take();
        assert!(!batcher.is_due(10_000));
    }

    #[test]
    fn full_batch_asks_for_a_flush_and_refuses_new_cells() {
        let mut batcher = HeartbeatBatcher::new(1_000, 2);
        assert_eq!(batcher.record("c1", 1), Recorded::Pending);
        assert_eq!(batcher.record("c2", 1), Recorded::FlushNow);
        assert_eq!(batcher.record("c3", 1), Recorded::Full);
        assert_eq!(
            batcher.record("c1", 2),
            Recorded::Pending,
            "known cells still coalesce"
        );
        assert_eq!(batcher.take().len(), 2);
        assert_eq!(batcher.record("c3", 3), Recorded::Pending);
    }
}
