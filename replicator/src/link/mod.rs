//! The link protocol, sans IO: frames, and the sender and receiver state machines that one link
//! (a directed pair of regions) runs over one ordered, reliable byte stream.
//!
//! The state machines never read a clock, a socket or a disk. They take events (`on_frame`,
//! `on_local_append`, `on_log_read`, `on_applied`, `on_timer(now_ms)`, …) and queue actions
//! (`poll_action`): send a frame, read a log range, apply entries, persist a checkpoint, close.
//! The QUIC shell in `crate::quic` carries the actions out; the tests in `sim_test.rs` carry them
//! out over a lossy, reordering in-memory channel with crashes.
//!
//! # A session
//!
//! ```text
//! sender                                  receiver
//!   Hello{link, source, destination, v} ─►
//!                                         (loads its progress for `source`)
//!                                      ◄─ Resume{(source, applied position)}
//!                                      ◄─ Ack{applied, window bytes, window entries}
//!   Batch{start, end, entries}         ─►  (applies: dedup by message id, append)
//!                                      ◄─ Ack{applied through end, window}
//!   Ping{nonce}                        ─►
//!                                      ◄─ Pong{nonce}
//! ```
//!
//! Positions are the origin log's byte positions. A batch covers the origin range
//! `[start, end)` and carries the records of that range the link forwards; the next batch starts
//! where the previous ended, so the receiver can tell a gap from a repeat. Its progress, "applied
//! through position P", is what it persists as its checkpoint and sends back in `Resume`; a new
//! session starts exactly there, so nothing is skipped and, because positions only grow,
//! nothing before P is sent twice. What a crash can leave between the append and the checkpoint
//! write is sent again and dropped by message id (see `crate::quic::receiver`).
//!
//! # Flow control
//!
//! The receiver grants a window in bytes ([`frame::Entry::wire_len`]) and entries with every
//! Ack. The sender counts batches it sent beyond the last `applied_through` as in flight and
//! never lets them exceed the window, with one exception that keeps a link from stalling: when
//! nothing is in flight, a batch of one entry may be sent whatever its size (it is still bounded
//! by the frame limit). The receiver checks the same rule and ends a session that breaks it.
//!
//! # Loops and relays
//!
//! **A link forwards only records whose origin is the link's source region.** A record that
//! region A replicated into region B is never sent on by B, so in a full mesh every record takes
//! one hop, from its origin to each destination, and cannot come back. The skipped records still
//! advance the batch range, so the receiver's checkpoint moves past them. Relaying (B forwarding
//! A's records to C, e.g. when A cannot reach C) is not done in this version; when it is, it must
//! be an explicit per-link list of relayed origins, the receiver's `Resume` already carries one
//! position per origin region for it, and deduplication by message id at C keeps a record that
//! arrives both directly and relayed single.
//!
//! # Liveness
//!
//! The sender pings every `ping_interval_ms`; either side ends a session after
//! `idle_timeout_ms` without a frame from its peer, or `handshake_timeout_ms` without completing
//! the handshake. The shell then reconnects after a [`backoff::Backoff`] delay: exponential,
//! capped, with jitter drawn from a seeded RNG so that tests are reproducible and many links do
//! not reconnect in lockstep.

pub mod backoff;
pub mod filter;
pub mod frame;
pub mod receiver;
pub mod sender;
pub mod verify;

#[cfg(test)]
mod machine_test;
#[cfg(test)]
mod sim_test;

pub use frame::{Entry, Frame, FrameError, Limits, RefuseCode};

/// Why a session of a link ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkFailure {
    /// Nothing arrived from the peer for too long.
    #[error("no frame from the peer for {idle_ms} ms")]
    IdleTimeout {
        /// How long it was silent.
        idle_ms: u64,
    },
    /// The handshake did not finish in time.
    #[error("handshake not completed within {timeout_ms} ms")]
    HandshakeTimeout {
        /// The limit.
        timeout_ms: u64,
    },
    /// The peer sent a Refuse frame.
    #[error("the peer ended the link ({code:?}): {message}")]
    RefusedByPeer {
        /// Its code.
        code: RefuseCode,
        /// Its message.
        message: String,
    },
    /// This side refused the peer (and told it so with a Refuse frame).
    #[error("refused the peer ({code:?}): {message}")]
    RefusedPeer {
        /// The code sent.
        code: RefuseCode,
        /// The message sent.
        message: String,
    },
    /// A record cannot be sent within the link's frame limit.
    #[error(
        "record at origin position {position} takes {len} bytes in a batch; frames on this link are limited to {max} bytes"
    )]
    EntryTooLarge {
        /// Its origin position.
        position: u64,
        /// Its batch frame size.
        len: usize,
        /// The frame limit.
        max: usize,
    },
    /// The origin no longer holds the position the receiver needs.
    #[error(
        "the receiver resumes at origin position {requested}, but the origin log now starts at {log_start}; records in between were removed by retention before they were replicated"
    )]
    OriginTruncated {
        /// Where the receiver resumes.
        requested: u64,
        /// The origin's first retained position.
        log_start: u64,
    },
}

/// Builds the Refuse frame and failure for a peer that broke the rules.
pub(crate) fn refuse(code: RefuseCode, message: String) -> (Frame, LinkFailure) {
    (
        Frame::Refuse {
            code,
            message: message.clone(),
        },
        LinkFailure::RefusedPeer { code, message },
    )
}
