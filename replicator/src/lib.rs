//! The replicator: geo-replication of logs between regions over QUIC.
//!
//! **Owns** one link per directed pair of regions: the link protocol as sans-IO state machines
//! ([`link`]: frames, batches within a credit window, resume from the receiver's checkpoint,
//! keep-alives, reconnect backoff, range digests, per-destination filters in [`link::filter`],
//! the verification loop in [`link::verify`]) and its IO shell over QUIC with mutual TLS
//! ([`quic`]: quinn + rustls on the ring provider), which reads the origin cell's log, appends
//! into the destination cell's log deduplicating by message id, and persists the receiver's
//! progress in the `replication_checkpoints` column family.
//!
//! **Wired now:**
//! - *Peer identity*: an inbound link is refused (`RefuseCode::IdentityMismatch`) unless the
//!   region its Hello names is a subject alternative name of the certificate the peer
//!   presented; a certificate from another CA already fails the TLS handshake.
//! - *Selective replication*: `ReplicatorConfig::destination_filters` gives each destination a
//!   tag or SQL92 filter per topic (the cell's own filter language); records that do not match
//!   stay home, `%SYS%` and `%DLQ%` records always ship (a parked delay or half message is
//!   judged by its real topic). Skipped records leave gaps in the origin positions a
//!   destination sees; batches cover ranges, so progress and resume are unaffected.
//! - *Verification*: every `verify_interval_ms` each outbound link compares the digest of the
//!   next acknowledged origin range (only records the filter ships) with the destination's,
//!   narrows a mismatch by bisection to the damaged record's range, logs and counts it, and
//!   keeps a persisted "verified up to" position. The destination scans only the part of its
//!   log a sparse index (origin position → local position, written with the checkpoint) bounds.
//! - *Per-link figures* ([`quic::metrics`]): lag in messages, bytes and milliseconds (by HLC),
//!   shipped messages and bytes, reconnects, "verified up to" and mismatches, per link
//!   `origin->destination`, via `Replicator::link_metrics` and a Prometheus text rendering (the
//!   `metrics` crate is not in the workspace's lockfile yet).
//!
//! **Depends on** `cell` (reads the origin log through `Storage::read_log`, appends replicated
//! records through `Storage::append` with `ReplicatedFrom`, which keeps origin region, origin
//! position and HLC stamp; stores progress through `Storage::put_state`; the filter language of
//! `cell::messaging::Filter`) and `pki` (node identities; any rustls configurations that verify
//! peers against the fabric CA will do). Topic policies from `meta` (which topics go where,
//! filters, `sync-quorum`) are not wired yet: a replicator ships to every configured peer what
//! its configuration's filters let through.
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
