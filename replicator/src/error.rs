//! Errors of the replicator crate, with their causes kept.

use crate::link::{FrameError, LinkFailure};

/// A link or the replicator failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicatorError {
    /// The cell's storage failed (reading the origin log, appending, checkpoints).
    #[error("storage: {0}")]
    Storage(#[from] meridian_cell::StorageError),
    /// A record read from the log or received on a link does not decode.
    #[error("record codec: {0}")]
    Codec(#[from] meridian_cell::CodecError),
    /// A frame does not decode or cannot be encoded.
    #[error("link frame: {0}")]
    Frame(#[from] FrameError),
    /// The session of a link ended.
    #[error("link session ended: {0}")]
    Link(#[from] LinkFailure),
    /// The node identity does not give a usable TLS configuration.
    #[error("node identity: {0}")]
    Pki(#[from] meridian_pki::PkiError),
    /// The TLS configuration cannot be used for QUIC.
    #[error("TLS configuration for QUIC: {0}")]
    Tls(String),
    /// Connecting to a peer failed before a connection existed.
    #[error("connecting to {peer}: {source}")]
    Connect {
        /// The peer's address.
        peer: std::net::SocketAddr,
        /// quinn's error.
        #[source]
        source: quinn::ConnectError,
    },
    /// The QUIC connection failed or was closed.
    #[error("QUIC connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Writing to a QUIC stream failed.
    #[error("QUIC stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a QUIC stream failed.
    #[error("QUIC stream read: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// The stream ended where a frame should start.
    #[error("the peer closed the stream")]
    StreamClosed,
    /// Binding the UDP socket or another OS call failed.
    #[error("{operation}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A replicated record disagrees with the batch entry that carried it.
    #[error("entry at origin position {position}: {detail}")]
    BadEntry {
        /// Its origin position.
        position: u64,
        /// What disagrees.
        detail: String,
    },
    /// A stored checkpoint does not decode.
    #[error("checkpoint of origin {origin_region} is {len} bytes; 8 expected")]
    BadCheckpoint {
        /// Whose checkpoint.
        origin_region: String,
        /// Its length.
        len: usize,
    },
    /// A configuration value is invalid.
    #[error("replicator config field {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task: {0}")]
    Task(#[from] tokio::task::JoinError),
}
