//! Synchronous-quorum replication of a topic, as the broker sees it: a send to a `sync-quorum`
//! topic is acknowledged only after a majority of the topic's regions hold it.
//!
//! The broker knows nothing of links or peers: whoever runs the replicator hands it a
//! [`ReplicationQuorum`] that resolves once the records up to a log position are persisted by
//! enough other regions. Which topics are `sync-quorum` comes from the fabric's policies (meta)
//! through [`crate::messaging::Broker::set_sync_quorum_topics`]; every other topic is `async`
//! (acknowledged after local persistence).

use std::future::Future;
use std::pin::Pin;

/// Why a quorum wait failed; the send is then refused (its records stay in the local log and
/// replicate later, so a retry with the same message id is deduplicated, never stored twice).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    /// Not enough regions confirmed within the time limit.
    #[error("{confirmed} of {required} other regions confirmed within {timeout_ms} ms")]
    TimedOut {
        /// Other regions that had persisted the records when the time ran out.
        confirmed: usize,
        /// Other regions a majority needs.
        required: usize,
        /// The limit.
        timeout_ms: u64,
    },
    /// The quorum cannot be reached at all (too few regions configured, or shutting down).
    #[error("quorum unreachable: {0}")]
    Unreachable(String),
}

/// A future of a quorum wait.
pub type QuorumFuture<'a> = Pin<Box<dyn Future<Output = Result<(), QuorumError>> + Send + 'a>>;

/// Resolves when a majority of regions hold this cell's log up to a position.
pub trait ReplicationQuorum: Send + Sync {
    /// Waits until enough other regions have persisted every record of this cell's log below
    /// `log_end` (the end of the records just appended), at most `timeout_ms`.
    fn wait_persisted(&self, log_end: u64, timeout_ms: u64) -> QuorumFuture<'_>;
}
