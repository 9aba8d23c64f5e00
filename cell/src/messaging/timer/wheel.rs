//! Pending delay timers, ordered by due time: sans-IO.
//!
//! Each timer is a delay message stored at an offset of the timer topic. The wheel only orders
//! them; the shell stores and releases the messages. Two ordered sets keep both questions cheap:
//! which timers are due (by time) and below which timer-topic offset everything is released (by
//! offset), the latter being the checkpoint a restart rescans from.

use std::collections::BTreeSet;

/// Pending timers.
#[derive(Debug, Default)]
pub struct TimerWheel {
    by_due: BTreeSet<(u64, u64)>,
    by_offset: BTreeSet<u64>,
}

impl TimerWheel {
    /// Adds the timer stored at `offset`, due at `due_ms`. Re-adding a known offset is ignored.
    pub fn insert(&mut self, due_ms: u64, offset: u64) {
        if self.by_offset.insert(offset) {
            self.by_due.insert((due_ms, offset));
        }
    }

    /// Removes and returns up to `max` timers due at `now_ms`, earliest first, as
    /// `(due_ms, offset)`.
    pub fn pop_due(&mut self, now_ms: u64, max: usize) -> Vec<(u64, u64)> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.by_due.first() {
                Some(&(due_ms, offset)) if due_ms <= now_ms => {
                    self.by_due.pop_first();
                    due.push((due_ms, offset));
                }
                _ => break,
            }
        }
        due
    }

    /// Forgets a timer once its message is released. Until then it counts for the checkpoint.
    pub fn released(&mut self, offset: u64) {
        self.by_offset.remove(&offset);
    }

    /// Puts back a timer whose release failed, to be retried.
    pub fn requeue(&mut self, due_ms: u64, offset: u64) {
        if self.by_offset.contains(&offset) {
            self.by_due.insert((due_ms, offset));
        }
    }

    /// When the earliest pending timer is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.by_due.first().map(|(due_ms, _)| *due_ms)
    }

    /// The lowest timer-topic offset not yet released; `None` when nothing is pending.
    pub fn lowest_pending_offset(&self) -> Option<u64> {
        self.by_offset.first().copied()
    }

    /// Timers not yet released.
    pub fn len(&self) -> usize {
        self.by_offset.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.by_offset.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_due_order_and_tracks_the_checkpoint() {
        let mut wheel = TimerWheel::default();
        wheel.insert(300, 0);
        wheel.insert(100, 1);
        wheel.insert(200, 2);
        wheel.insert(100, 1);
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.next_due_ms(), Some(100));
        assert!(wheel.pop_due(99, 10).is_empty());
        assert_eq!(wheel.pop_due(250, 10), [(100, 1), (200, 2)]);
        assert_eq!(
            wheel.lowest_pending_offset(),
            Some(0),
            "popped but unreleased timers hold the checkpoint"
        );
        wheel.released(1);
        wheel.requeue(200, 2);
        assert_eq!(wheel.pop_due(1_000, 1), [(200, 2)]);
        wheel.released(2);
        assert_eq!(wheel.lowest_pending_offset(), Some(0));
        assert_eq!(wheel.pop_due(1_000, 10), [(300, 0)]);
        wheel.released(0);
        assert!(wheel.is_empty());
        assert_eq!(
            (wheel.next_due_ms(), wheel.lowest_pending_offset()),
            (None, None)
        );
    }

    #[test]
    fn a_million_timers_pop_in_order() {
        let mut wheel = TimerWheel::default();
        let count = 1_000_000u64;
        // A fixed permutation of due times (multiplying by an odd constant modulo 2^20).
        for offset in 0..count {
            wheel.insert((offset * 747_796_405) % (1 << 20), offset);
        }
        assert_eq!(wheel.len(), count as usize);
        let mut last = 0;
        let mut popped = 0;
        for step in 1..=64u64 {
            for (due_ms, offset) in wheel.pop_due(step * (1 << 14), usize::MAX) {
                assert!(due_ms >= last);
                last = due_ms;
                wheel.released(offset);
                popped += 1;
            }
        }
        assert_eq!(popped, count);
    }
}
