//! The replicator: geo-replication of logs and consumer state between regions over QUIC.
//!
//! **Will own** one link per directed pair of regions (quinn + rustls with mutual TLS), the link
//! protocol as a sans-IO state machine (batches, credit-based flow control, resume offsets,
//! deduplication by message id, loop prevention: records are forwarded only from their origin),
//! receiver progress checkpoints, range digests for verification, and `sync-quorum` waits.
//!
//! **Will depend on** `cell` (reads the origin log through `Storage::read_log`, appends replicated
//! records through `Storage::append` with `ReplicatedFrom`, stores progress in the
//! `replication_checkpoints` column family), `meta` (topic policies) and `proto`.
//!
//! **Must not touch** RocksDB or segment files directly; it goes through `cell`'s API only.
//!
//! Nothing is implemented yet; see the open issue for the replicator.
