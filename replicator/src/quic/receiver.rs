//! Inbound links: accepting connections and running a [`Receiver`] per link session against the
//! destination cell's storage.
//!
//! # Applying and checkpointing, and why a crash in between is harmless
//!
//! A batch is applied by one `Storage::append` of its entries (origin region, origin position and
//! HLC stamp kept through `ReplicatedFrom`), after dropping entries whose message id the cell
//! already stores. Only after the append has returned (stored per the cell's durability mode)
//! and is indexed does the session count it as applied and ack it. The checkpoint, "applied
//! through origin position P", is written afterwards (and, in `async` durability, only once the
//! log is fsynced past the records it covers, see `Storage::durable_end`), so it never covers a
//! record the log could lose. A crash between the append and the checkpoint write leaves the
//! checkpoint behind the log: the next session resumes from the older P, the sender sends the
//! already-stored records again, and they are dropped by message id (the cell's recovery
//! re-indexes every record in its log before it serves, so the lookup sees them). So a crash can
//! neither lose a record (the checkpoint is never ahead of the log) nor store one twice (what is
//! behind the checkpoint is deduplicated). Within a running process the progress is also kept in
//! memory, so reconnects resume from it without any resend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_cell::storage::record::decode_frame;
use meridian_cell::storage::{NewRecord, Origin, Record, ReplicatedFrom};
use meridian_cell::{Durability, Storage};
use tokio::sync::{mpsc, watch};

use super::{
    OriginSlot, Progress, Shared, now_ms, sleep_until, spawn_reader, store_checkpoint, write_frame,
};
use crate::digest::RangeDigest;
use crate::error::ReplicatorError;
use crate::link::frame::Entry;
use crate::link::receiver::{Receiver, ReceiverAction};
use crate::link::{LinkFailure, RefuseCode};

/// Bytes read per step while a digest scans the local log.
const DIGEST_SCAN_BYTES: usize = 4 << 20;
/// How often a checkpoint writer looks at the durable end in `async` durability.
const DURABLE_POLL_MS: u64 = 5;

/// Counters of a replicator's links.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Inbound sessions that reached streaming.
    pub inbound_sessions: AtomicU64,
    /// Records appended from inbound links.
    pub applied_records: AtomicU64,
    /// Received records dropped because their message id was already stored.
    pub duplicates_dropped: AtomicU64,
    /// Outbound sessions started (connections made).
    pub outbound_sessions: AtomicU64,
    /// Outbound connection attempts that failed or sessions that ended with an error.
    pub outbound_failures: AtomicU64,
    /// Entries sent on outbound links.
    pub sent_records: AtomicU64,
    /// Digest answers that matched the local log.
    pub digests_matched: AtomicU64,
    /// Digest answers that did not.
    pub digest_mismatches: AtomicU64,
    /// Local records read to answer digest requests (bounded by the replica index).
    pub digest_scanned_records: AtomicU64,
    /// Why the latest outbound session failed (for operators and tests).
    pub last_outbound_error: parking_lot::Mutex<Option<String>>,
    /// Inbound links refused because Hello named a region the peer's certificate is not
    /// issued for.
    pub identity_refusals: AtomicU64,
}

/// Accepts inbound links until shutdown. Sessions live in a `JoinSet` owned by this task, so
/// aborting the task (a simulated crash) aborts them too, and a shutdown waits for them.
pub(super) async fn accept_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            incoming = shared.endpoint.accept() => incoming,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Some(incoming) = incoming else {
            break;
        };
        let shared = Arc::clone(&shared);
        sessions.spawn(async move {
            let remote = incoming.remote_address();
            match session(&shared, incoming).await {
                Ok(()) => tracing::debug!(%remote, "inbound link session ended"),
                Err(error) => tracing::info!(%remote, %error, "inbound link session ended"),
            }
        });
    }
    while sessions.join_next().await.is_some() {}
}

/// What a session holds once it owns its origin's progress.
struct Owned {
    origin_region: String,
    progress: tokio::sync::OwnedMutexGuard<Progress>,
    stop: watch::Receiver<bool>,
    /// The latest (position, visible log end) to persist; the writer task takes the newest.
    checkpoint_tx: watch::Sender<Option<(u64, u64)>>,
    checkpoint_task: tokio::task::JoinHandle<()>,
    /// The log's visible end after the latest apply.
    pending_visible: u64,
}

async fn session(shared: &Arc<Shared>, incoming: quinn::Incoming) -> Result<(), ReplicatorError> {
    let config = &shared.config.receiver;
    let handshake = Duration::from_millis(config.handshake_timeout_ms);
    // The TLS handshake checks the peer's certificate against the cluster CA: a peer with a
    // certificate from another CA fails here, before any frame is read.
    // The handshake is bounded and gives way to a shutdown, which waits for every session.
    let mut shutdown = shared.shutdown.clone();
    let opened = async {
        let connection = incoming.await?;
        let streams = connection.accept_bi().await?;
        Ok::<_, ReplicatorError>((connection, streams))
    };
    let (connection, (mut send, recv)) = tokio::select! {
        opened = tokio::time::timeout(handshake, opened) => match opened {
            Ok(opened) => opened?,
            Err(_) => {
                return Err(LinkFailure::HandshakeTimeout {
                    timeout_ms: config.handshake_timeout_ms,
                }
                .into());
            }
        },
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    };
    let (mut frames, reader) = spawn_reader(recv, config.limits);
    let epoch = tokio::time::Instant::now();
    let mut receiver = Receiver::new(config.clone(), &shared.config.region, 0);
    let mut owned: Option<Owned> = None;
    let (persisted_tx, mut persisted_rx) = mpsc::channel::<Result<u64, ReplicatorError>>(4);
    let result = loop {
        match drive(
            shared,
            &connection,
            &mut receiver,
            &mut send,
            &mut owned,
            &persisted_tx,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(error) => {
                receiver.end(RefuseCode::LocalFailure, error.to_string());
                // Tell the peer why, if the stream still works; the session is over either way.
                let _ = drive(
                    shared,
                    &connection,
                    &mut receiver,
                    &mut send,
                    &mut owned,
                    &persisted_tx,
                )
                .await;
                break Err(error);
            }
        }
        let deadline = receiver
            .next_timer_ms()
            .map(|at| epoch + Duration::from_millis(at));
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Ok(frame)) => receiver.on_frame(frame, now_ms(epoch)),
                Some(Err(error)) => break Err(error),
                None => break Err(ReplicatorError::StreamClosed),
            },
            persisted = persisted_rx.recv() => match persisted {
                Some(Ok(position)) => {
                    if let Some(owned) = owned.as_mut() {
                        owned.progress.persisted = owned.progress.persisted.max(Some(position));
                    }
                    receiver.on_checkpoint_persisted(position);
                }
                Some(Err(error)) => {
                    receiver.end(RefuseCode::LocalFailure, error.to_string());
                }
                None => {}
            },
            _ = sleep_until(deadline) => receiver.on_timer(now_ms(epoch)),
            _ = stopped(owned.as_mut().map(|owned| &mut owned.stop)) => receiver.end(RefuseCode::Superseded, "a newer link from the same region took over".into()),
            _ = shutdown.wait_for(|stop| *stop) => receiver.end(RefuseCode::ShuttingDown, "receiver shutting down".into()),
        }
    };
    super::finish_and_linger(&mut send).await;
    reader.abort();
    if let Some(owned) = owned {
        // Hand the writer the final progress (it takes the newest request), let it finish, and
        // only then release the origin: a graceful stop leaves the checkpoint at the last
        // applied position, so the next start resends nothing.
        if let Some(applied) = owned.progress.applied
            && owned
                .progress
                .persisted
                .is_none_or(|persisted| persisted < applied)
        {
            owned.request_checkpoint(applied);
        }
        drop(owned.checkpoint_tx);
        let _ = owned.checkpoint_task.await;
        drop(owned.progress);
        tracing::debug!(origin = %owned.origin_region, "inbound session released its origin");
    }
    connection.close(0u32.into(), b"session over");
    result
}

/// Resolves once a newer session of the same origin asks this one to stop.
async fn stopped(stop: Option<&mut watch::Receiver<bool>>) {
    match stop {
        Some(stop) => {
            if stop.wait_for(|stop| *stop).await.is_err() {
                // The slot dropped its sender: nobody can supersede this session any more.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Carries out every queued action. Returns `Ok(false)` once the session has closed.
async fn drive(
    shared: &Arc<Shared>,
    connection: &quinn::Connection,
    receiver: &mut Receiver,
    send: &mut quinn::SendStream,
    owned: &mut Option<Owned>,
    persisted_tx: &mpsc::Sender<Result<u64, ReplicatorError>>,
) -> Result<bool, ReplicatorError> {
    let limits = shared.config.receiver.limits;
    while let Some(action) = receiver.poll_action() {
        match action {
            ReceiverAction::Send(frame) => write_frame(send, &frame, &limits).await?,
            ReceiverAction::LoadProgress {
                source_region,
                link_id,
            } => {
                if let Err(reason) = super::identity::check_peer_region(connection, &source_region)
                {
                    shared
                        .stats
                        .identity_refusals
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        remote = %connection.remote_address(), claimed = %source_region, %reason,
                        "refusing an inbound link whose certificate does not match its region"
                    );
                    receiver.end(
                        RefuseCode::IdentityMismatch,
                        format!("Hello names source region {source_region:?}, but {reason}"),
                    );
                    continue;
                }
                let taken = take_origin(shared, &source_region, persisted_tx.clone()).await?;
                let applied = taken.progress.applied.unwrap_or(0);
                let persisted = taken.progress.persisted.unwrap_or(0);
                tracing::info!(origin = %source_region, link_id, applied, "inbound link resumes");
                shared
                    .stats
                    .inbound_sessions
                    .fetch_add(1, Ordering::Relaxed);
                *owned = Some(taken);
                receiver.on_progress_loaded(applied, persisted);
            }
            ReceiverAction::Apply {
                origin_region,
                start: _,
                end,
                entries,
            } => {
                let Some(owned) = owned.as_mut() else {
                    continue;
                };
                let visible_end = apply(shared, &origin_region, entries).await?;
                owned.applied(end, visible_end);
                receiver.on_applied(end);
            }
            ReceiverAction::PersistCheckpoint { position, .. } => {
                if let Some(owned) = owned.as_ref() {
                    owned.request_checkpoint(position);
                }
            }
            ReceiverAction::ComputeDigest {
                origin_region,
                start,
                end,
            } => {
                let storage = Arc::clone(&shared.storage);
                let region = origin_region.clone();
                let stride = shared.config.replica_index_stride_bytes;
                let (digest, scanned) = tokio::task::spawn_blocking(move || {
                    replica_digest(&storage, &region, stride, start, end)
                })
                .await??;
                shared
                    .stats
                    .digest_scanned_records
                    .fetch_add(scanned, Ordering::Relaxed);
                receiver.answer_digest(origin_region, start, end, digest.count(), digest.value());
            }
            ReceiverAction::Close(failure) => {
                tracing::info!(%failure, "inbound link session closing");
                return Ok(false);
            }
        }
    }
    Ok(true)
}

impl Owned {
    /// Progress reached `end`; the log's visible end afterwards is what a checkpoint at `end`
    /// must wait to be durable.
    fn applied(&mut self, end: u64, visible_end: u64) {
        self.progress.applied = Some(end);
        self.pending_visible = visible_end;
    }

    fn request_checkpoint(&self, position: u64) {
        let _ = self
            .checkpoint_tx
            .send(Some((position, self.pending_visible)));
    }
}

/// Takes over an origin's progress: stops the session that holds it (which finishes its
/// current append first), waits for it to let go, and loads the checkpoint on first use.
async fn take_origin(
    shared: &Arc<Shared>,
    origin_region: &str,
    persisted_tx: mpsc::Sender<Result<u64, ReplicatorError>>,
) -> Result<Owned, ReplicatorError> {
    let slot: Arc<OriginSlot> = Arc::clone(
        shared
            .origins
            .lock()
            .entry(origin_region.to_string())
            .or_default(),
    );
    let (stop_tx, stop) = watch::channel(false);
    if let Some(previous) = slot.current.lock().replace(stop_tx) {
        let _ = previous.send(true);
    }
    let mut progress = Arc::clone(&slot.progress).lock_owned().await;
    if progress.persisted.is_none() {
        let storage = Arc::clone(&shared.storage);
        let region = origin_region.to_string();
        let persisted =
            tokio::task::spawn_blocking(move || super::load_checkpoint(&storage, &region))
                .await??;
        progress.persisted = Some(persisted);
        // A process that applied nothing yet starts from the checkpoint.
        progress.applied.get_or_insert(persisted);
    }
    let (checkpoint_tx, checkpoint_rx) = watch::channel(None);
    let checkpoint_task = tokio::spawn(checkpoint_writer(
        Arc::clone(&shared.storage),
        origin_region.to_string(),
        shared.config.replica_index_stride_bytes,
        checkpoint_rx,
        persisted_tx,
    ));
    Ok(Owned {
        origin_region: origin_region.to_string(),
        progress,
        stop,
        checkpoint_tx,
        checkpoint_task,
        pending_visible: shared.storage.log_range().1,
    })
}

/// Writes the newest requested checkpoint once the log is durable past the records it covers,
/// and reports each write. Ends when the session drops its sender.
async fn checkpoint_writer(
    storage: Arc<Storage>,
    origin_region: String,
    index_stride_bytes: u64,
    mut requests: watch::Receiver<Option<(u64, u64)>>,
    persisted: mpsc::Sender<Result<u64, ReplicatorError>>,
) {
    let mut last_bucket = None;
    while requests.changed().await.is_ok() {
        let Some((position, visible_end)) = *requests.borrow_and_update() else {
            continue;
        };
        // In sync durability everything visible is durable already; in async durability the
        // flusher catches up within its interval. If the session ends first, the write is
        // skipped: the progress stays in memory and a later session persists it.
        while storage.durability() == Durability::Async && storage.durable_end() < visible_end {
            if requests.has_changed().is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(DURABLE_POLL_MS)).await;
        }
        let writer_storage = Arc::clone(&storage);
        let region = origin_region.clone();
        let result = tokio::task::spawn_blocking(move || {
            store_checkpoint(&writer_storage, &region, position)?;
            // The hint for narrowing digest scans (see `replica_index`), after the checkpoint:
            // it describes records the checkpoint covers.
            super::replica_index::note(
                &writer_storage,
                &region,
                index_stride_bytes,
                position,
                visible_end,
                &mut last_bucket,
            )?;
            Ok::<_, ReplicatorError>(last_bucket)
        })
        .await
        .map_err(ReplicatorError::from)
        .and_then(|stored| stored)
        .map(|bucket| {
            last_bucket = bucket;
            position
        });
        if persisted.send(result).await.is_err() {
            return;
        }
    }
}

/// Appends the entries that are not stored yet, as replicated records, and waits until they are
/// visible (indexed), so that a later duplicate check finds them. Returns the log's visible end.
async fn apply(
    shared: &Arc<Shared>,
    origin_region: &str,
    entries: Vec<Entry>,
) -> Result<u64, ReplicatorError> {
    let storage = Arc::clone(&shared.storage);
    let region = origin_region.to_string();
    let (records, duplicates) =
        tokio::task::spawn_blocking(move || new_records(&storage, &region, entries)).await??;
    shared
        .stats
        .duplicates_dropped
        .fetch_add(duplicates, Ordering::Relaxed);
    let Some(count) = (!records.is_empty()).then_some(records.len() as u64) else {
        return Ok(shared.storage.log_range().1);
    };
    let appended = shared.storage.append(records).await?;
    let last = appended.last().map_or(0, |appended| appended.position);
    let mut visible = shared.storage.subscribe();
    // The watch is closed only when the storage shuts down; then the append's records are not
    // guaranteed visible and the session must not count them as applied.
    visible
        .wait_for(|end| *end > last)
        .await
        .map_err(|_| meridian_cell::StorageError::Closed)?;
    shared
        .stats
        .applied_records
        .fetch_add(count, Ordering::Relaxed);
    Ok(shared.storage.log_range().1)
}

/// Decodes and checks the entries and turns the ones not yet stored into records to append.
fn new_records(
    storage: &Storage,
    origin_region: &str,
    entries: Vec<Entry>,
) -> Result<(Vec<NewRecord>, u64), ReplicatorError> {
    let mut records = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for entry in entries {
        let (record, used) = decode_frame(&entry.payload)?;
        check_entry(&entry, &record, used, origin_region)?;
        // By topic and id: a parked delay message and its released copy (or a message and its
        // dead-letter copy) share an id and are different records.
        if !seen.insert((record.topic.clone(), record.message_id.clone()))
            || storage.contains_copy(&record.topic, &record.message_id)?
        {
            duplicates += 1;
            continue;
        }
        records.push(NewRecord {
            message_id: record.message_id,
            topic: record.topic,
            queue_id: record.queue_id,
            message_type: record.message_type,
            tags: record.tags,
            keys: record.keys,
            message_group: record.message_group,
            properties: record.properties,
            body: record.body,
            born_timestamp_ms: record.born_timestamp_ms,
            delivery_timestamp_ms: record.delivery_timestamp_ms,
            replicated: Some(ReplicatedFrom {
                origin: Origin {
                    region: record.origin.region,
                    offset: record.origin.offset,
                },
                hlc: record.hlc,
            }),
        });
    }
    Ok((records, duplicates))
}

/// The entry's own fields and the record it carries must agree, and the record must come from
/// the link's origin: a sender cannot slip in another region's records or a mislabelled one.
fn check_entry(
    entry: &Entry,
    record: &Record,
    used: usize,
    origin_region: &str,
) -> Result<(), ReplicatorError> {
    let bad = |detail: String| {
        Err(ReplicatorError::BadEntry {
            position: entry.position,
            detail,
        })
    };
    if used != entry.payload.len() {
        return bad(format!(
            "{} bytes after the record",
            entry.payload.len() - used
        ));
    }
    if record.origin.region != origin_region {
        return bad(format!(
            "record originated in {:?}, but the link carries {origin_region:?}",
            record.origin.region
        ));
    }
    if record.origin.offset != entry.position
        || record.hlc != entry.hlc
        || record.message_id != entry.message_id
    {
        return bad("entry fields disagree with the record it carries".into());
    }
    Ok(())
}

/// The digest of `origin_region`'s records with origin positions in `[start, end)` as this cell
/// stores them, and how many local records were read for it. Only the part of the local log
/// the sparse index bounds is scanned (see `replica_index`).
pub(crate) fn replica_digest(
    storage: &Storage,
    origin_region: &str,
    index_stride_bytes: u64,
    start: u64,
    end: u64,
) -> Result<(RangeDigest, u64), ReplicatorError> {
    let mut digest = RangeDigest::new();
    let (mut at, scan_end) =
        super::replica_index::scan_bounds(storage, origin_region, index_stride_bytes, start, end)?;
    let mut scanned = 0u64;
    while at < scan_end {
        let records = storage.read_log(at, usize::MAX, DIGEST_SCAN_BYTES)?;
        let Some((last, len, _)) = records.last() else {
            break;
        };
        at = last + u64::from(*len);
        for (position, _, record) in &records {
            if *position >= scan_end {
                break;
            }
            scanned += 1;
            if record.origin.region == origin_region && (start..end).contains(&record.origin.offset)
            {
                digest.add_record(record);
            }
        }
    }
    Ok((digest, scanned))
}
