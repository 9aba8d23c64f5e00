//! Outbound links: one task per peer region that connects, runs a [`Sender`] session against
//! this cell's log, and reconnects with backoff when the session ends. The link's filter
//! (selective replication), its [`Verifier`] and its metrics live as long as the task, across
//! sessions.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_cell::{Storage, StorageError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::metrics::{LinkMetrics, hlc_physical_ms};
use super::{PeerConfig, Shared, now_ms, sleep_until, spawn_reader, write_frame};
use crate::digest::RangeDigest;
use crate::error::ReplicatorError;
use crate::link::backoff::Backoff;
use crate::link::filter::DestinationFilter;
use crate::link::frame::Entry;
use crate::link::sender::{LogRecord, Sender, SenderAction};
use crate::link::verify::{Verdict, Verifier};

/// Record boundaries of the origin log the verification loop remembers (to start digest scans
/// at a record near an arbitrary range start); the oldest are forgotten first.
const MAX_KNOWN_BOUNDARIES: usize = 4096;

/// What one outbound link keeps across its sessions.
struct Link {
    filter: Arc<DestinationFilter>,
    verifier: Verifier,
    /// "Verified up to" as last persisted.
    persisted_verified: u64,
    /// Positions known to start a record of the local log (acknowledged positions, positions
    /// seen by digest scans).
    boundaries: BTreeSet<u64>,
    metrics: Arc<LinkMetrics>,
}

impl Link {
    fn note_boundary(&mut self, position: u64) {
        self.boundaries.insert(position);
        while self.boundaries.len() > MAX_KNOWN_BOUNDARIES {
            self.boundaries.pop_first();
        }
    }
}

/// Keeps one outbound link to `peer` up until the replicator shuts down.
pub(super) async fn link_loop(
    shared: Arc<Shared>,
    peer: PeerConfig,
    seed: u64,
    metrics: Arc<LinkMetrics>,
) {
    let filter = shared
        .config
        .destination_filters
        .get(&peer.region)
        .cloned()
        .unwrap_or_default();
    let storage = Arc::clone(&shared.storage);
    let region = peer.region.clone();
    let verified = match tokio::task::spawn_blocking(move || {
        super::load_verified(&storage, &region)
    })
    .await
    {
        Ok(Ok(position)) => position,
        Ok(Err(error)) => {
            tracing::warn!(peer = %peer.region, %error, "cannot read the link's verified position; verifying from the start");
            0
        }
        Err(error) => {
            tracing::warn!(peer = %peer.region, %error, "cannot read the link's verified position; verifying from the start");
            0
        }
    };
    metrics.verified_up_to.store(verified, Ordering::Relaxed);
    let mut link = Link {
        filter: Arc::new(filter),
        verifier: Verifier::new(shared.config.verify, verified),
        persisted_verified: verified,
        boundaries: BTreeSet::new(),
        metrics,
    };
    let mut attempts = 0u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut backoff = Backoff::new(
        shared.config.reconnect_base_delay_ms,
        shared.config.reconnect_max_delay_ms,
        rng.random(),
    );
    let mut shutdown = shared.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if attempts > 0 {
            link.metrics
                .reconnects_total
                .fetch_add(1, Ordering::Relaxed);
        }
        attempts += 1;
        let link_id: u64 = rng.random();
        match session(&shared, &peer, link_id, &mut backoff, &mut link).await {
            Ok(()) => {
                tracing::info!(peer = %peer.region, link_id, "outbound link session ended");
            }
            Err(error) => {
                shared
                    .stats
                    .outbound_failures
                    .fetch_add(1, Ordering::Relaxed);
                *shared.stats.last_outbound_error.lock() = Some(error.to_string());
                tracing::info!(peer = %peer.region, link_id, %error, "outbound link session failed");
            }
        }
        link.verifier.on_session_end();
        link.metrics.lag_messages.store(0, Ordering::Relaxed);
        let delay = Duration::from_millis(backoff.next_delay_ms());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn session(
    shared: &Arc<Shared>,
    peer: &PeerConfig,
    link_id: u64,
    backoff: &mut Backoff,
    link: &mut Link,
) -> Result<(), ReplicatorError> {
    let config = &shared.config.sender;
    let connecting = shared
        .endpoint
        .connect(peer.addr, &peer.server_name)
        .map_err(|source| ReplicatorError::Connect {
            peer: peer.addr,
            source,
        })?;
    // The handshake is bounded by the link's handshake timeout and gives way to a shutdown, so
    // a peer that does not answer cannot hold either up for QUIC's whole idle timeout.
    let mut shutdown = shared.shutdown.clone();
    let handshake = Duration::from_millis(config.handshake_timeout_ms);
    let opened = async {
        let connection = connecting.await?;
        let streams = connection.open_bi().await?;
        Ok::<_, ReplicatorError>((connection, streams))
    };
    let (connection, (mut send, recv)) = tokio::select! {
        opened = tokio::time::timeout(handshake, opened) => match opened {
            Ok(opened) => opened?,
            Err(_) => {
                return Err(crate::link::LinkFailure::HandshakeTimeout {
                    timeout_ms: config.handshake_timeout_ms,
                }
                .into());
            }
        },
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    };
    shared
        .stats
        .outbound_sessions
        .fetch_add(1, Ordering::Relaxed);
    let (mut frames, reader) = spawn_reader(recv, config.limits);
    let epoch = tokio::time::Instant::now();
    let mut local_end = shared.storage.subscribe();
    let end = *local_end.borrow_and_update();
    let mut sender = Sender::new(
        config.clone(),
        link_id,
        &shared.config.region,
        &peer.region,
        end,
        0,
    );
    let verify_every = shared.config.verify_interval_ms.map(Duration::from_millis);
    let mut next_verify = verify_every.map(|every| epoch + every);
    let result = loop {
        match drive(shared, &mut sender, &mut send, backoff, epoch, link).await {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(error) => break Err(error),
        }
        update_lag(shared, &sender, &link.metrics);
        shared
            .peer_acks
            .publish(&peer.region, sender.acked_through());
        let deadline = sender
            .next_timer_ms()
            .map(|at| epoch + Duration::from_millis(at));
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(Ok(frame)) => sender.on_frame(frame, now_ms(epoch)),
                Some(Err(error)) => break Err(error),
                None => break Err(ReplicatorError::StreamClosed),
            },
            changed = local_end.changed() => match changed {
                Ok(()) => {
                    let end = *local_end.borrow_and_update();
                    sender.on_local_append(end);
                }
                Err(_) => break Err(StorageError::Closed.into()),
            },
            _ = sleep_until(deadline) => sender.on_timer(now_ms(epoch)),
            _ = sleep_until(next_verify) => {
                request_verification(shared, &mut sender, link, epoch);
                next_verify = verify_every.map(|every| tokio::time::Instant::now() + every);
            }
            _ = shutdown.wait_for(|stop| *stop) => sender.shutdown(now_ms(epoch)),
        }
    };
    super::finish_and_linger(&mut send).await;
    reader.abort();
    connection.close(0u32.into(), b"session over");
    result
}

/// Carries out every queued action. Returns `Ok(false)` once the session has closed.
async fn drive(
    shared: &Arc<Shared>,
    sender: &mut Sender,
    send: &mut quinn::SendStream,
    backoff: &mut Backoff,
    epoch: tokio::time::Instant,
    link: &mut Link,
) -> Result<bool, ReplicatorError> {
    let limits = shared.config.sender.limits;
    while let Some(action) = sender.poll_action() {
        match action {
            SenderAction::Send(frame) => {
                if let crate::link::Frame::Batch { entries, .. } = &frame {
                    let count = entries.len() as u64;
                    let bytes: u64 = entries.iter().map(|entry| entry.wire_len() as u64).sum();
                    shared
                        .stats
                        .sent_records
                        .fetch_add(count, Ordering::Relaxed);
                    let metrics = &link.metrics;
                    metrics
                        .shipped_messages_total
                        .fetch_add(count, Ordering::Relaxed);
                    metrics
                        .shipped_bytes_total
                        .fetch_add(bytes, Ordering::Relaxed);
                }
                write_frame(send, &frame, &limits).await?;
                if sender.is_closed() && matches!(frame, crate::link::Frame::Refuse { .. }) {
                    return Ok(false);
                }
            }
            SenderAction::ReadLog {
                from,
                max_entries,
                max_bytes,
            } => {
                let storage = Arc::clone(&shared.storage);
                let filter = Arc::clone(&link.filter);
                let read = tokio::task::spawn_blocking(move || {
                    read_records(&storage, &filter, from, max_entries, max_bytes)
                })
                .await??;
                match read {
                    Read::Records { next, records } => {
                        sender.on_log_read(next, records, now_ms(epoch));
                    }
                    Read::Truncated { log_start } => sender.on_log_truncated(from, log_start),
                }
            }
            SenderAction::Resumed { position } => {
                backoff.reset();
                tracing::info!(position, "outbound link resumes");
            }
            SenderAction::PeerDigest {
                origin_region,
                start,
                end,
                count,
                digest,
            } => {
                let storage = Arc::clone(&shared.storage);
                let filter = Arc::clone(&link.filter);
                let scan_from = link.boundaries.range(..=start).next_back().copied();
                let scan = tokio::task::spawn_blocking(move || {
                    origin_digest(&storage, &filter, scan_from, start, end)
                })
                .await??;
                for boundary in scan.boundaries.into_iter().flatten() {
                    link.note_boundary(boundary);
                }
                let local = scan.digest;
                let verdict = link.verifier.on_answer(
                    start,
                    end,
                    (local.count(), local.value()),
                    (count, digest),
                );
                on_verdict(shared, link, &origin_region, verdict).await?;
                if link.verifier.is_narrowing() {
                    request_verification(shared, sender, link, epoch);
                }
            }
            SenderAction::Close(failure) => {
                // Our own shutdown closes without this action: every Close is a failure (an
                // idle peer, a refusal), which the link loop counts and reports.
                tracing::info!(%failure, "outbound link session closing");
                return Err(failure.into());
            }
        }
    }
    Ok(!sender.is_closed())
}

/// Asks the peer for the digest of the next range the verifier wants compared.
fn request_verification(
    shared: &Shared,
    sender: &mut Sender,
    link: &mut Link,
    epoch: tokio::time::Instant,
) {
    let acked = sender.acked_through();
    // Acknowledged positions are batch ends, which are record boundaries.
    link.note_boundary(acked);
    let (log_start, _) = shared.storage.log_range();
    if let Some((start, end)) = link.verifier.next_request(acked, log_start) {
        sender.request_digest(start, end, now_ms(epoch));
    }
}

/// Counts, logs and persists what a digest comparison showed.
async fn on_verdict(
    shared: &Shared,
    link: &mut Link,
    origin_region: &str,
    verdict: Option<Verdict>,
) -> Result<(), ReplicatorError> {
    match verdict {
        Some(Verdict::Matched) => {
            shared.stats.digests_matched.fetch_add(1, Ordering::Relaxed);
        }
        Some(Verdict::Narrowing) | None => {}
        Some(Verdict::Mismatch(mismatch)) => {
            shared
                .stats
                .digest_mismatches
                .fetch_add(1, Ordering::Relaxed);
            link.metrics
                .verify_mismatches_total
                .fetch_add(1, Ordering::Relaxed);
            *link.metrics.last_mismatch.lock() = Some(mismatch);
            tracing::error!(
                link = %link.metrics.link, origin = %origin_region,
                start = mismatch.start, end = mismatch.end,
                origin_count = mismatch.origin_count, replica_count = mismatch.replica_count,
                "replica range differs from the origin"
            );
        }
    }
    let verified = link.verifier.verified_up_to();
    link.metrics
        .verified_up_to
        .store(verified, Ordering::Relaxed);
    if verified != link.persisted_verified {
        let storage = Arc::clone(&shared.storage);
        let destination = link
            .metrics
            .link
            .rsplit("->")
            .next()
            .unwrap_or_default()
            .to_string();
        tokio::task::spawn_blocking(move || {
            super::store_verified(&storage, &destination, verified)
        })
        .await??;
        link.persisted_verified = verified;
    }
    Ok(())
}

/// Updates the link's lag figures from the sender's state.
fn update_lag(shared: &Shared, sender: &Sender, metrics: &LinkMetrics) {
    let (_, visible_end) = shared.storage.log_range();
    metrics.lag_bytes.store(
        visible_end.saturating_sub(sender.acked_through()),
        Ordering::Relaxed,
    );
    let (_, entries) = sender.in_flight();
    metrics.lag_messages.store(entries, Ordering::Relaxed);
    let lag_ms = sender.oldest_unacked_hlc().map_or(0, |hlc| {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        now_ms.saturating_sub(hlc_physical_ms(hlc))
    });
    metrics.lag_ms.store(lag_ms, Ordering::Relaxed);
}

enum Read {
    Records { next: u64, records: Vec<LogRecord> },
    Truncated { log_start: u64 },
}

/// Reads records from the local log for the sender. A read from 0 starts at the earliest
/// retained record; any other position below it was removed by retention.
fn read_records(
    storage: &Storage,
    filter: &DestinationFilter,
    from: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Read, ReplicatorError> {
    let (log_start, _) = storage.log_range();
    let at = match from {
        0 => log_start,
        position if position < log_start => return Ok(Read::Truncated { log_start }),
        position => position,
    };
    let read = storage.read_log(at, max_entries, max_bytes)?;
    let next = read
        .last()
        .map_or(from, |(position, len, _)| position + u64::from(*len));
    let mut records = Vec::with_capacity(read.len());
    for (position, _, record) in read {
        // Selective replication: a record the destination must not receive is left out; the
        // batch range still covers it, so the receiver's progress moves past it.
        if record.origin.region == storage.region() && !filter.ships(&record) {
            continue;
        }
        records.push(LogRecord {
            origin_region: record.origin.region.clone(),
            entry: Entry {
                position,
                hlc: record.hlc,
                message_id: record.message_id.clone(),
                payload: record.encode()?,
            },
        });
    }
    Ok(Read::Records { next, records })
}

/// What a digest scan of the local log found.
struct OriginScan {
    digest: RangeDigest,
    /// Starts of the last records at or before the range's midpoint and end: where scans of
    /// the halves (if the range mismatches) and of the next range can begin.
    boundaries: [Option<u64>; 2],
}

/// The digest of this region's own records in `[start, end)` of its log that the link ships,
/// scanning from `scan_from` (a known record boundary at or before `start`; the log's start
/// if none is known).
fn origin_digest(
    storage: &Storage,
    filter: &DestinationFilter,
    scan_from: Option<u64>,
    start: u64,
    end: u64,
) -> Result<OriginScan, ReplicatorError> {
    let mut digest = RangeDigest::new();
    let (log_start, _) = storage.log_range();
    let mid = start + (end - start) / 2;
    let mut boundaries = [None, None];
    let mut at = scan_from.unwrap_or(log_start).max(log_start);
    while at < end {
        let records = storage.read_log(at, usize::MAX, 4 << 20)?;
        let Some((last, len, _)) = records.last() else {
            break;
        };
        at = last + u64::from(*len);
        for (position, _, record) in &records {
            if *position <= mid {
                boundaries[0] = Some(*position);
            }
            if *position <= end {
                boundaries[1] = Some(*position);
            }
            if (start..end).contains(position)
                && record.origin.region == storage.region()
                && filter.ships(record)
            {
                digest.add_record(record);
            }
        }
    }
    Ok(OriginScan { digest, boundaries })
}
