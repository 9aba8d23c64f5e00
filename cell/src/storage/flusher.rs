//! The flusher thread: makes written data durable and acknowledges `sync` appends.
//!
//! In `sync` mode `max_concurrent_fsyncs` threads fsync as soon as something is written that no
//! fsync in flight covers. Appends that
//! are written while an fsync runs wait for the next one, so one fsync covers every append that
//! arrived during the previous one: under load the number of appends per fsync grows with the
//! load, which is the whole point of group commit. `group_commit_max_wait_us` may delay an fsync
//! a little to gather more appends when the load is light.
//!
//! In `async` mode it fsyncs every `async_flush_interval_ms`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::storage::{Durability, PendingAck, Shared};

pub(crate) fn run(shared: &Shared) {
    match shared.config.durability {
        Durability::Sync => run_sync(shared),
        Durability::Async => run_async(shared),
    }
}

/// One of `max_concurrent_fsyncs` flusher threads in `sync` mode. A thread starts an fsync only
/// for data that no fsync in flight covers yet, so the threads never sync the same bytes twice,
/// and an append written during an fsync need not wait for it to finish before its own starts.
fn run_sync(shared: &Shared) {
    let max_wait = Duration::from_micros(shared.config.group_commit_max_wait_us);
    let max_bytes = shared.config.group_commit_max_bytes as u64;
    loop {
        let target = {
            let mut queue = shared.flush_queue.lock();
            loop {
                if queue.pending.is_empty() && queue.shutdown {
                    return;
                }
                let uncovered =
                    shared.written_end.load(Ordering::Acquire) > queue.fsync_started_up_to;
                if !queue.pending.is_empty() && (uncovered || shared.poison_error().is_some()) {
                    break;
                }
                shared.flush_signal.wait(&mut queue);
            }
            if !max_wait.is_zero() && !queue.shutdown {
                let deadline = Instant::now() + max_wait;
                while unflushed_bytes(shared) < max_bytes && !queue.shutdown {
                    if shared
                        .flush_signal
                        .wait_until(&mut queue, deadline)
                        .timed_out()
                    {
                        break;
                    }
                }
            }
            // Read the written position before the active segment: anything written up to it
            // is either in that segment or in one the writer fsynced when it sealed it.
            let target = shared.written_end.load(Ordering::Acquire);
            queue.fsync_started_up_to = queue.fsync_started_up_to.max(target);
            target
        };
        if shared.poison_error().is_some() {
            // Keep running so that appends queued after the poison are failed, not left waiting.
            fail_pending(shared);
            continue;
        }
        let segment = Arc::clone(&*shared.active.lock());
        if let Err(error) = shared.sync_segment(&segment) {
            shared.poison("fsync", error);
            fail_pending(shared);
            continue;
        }
        shared.counters.fsync_calls.fetch_add(1, Ordering::Relaxed);
        mark_durable(shared, target);
        // Another thread's later fsync may have finished first: acknowledge up to the furthest
        // durable position, not just this fsync's target.
        let durable = shared.durable_end.load(Ordering::Acquire);
        let done: Vec<PendingAck> = {
            let mut queue = shared.flush_queue.lock();
            let mut done = Vec::new();
            while queue
                .pending
                .front()
                .is_some_and(|pending| pending.end <= durable)
            {
                if let Some(pending) = queue.pending.pop_front() {
                    done.push(pending);
                }
            }
            // Wake the other flushers: they may be waiting on data this fsync covered.
            shared.flush_signal.notify_all();
            done
        };
        for pending in done {
            for (reply, results) in pending.replies {
                let _ = reply.send(Ok(results));
            }
        }
    }
}

fn run_async(shared: &Shared) {
    let interval = Duration::from_millis(shared.config.async_flush_interval_ms);
    loop {
        let shutdown = {
            let mut queue = shared.flush_queue.lock();
            if !queue.shutdown {
                let _ = shared.flush_signal.wait_for(&mut queue, interval);
            }
            queue.shutdown
        };
        if shared.poison_error().is_some() {
            return;
        }
        let target = shared.written_end.load(Ordering::Acquire);
        if target > shared.durable_end.load(Ordering::Acquire) {
            let segment = Arc::clone(&*shared.active.lock());
            if let Err(error) = shared.sync_segment(&segment) {
                shared.poison("fsync", error);
                return;
            }
            shared.counters.fsync_calls.fetch_add(1, Ordering::Relaxed);
            mark_durable(shared, target);
        }
        if shutdown {
            return;
        }
    }
}

fn unflushed_bytes(shared: &Shared) -> u64 {
    shared
        .written_end
        .load(Ordering::Acquire)
        .saturating_sub(shared.durable_end.load(Ordering::Acquire))
}

fn mark_durable(shared: &Shared, target: u64) {
    shared.durable_end.fetch_max(target, Ordering::AcqRel);
    let _queue = shared.flush_queue.lock();
    shared.durable_signal.notify_all();
}

/// Fails every waiting append with the poison error: they were written but never made durable.
fn fail_pending(shared: &Shared) {
    let pending: Vec<PendingAck> = shared.flush_queue.lock().pending.drain(..).collect();
    for ack in pending {
        for (reply, _) in ack.replies {
            let error = shared
                .poison_error()
                .unwrap_or(crate::error::StorageError::Closed);
            let _ = reply.send(Err(error));
        }
    }
}
