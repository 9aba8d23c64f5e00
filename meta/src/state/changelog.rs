//! Bounded log of the most recent changes, one per revision, so a watcher that reconnects can
//! resume from the last revision it saw without missing anything, or learn that it must re-list.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::Change;

/// Answer to "what changed after revision r?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// Every change after the requested revision, in revision order (possibly none).
    Changes(Vec<Change>),
    /// The requested revision is older than the retained window: re-list at `current_revision`
    /// and watch from there.
    Compacted { current_revision: u64 },
}

/// Ring of the last `capacity_revisions` changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLog {
    capacity_revisions: usize,
    changes: VecDeque<Change>,
}

impl ChangeLog {
    /// A zero capacity is raised to one so that the latest change is always resumable.
    pub fn new(capacity_revisions: usize) -> Self {
        let capacity_revisions = capacity_revisions.max(1);
        Self {
            capacity_revisions,
            changes: VecDeque::with_capacity(capacity_revisions.min(1024)),
        }
    }

    pub fn capacity_revisions(&self) -> usize {
        self.capacity_revisions
    }

    /// Records `change`, whose revision must follow the previous one by exactly one.
    pub fn push(&mut self, change: Change) {
        if let Some(last) = self.changes.back() {
            assert_eq!(
                last.revision + 1,
                change.revision,
                "change log revisions must be contiguous"
            );
        }
        if self.changes.len() == self.capacity_revisions {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// Changes with revision greater than `after_revision`, at most `max_count` of them.
    /// `current_revision` is the state's revision (the newest change, or the revision a
    /// snapshot restored when the ring is still empty).
    pub fn since(&self, after_revision: u64, current_revision: u64, max_count: usize) -> Since {
        if after_revision >= current_revision {
            return Since::Changes(Vec::new());
        }
        let oldest_retained = match self.changes.front() {
            Some(change) => change.revision,
            None => return Since::Compacted { current_revision },
        };
        if after_revision + 1 < oldest_retained {
            return Since::Compacted { current_revision };
        }
        let skip = usize::try_from(after_revision + 1 - oldest_retained).unwrap_or(usize::MAX);
        Since::Changes(
            self.changes
                .iter()
                .skip(skip)
                .take(max_count)
                .cloned()
                .collect(),
        )
    }
}
