//! Taking over a failed region's pending delay messages and open transactions.
//!
//! Delay and transactional messages wait in the internal timer and half topics of the region
//! that took them, and those records replicate like every other record. A receiving region
//! does not arm them: their origin releases them, and the released copy (or the committed copy,
//! or the rollback record) replicates too. When the origin region fails, exactly one surviving
//! region (chosen by the failover logic) *adopts* it: it arms every timer and opens every
//! transaction of that origin that it holds and that has not ended, so a pending delay message
//! fires once, in the adopting region. The adoption is persisted (`meta/adopted`) and repeated
//! at every start, so a restart of the adopting region keeps it.
//!
//! "Ended" is decided by copies, not by markers, because the origin's markers never left it: a
//! timer is released when its real topic holds a record with its message id (released there
//! and replicated, or released here), a transaction is ended when its real topic holds the
//! committed copy or the rollback topic holds its rollback record. The same rule keeps a
//! returning origin from releasing again what the adopter released (see `release_due_timers`).

use std::collections::BTreeSet;

use crate::messaging::error::MessagingError;
use crate::messaging::message::PROP_REAL_TOPIC;
use crate::messaging::names::{HALF_TOPIC, TIMER_TOPIC, TXN_OP_TOPIC};
use crate::storage::Record;

use super::Broker;
use super::keys::{TIMER_DONE_PREFIX, TXN_DONE_PREFIX, done_key, txn_checks_key};

/// Where the adopted regions are listed (names separated by newlines).
const ADOPTED_KEY: &[u8] = b"meta/adopted";
/// Records read per step while scanning an internal topic for an origin's records.
const ADOPT_SCAN_BATCH_MESSAGES: usize = 1024;
/// Regions one cell may adopt: a fabric has few regions, and each adoption rescans at start.
const MAX_ADOPTED_REGIONS: usize = 64;

/// What an adoption found and armed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdoptionOutcome {
    /// Delay messages of the origin armed here (pending, not released anywhere yet).
    pub timers_armed: usize,
    /// Transactions of the origin opened here (the check-backs go to this region's producers).
    pub transactions_opened: usize,
    /// Records of the origin found already ended (released, committed or rolled back).
    pub already_ended: usize,
}

impl Broker {
    /// Adopts `origin`'s pending delay messages and open transactions (see the module
    /// comment). Idempotent: adopting again arms nothing twice. Refused for this cell's own
    /// region.
    pub fn adopt_region(&self, origin: &str) -> Result<AdoptionOutcome, MessagingError> {
        if origin == self.storage.region() {
            return Err(MessagingError::InvalidAdoption {
                region: origin.to_string(),
                reason: "it is this cell's own region".to_string(),
            });
        }
        if origin.is_empty() || origin.contains('\n') {
            return Err(MessagingError::InvalidAdoption {
                region: origin.to_string(),
                reason: "not a region name".to_string(),
            });
        }
        let mut adopted = self.adopted_regions()?;
        if adopted.insert(origin.to_string()) {
            if adopted.len() > MAX_ADOPTED_REGIONS {
                return Err(MessagingError::InvalidAdoption {
                    region: origin.to_string(),
                    reason: format!("at most {MAX_ADOPTED_REGIONS} regions can be adopted"),
                });
            }
            // Persisted first: a crash during the scan repeats it at start.
            let list: Vec<&str> = adopted.iter().map(String::as_str).collect();
            self.put_state(ADOPTED_KEY, list.join("\n").as_bytes())?;
        }
        let outcome = self.arm_adopted(origin)?;
        tracing::info!(
            origin,
            timers = outcome.timers_armed,
            transactions = outcome.transactions_opened,
            ended = outcome.already_ended,
            "region adopted"
        );
        Ok(outcome)
    }

    /// The regions this cell has adopted.
    pub fn adopted_regions(&self) -> Result<BTreeSet<String>, MessagingError> {
        Ok(self
            .get_state(ADOPTED_KEY)?
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .split('\n')
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Re-arms what every adopted region left pending; run at start after the own records.
    pub(super) fn load_adopted(&self) -> Result<(), MessagingError> {
        for origin in self.adopted_regions()? {
            self.arm_adopted(&origin)?;
        }
        Ok(())
    }

    fn arm_adopted(&self, origin: &str) -> Result<AdoptionOutcome, MessagingError> {
        let mut outcome = AdoptionOutcome::default();
        let mut timers = Vec::new();
        self.scan_origin(TIMER_TOPIC, origin, |broker, record| {
            if broker.internal_record_ended(record, TIMER_DONE_PREFIX, &[])? {
                outcome.already_ended += 1;
            } else {
                timers.push((record.delivery_timestamp_ms, record.queue_offset));
            }
            Ok(())
        })?;
        {
            let mut wheel = self.timers.lock();
            for (due_ms, offset) in timers {
                let before = wheel.len();
                wheel.insert(due_ms, offset);
                outcome.timers_armed += wheel.len() - before;
            }
        }
        let mut halves: Vec<(String, u64, u64)> = Vec::new();
        self.scan_origin(HALF_TOPIC, origin, |broker, record| {
            if broker.internal_record_ended(record, TXN_DONE_PREFIX, &[TXN_OP_TOPIC])? {
                outcome.already_ended += 1;
            } else {
                halves.push((
                    record.message_id.clone(),
                    record.queue_offset,
                    broker.first_check_delay_of(record),
                ));
            }
            Ok(())
        })?;
        let now = self.now_ms();
        for (message_id, offset, delay_ms) in halves {
            let checks = self
                .get_state(&txn_checks_key(&message_id))?
                .and_then(|bytes| super::keys::decode_u64(&bytes))
                .unwrap_or(0);
            let mut table = self.txns.lock();
            if table.get(&message_id).is_none() {
                table.open(
                    &message_id,
                    offset,
                    checks as u32,
                    now.saturating_add(delay_ms),
                );
                outcome.transactions_opened += 1;
            }
        }
        if outcome.timers_armed > 0 || outcome.transactions_opened > 0 {
            self.background_wake.notify_one();
        }
        Ok(outcome)
    }

    /// Visits every record of `topic` (queue 0) that originated in `origin`.
    fn scan_origin(
        &self,
        topic: &str,
        origin: &str,
        mut visit: impl FnMut(&Self, &Record) -> Result<(), MessagingError>,
    ) -> Result<(), MessagingError> {
        let Some(range) = self.storage.queue_range(topic, 0) else {
            return Ok(());
        };
        let mut at = range.earliest;
        while at < range.next {
            let records = self.storage.read_queue(
                topic,
                0,
                at,
                ADOPT_SCAN_BATCH_MESSAGES,
                self.config.max_read_batch_bytes,
            )?;
            let Some(last) = records.last() else { break };
            at = last.queue_offset + 1;
            for record in records
                .iter()
                .filter(|record| record.origin.region == origin)
            {
                visit(self, record)?;
            }
        }
        Ok(())
    }

    /// Whether an internal-topic record has ended: a done marker here, or a record with its
    /// message id in its real topic or in one of `ending_topics`.
    fn internal_record_ended(
        &self,
        record: &Record,
        done_prefix: &[u8],
        ending_topics: &[&str],
    ) -> Result<bool, MessagingError> {
        if self
            .get_state(&done_key(done_prefix, record.queue_offset))?
            .is_some()
        {
            return Ok(true);
        }
        let real_topic = record.properties.get(PROP_REAL_TOPIC).map(String::as_str);
        for topic in real_topic.into_iter().chain(ending_topics.iter().copied()) {
            if self.storage.contains_copy(topic, &record.message_id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
