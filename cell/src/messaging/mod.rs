//! RocketMQ 5 messaging semantics of the cell, built on [`crate::storage::Storage`].
//!
//! **Owns** topics with a declared message type, consumer groups, per-message (pop) and
//! per-queue (pull) consumption, retries and dead-letter queues, FIFO ordering per message
//! group, delay messages, transactions with check-back, tag and SQL92 filters, long polling,
//! queries and message trace.
//!
//! **Depends on** the storage's append/read API, its visibility watch (long polling) and its
//! WAL-synced state column family (consumer state, checkpoints). Decision logic lives in sans-IO
//! cores (`filter`, `pop`, `timer`, `txn`, `assign`, `retry`) fed `now_ms`; [`broker::Broker`] is
//! the IO shell.
//!
//! **Must not touch** the storage's internals, the network or other regions; the gRPC layer maps
//! [`MessagingError::rocketmq_code`] to statuses and turns [`broker::TransactionCheck`]s into
//! recover-orphaned-transaction commands.

pub mod assign;
pub mod broker;
pub mod clock;
mod codec;
pub mod error;
pub mod filter;
pub mod gate;
pub mod limits;
pub mod message;
pub mod names;
pub mod pop;
pub mod quorum;
pub mod retry;
pub mod timer;
pub mod topic;
pub mod txn;

pub use broker::{
    Broker, BrokerConfig, PullResult, ReceiveRequest, TransactionCheck, TransactionResolution,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::MessagingError;
pub use filter::{Filter, FilterError, FilterKind};
pub use gate::{RefusalReason, WriteDecision, WriteGate, WriteRefusal};
pub use limits::Limits;
pub use message::{OutgoingMessage, ReceivedMessage, SendReceipt};
pub use quorum::{QuorumError, ReplicationQuorum};
pub use retry::{Backoff, RetryPolicy};
pub use topic::{ConsumptionModel, GroupConfig, TopicConfig, TopicMessageType};
