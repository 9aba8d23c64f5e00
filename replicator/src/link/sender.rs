//! The sending side of one link session, sans IO.

use std::collections::VecDeque;

use super::frame::{BATCH_OVERHEAD_BYTES, Entry, Frame, Limits, PROTOCOL_VERSION, RefuseCode};
use super::{LinkFailure, refuse};

/// Settings of the sending side.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Frame limits (the receiver must use the same).
    pub limits: Limits,
    /// Most entry bytes read from the log for one batch.
    pub max_batch_bytes: usize,
    /// Most entries in one batch (at most `limits.max_batch_entries`).
    pub max_batch_entries: usize,
    /// Most batches in flight, empty ones (only skipped records) included.
    pub max_inflight_batches: usize,
    /// Interval of keep-alive pings while the link is up.
    pub ping_interval_ms: u64,
    /// The session ends after this long without any frame from the receiver.
    pub idle_timeout_ms: u64,
    /// The session ends if the receiver has not answered Hello within this.
    pub handshake_timeout_ms: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            limits: Limits::default(),
            max_batch_bytes: 1 << 20,
            max_batch_entries: 4096,
            max_inflight_batches: 1024,
            ping_interval_ms: 1_000,
            idle_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// A record read from the origin log, as the shell hands it to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The region the record came from (forwarded only if it is the link's source).
    pub origin_region: String,
    /// The record as a batch entry (its position is its position in this log).
    pub entry: Entry,
}

/// What the sender asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderAction {
    /// Write a frame to the link's stream.
    Send(Frame),
    /// Read records of the local log from `from` (a record boundary; 0 = the earliest retained
    /// record), at most `max_entries` records and `max_bytes` entry bytes (at least one record
    /// when there is one), and report with [`Sender::on_log_read`].
    ReadLog {
        /// First position.
        from: u64,
        /// Most records.
        max_entries: usize,
        /// Most entry bytes.
        max_bytes: usize,
    },
    /// The receiver's progress is known and the link streams from `position` (for logs and for
    /// resetting the reconnect backoff).
    Resumed {
        /// Origin position the session streams from.
        position: u64,
    },
    /// The receiver answered a digest request.
    PeerDigest {
        /// Whose records.
        origin_region: String,
        /// First origin position.
        start: u64,
        /// Position after the range.
        end: u64,
        /// Records it found.
        count: u64,
        /// Their digest.
        digest: u64,
    },
    /// The session is over; close the stream and reconnect after a backoff.
    Close(LinkFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake { since_ms: u64 },
    Streaming,
    Closed,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    end: u64,
    bytes: u64,
    entries: u64,
    /// HLC stamp of its first entry, if it has one (for the lag in time).
    first_hlc: Option<u64>,
}

/// The sender of one session: Hello, then batches within the receiver's window, pings.
#[derive(Debug)]
pub struct Sender {
    config: SenderConfig,
    source_region: String,
    phase: Phase,
    /// Where the next read starts (the end of the last batch sent).
    next_read: u64,
    read_pending: bool,
    /// The last read found a record that does not fit the window: wait for an ack before
    /// reading again rather than re-reading it on every append.
    blocked_on_window: bool,
    /// The local log's visible end, as last reported.
    local_end: u64,
    acked: u64,
    inflight: VecDeque<InFlight>,
    inflight_bytes: u64,
    inflight_entries: u64,
    window_bytes: u64,
    window_entries: u64,
    last_received_ms: u64,
    last_sent_ms: u64,
    next_nonce: u64,
    actions: VecDeque<SenderAction>,
}

impl Sender {
    /// Starts a session: queues the Hello.
    pub fn new(
        config: SenderConfig,
        link_id: u64,
        source_region: &str,
        destination_region: &str,
        local_end: u64,
        now_ms: u64,
    ) -> Self {
        let mut sender = Sender {
            config,
            source_region: source_region.to_string(),
            phase: Phase::Handshake { since_ms: now_ms },
            next_read: 0,
            read_pending: false,
            blocked_on_window: false,
            local_end,
            acked: 0,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            inflight_entries: 0,
            window_bytes: 0,
            window_entries: 0,
            last_received_ms: now_ms,
            last_sent_ms: now_ms,
            next_nonce: 1,
            actions: VecDeque::new(),
        };
        sender.send(
            Frame::Hello {
                link_id,
                source_region: source_region.to_string(),
                destination_region: destination_region.to_string(),
                protocol_version: PROTOCOL_VERSION,
            },
            now_ms,
        );
        sender
    }

    /// The next action for the shell, if any.
    pub fn poll_action(&mut self) -> Option<SenderAction> {
        self.actions.pop_front()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Origin position through which the receiver has acknowledged.
    pub fn acked_through(&self) -> u64 {
        self.acked
    }

    /// Entry bytes and entries sent but not acknowledged.
    pub fn in_flight(&self) -> (u64, u64) {
        (self.inflight_bytes, self.inflight_entries)
    }

    /// HLC stamp of the oldest entry sent but not acknowledged.
    pub fn oldest_unacked_hlc(&self) -> Option<u64> {
        self.inflight.iter().find_map(|batch| batch.first_hlc)
    }

    /// The local log's visible end as last reported.
    pub fn local_end(&self) -> u64 {
        self.local_end
    }

    /// The latest time by which [`Sender::on_timer`] must be called.
    pub fn next_timer_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Handshake { since_ms } => Some(since_ms + self.config.handshake_timeout_ms),
            Phase::Streaming => Some(
                (self.last_sent_ms + self.config.ping_interval_ms)
                    .min(self.last_received_ms + self.config.idle_timeout_ms),
            ),
            Phase::Closed => None,
        }
    }

    /// A frame from the receiver.
    pub fn on_frame(&mut self, frame: Frame, now_ms: u64) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_received_ms = now_ms;
        match (self.phase, frame) {
            (_, Frame::Refuse { code, message }) => {
                self.close(LinkFailure::RefusedByPeer { code, message });
            }
            (Phase::Handshake { .. }, Frame::Resume { positions }) => {
                let position = positions
                    .iter()
                    .find(|(region, _)| *region == self.source_region)
                    .map_or(0, |(_, position)| *position);
                self.next_read = position;
                self.acked = position;
                self.phase = Phase::Streaming;
                self.actions.push_back(SenderAction::Resumed { position });
                self.maybe_read();
            }
            (
                Phase::Streaming,
                Frame::Ack {
                    applied_through,
                    window_bytes,
                    window_entries,
                },
            ) => self.on_ack(applied_through, window_bytes, window_entries, now_ms),
            (_, Frame::Ping { nonce }) => self.send(Frame::Pong { nonce }, now_ms),
            (_, Frame::Pong { .. }) => {}
            (
                Phase::Streaming,
                Frame::DigestAnswer {
                    origin_region,
                    start,
                    end,
                    count,
                    digest,
                },
            ) => self.actions.push_back(SenderAction::PeerDigest {
                origin_region,
                start,
                end,
                count,
                digest,
            }),
            (_, other) => self.violation(format!("unexpected {} frame", other.name()), now_ms),
        }
    }

    fn on_ack(&mut self, applied_through: u64, window_bytes: u64, window_entries: u32, now: u64) {
        if applied_through > self.next_read {
            self.violation(
                format!(
                    "ack through {applied_through} is past the end of what was sent ({})",
                    self.next_read
                ),
                now,
            );
            return;
        }
        // On a stream acks arrive in order; an older one is harmless (it grants what a newer
        // one already granted), so only progress counts.
        if applied_through >= self.acked {
            self.blocked_on_window = false;
            self.acked = applied_through;
            self.window_bytes = window_bytes;
            self.window_entries = u64::from(window_entries);
        }
        while let Some(front) = self.inflight.front().copied() {
            if front.end > self.acked {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= front.bytes;
            self.inflight_entries -= front.entries;
        }
        self.maybe_read();
    }

    /// The local log's visible end moved (a watch on the storage fired).
    pub fn on_local_append(&mut self, end: u64) {
        if end > self.local_end {
            self.local_end = end;
            self.maybe_read();
        }
    }

    /// The result of a [`SenderAction::ReadLog`]: the records scanned from the requested
    /// position up to `next` (the position after the last one), in log order. A read from 0 on
    /// a log whose retained part starts later covers `[0, next)`: the removed prefix holds
    /// nothing to send, like a range of skipped records.
    pub fn on_log_read(&mut self, next: u64, records: Vec<LogRecord>, now_ms: u64) {
        if self.phase != Phase::Streaming || !self.read_pending {
            return;
        }
        self.read_pending = false;
        let from = self.next_read;
        if next <= from {
            // Nothing visible past `from`: wait for the next append notification.
            self.local_end = self.local_end.min(from);
            return;
        }
        let (window_bytes, window_entries) = (self.window_bytes, self.window_entries);
        let max_entries = self
            .config
            .max_batch_entries
            .min(self.config.limits.max_batch_entries);
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        let mut end = next;
        for record in records {
            if record.origin_region != self.source_region {
                // The relay rule: only records that originated here are forwarded.
                continue;
            }
            let len = record.entry.wire_len();
            if BATCH_OVERHEAD_BYTES + len > self.config.limits.max_frame_bytes {
                self.close(LinkFailure::EntryTooLarge {
                    position: record.entry.position,
                    len: BATCH_OVERHEAD_BYTES + len,
                    max: self.config.limits.max_frame_bytes,
                });
                return;
            }
            let first_of_idle_link = self.inflight_entries == 0 && entries.is_empty();
            let fits_window = self.inflight_bytes + bytes + len as u64 <= window_bytes
                && self.inflight_entries + (entries.len() as u64) < window_entries;
            let fits_frame = BATCH_OVERHEAD_BYTES + bytes as usize + len
                <= self.config.limits.max_frame_bytes
                && entries.len() < max_entries;
            if !(first_of_idle_link || fits_window && fits_frame) {
                // The rest is read again once the receiver has acknowledged more.
                end = record.entry.position;
                break;
            }
            bytes += len as u64;
            entries.push(record.entry);
        }
        if end == from {
            self.blocked_on_window = true;
            return;
        }
        let count = entries.len() as u64;
        self.next_read = end;
        self.inflight.push_back(InFlight {
            end,
            bytes,
            entries: count,
            first_hlc: entries.first().map(|entry| entry.hlc),
        });
        self.inflight_bytes += bytes;
        self.inflight_entries += count;
        self.send(
            Frame::Batch {
                start: from,
                end,
                entries,
            },
            now_ms,
        );
        self.maybe_read();
    }

    /// The local log does not hold `requested` any more (retention removed it).
    pub fn on_log_truncated(&mut self, requested: u64, log_start: u64) {
        self.close(LinkFailure::OriginTruncated {
            requested,
            log_start,
        });
    }

    /// Asks the receiver for the digest of this region's records in `[start, end)`.
    pub fn request_digest(&mut self, start: u64, end: u64, now_ms: u64) {
        if self.phase == Phase::Streaming {
            let origin_region = self.source_region.clone();
            self.send(
                Frame::DigestRequest {
                    origin_region,
                    start,
                    end,
                },
                now_ms,
            );
        }
    }

    /// Time passed: pings, handshake and idle timeouts.
    pub fn on_timer(&mut self, now_ms: u64) {
        match self.phase {
            Phase::Handshake { since_ms } => {
                if now_ms >= since_ms + self.config.handshake_timeout_ms {
                    self.close(LinkFailure::HandshakeTimeout {
                        timeout_ms: self.config.handshake_timeout_ms,
                    });
                }
            }
            Phase::Streaming => {
                let idle_ms = now_ms.saturating_sub(self.last_received_ms);
                if idle_ms >= self.config.idle_timeout_ms {
                    self.close(LinkFailure::IdleTimeout { idle_ms });
                } else if now_ms >= self.last_sent_ms + self.config.ping_interval_ms {
                    let nonce = self.next_nonce;
                    self.next_nonce += 1;
                    self.send(Frame::Ping { nonce }, now_ms);
                }
            }
            Phase::Closed => {}
        }
    }

    /// The shell is shutting the link down.
    pub fn shutdown(&mut self, now_ms: u64) {
        if self.phase != Phase::Closed {
            self.send(
                Frame::Refuse {
                    code: RefuseCode::ShuttingDown,
                    message: "sender shutting down".into(),
                },
                now_ms,
            );
            self.phase = Phase::Closed;
        }
    }

    fn maybe_read(&mut self) {
        let room = self.inflight_bytes < self.window_bytes
            && self.inflight_entries < self.window_entries
            && self.inflight.len() < self.config.max_inflight_batches;
        if self.phase == Phase::Streaming
            && !self.read_pending
            && !self.blocked_on_window
            && self.next_read < self.local_end
            && (room || self.inflight_entries == 0)
            && self.window_entries > 0
        {
            let bytes_left = self.window_bytes.saturating_sub(self.inflight_bytes);
            let entries_left = self.window_entries.saturating_sub(self.inflight_entries);
            self.read_pending = true;
            self.actions.push_back(SenderAction::ReadLog {
                from: self.next_read,
                max_entries: (entries_left.max(1) as usize).min(self.config.max_batch_entries),
                max_bytes: (bytes_left.max(1) as usize).min(self.config.max_batch_bytes),
            });
        }
    }

    fn send(&mut self, frame: Frame, now_ms: u64) {
        self.last_sent_ms = now_ms;
        self.actions.push_back(SenderAction::Send(frame));
    }

    fn violation(&mut self, message: String, now_ms: u64) {
        let (frame, failure) = refuse(RefuseCode::ProtocolViolation, message);
        self.send(frame, now_ms);
        self.close(failure);
    }

    fn close(&mut self, failure: LinkFailure) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.actions.push_back(SenderAction::Close(failure));
        }
    }
}
