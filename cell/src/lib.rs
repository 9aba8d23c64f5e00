//! The cell: one region's broker.
//!
//! **Owns** the region's commit log (segment files of CRC-framed records) and the RocksDB index
//! beside it ([`storage`]), the RocketMQ 5 messaging semantics on top of them ([`messaging`]),
//! and the RocketMQ 5 gRPC front that the official clients talk to ([`grpc`]).
//!
//! **Depends on** RocksDB, the `uhlc` hybrid logical clock, tokio, tonic (gRPC, rustls for TLS)
//! and, of Meridian, only `meridian-proto` for the wire types.
//!
//! **Must not touch** other regions or the network for replication: the replicator reads the log
//! through [`storage::Storage::read_log`] and appends replicated records through
//! [`storage::Storage::append`]; metadata comes from `meta` through the caller.
//!
//! Durability promises, in the words the rest of Meridian relies on: in `sync` mode an append
//! that returned `Ok` is on disk (fsynced); in `async` mode it is in the OS page cache and
//! survives a process crash, and is fsynced within `async_flush_interval_ms`. A failed write or
//! fsync poisons the log rather than retrying.

pub mod clock;
pub mod error;
pub mod grpc;
pub mod messaging;
pub mod storage;

pub use clock::Hlc;
pub use error::{CodecError, StorageError};
pub use storage::{Appended, Durability, NewRecord, Record, Storage, StorageConfig};
