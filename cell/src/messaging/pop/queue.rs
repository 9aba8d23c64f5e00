//! The per-message (pop) consumption state of one (group, topic, queue): sans-IO.
//!
//! The state covers the window of queue offsets `[ack_floor, read_cursor)`: offsets below the
//! floor are done (acked, dead-lettered or filtered out), offsets from the cursor on have not been
//! read yet, and every offset in between that is not done has an [`Entry`]. The shell reads
//! records at the cursor and [`PopQueue::admit`]s them, then asks [`PopQueue::deliver`] which
//! entries to hand out; it is fed `now_ms` and never reads a clock, so tests drive time by hand.
//!
//! Rules:
//! - a delivery makes the entry invisible until `now + invisible_ms` and issues a receipt handle
//!   with a fresh nonce; only that handle may ack or change it;
//! - an entry whose invisibility ran out is delivered again with its attempt incremented, unless
//!   it has used all its attempts, in which case it is handed to the dead-letter queue;
//! - in orderly (FIFO) mode, only the oldest unfinished entry of each message group may be
//!   delivered, so a group advances one message at a time while other groups proceed;
//! - another region's consumption of the same group arrives as remote marks
//!   ([`PopQueue::remote_done`], [`PopQueue::remote_attempt`]): a mark on an offset already read
//!   changes its entry at once, a mark on an offset not read yet waits in a bounded map until the
//!   offset is admitted, and done marks at the cursor move the cursor on, so a region nobody
//!   consumes in keeps up with the region that does.

use std::collections::{BTreeMap, HashSet};

use crate::messaging::codec::{Reader, Writer};
use crate::messaging::error::MessagingError;
use crate::messaging::pop::handle::ReceiptHandle;
use crate::messaging::retry::RetryPolicy;

/// What an unfinished entry is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Deliverable from `visible_at_ms` on.
    Ready {
        /// Earliest delivery time.
        visible_at_ms: u64,
    },
    /// Delivered; invisible until the deadline.
    InFlight {
        /// When the delivery expires.
        invisible_until_ms: u64,
    },
    /// Out of attempts; the shell is moving it to the dead-letter queue.
    DeadLettering,
}

/// One unfinished message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Deliveries so far.
    pub attempt: u32,
    /// Nonce of the newest receipt handle (0 before the first delivery).
    pub nonce: u64,
    /// State.
    pub state: EntryState,
    /// FIFO message group; empty for none.
    pub message_group: String,
}

/// One message to hand to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Queue offset of the message.
    pub offset: u64,
    /// This delivery's attempt (1 for the first).
    pub attempt: u32,
    /// The receipt handle issued for it.
    pub handle: ReceiptHandle,
    /// When it becomes visible again unless acked.
    pub invisible_until_ms: u64,
}

/// Counts the changes of a state, so that the shell persists only a state that changed instead
/// of encoding every state it looked at (a receive looks at every queue of a topic). Not part of
/// the state's value: two states with the same content are equal whatever their counts.
#[derive(Debug, Clone, Copy, Default)]
struct Changes(u64);

impl PartialEq for Changes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Changes {}

impl Changes {
    fn bump(&mut self) {
        self.0 = self.0.wrapping_add(1);
    }
}

/// What another region did with an offset this state has not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteMark {
    /// Acked or dead-lettered there: done here too.
    Done,
    /// Delivered there `attempt` times, invisible until the deadline.
    Attempted {
        /// Deliveries there so far.
        attempt: u32,
        /// When that delivery expires.
        invisible_until_ms: u64,
    },
}

/// The consumption state of one (group, topic, queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopQueue {
    queue_id: u32,
    /// The (group, topic) hash put into every handle; derived from the state's key, so it is
    /// not persisted.
    scope: u32,
    read_cursor: u64,
    next_nonce: u64,
    entries: BTreeMap<u64, Entry>,
    /// Other regions' marks on offsets at or past the cursor, applied when they are admitted.
    remote: BTreeMap<u64, RemoteMark>,
    changes: Changes,
}

impl PopQueue {
    /// A state starting at `offset` (where a new group starts reading).
    pub fn new(queue_id: u32, offset: u64) -> Self {
        PopQueue {
            queue_id,
            scope: 0,
            read_cursor: offset,
            next_nonce: 1,
            entries: BTreeMap::new(),
            remote: BTreeMap::new(),
            changes: Changes::default(),
        }
    }

    /// A counter that moves whenever the persisted content may have changed.
    pub fn changes(&self) -> u64 {
        self.changes.0
    }

    /// Sets the (group, topic) hash that handles carry and must match.
    pub fn with_scope(mut self, scope: u32) -> Self {
        self.scope = scope;
        self
    }

    /// Starts over at `offset` (an offset reset), dropping every unfinished entry. The nonce
    /// counter is kept: restarting it would reissue the exact handles given out before the reset,
    /// and a stale one would then ack the new delivery of the same offset.
    pub fn reset(&mut self, offset: u64) {
        self.entries.clear();
        self.remote.clear();
        self.read_cursor = offset;
        self.changes.bump();
    }

    /// The offset of the next record to read from the log.
    pub fn read_cursor(&self) -> u64 {
        self.read_cursor
    }

    /// The lowest offset that is not done; everything below it is finished.
    pub fn ack_floor(&self) -> u64 {
        self.entries
            .keys()
            .next()
            .copied()
            .unwrap_or(self.read_cursor)
    }

    /// Unfinished entries.
    pub fn unfinished(&self) -> usize {
        self.entries.len()
    }

    /// An entry, for inspection.
    pub fn entry(&self, offset: u64) -> Option<&Entry> {
        self.entries.get(&offset)
    }

    /// Whether the shell may read more records (fewer than `max_unfinished` are pending).
    pub fn wants_records(&self, max_unfinished: usize) -> bool {
        self.entries.len() < max_unfinished
    }

    /// Takes the record at the read cursor. A record the group's filter rejects is done at once.
    /// A record another region already finished is done at once; one another region delivered
    /// keeps that region's attempt count and invisibility.
    pub fn admit(&mut self, offset: u64, message_group: &str, matches: bool) {
        debug_assert!(
            offset >= self.read_cursor,
            "records are admitted in queue order"
        );
        self.read_cursor = offset.max(self.read_cursor) + 1;
        self.changes.bump();
        let (attempt, state) = match self.remote.remove(&offset) {
            Some(RemoteMark::Done) => return,
            Some(RemoteMark::Attempted {
                attempt,
                invisible_until_ms,
            }) => (attempt, EntryState::InFlight { invisible_until_ms }),
            None => (0, EntryState::Ready { visible_at_ms: 0 }),
        };
        if matches {
            self.entries.insert(
                offset,
                Entry {
                    attempt,
                    nonce: 0,
                    state,
                    message_group: message_group.to_string(),
                },
            );
        }
    }

    /// Marks not applied yet (offsets this state has not read).
    pub fn remote_marks(&self) -> usize {
        self.remote.len()
    }

    /// Another region finished (acked or dead-lettered) the message at `offset` for this group:
    /// it is done here too. At most `max_remote_marks` marks wait for offsets not read yet; past
    /// that the newest are dropped (their messages are delivered here once more, never lost).
    pub fn remote_done(&mut self, offset: u64, max_remote_marks: usize) {
        if offset < self.read_cursor {
            if self.entries.remove(&offset).is_some() {
                self.changes.bump();
            }
            return;
        }
        if self.remote.insert(offset, RemoteMark::Done) == Some(RemoteMark::Done) {
            return;
        }
        // Done marks at the cursor need no record read: move past them, so that the marks of
        // a region nobody consumes in do not pile up.
        while self.remote.first_key_value() == Some((&self.read_cursor, &RemoteMark::Done)) {
            self.remote.remove(&self.read_cursor);
            self.read_cursor += 1;
        }
        self.trim_remote(max_remote_marks);
        self.changes.bump();
    }

    /// Another region delivered the message at `offset` for the `attempt`th time, invisible
    /// until `invisible_until_ms`: a consumer here gets it after that with the next attempt.
    /// Never lowers an attempt count; a finished message stays finished.
    pub fn remote_attempt(
        &mut self,
        offset: u64,
        attempt: u32,
        invisible_until_ms: u64,
        max_remote_marks: usize,
    ) {
        if offset < self.read_cursor {
            if let Some(entry) = self.entries.get_mut(&offset)
                && entry.attempt <= attempt
                && entry.state != EntryState::DeadLettering
            {
                let until = match entry.state {
                    EntryState::InFlight {
                        invisible_until_ms: local,
                    } => local.max(invisible_until_ms),
                    _ => invisible_until_ms,
                };
                entry.attempt = attempt;
                entry.state = EntryState::InFlight {
                    invisible_until_ms: until,
                };
                self.changes.bump();
            }
            return;
        }
        let mark = match self.remote.get(&offset) {
            Some(RemoteMark::Done) => return,
            Some(RemoteMark::Attempted {
                attempt: known,
                invisible_until_ms: known_until,
            }) if *known > attempt || (*known == attempt && *known_until >= invisible_until_ms) => {
                return;
            }
            _ => RemoteMark::Attempted {
                attempt,
                invisible_until_ms,
            },
        };
        self.remote.insert(offset, mark);
        self.trim_remote(max_remote_marks);
        self.changes.bump();
    }

    fn trim_remote(&mut self, max_remote_marks: usize) {
        while self.remote.len() > max_remote_marks {
            self.remote.pop_last();
        }
    }

    /// Skips records retention removed: the cursor jumps to `earliest`, and entries below it are
    /// dropped since their messages no longer exist.
    pub fn skip_to(&mut self, earliest: u64) {
        let before = self.entries.len();
        if earliest > self.read_cursor {
            self.read_cursor = earliest;
            self.changes.bump();
        }
        self.entries.retain(|offset, _| *offset >= earliest);
        self.remote.retain(|offset, _| *offset >= earliest);
        if self.entries.len() != before {
            self.changes.bump();
        }
    }

    /// Moves every expired delivery on: back to ready (it is redelivered with the next attempt)
    /// or, when its attempts are used up, to dead-lettering. Returns the offsets to dead-letter.
    pub fn expire(&mut self, now_ms: u64, retry: &RetryPolicy) -> Vec<u64> {
        let mut dead = Vec::new();
        let mut changed = false;
        for (offset, entry) in &mut self.entries {
            if let EntryState::InFlight { invisible_until_ms } = entry.state
                && invisible_until_ms <= now_ms
            {
                if retry.exhausted(entry.attempt) {
                    entry.state = EntryState::DeadLettering;
                    dead.push(*offset);
                } else {
                    entry.state = EntryState::Ready {
                        visible_at_ms: invisible_until_ms,
                    };
                }
                changed = true;
            }
        }
        if changed {
            self.changes.bump();
        }
        dead
    }

    /// Offsets handed to the dead-letter queue but not yet confirmed (after a restart, the shell
    /// re-sends them).
    pub fn dead_lettering(&self) -> Vec<u64> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.state == EntryState::DeadLettering)
            .map(|(o, _)| *o)
            .collect()
    }

    /// Confirms that the message at `offset` is in the dead-letter queue; it is done.
    pub fn dead_lettered(&mut self, offset: u64) {
        if self
            .entries
            .get(&offset)
            .is_some_and(|entry| entry.state == EntryState::DeadLettering)
        {
            self.entries.remove(&offset);
            self.changes.bump();
        }
    }

    /// Hands out up to `max` ready entries in queue order, each invisible for `invisible_ms`.
    /// In `fifo` mode an entry waits while an older entry of its message group is unfinished.
    pub fn deliver(
        &mut self,
        now_ms: u64,
        max: usize,
        invisible_ms: u64,
        fifo: bool,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut chosen = Vec::new();
        {
            let mut blocked_groups: HashSet<&str> = HashSet::new();
            for (offset, entry) in &self.entries {
                if chosen.len() >= max {
                    break;
                }
                let ordered = fifo && !entry.message_group.is_empty();
                let deliverable = matches!(entry.state, EntryState::Ready { visible_at_ms } if visible_at_ms <= now_ms);
                if ordered && !blocked_groups.insert(entry.message_group.as_str()) {
                    // An older message of this group is unfinished.
                    continue;
                }
                if deliverable {
                    chosen.push(*offset);
                }
            }
        }
        for offset in chosen {
            let nonce = self.take_nonce();
            if let Some(entry) = self.entries.get_mut(&offset) {
                entry.attempt += 1;
                entry.nonce = nonce;
                let invisible_until_ms = now_ms.saturating_add(invisible_ms);
                entry.state = EntryState::InFlight { invisible_until_ms };
                let handle = ReceiptHandle {
                    queue_id: self.queue_id,
                    offset,
                    attempt: entry.attempt,
                    nonce,
                    scope: self.scope,
                };
                out.push(Delivery {
                    offset,
                    attempt: entry.attempt,
                    handle,
                    invisible_until_ms,
                });
            }
        }
        out
    }

    fn take_nonce(&mut self) -> u64 {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.changes.bump();
        nonce
    }

    /// The entry a handle names, if the handle is its newest.
    fn current(&mut self, handle: &ReceiptHandle) -> Result<&mut Entry, MessagingError> {
        if handle.scope != self.scope || handle.queue_id != self.queue_id {
            return Err(MessagingError::InvalidReceiptHandle {
                handle: handle.encode(),
                reason: "it was issued for another consumer group, topic or queue",
            });
        }
        let entry = self.entries.get_mut(&handle.offset).ok_or_else(|| MessagingError::InvalidReceiptHandle {
            handle: handle.encode(),
            reason: "the message is not in flight (already acked, dead-lettered or never delivered)",
        })?;
        if entry.nonce != handle.nonce || entry.attempt != handle.attempt || entry.nonce == 0 {
            return Err(MessagingError::StaleReceiptHandle {
                current_attempt: entry.attempt,
            });
        }
        if entry.state == EntryState::DeadLettering {
            return Err(MessagingError::InvalidReceiptHandle {
                handle: handle.encode(),
                reason: "the message used its last attempt and is being dead-lettered",
            });
        }
        Ok(entry)
    }

    /// Whether a handle of this state names a message that is already finished (acked,
    /// dead-lettered or filtered out): read, and no longer unfinished.
    pub fn is_finished(&self, handle: &ReceiptHandle) -> bool {
        handle.scope == self.scope
            && handle.queue_id == self.queue_id
            && handle.offset < self.read_cursor
            && !self.entries.contains_key(&handle.offset)
    }

    /// Acks a delivery. A handle from before a redelivery or an invisibility change is stale.
    /// An expired delivery that was not redelivered yet may still be acked: nobody else has it.
    pub fn ack(&mut self, handle: &ReceiptHandle) -> Result<(), MessagingError> {
        self.current(handle)?;
        self.entries.remove(&handle.offset);
        self.changes.bump();
        Ok(())
    }

    /// Makes a delivery invisible for `invisible_ms` from now and returns the new handle, which
    /// replaces the old one.
    pub fn change_invisible(
        &mut self,
        handle: &ReceiptHandle,
        now_ms: u64,
        invisible_ms: u64,
    ) -> Result<Delivery, MessagingError> {
        self.current(handle)?;
        let nonce = self.take_nonce();
        let queue_id = self.queue_id;
        let scope = self.scope;
        let entry = self.current(handle)?;
        entry.nonce = nonce;
        let invisible_until_ms = now_ms.saturating_add(invisible_ms);
        entry.state = EntryState::InFlight { invisible_until_ms };
        let attempt = entry.attempt;
        let handle = ReceiptHandle {
            queue_id,
            offset: handle.offset,
            attempt,
            nonce,
            scope,
        };
        Ok(Delivery {
            offset: handle.offset,
            attempt,
            handle,
            invisible_until_ms,
        })
    }

    /// A consumer gave up on a delivery (nack): it comes back after the policy's backoff, or goes
    /// to dead-lettering when it was the last attempt. Returns whether it is to be dead-lettered.
    pub fn nack(
        &mut self,
        handle: &ReceiptHandle,
        now_ms: u64,
        retry: &RetryPolicy,
    ) -> Result<bool, MessagingError> {
        let entry = self.current(handle)?;
        let dead = retry.exhausted(entry.attempt);
        entry.state = if dead {
            EntryState::DeadLettering
        } else {
            EntryState::Ready {
                visible_at_ms: now_ms.saturating_add(retry.backoff_ms(entry.attempt)),
            }
        };
        self.changes.bump();
        Ok(dead)
    }

    /// Sends a delivery to the dead-letter queue at the consumer's request (RocketMQ's
    /// ForwardMessageToDeadLetterQueue). The shell confirms with [`PopQueue::dead_lettered`].
    pub fn forward_to_dead_letter(&mut self, handle: &ReceiptHandle) -> Result<(), MessagingError> {
        let entry = self.current(handle)?;
        entry.state = EntryState::DeadLettering;
        self.changes.bump();
        Ok(())
    }

    /// The earliest time at which something changes without a request: an invisibility expiring
    /// or a backed-off entry becoming ready. Long polls wait at most until then.
    pub fn next_wakeup_ms(&self, now_ms: u64) -> Option<u64> {
        self.entries
            .values()
            .filter_map(|entry| match entry.state {
                EntryState::Ready { visible_at_ms } if visible_at_ms > now_ms => {
                    Some(visible_at_ms)
                }
                EntryState::InFlight { invisible_until_ms } => Some(invisible_until_ms),
                _ => None,
            })
            .min()
    }

    /// Encodes the whole state for persistence.
    /// Version 1 has no remote marks; version 2 appends them, and is written only when there
    /// are some, so a state without them reads back in an older cell.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.u8(if self.remote.is_empty() { 1 } else { 2 });
        writer.u32(self.queue_id);
        writer.u64(self.read_cursor);
        writer.u64(self.next_nonce);
        writer.u32(self.entries.len() as u32);
        for (offset, entry) in &self.entries {
            writer.u64(*offset);
            writer.u32(entry.attempt);
            writer.u64(entry.nonce);
            match entry.state {
                EntryState::Ready { visible_at_ms } => {
                    writer.u8(0);
                    writer.u64(visible_at_ms);
                }
                EntryState::InFlight { invisible_until_ms } => {
                    writer.u8(1);
                    writer.u64(invisible_until_ms);
                }
                EntryState::DeadLettering => {
                    writer.u8(2);
                    writer.u64(0);
                }
            }
            writer.str(&entry.message_group);
        }
        if !self.remote.is_empty() {
            writer.u32(self.remote.len() as u32);
            for (offset, mark) in &self.remote {
                writer.u64(*offset);
                match mark {
                    RemoteMark::Done => {
                        writer.u8(0);
                        writer.u32(0);
                        writer.u64(0);
                    }
                    RemoteMark::Attempted {
                        attempt,
                        invisible_until_ms,
                    } => {
                        writer.u8(1);
                        writer.u32(*attempt);
                        writer.u64(*invisible_until_ms);
                    }
                }
            }
        }
        writer.into_bytes()
    }

    /// Decodes a persisted state; `None` if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8()?;
        if version != 1 && version != 2 {
            return None;
        }
        let queue_id = reader.u32()?;
        let read_cursor = reader.u64()?;
        let next_nonce = reader.u64()?;
        let count = reader.u32()? as usize;
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            let offset = reader.u64()?;
            let attempt = reader.u32()?;
            let nonce = reader.u64()?;
            let tag = reader.u8()?;
            let time_ms = reader.u64()?;
            let state = match tag {
                0 => EntryState::Ready {
                    visible_at_ms: time_ms,
                },
                1 => EntryState::InFlight {
                    invisible_until_ms: time_ms,
                },
                2 => EntryState::DeadLettering,
                _ => return None,
            };
            let message_group = reader.string()?;
            if offset >= read_cursor || nonce >= next_nonce {
                return None;
            }
            entries.insert(
                offset,
                Entry {
                    attempt,
                    nonce,
                    state,
                    message_group,
                },
            );
        }
        let mut remote = BTreeMap::new();
        if version == 2 {
            let count = reader.u32()? as usize;
            for _ in 0..count {
                let offset = reader.u64()?;
                let tag = reader.u8()?;
                let attempt = reader.u32()?;
                let invisible_until_ms = reader.u64()?;
                let mark = match tag {
                    0 => RemoteMark::Done,
                    1 => RemoteMark::Attempted {
                        attempt,
                        invisible_until_ms,
                    },
                    _ => return None,
                };
                if offset < read_cursor {
                    return None;
                }
                remote.insert(offset, mark);
            }
        }
        reader.finish()?;
        Some(PopQueue {
            queue_id,
            scope: 0,
            read_cursor,
            next_nonce,
            entries,
            remote,
            changes: Changes::default(),
        })
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "remote_tests.rs"]
mod remote_tests;
