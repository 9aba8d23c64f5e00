//! The receiving side of one link session, sans IO.

use std::collections::VecDeque;

use super::frame::{Entry, Frame, Limits, PROTOCOL_VERSION, RefuseCode};
use super::{LinkFailure, refuse};

/// Settings of the receiving side.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Frame limits (the sender must use the same).
    pub limits: Limits,
    /// Most entry bytes the sender may have unacknowledged: the memory a slow receiver lets a
    /// link hold, and with the round trip the throughput bound (window / RTT).
    pub window_bytes: u64,
    /// Most entries the sender may have unacknowledged.
    pub window_entries: u32,
    /// Most entries handed to the shell in one [`ReceiverAction::Apply`].
    pub max_apply_entries: usize,
    /// The session ends after this long without any frame from the sender (which pings).
    pub idle_timeout_ms: u64,
    /// The session ends if no Hello arrived within this.
    pub handshake_timeout_ms: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            limits: Limits::default(),
            window_bytes: 8 << 20,
            window_entries: 16_384,
            max_apply_entries: 8192,
            idle_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

/// What the receiver asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverAction {
    /// Write a frame to the link's stream.
    Send(Frame),
    /// A valid Hello arrived from `source_region`: take over the source's progress (ending any
    /// older session of the same source) and report it with [`Receiver::on_progress_loaded`].
    LoadProgress {
        /// The sending region.
        source_region: String,
        /// The sender's id for this connection.
        link_id: u64,
    },
    /// Store these entries of `origin_region`, skipping any whose message id is already stored,
    /// then report with [`Receiver::on_applied`].
    Apply {
        /// Whose records.
        origin_region: String,
        /// Origin position the applied range starts at.
        start: u64,
        /// Origin position after the range; the progress once applied.
        end: u64,
        /// The records, in origin order.
        entries: Vec<Entry>,
    },
    /// Persist "applied through `position`" for `origin_region`, then report with
    /// [`Receiver::on_checkpoint_persisted`]. Only positions already applied are asked for.
    PersistCheckpoint {
        /// Whose progress.
        origin_region: String,
        /// Applied through here.
        position: u64,
    },
    /// Compute the digest of `origin_region`'s records in `[start, end)` as stored here and
    /// report with [`Receiver::answer_digest`].
    ComputeDigest {
        /// Whose records.
        origin_region: String,
        /// First origin position.
        start: u64,
        /// Position after the range.
        end: u64,
    },
    /// The session is over; close the stream.
    Close(LinkFailure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    AwaitHello { since_ms: u64 },
    AwaitProgress,
    Streaming,
    Closed,
}

#[derive(Debug)]
struct Pending {
    start: u64,
    end: u64,
    entries: Vec<Entry>,
    bytes: u64,
}

/// The receiver of one session: validates Hello, resumes from the stored progress, checks
/// batches for gaps and window overruns, applies them in order, acks, checkpoints.
#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    local_region: String,
    source_region: String,
    phase: Phase,
    /// End of the last batch accepted: where the next one must start.
    received_end: u64,
    applied: u64,
    persisted: u64,
    persist_pending: bool,
    queue: VecDeque<Pending>,
    /// (end, bytes, entries) of the apply the shell is running.
    applying: Option<(u64, u64, u64)>,
    /// Entry bytes and entries received but not yet acknowledged.
    outstanding_bytes: u64,
    outstanding_entries: u64,
    last_received_ms: u64,
    actions: VecDeque<ReceiverAction>,
}

impl Receiver {
    /// Waits for the sender's Hello.
    pub fn new(config: ReceiverConfig, local_region: &str, now_ms: u64) -> Self {
        Receiver {
            config,
            local_region: local_region.to_string(),
            source_region: String::new(),
            phase: Phase::AwaitHello { since_ms: now_ms },
            received_end: 0,
            applied: 0,
            persisted: 0,
            persist_pending: false,
            queue: VecDeque::new(),
            applying: None,
            outstanding_bytes: 0,
            outstanding_entries: 0,
            last_received_ms: now_ms,
            actions: VecDeque::new(),
        }
    }

    /// The next action for the shell, if any.
    pub fn poll_action(&mut self) -> Option<ReceiverAction> {
        self.actions.pop_front()
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The source region, once Hello arrived.
    pub fn source_region(&self) -> Option<&str> {
        (!self.source_region.is_empty()).then_some(self.source_region.as_str())
    }

    /// Origin position through which everything is applied.
    pub fn applied_through(&self) -> u64 {
        self.applied
    }

    /// Entry bytes and entries received but not yet acknowledged.
    pub fn outstanding(&self) -> (u64, u64) {
        (self.outstanding_bytes, self.outstanding_entries)
    }

    /// The latest time by which [`Receiver::on_timer`] must be called.
    pub fn next_timer_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::AwaitHello { since_ms } => Some(since_ms + self.config.handshake_timeout_ms),
            Phase::AwaitProgress => None,
            Phase::Streaming => Some(self.last_received_ms + self.config.idle_timeout_ms),
            Phase::Closed => None,
        }
    }

    /// A frame from the sender.
    pub fn on_frame(&mut self, frame: Frame, now_ms: u64) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_received_ms = now_ms;
        match (&self.phase, frame) {
            (_, Frame::Refuse { code, message }) => {
                self.close(LinkFailure::RefusedByPeer { code, message });
            }
            (
                Phase::AwaitHello { .. },
                Frame::Hello {
                    link_id,
                    source_region,
                    destination_region,
                    protocol_version,
                },
            ) => self.on_hello(link_id, source_region, destination_region, protocol_version),
            (
                Phase::Streaming,
                Frame::Batch {
                    start,
                    end,
                    entries,
                },
            ) => {
                self.on_batch(start, end, entries);
            }
            (Phase::AwaitProgress | Phase::Streaming, Frame::Ping { nonce }) => {
                self.send(Frame::Pong { nonce });
            }
            (
                Phase::Streaming,
                Frame::DigestRequest {
                    origin_region,
                    start,
                    end,
                },
            ) => self.actions.push_back(ReceiverAction::ComputeDigest {
                origin_region,
                start,
                end,
            }),
            (_, other) => self.violation(format!("unexpected {} frame", other.name())),
        }
    }

    fn on_hello(&mut self, link_id: u64, source: String, destination: String, version: u8) {
        if version != PROTOCOL_VERSION {
            let (frame, failure) = refuse(
                RefuseCode::VersionMismatch,
                format!("this receiver speaks protocol version {PROTOCOL_VERSION}, not {version}"),
            );
            self.send(frame);
            self.close(failure);
        } else if destination != self.local_region
            || source == self.local_region
            || source.is_empty()
        {
            let (frame, failure) = refuse(
                RefuseCode::WrongRegion,
                format!(
                    "this is region {:?}; a link from {source:?} to {destination:?} does not end here",
                    self.local_region
                ),
            );
            self.send(frame);
            self.close(failure);
        } else {
            self.source_region = source.clone();
            self.phase = Phase::AwaitProgress;
            self.actions.push_back(ReceiverAction::LoadProgress {
                source_region: source,
                link_id,
            });
        }
    }

    /// The progress for the source: applied through `applied` (in memory, if this process
    /// applied anything since it started) and persisted through `persisted` (the checkpoint).
    pub fn on_progress_loaded(&mut self, applied: u64, persisted: u64) {
        if self.phase != Phase::AwaitProgress {
            return;
        }
        self.applied = applied;
        self.received_end = applied;
        self.persisted = persisted.min(applied);
        self.phase = Phase::Streaming;
        self.send(Frame::Resume {
            positions: vec![(self.source_region.clone(), applied)],
        });
        self.send_ack();
        self.maybe_persist();
    }

    fn on_batch(&mut self, start: u64, end: u64, entries: Vec<Entry>) {
        let expected = self.received_end;
        if start != expected {
            self.violation(format!(
                "batch starts at {start}, but the previous one ended at {expected}"
            ));
            return;
        }
        let bytes: u64 = entries.iter().map(|entry| entry.wire_len() as u64).sum();
        let count = entries.len() as u64;
        let fits = self.outstanding_bytes + bytes <= self.config.window_bytes
            && self.outstanding_entries + count <= u64::from(self.config.window_entries);
        let lone_entry_on_idle_link = self.outstanding_entries == 0 && count == 1;
        if !fits && !lone_entry_on_idle_link {
            self.violation(format!(
                "batch of {count} entries and {bytes} bytes exceeds the window ({} of {} bytes and {} of {} entries outstanding)",
                self.outstanding_bytes,
                self.config.window_bytes,
                self.outstanding_entries,
                self.config.window_entries
            ));
            return;
        }
        self.received_end = end;
        self.outstanding_bytes += bytes;
        self.outstanding_entries += count;
        self.queue.push_back(Pending {
            start,
            end,
            entries,
            bytes,
        });
        self.maybe_apply();
    }

    /// The shell finished the [`ReceiverAction::Apply`] ending at `end`.
    pub fn on_applied(&mut self, end: u64) {
        let Some((applying_end, bytes, entries)) = self.applying else {
            return;
        };
        if applying_end != end {
            return;
        }
        self.applying = None;
        self.applied = end;
        self.outstanding_bytes -= bytes;
        self.outstanding_entries -= entries;
        if self.phase == Phase::Streaming {
            self.send_ack();
        }
        self.maybe_persist();
        self.maybe_apply();
    }

    /// The shell persisted the checkpoint at `position`.
    pub fn on_checkpoint_persisted(&mut self, position: u64) {
        self.persist_pending = false;
        self.persisted = self.persisted.max(position);
        self.maybe_persist();
    }

    /// The shell computed a digest asked for with [`ReceiverAction::ComputeDigest`].
    pub fn answer_digest(
        &mut self,
        origin_region: String,
        start: u64,
        end: u64,
        count: u64,
        digest: u64,
    ) {
        if self.phase == Phase::Streaming {
            self.send(Frame::DigestAnswer {
                origin_region,
                start,
                end,
                count,
                digest,
            });
        }
    }

    /// Time passed: handshake and idle timeouts.
    pub fn on_timer(&mut self, now_ms: u64) {
        match self.phase {
            Phase::AwaitHello { since_ms } => {
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
                }
            }
            Phase::AwaitProgress | Phase::Closed => {}
        }
    }

    /// Ends the session with a Refuse frame (shutdown, a newer session of the same source, or
    /// a local failure the shell hit).
    pub fn end(&mut self, code: RefuseCode, message: String) {
        if self.phase != Phase::Closed {
            let (frame, failure) = refuse(code, message);
            self.send(frame);
            self.close(failure);
        }
    }

    fn maybe_apply(&mut self) {
        if self.applying.is_some() || self.phase != Phase::Streaming {
            return;
        }
        // Batches waiting together are applied together: one append, one ack.
        let Some(first) = self.queue.pop_front() else {
            return;
        };
        let start = first.start;
        let mut end = first.end;
        let mut bytes = first.bytes;
        let mut entries = first.entries;
        while let Some(next) = self.queue.front() {
            if entries.len() + next.entries.len() > self.config.max_apply_entries {
                break;
            }
            let Some(next) = self.queue.pop_front() else {
                break;
            };
            end = next.end;
            bytes += next.bytes;
            entries.extend(next.entries);
        }
        self.applying = Some((end, bytes, entries.len() as u64));
        self.actions.push_back(ReceiverAction::Apply {
            origin_region: self.source_region.clone(),
            start,
            end,
            entries,
        });
    }

    fn maybe_persist(&mut self) {
        if !self.persist_pending && self.applied > self.persisted && !self.source_region.is_empty()
        {
            self.persist_pending = true;
            self.actions.push_back(ReceiverAction::PersistCheckpoint {
                origin_region: self.source_region.clone(),
                position: self.applied,
            });
        }
    }

    fn send_ack(&mut self) {
        self.send(Frame::Ack {
            applied_through: self.applied,
            window_bytes: self.config.window_bytes,
            window_entries: self.config.window_entries,
        });
    }

    fn send(&mut self, frame: Frame) {
        self.actions.push_back(ReceiverAction::Send(frame));
    }

    fn violation(&mut self, message: String) {
        let (frame, failure) = refuse(RefuseCode::ProtocolViolation, message);
        self.send(frame);
        self.close(failure);
    }

    fn close(&mut self, failure: LinkFailure) {
        if self.phase != Phase::Closed {
            self.phase = Phase::Closed;
            self.actions.push_back(ReceiverAction::Close(failure));
        }
    }
}
