//! The broker: RocketMQ 5 messaging semantics on top of one cell's [`Storage`].
//!
//! The broker is the IO shell around the sans-IO cores ([`crate::messaging::pop::PopQueue`],
//! [`crate::messaging::timer::TimerWheel`], [`crate::messaging::txn::TransactionTable`],
//! [`crate::messaging::assign::Membership`]): it reads and appends records, persists consumer
//! state in the storage's consumer-offsets column family, and wakes long polls through the
//! storage's visibility watch. Time comes from an injected [`Clock`].
//!
//! Files: `meta` (topics and groups), `send`, `pop` (receive, ack, invisibility, dead letters),
//! `pull` (offsets, assignment, resets), `timers`, `txn`, `query`, `trace`,
//! `replicated_state` (consumer state shipped to and applied from other regions).

mod adopt;
mod keys;
mod meta;
mod pop;
mod pull;
mod query;
mod replicated_state;
mod send;
mod timers;
mod trace;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, broadcast, watch};

use crate::messaging::assign::Membership;
use crate::messaging::clock::Clock;
use crate::messaging::error::MessagingError;
use crate::messaging::limits::Limits;
use crate::messaging::pop::PopQueue;
use crate::messaging::timer::TimerWheel;
use crate::messaging::topic::{GroupConfig, TopicConfig};
use crate::messaging::txn::{TransactionPolicy, TransactionTable};
use crate::storage::{CF_CONSUMER_OFFSETS, Record, Storage};

pub use adopt::AdoptionOutcome;
pub use pop::ReceiveRequest;
pub use pull::PullResult;
pub use query::MAX_QUERY_RESULTS;
pub use replicated_state::ConsumerStateCounters;
pub use timers::ReleaseOutcome;
pub use trace::{MAX_TRACE_EVENTS_PER_QUERY, TraceEvent, TraceKind};
pub use txn::{TransactionCheck, TransactionResolution};

/// Settings of the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Request limits.
    pub limits: Limits,
    /// Transaction check-back schedule.
    pub transactions: TransactionPolicy,
    /// Record lifecycle events per message (costs one extra append per event).
    pub trace_enabled: bool,
    /// A per-queue consumer silent this long leaves its group (RocketMQ: 120 s).
    pub session_timeout_ms: u64,
    /// Most records read from the log in one read while filling consumer state.
    pub max_read_batch_messages: usize,
    /// Most bytes read from the log in one read.
    pub max_read_batch_bytes: usize,
    /// Most delay messages released in one append.
    pub max_timer_release_batch: usize,
    /// Start with delay-message releases held until [`Broker::set_timers_held`]`(false)`: a
    /// region returning from a failure holds them until it has caught up with the region that
    /// adopted its timers, whose released copies tell it what not to release again.
    pub hold_timers_at_start: bool,
    /// Most transaction checks or rollbacks issued per round.
    pub max_transaction_actions_per_round: usize,
    /// Longest the background loop sleeps with nothing due (it also wakes on new timers).
    pub max_idle_ms: u64,
    /// Capacity of the channel that carries check-back requests to the gRPC layer.
    pub max_pending_transaction_checks: usize,
    /// Longest an operation waits for a record it just stored to become readable (the indexer
    /// runs slightly behind appends), e.g. a commit right after its half message was sent.
    pub max_visibility_wait_ms: u64,
    /// Longest wait of a send to a `sync-quorum` topic for a majority of the topic's regions;
    /// past it the send is refused (stored here, not acknowledged).
    pub sync_quorum_timeout_ms: u64,
    /// Consumer progress (acks, invisibility, committed offsets) is written without an fsync
    /// and made durable at most this long after (one WAL fsync for everything since): a power
    /// loss can undo that much progress, which means redeliveries, never lost messages. A
    /// process crash loses nothing.
    pub consumer_state_sync_interval_ms: u64,
    /// Append consumption changes as records that other regions apply (see
    /// `replicated_state`). Off for a cell that never replicates.
    pub replicate_consumer_state: bool,
    /// Consumption changes waiting to be appended as state records; when full, new ones are
    /// dropped (counted) rather than slowing the consumer down.
    pub max_pending_state_events: usize,
    /// Most state records appended in one append.
    pub max_state_batch_events: usize,
    /// Other regions' marks on offsets a group has not read here yet, per queue; past that the
    /// newest are dropped (those messages are delivered here once more).
    pub max_remote_marks_per_queue: usize,
    /// Other regions' state records whose message has not arrived here yet; past that the
    /// oldest are dropped.
    pub max_waiting_state_records: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            limits: Limits::default(),
            transactions: TransactionPolicy::default(),
            trace_enabled: true,
            session_timeout_ms: 120_000,
            max_read_batch_messages: 256,
            max_read_batch_bytes: 8 << 20,
            max_timer_release_batch: 512,
            hold_timers_at_start: false,
            max_transaction_actions_per_round: 256,
            max_idle_ms: 1_000,
            max_pending_transaction_checks: 4096,
            max_visibility_wait_ms: 5_000,
            sync_quorum_timeout_ms: 5_000,
            consumer_state_sync_interval_ms: 200,
            replicate_consumer_state: true,
            max_pending_state_events: 65_536,
            max_state_batch_events: 1_024,
            max_remote_marks_per_queue: 65_536,
            max_waiting_state_records: 10_000,
        }
    }
}

/// Key of one (group, topic, queue) consumption state.
type PopKey = (String, String, u32);

/// The in-memory copy of a persisted pop state, with the state's change count when it was last
/// written (`None`: never written or must be rewritten), so that unchanged states are neither
/// encoded nor rewritten.
#[derive(Debug)]
pub(crate) struct PopSlot {
    pub(crate) queue: PopQueue,
    pub(crate) persisted_changes: Option<u64>,
}

/// RocketMQ 5 messaging over one cell's storage. Share it behind an `Arc`.
pub struct Broker {
    storage: Arc<Storage>,
    config: BrokerConfig,
    clock: Arc<dyn Clock>,
    topics: RwLock<HashMap<String, TopicConfig>>,
    groups: RwLock<HashMap<String, GroupConfig>>,
    /// Serialises metadata changes so that the persisted lists never lose a concurrent update.
    meta_write: Mutex<()>,
    pop: Mutex<HashMap<PopKey, Arc<tokio::sync::Mutex<PopSlot>>>>,
    members: Mutex<HashMap<String, Membership>>,
    timers: Mutex<TimerWheel>,
    /// Sends that are appending delay messages; the timer checkpoint must not pass them.
    timer_sends_in_progress: AtomicU64,
    /// Release rounds whose appended copies the log has not fsynced yet (`async` mode): the
    /// log position of the round's last record and its timer offsets. Their done markers and
    /// the checkpoint wait for the fsync, so that a power loss cannot keep the marker and lose
    /// the released copy.
    releases_awaiting_fsync: Mutex<std::collections::VecDeque<(u64, Vec<u64>)>>,
    /// The timer topic's restart checkpoint as stored.
    timer_checkpoint: Mutex<timers::Checkpoint>,
    /// The half topic's restart checkpoint as stored.
    txn_checkpoint: Mutex<timers::Checkpoint>,
    txns: Mutex<TransactionTable>,
    txn_sends_in_progress: AtomicU64,
    /// Wakes the background loop when a timer or transaction is added.
    background_wake: Notify,
    /// Bumped on every ack, nack and dead-letter, so that long polls blocked on FIFO order or
    /// invisibility look again.
    consumer_events: watch::Sender<u64>,
    round_robin: AtomicU64,
    /// Receives and pulls currently waiting in a long poll.
    waiting_polls: AtomicU64,
    trace_sequence: AtomicU64,
    transaction_checks: broadcast::Sender<TransactionCheck>,
    /// Consumer progress was written since the last WAL sync.
    progress_unsynced: std::sync::atomic::AtomicBool,
    /// Topics whose sends wait for a majority of their regions (see [`crate::messaging::quorum`]).
    sync_quorum_topics: RwLock<std::collections::HashSet<String>>,
    /// What those sends wait on; `None` refuses them.
    quorum: RwLock<Option<Arc<dyn crate::messaging::quorum::ReplicationQuorum>>>,
    /// Whether this region may take a write (the router's answer); `None` accepts all.
    write_gate: RwLock<Option<Arc<dyn crate::messaging::gate::WriteGate>>>,
    /// Delay-message releases are held (see `BrokerConfig::hold_timers_at_start`).
    timers_held: std::sync::atomic::AtomicBool,
    /// Consumer state shipped to and applied from other regions.
    replicated: replicated_state::ReplicatedState,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Broker")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the broker over `storage`: loads topics and groups, rebuilds pending delay timers
    /// and open transactions from the log. Consumer states load lazily on first use.
    pub fn open(
        storage: Arc<Storage>,
        config: BrokerConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, MessagingError> {
        let (consumer_events, _) = watch::channel(0);
        let (transaction_checks, _) =
            broadcast::channel(config.max_pending_transaction_checks.max(1));
        let trace_sequence = AtomicU64::new(clock.now_ms().wrapping_mul(1_000));
        // Unique across restarts like the trace sequence: state record ids must never repeat,
        // or the receiving region would drop a new record as a duplicate.
        let replicated = replicated_state::ReplicatedState::new(
            config.max_pending_state_events,
            clock.now_ms().wrapping_mul(1_000),
        );
        let hold_timers = config.hold_timers_at_start;
        let broker = Broker {
            storage,
            config,
            clock,
            topics: RwLock::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            meta_write: Mutex::new(()),
            pop: Mutex::new(HashMap::new()),
            members: Mutex::new(HashMap::new()),
            timers: Mutex::new(TimerWheel::default()),
            timer_sends_in_progress: AtomicU64::new(0),
            releases_awaiting_fsync: Mutex::new(std::collections::VecDeque::new()),
            timer_checkpoint: Mutex::new(timers::Checkpoint::default()),
            txn_checkpoint: Mutex::new(timers::Checkpoint::default()),
            txns: Mutex::new(TransactionTable::default()),
            txn_sends_in_progress: AtomicU64::new(0),
            background_wake: Notify::new(),
            consumer_events,
            round_robin: AtomicU64::new(0),
            waiting_polls: AtomicU64::new(0),
            trace_sequence,
            transaction_checks,
            progress_unsynced: std::sync::atomic::AtomicBool::new(false),
            sync_quorum_topics: RwLock::new(std::collections::HashSet::new()),
            quorum: RwLock::new(None),
            write_gate: RwLock::new(None),
            timers_held: std::sync::atomic::AtomicBool::new(hold_timers),
            replicated,
        };
        broker.load_meta()?;
        broker.load_timers()?;
        broker.load_transactions()?;
        broker.load_adopted()?;
        Ok(Arc::new(broker))
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn put_state(&self, key: &[u8], value: &[u8]) -> Result<(), MessagingError> {
        Ok(self.storage.put_state(CF_CONSUMER_OFFSETS, key, value)?)
    }

    /// Writes consumer progress: durable against a process crash at once, against a power loss
    /// within `consumer_state_sync_interval_ms` (see [`BrokerConfig`]).
    fn put_progress(&self, key: &[u8], value: &[u8]) -> Result<(), MessagingError> {
        self.put_progress_many([(key, value)])
    }

    /// Several [`Self::put_progress`] writes as one atomic write.
    fn put_progress_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), MessagingError> {
        self.storage
            .put_states_unsynced(CF_CONSUMER_OFFSETS, entries)?;
        self.progress_unsynced.store(true, Ordering::Release);
        Ok(())
    }

    fn get_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MessagingError> {
        Ok(self.storage.get_state(CF_CONSUMER_OFFSETS, key)?)
    }

    fn delete_state(&self, key: &[u8]) -> Result<(), MessagingError> {
        Ok(self.storage.delete_state(CF_CONSUMER_OFFSETS, key)?)
    }

    fn notify_consumers(&self) {
        self.consumer_events
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Reads the record at `offset` of a queue, if it is (still) stored and visible.
    fn read_one(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<Option<Record>, MessagingError> {
        match self
            .storage
            .read_queue(topic, queue_id, offset, 1, usize::MAX)
        {
            Ok(mut records) => Ok(records.pop().filter(|record| record.queue_offset == offset)),
            Err(crate::error::StorageError::OutOfRange { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Waits until the record at `offset` of a queue is readable; false if it is not within
    /// `max_visibility_wait_ms`. Waits on the storage's visibility watch, never in a sleep loop.
    async fn wait_visible(&self, topic: &str, queue_id: u32, offset: u64) -> bool {
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.config.max_visibility_wait_ms);
        let mut visible = self.storage.subscribe();
        // Each round waits for the visible end to move; the deadline bounds the rounds.
        loop {
            visible.borrow_and_update();
            if self
                .storage
                .queue_range(topic, queue_id)
                .is_some_and(|range| range.next > offset)
            {
                return true;
            }
            // Timed out, or the storage is shutting down (its watch is gone).
            if !matches!(
                tokio::time::timeout_at(deadline, visible.changed()).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
    }

    /// Runs the background duties — releasing due delay messages, checking back on open
    /// transactions, syncing consumer progress, appending consumer-state records and applying
    /// other regions' — until `shutdown` turns true. Errors are logged and retried next round.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        tokio::join!(
            Arc::clone(&self).run_duties(shutdown.clone()),
            self.sync_consumer_state(shutdown.clone()),
            self.run_consumer_state(shutdown)
        );
    }

    /// Makes consumer progress durable every `consumer_state_sync_interval_ms` while there is
    /// unsynced progress, and once more at shutdown.
    async fn sync_consumer_state(&self, mut shutdown: watch::Receiver<bool>) {
        let period =
            std::time::Duration::from_millis(self.config.consumer_state_sync_interval_ms.max(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => true,
                _ = ticks.tick() => false,
            };
            if self.progress_unsynced.swap(false, Ordering::AcqRel) {
                let storage = Arc::clone(&self.storage);
                // The fsync blocks; keep it off the runtime's worker threads.
                let synced = tokio::task::spawn_blocking(move || storage.sync_state()).await;
                if !matches!(synced, Ok(Ok(()))) {
                    tracing::warn!(?synced, "syncing consumer progress failed; retrying");
                    self.progress_unsynced.store(true, Ordering::Release);
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn run_duties(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut visible = self.storage.subscribe();
        while !*shutdown.borrow() {
            let mut wait_for_visibility = false;
            let mut failed = false;
            match self.release_due_timers().await {
                Ok(outcome) => wait_for_visibility = outcome.waiting_for_visibility,
                Err(error) => {
                    tracing::warn!(%error, "releasing delay messages failed; retrying");
                    failed = true;
                }
            }
            if let Err(error) = self.check_transactions().await {
                tracing::warn!(%error, "transaction check round failed; retrying");
                failed = true;
            }
            if failed {
                // Back off instead of spinning on a failing storage (e.g. a poisoned log).
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(self.config.max_idle_ms)) => {}
                }
                continue;
            }
            let now = self.now_ms();
            let next_due = [
                self.timers.lock().next_due_ms(),
                self.txns.lock().next_due_ms(),
            ]
            .into_iter()
            .flatten()
            .min();
            let mut wait_ms =
                next_due.map_or(self.config.max_idle_ms, |due| due.saturating_sub(now));
            wait_ms = wait_ms.min(self.config.max_idle_ms);
            if wait_for_visibility {
                // A due delay message is not yet readable: wait for the indexer, not a spin.
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = visible.changed() => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(self.config.max_idle_ms)) => {}
                }
                continue;
            }
            if wait_ms == 0 {
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.background_wake.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(wait_ms)) => {}
            }
        }
    }
}

impl Broker {
    /// Receives and pulls waiting in long polls right now (for metrics).
    pub fn waiting_polls(&self) -> u64 {
        self.waiting_polls.load(Ordering::Acquire)
    }

    /// Admits one more long poll, or refuses it when too many are waiting.
    fn admit_poll(&self, long_polling_ms: u64) -> Result<Option<InProgress<'_>>, MessagingError> {
        if long_polling_ms == 0 {
            return Ok(None);
        }
        let guard = InProgress::enter(&self.waiting_polls);
        let max = self.config.limits.max_waiting_polls;
        if self.waiting_polls.load(Ordering::Acquire) > max {
            return Err(MessagingError::TooManyRequests {
                detail: format!("{max} receives are already waiting in long polls"),
            });
        }
        Ok(Some(guard))
    }
}

/// Counts an operation in progress for as long as the guard lives.
struct InProgress<'a>(&'a AtomicU64);

impl<'a> InProgress<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        InProgress(counter)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_adopt;
#[cfg(test)]
mod tests_audit;
#[cfg(test)]
mod tests_consume;
#[cfg(test)]
mod tests_features;
#[cfg(test)]
mod tests_gate;
#[cfg(test)]
mod tests_quorum;
#[cfg(test)]
mod tests_recovery;
#[cfg(test)]
mod tests_replicated;
#[cfg(test)]
mod tests_restart;
