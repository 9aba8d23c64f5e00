//! Transactions: half messages held in the half topic, committed into their topic or rolled
//! back, with check-backs to the producer while they stay open.
//!
//! Persistence mirrors the timers: the half topic is the store, `txn/floor` the checkpoint, and a
//! transaction is resolved when its half offset has a `txn/done/<offset>` marker or its message
//! id resolves to the record that ended it (commit re-appends the message under its id; rollback
//! appends a record under it to the transaction-op topic), both stamped with the half offset.
//! Check counts survive restarts under `txn/checks/<id>`.

use std::sync::atomic::Ordering;

use crate::messaging::error::MessagingError;
use crate::messaging::message::PROP_RELEASED_FROM;
use crate::messaging::names::{HALF_TOPIC, TXN_OP_TOPIC};
use crate::messaging::txn::CheckAction;
use crate::storage::{MessageType, NewRecord, Record};

use super::Broker;
use super::keys::{TXN_DONE_PREFIX, TXN_FLOOR_KEY, decode_u64, txn_checks_key};
use super::timers::restore_original;
use super::trace::TraceKind;

/// How a producer ends a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionResolution {
    /// Deliver the message.
    Commit,
    /// Discard it.
    Rollback,
}

/// A request to ask a producer about an open transaction (the gRPC layer sends RocketMQ's
/// RecoverOrphanedTransactionCommand with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionCheck {
    /// The message as it will be delivered on commit (its real topic and queue).
    pub message: Record,
    /// The token to end the transaction with.
    pub transaction_id: String,
    /// 1 for the first check.
    pub check: u32,
}

impl Broker {
    pub(super) fn load_transactions(&self) -> Result<(), MessagingError> {
        let floor = self
            .get_state(TXN_FLOOR_KEY)?
            .and_then(|bytes| decode_u64(&bytes))
            .unwrap_or(0);
        self.txn_checkpoint.lock().stored = floor;
        let mut found = Vec::new();
        self.rescan_pending(HALF_TOPIC, floor, TXN_DONE_PREFIX, |record| {
            found.push((
                record.message_id.clone(),
                record.queue_offset,
                self.first_check_delay_of(record),
            ));
        })?;
        let now = self.now_ms();
        let mut table = self.txns.lock();
        for (message_id, offset, delay_ms) in found {
            let checks = self
                .get_state(&txn_checks_key(&message_id))?
                .and_then(|bytes| decode_u64(&bytes))
                .unwrap_or(0);
            table.open(
                &message_id,
                offset,
                checks as u32,
                now.saturating_add(delay_ms),
            );
        }
        if !table.is_empty() {
            tracing::info!(open = table.len(), floor, "open transactions restored");
        }
        Ok(())
    }

    pub(super) fn first_check_delay_of(&self, record: &Record) -> u64 {
        record
            .properties
            .get(crate::messaging::message::PROP_TXN_CHECK_DELAY_MS)
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(self.config.transactions.first_check_delay_ms)
    }

    /// Open transactions.
    pub fn open_transactions(&self) -> usize {
        self.txns.lock().len()
    }

    /// Ends a transaction: commit delivers the message, rollback discards it.
    pub async fn end_transaction(
        &self,
        transaction_id: &str,
        resolution: TransactionResolution,
    ) -> Result<(), MessagingError> {
        // Taken out of the table first so that a concurrent end or check sees it resolved.
        let open = self.txns.lock().resolve(transaction_id).ok_or_else(|| {
            MessagingError::TransactionNotFound {
                message_id: transaction_id.to_string(),
            }
        })?;
        let result = self
            .finish_transaction(transaction_id, open.half_offset, resolution)
            .await;
        if result.is_err() {
            self.txns.lock().open(
                transaction_id,
                open.half_offset,
                open.checks,
                open.next_check_ms,
            );
        }
        result
    }

    async fn finish_transaction(
        &self,
        message_id: &str,
        half_offset: u64,
        resolution: TransactionResolution,
    ) -> Result<(), MessagingError> {
        // A producer may end its transaction the moment the send returned, before the indexer
        // made the half message readable.
        self.wait_visible(HALF_TOPIC, 0, half_offset).await;
        let half = self.read_one(HALF_TOPIC, 0, half_offset)?;
        let record = match (resolution, half) {
            (TransactionResolution::Commit, Some(half)) => {
                restore_original(&half).ok_or_else(|| MessagingError::CorruptState {
                    key: format!("{HALF_TOPIC}@{half_offset}"),
                    reason: "half message lacks its destination",
                })?
            }
            (TransactionResolution::Commit, None) => {
                return Err(MessagingError::TransactionNotFound {
                    message_id: message_id.to_string(),
                });
            }
            (TransactionResolution::Rollback, _) => NewRecord {
                message_id: message_id.to_string(),
                topic: TXN_OP_TOPIC.to_string(),
                queue_id: 0,
                message_type: MessageType::Transaction,
                body: b"rollback".to_vec(),
                properties: [(PROP_RELEASED_FROM.to_string(), half_offset.to_string())]
                    .into_iter()
                    .collect(),
                ..NewRecord::default()
            },
        };
        let appended = self.storage.append(vec![record]).await?;
        self.delete_state(&txn_checks_key(message_id))?;
        // The marker and the checkpoint may only cover an ending the log has fsynced (always
        // so in `sync` mode); otherwise a power loss could keep them and lose the ending. Left
        // out, the ending's own record (stamped with its half offset) tells a restart, and a
        // later ending moves the checkpoint.
        let fsynced = appended
            .last()
            .is_some_and(|record| record.position < self.storage.durable_end());
        if fsynced {
            // A failed marker write is only logged: the stamp covers it.
            if let Err(error) = self.mark_done(TXN_DONE_PREFIX, &[half_offset]) {
                tracing::warn!(%error, message_id, "transaction end marker not written");
            }
            self.advance_txn_floor()?;
        }
        let kind = match resolution {
            TransactionResolution::Commit => TraceKind::Committed,
            TransactionResolution::Rollback => TraceKind::RolledBack,
        };
        self.trace(message_id, kind, "", 0, "").await;
        Ok(())
    }

    fn advance_txn_floor(&self) -> Result<(), MessagingError> {
        if self.txn_sends_in_progress.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let visible_next = self
            .storage
            .queue_range(HALF_TOPIC, 0)
            .map_or(0, |range| range.next);
        let floor = self
            .txns
            .lock()
            .lowest_open_offset()
            .unwrap_or(visible_next)
            .min(visible_next);
        self.store_floor(TXN_FLOOR_KEY, TXN_DONE_PREFIX, &self.txn_checkpoint, floor)
    }

    /// A receiver of check-back requests, for the gRPC layer to forward to producers.
    pub fn subscribe_transaction_checks(
        &self,
    ) -> tokio::sync::broadcast::Receiver<TransactionCheck> {
        self.transaction_checks.subscribe()
    }

    /// Issues the check-backs that are due and rolls back transactions out of checks. Returns
    /// the checks issued (also sent to subscribers).
    pub async fn check_transactions(&self) -> Result<Vec<TransactionCheck>, MessagingError> {
        let now = self.now_ms();
        let actions = self.txns.lock().due(
            now,
            self.config.max_transaction_actions_per_round,
            &self.config.transactions,
        );
        let mut checks = Vec::new();
        for action in actions {
            match action {
                CheckAction::Check {
                    message_id,
                    half_offset,
                    check,
                } => {
                    self.put_state(
                        &txn_checks_key(&message_id),
                        &u64::from(check).to_le_bytes(),
                    )?;
                    let Some(half) = self.read_one(HALF_TOPIC, 0, half_offset)? else {
                        continue;
                    };
                    let Some(original) = restore_original(&half) else {
                        continue;
                    };
                    let mut message = half;
                    message.topic = original.topic;
                    message.queue_id = original.queue_id;
                    message.properties = original.properties;
                    let request = TransactionCheck {
                        message,
                        transaction_id: message_id.clone(),
                        check,
                    };
                    // No subscriber (no gRPC layer yet) is not an error: the check repeats.
                    let _ = self.transaction_checks.send(request.clone());
                    self.trace(&message_id, TraceKind::TransactionChecked, "", check, "")
                        .await;
                    checks.push(request);
                }
                CheckAction::Abandon { message_id, .. } => {
                    tracing::warn!(%message_id, "transaction unresolved after the maximum number of checks; rolling back");
                    match self
                        .end_transaction(&message_id, TransactionResolution::Rollback)
                        .await
                    {
                        Ok(()) | Err(MessagingError::TransactionNotFound { .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        Ok(checks)
    }
}
