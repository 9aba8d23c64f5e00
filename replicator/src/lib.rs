//! The replicator: geo-replication of logs between regions over QUIC.
//!
//! **Owns** one link per directed pair of regions: the link protocol as sans-IO state machines
//! ([`link`]: frames, batches within a credit window, resume from the receiver's checkpoint,
//! keep-alives, reconnect backoff, range digests) and its IO shell over QUIC with mutual TLS
//! ([`quic`]: quinn + rustls on the ring provider), which reads the origin cell's log, appends
//! into the destination cell's log deduplicating by message id, and persists the receiver's
//! progress in the `replication_checkpoints` column family.
//!
//! **Depends on** `cell` (reads the origin log through `Storage::read_log`, appends replicated
//! records through `Storage::append` with `ReplicatedFrom`, which keeps origin region, origin
//! position and HLC stamp; stores progress through `Storage::put_state`) and `pki` (node
//! identities; any rustls configurations that verify peers against the fabric CA will do). Topic
//! policies from `meta` (which topics go where, `sync-quorum`) are not wired yet: every record
//! goes to every configured peer.
//!
//! **Must not touch** RocksDB or segment files directly; it goes through `cell`'s API only.
//!
//! Records are forwarded only by their origin region (see [`link`] for the relay rule), so a full
//! mesh of links has no loops.

pub mod digest;
pub mod error;
pub mod link;
pub mod quic;

pub use error::ReplicatorError;
