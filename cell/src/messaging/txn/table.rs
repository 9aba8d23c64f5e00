//! Open transactions and their check-back schedule: sans-IO.
//!
//! A transactional message is stored as a half message, invisible to consumers, until the
//! producer commits or rolls it back. If neither happens within the check interval, the cell asks
//! the producer (RocketMQ's recover-orphaned-transaction command) and asks again every interval
//! until the transaction is resolved or the checks run out, at which point it is rolled back.

use std::collections::{BTreeSet, HashMap};

/// When and how often to check back on open transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPolicy {
    /// Delay before the first check, unless the message asks for another (RocketMQ
    /// `transactionTimeOut`, 6 s).
    pub first_check_delay_ms: u64,
    /// Delay between later checks (RocketMQ `transactionCheckInterval`, 30 s).
    pub check_interval_ms: u64,
    /// Checks before the transaction is rolled back (RocketMQ `transactionCheckMax`, 15).
    pub max_checks: u32,
    /// Longest first-check delay a producer may ask for (RocketMQ refuses more than 1 h).
    pub max_first_check_delay_ms: u64,
}

impl Default for TransactionPolicy {
    fn default() -> Self {
        TransactionPolicy {
            first_check_delay_ms: 6_000,
            check_interval_ms: 30_000,
            max_checks: 15,
            max_first_check_delay_ms: 3_600_000,
        }
    }
}

/// One open transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    /// Offset of the half message in the half topic.
    pub half_offset: u64,
    /// Checks sent so far.
    pub checks: u32,
    /// When the next check is due.
    pub next_check_ms: u64,
}

/// What the table wants done for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckAction {
    /// Ask the producer about it (this is check number `check`).
    Check {
        /// Half message id.
        message_id: String,
        /// Offset of the half message.
        half_offset: u64,
        /// 1-based check count.
        check: u32,
    },
    /// Out of checks: roll it back.
    Abandon {
        /// Half message id.
        message_id: String,
        /// Offset of the half message.
        half_offset: u64,
    },
}

/// All open transactions of the cell.
#[derive(Debug, Default)]
pub struct TransactionTable {
    open: HashMap<String, OpenTransaction>,
    schedule: BTreeSet<(u64, String)>,
}

impl TransactionTable {
    /// Registers a half message stored at `half_offset`, first checked at `first_check_ms`.
    pub fn open(&mut self, message_id: &str, half_offset: u64, checks: u32, first_check_ms: u64) {
        if let Some(old) = self.open.remove(message_id) {
            self.schedule
                .remove(&(old.next_check_ms, message_id.to_string()));
        }
        self.schedule
            .insert((first_check_ms, message_id.to_string()));
        self.open.insert(
            message_id.to_string(),
            OpenTransaction {
                half_offset,
                checks,
                next_check_ms: first_check_ms,
            },
        );
    }

    /// The open transaction of a message id.
    pub fn get(&self, message_id: &str) -> Option<&OpenTransaction> {
        self.open.get(message_id)
    }

    /// Removes a transaction once committed or rolled back.
    pub fn resolve(&mut self, message_id: &str) -> Option<OpenTransaction> {
        let open = self.open.remove(message_id)?;
        self.schedule
            .remove(&(open.next_check_ms, message_id.to_string()));
        Some(open)
    }

    /// Up to `max` actions due at `now_ms`. A checked transaction is rescheduled one interval
    /// later; an abandoned one stays open until the shell resolves it.
    pub fn due(&mut self, now_ms: u64, max: usize, policy: &TransactionPolicy) -> Vec<CheckAction> {
        let mut actions = Vec::new();
        while actions.len() < max {
            let Some((due_ms, message_id)) = self.schedule.first().cloned() else {
                break;
            };
            if due_ms > now_ms {
                break;
            }
            self.schedule.pop_first();
            let Some(open) = self.open.get_mut(&message_id) else {
                continue;
            };
            if open.checks >= policy.max_checks {
                // Rescheduled so that a failed rollback is retried rather than forgotten.
                open.next_check_ms = now_ms.saturating_add(policy.check_interval_ms);
                self.schedule
                    .insert((open.next_check_ms, message_id.clone()));
                actions.push(CheckAction::Abandon {
                    message_id,
                    half_offset: open.half_offset,
                });
                continue;
            }
            open.checks += 1;
            open.next_check_ms = now_ms.saturating_add(policy.check_interval_ms);
            self.schedule
                .insert((open.next_check_ms, message_id.clone()));
            actions.push(CheckAction::Check {
                message_id,
                half_offset: open.half_offset,
                check: open.checks,
            });
        }
        actions
    }

    /// When the next action is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.schedule.first().map(|(due_ms, _)| *due_ms)
    }

    /// The lowest half-topic offset still open (the restart checkpoint).
    pub fn lowest_open_offset(&self) -> Option<u64> {
        self.open.values().map(|open| open.half_offset).min()
    }

    /// Open transactions.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_repeat_every_interval_then_abandon() {
        let policy = TransactionPolicy {
            first_check_delay_ms: 100,
            check_interval_ms: 50,
            max_checks: 2,
            ..Default::default()
        };
        let mut table = TransactionTable::default();
        table.open("m1", 7, 0, 100);
        assert!(table.due(99, 10, &policy).is_empty());
        assert_eq!(
            table.due(100, 10, &policy),
            [CheckAction::Check {
                message_id: "m1".into(),
                half_offset: 7,
                check: 1
            }]
        );
        assert!(table.due(149, 10, &policy).is_empty());
        assert_eq!(
            table.due(150, 10, &policy),
            [CheckAction::Check {
                message_id: "m1".into(),
                half_offset: 7,
                check: 2
            }]
        );
        assert_eq!(
            table.due(200, 10, &policy),
            [CheckAction::Abandon {
                message_id: "m1".into(),
                half_offset: 7
            }]
        );
        assert_eq!(table.resolve("m1").map(|open| open.checks), Some(2));
        assert!(table.is_empty());
        assert!(table.due(10_000, 10, &policy).is_empty());
    }

    #[test]
    fn resolved_transactions_are_not_checked_and_checkpoint_moves() {
        let policy = TransactionPolicy::default();
        let mut table = TransactionTable::default();
        table.open("a", 1, 0, 10);
        table.open("b", 2, 0, 10);
        assert_eq!(table.lowest_open_offset(), Some(1));
        table.resolve("a");
        assert_eq!(table.lowest_open_offset(), Some(2));
        let due = table.due(10, 10, &policy);
        assert_eq!(
            due,
            [CheckAction::Check {
                message_id: "b".into(),
                half_offset: 2,
                check: 1
            }]
        );
        assert_eq!(table.next_due_ms(), Some(10 + policy.check_interval_ms));
    }

    #[test]
    fn restored_check_counts_carry_over() {
        let policy = TransactionPolicy {
            max_checks: 3,
            ..Default::default()
        };
        let mut table = TransactionTable::default();
        table.open("a", 1, 3, 0);
        assert_eq!(
            table.due(0, 10, &policy),
            [CheckAction::Abandon {
                message_id: "a".into(),
                half_offset: 1
            }]
        );
    }
}
