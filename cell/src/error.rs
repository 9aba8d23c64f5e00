//! Errors of the cell crate, one enum per concern, with their causes kept.

use std::path::PathBuf;
use std::sync::Arc;

/// A record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The frame declares a payload length outside the allowed range.
    #[error("frame declares an impossible payload length of {0} bytes")]
    BadLength(usize),
    /// The CRC stored in the frame does not match its payload.
    #[error("CRC mismatch: stored {stored:#010x}, computed {actual:#010x}")]
    BadCrc {
        /// CRC found in the frame header.
        stored: u32,
        /// CRC of the payload bytes.
        actual: u32,
    },
    /// The frame has a format version this build does not know.
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// The record kind byte is unknown.
    #[error("unknown record kind {0}")]
    UnknownRecordKind(u8),
    /// The message type byte is unknown.
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    /// The bytes end before the frame or a field does.
    #[error("record is truncated")]
    Truncated,
    /// The payload is longer than its fields.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
    /// A text field is not valid UTF-8.
    #[error("field {field} is not valid UTF-8")]
    NotUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// A field exceeds what the format can hold.
    #[error("{field} is {len} bytes long; at most {max} bytes are allowed")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too many keys or properties.
    #[error("too many keys or properties; at most {max} of each are allowed")]
    TooManyItems {
        /// The limit.
        max: usize,
    },
    /// The whole record exceeds the frame limit.
    #[error("record is {len} bytes; a log record may be at most {max} bytes")]
    RecordTooLarge {
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The storage engine failed or refused an operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("{operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The RocksDB index failed.
    #[error("index {operation}: {source}")]
    Index {
        /// What was being done.
        operation: &'static str,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// A failed fsync (or write) poisoned the log; it refuses writes until restarted, because the
    /// kernel may have dropped the dirty pages that the failed call was meant to persist.
    #[error(
        "commit log is poisoned and refuses writes after a failed {operation}; restart the cell to recover from the last durable record"
    )]
    Poisoned {
        /// The call that failed.
        operation: &'static str,
        /// Its error.
        #[source]
        cause: Arc<std::io::Error>,
    },
    /// A record in the middle of the log is corrupt.
    #[error(
        "corrupt record in segment {segment} at byte {offset_in_segment} (log position {position}): {source}; start with repair enabled to skip the damaged range"
    )]
    Corrupt {
        /// Segment file.
        segment: PathBuf,
        /// Byte offset of the bad frame within the segment.
        offset_in_segment: u64,
        /// Global log position of the bad frame.
        position: u64,
        /// What is wrong with it.
        #[source]
        source: CodecError,
    },
    /// A record handed to append cannot be stored.
    #[error("invalid record: {0}")]
    InvalidRecord(#[from] CodecError),
    /// A read asked for offsets below what retention kept.
    #[error(
        "offset {requested} of {topic}/{queue_id} was removed by retention; the earliest retained offset is {earliest}"
    )]
    OutOfRange {
        /// Topic.
        topic: String,
        /// Queue.
        queue_id: u32,
        /// Offset asked for.
        requested: u64,
        /// Earliest offset still stored.
        earliest: u64,
    },
    /// A log position outside the retained log was asked for.
    #[error("log position {requested} is outside the stored log [{start}, {end})")]
    PositionOutOfRange {
        /// Position asked for.
        requested: u64,
        /// First retained position.
        start: u64,
        /// Next position to be written.
        end: u64,
    },
    /// The index points somewhere that does not hold the record it claims.
    #[error("index entry for {what} points to log position {position}, which does not hold it")]
    IndexMismatch {
        /// The lookup.
        what: String,
        /// Where it pointed.
        position: u64,
    },
    /// The segment files do not form a contiguous log.
    #[error("segment files are not contiguous: {detail}")]
    SegmentLayout {
        /// What is wrong.
        detail: String,
    },
    /// A configuration value is invalid.
    #[error("storage config field {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why, and what would be valid.
        reason: String,
    },
    /// The index lacks a column family it should have been created with.
    #[error("index has no column family {0}")]
    MissingColumnFamily(&'static str),
    /// The storage was shut down while the operation was pending.
    #[error("storage is shut down")]
    Closed,
}

impl StorageError {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StorageError::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn index(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> Self {
        move |source| StorageError::Index { operation, source }
    }
}
