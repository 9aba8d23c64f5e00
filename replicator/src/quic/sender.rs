//! Outbound links: one task per peer region that connects, runs a [`Sender`] session against
//! this cell's log, and reconnects with backoff when the session ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_cell::{Storage, StorageError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{PeerConfig, Shared, now_ms, sleep_until, spawn_reader, write_frame};
use crate::digest::RangeDigest;
use crate::error::ReplicatorError;
use crate::link::backoff::Backoff;
use crate::link::frame::Entry;
use crate::link::sender::{LogRecord, Sender, SenderAction};

/// Keeps one outbound link to `peer` up until the replicator shuts down.
pub(super) async fn link_loop(shared: Arc<Shared>, peer: PeerConfig, seed: u64) {
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
        let link_id: u64 = rng.random();
        match session(&shared, &peer, link_id, &mut backoff).await {
            Ok(()) => {
                tracing::info!(peer = %peer.region, link_id, "outbound link session ended");
            }
            Err(error) => {
                shared
                    .stats
                    .outbound_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %peer.region, link_id, %error, "outbound link session failed");
            }
        }
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
    // Origin position up to which the peer's copy matched this log's digest in this session.
    let mut verified_through = 0u64;
    let verify_every = shared.config.verify_interval_ms.map(Duration::from_millis);
    let mut next_verify = verify_every.map(|every| epoch + every);
    let result = loop {
        match drive(
            shared,
            &mut sender,
            &mut send,
            backoff,
            epoch,
            &mut verified_through,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(error) => break Err(error),
        }
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
                // Ask for the digest of what the peer acknowledged since the last match.
                let acked = sender.acked_through();
                if acked > verified_through {
                    sender.request_digest(verified_through, acked, now_ms(epoch));
                }
                next_verify = verify_every.map(|every| tokio::time::Instant::now() + every);
            }
            _ = shutdown.wait_for(|stop| *stop) => sender.shutdown(now_ms(epoch)),
        }
    };
    let _ = send.finish();
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
    verified_through: &mut u64,
) -> Result<bool, ReplicatorError> {
    let limits = shared.config.sender.limits;
    while let Some(action) = sender.poll_action() {
        match action {
            SenderAction::Send(frame) => {
                if let crate::link::Frame::Batch { entries, .. } = &frame {
                    shared
                        .stats
                        .sent_records
                        .fetch_add(entries.len() as u64, Ordering::Relaxed);
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
                let read = tokio::task::spawn_blocking(move || {
                    read_records(&storage, from, max_entries, max_bytes)
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
                let local =
                    tokio::task::spawn_blocking(move || origin_digest(&storage, start, end))
                        .await??;
                if (local.count(), local.value()) == (count, digest) {
                    shared.stats.digests_matched.fetch_add(1, Ordering::Relaxed);
                    if start == *verified_through {
                        *verified_through = end;
                    }
                } else {
                    shared
                        .stats
                        .digest_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        origin = %origin_region, start, end,
                        local_count = local.count(), replica_count = count,
                        "replica range differs from the origin"
                    );
                }
            }
            SenderAction::Close(failure) => {
                tracing::info!(%failure, "outbound link session closing");
                return Ok(false);
            }
        }
    }
    Ok(!sender.is_closed())
}

enum Read {
    Records { next: u64, records: Vec<LogRecord> },
    Truncated { log_start: u64 },
}

/// Reads records from the local log for the sender. A read from 0 starts at the earliest
/// retained record; any other position below it was removed by retention.
fn read_records(
    storage: &Storage,
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

/// The digest of this region's own records in `[start, end)` of its log.
fn origin_digest(storage: &Storage, start: u64, end: u64) -> Result<RangeDigest, ReplicatorError> {
    let mut digest = RangeDigest::new();
    let (log_start, _) = storage.log_range();
    let mut at = start.max(log_start);
    while at < end {
        let records = storage.read_log(at, usize::MAX, 4 << 20)?;
        let Some((last, len, _)) = records.last() else {
            break;
        };
        at = last + u64::from(*len);
        for (position, _, record) in &records {
            if *position < end && record.origin.region == storage.region() {
                digest.add_record(record);
            }
        }
    }
    Ok(digest)
}
