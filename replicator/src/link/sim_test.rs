//! A sender and a receiver over an in-memory channel that loses, duplicates and reorders frames,
//! with disconnects and receiver crashes (which may tear an append and lose the checkpoint's
//! latest write), driven by a seeded scheduler. After a chaos phase, a calm phase must deliver
//! every record that originated at the source exactly once, in origin order, and none that did
//! not; the window must never be exceeded; and digests asked for mid-run must match.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::backoff::Backoff;
use super::frame::{self, Entry, Frame, Limits};
use super::receiver::{Receiver, ReceiverAction, ReceiverConfig};
use super::sender::{LogRecord, Sender, SenderAction, SenderConfig};
use crate::digest::RangeDigest;

const SOURCE: &str = "a";
const DESTINATION: &str = "b";
/// The origin log's retained part starts here, so a read from 0 covers a removed prefix.
const LOG_BASE: u64 = 4096;

#[derive(Debug, Clone, Copy)]
struct Faults {
    drop_per_mille: u32,
    duplicate_per_mille: u32,
    reorder_per_mille: u32,
    disconnect_per_mille: u32,
    crash_per_mille: u32,
}

const CALM: Faults = Faults {
    drop_per_mille: 0,
    duplicate_per_mille: 0,
    reorder_per_mille: 0,
    disconnect_per_mille: 0,
    crash_per_mille: 0,
};

struct OriginRecord {
    len: u64,
    origin: &'static str,
    entry: Entry,
}

/// The receiving cell: what it stored, and its progress in memory and on disk.
#[derive(Default)]
struct Store {
    entries: Vec<Entry>,
    ids: HashSet<String>,
    /// Applied-through position known to this process (lost by a crash).
    applied_in_memory: Option<u64>,
    persisted: u64,
}

impl Store {
    fn apply(&mut self, entries: &[Entry]) {
        for entry in entries {
            if self.ids.insert(entry.message_id.clone()) {
                self.entries.push(entry.clone());
            }
        }
    }
}

struct Session {
    sender: Sender,
    receiver: Receiver,
    to_receiver: VecDeque<Vec<u8>>,
    to_sender: VecDeque<Vec<u8>>,
    read: Option<(u64, usize, usize)>,
    apply: Option<(u64, Vec<Entry>)>,
    persist: Option<u64>,
}

struct Sim {
    rng: StdRng,
    now_ms: u64,
    log: Vec<OriginRecord>,
    /// Records of `log` visible to readers.
    visible: usize,
    store: Store,
    session: Option<Session>,
    reconnect_at_ms: u64,
    backoff: Backoff,
    next_link_id: u64,
    limits: Limits,
    window: (u64, u32),
    digests_checked: usize,
}

fn positions_end(log: &[OriginRecord], count: usize) -> u64 {
    LOG_BASE + log[..count].iter().map(|record| record.len).sum::<u64>()
}

impl Sim {
    fn new(seed: u64, records: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let log = (0..records)
            .map(|index| {
                let payload_len = rng.random_range(0..120);
                OriginRecord {
                    len: 40 + payload_len as u64,
                    // One record in five was replicated here from elsewhere: never forwarded.
                    origin: if rng.random_ratio(1, 5) { "c" } else { SOURCE },
                    entry: Entry {
                        position: 0,
                        hlc: 1_000 + index as u64,
                        message_id: format!("m{index}"),
                        payload: vec![index as u8; payload_len],
                    },
                }
            })
            .scan(LOG_BASE, |at, mut record| {
                record.entry.position = *at;
                *at += record.len;
                Some(record)
            })
            .collect();
        Sim {
            backoff: Backoff::new(10, 200, seed ^ 0x5eed),
            rng,
            now_ms: 0,
            log,
            visible: 0,
            store: Store::default(),
            session: None,
            reconnect_at_ms: 0,
            next_link_id: 1,
            limits: Limits {
                max_frame_bytes: 4096,
                max_batch_entries: 16,
            },
            window: (2048, 24),
            digests_checked: 0,
        }
    }

    fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            limits: self.limits,
            max_batch_bytes: 1500,
            max_batch_entries: 16,
            max_inflight_batches: 8,
            ping_interval_ms: 100,
            idle_timeout_ms: 1_000,
            handshake_timeout_ms: 500,
        }
    }

    fn receiver_config(&self) -> ReceiverConfig {
        ReceiverConfig {
            limits: self.limits,
            window_bytes: self.window.0,
            window_entries: self.window.1,
            max_apply_entries: 20,
            idle_timeout_ms: 1_000,
            handshake_timeout_ms: 500,
        }
    }

    fn connect(&mut self) {
        let local_end = positions_end(&self.log, self.visible);
        let sender = Sender::new(
            self.sender_config(),
            self.next_link_id,
            SOURCE,
            DESTINATION,
            local_end,
            self.now_ms,
        );
        self.next_link_id += 1;
        let receiver = Receiver::new(self.receiver_config(), DESTINATION, self.now_ms);
        self.session = Some(Session {
            sender,
            receiver,
            to_receiver: VecDeque::new(),
            to_sender: VecDeque::new(),
            read: None,
            apply: None,
            persist: None,
        });
    }

    /// Ends the session as a dropped connection does: the shell still finishes an apply and a
    /// checkpoint write it had started (they are awaited, not cancelled).
    fn disconnect(&mut self) {
        if let Some(mut session) = self.session.take() {
            if let Some((end, entries)) = session.apply.take() {
                self.store.apply(&entries);
                self.store.applied_in_memory = Some(end);
            }
            if let Some(position) = session.persist.take() {
                self.store.persisted = self.store.persisted.max(position);
            }
            self.schedule_reconnect();
        }
    }

    /// The receiving process dies: an apply in progress may be torn (a prefix stored), a
    /// checkpoint write in progress may be lost, and the in-memory progress is gone.
    fn crash_receiver(&mut self) {
        if let Some(mut session) = self.session.take() {
            if let Some((_, entries)) = session.apply.take() {
                let kept = self.rng.random_range(0..=entries.len());
                self.store.apply(&entries[..kept]);
            }
            if let Some(position) = session.persist.take()
                && self.rng.random_bool(0.5)
            {
                self.store.persisted = self.store.persisted.max(position);
            }
            self.store.applied_in_memory = None;
            self.schedule_reconnect();
        }
    }

    fn schedule_reconnect(&mut self) {
        self.reconnect_at_ms = self.now_ms + self.backoff.next_delay_ms();
    }

    fn push_frame(
        rng: &mut StdRng,
        queue: &mut VecDeque<Vec<u8>>,
        frame: &Frame,
        limits: &Limits,
        faults: Faults,
    ) {
        let bytes = frame
            .encode(limits)
            .expect("the state machines emit encodable frames");
        if rng.random_ratio(faults.drop_per_mille, 1000) {
            return;
        }
        if rng.random_ratio(faults.duplicate_per_mille, 1000) {
            queue.push_back(bytes.clone());
        }
        queue.push_back(bytes);
    }

    fn pop_frame(
        rng: &mut StdRng,
        queue: &mut VecDeque<Vec<u8>>,
        limits: &Limits,
        faults: Faults,
    ) -> Option<Frame> {
        let at = if queue.len() > 1 && rng.random_ratio(faults.reorder_per_mille, 1000) {
            rng.random_range(0..queue.len())
        } else {
            0
        };
        let bytes = queue.remove(at)?;
        let (frame, used) = frame::decode(&bytes, limits)
            .expect("frames decode")
            .expect("frames are whole");
        assert_eq!(used, bytes.len());
        Some(frame)
    }

    /// Carries out every action the two state machines queued.
    fn drain_actions(&mut self, faults: Faults) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let mut closed = false;
        loop {
            let mut progressed = false;
            while let Some(action) = session.sender.poll_action() {
                progressed = true;
                match action {
                    SenderAction::Send(frame) => Self::push_frame(
                        &mut self.rng,
                        &mut session.to_receiver,
                        &frame,
                        &self.limits,
                        faults,
                    ),
                    SenderAction::ReadLog {
                        from,
                        max_entries,
                        max_bytes,
                    } => {
                        assert!(session.read.is_none(), "one read at a time");
                        session.read = Some((from, max_entries, max_bytes));
                    }
                    SenderAction::Resumed { .. } => self.backoff.reset(),
                    SenderAction::PeerDigest {
                        start,
                        end,
                        count,
                        digest,
                        ..
                    } => {
                        let mut expected = RangeDigest::new();
                        for record in &self.log {
                            let position = record.entry.position;
                            if record.origin == SOURCE && (start..end).contains(&position) {
                                expected.add_identity(
                                    position,
                                    record.entry.hlc,
                                    &record.entry.message_id,
                                );
                            }
                        }
                        assert_eq!((count, digest), (expected.count(), expected.value()));
                        self.digests_checked += 1;
                    }
                    SenderAction::Close(_) => closed = true,
                }
            }
            while let Some(action) = session.receiver.poll_action() {
                progressed = true;
                match action {
                    ReceiverAction::Send(frame) => Self::push_frame(
                        &mut self.rng,
                        &mut session.to_sender,
                        &frame,
                        &self.limits,
                        faults,
                    ),
                    ReceiverAction::LoadProgress { source_region, .. } => {
                        assert_eq!(source_region, SOURCE);
                        let persisted = self.store.persisted;
                        let applied = self.store.applied_in_memory.unwrap_or(persisted);
                        session.receiver.on_progress_loaded(applied, persisted);
                    }
                    ReceiverAction::Apply { end, entries, .. } => {
                        assert!(session.apply.is_none(), "one apply at a time");
                        session.apply = Some((end, entries));
                    }
                    ReceiverAction::PersistCheckpoint { position, .. } => {
                        assert!(position <= self.store.applied_in_memory.unwrap_or(0));
                        session.persist = Some(position);
                    }
                    ReceiverAction::ComputeDigest { start, end, .. } => {
                        let mut digest = RangeDigest::new();
                        for entry in &self.store.entries {
                            if (start..end).contains(&entry.position) {
                                digest.add_identity(entry.position, entry.hlc, &entry.message_id);
                            }
                        }
                        session.receiver.answer_digest(
                            SOURCE.into(),
                            start,
                            end,
                            digest.count(),
                            digest.value(),
                        );
                    }
                    ReceiverAction::Close(_) => closed = true,
                }
            }
            if !progressed {
                break;
            }
        }
        let (in_flight_bytes, in_flight_entries) = session.sender.in_flight();
        let (outstanding_bytes, outstanding_entries) = session.receiver.outstanding();
        // The window holds, except for the one entry an idle link may always send.
        assert!(
            in_flight_entries <= u64::from(self.window.1)
                && (in_flight_bytes <= self.window.0 || in_flight_entries == 1),
            "in flight {in_flight_bytes} bytes / {in_flight_entries} entries exceeds the window"
        );
        // The receiver holds a subset of what the sender counts as in flight.
        assert!(outstanding_entries <= in_flight_entries && outstanding_bytes <= in_flight_bytes);
        if closed || session.sender.is_closed() || session.receiver.is_closed() {
            self.disconnect();
        }
    }

    fn do_read(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let Some((from, max_entries, max_bytes)) = session.read.take() else {
            return;
        };
        let visible = &self.log[..self.visible];
        let first = visible.partition_point(|record| record.entry.position < from);
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        for record in &visible[first..] {
            let len = record.entry.wire_len();
            if records.len() >= max_entries || (!records.is_empty() && bytes + len > max_bytes) {
                break;
            }
            bytes += len;
            next = record.entry.position + record.len;
            records.push(LogRecord {
                origin_region: record.origin.to_string(),
                entry: record.entry.clone(),
            });
        }
        session.sender.on_log_read(next, records, self.now_ms);
    }

    fn do_apply(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let Some((end, entries)) = session.apply.take() else {
            return;
        };
        for entry in &entries {
            let record = self
                .log
                .iter()
                .find(|record| record.entry.position == entry.position)
                .expect("entries come from the log");
            assert_eq!(
                record.origin, SOURCE,
                "a record from another origin was forwarded"
            );
        }
        self.store.apply(&entries);
        self.store.applied_in_memory = Some(end);
        session.receiver.on_applied(end);
    }

    fn do_persist(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let Some(position) = session.persist.take() else {
            return;
        };
        self.store.persisted = self.store.persisted.max(position);
        session.receiver.on_checkpoint_persisted(position);
    }

    fn append_some(&mut self) {
        if self.visible < self.log.len() {
            self.visible = (self.visible + self.rng.random_range(1..=8)).min(self.log.len());
            let end = positions_end(&self.log, self.visible);
            if let Some(session) = self.session.as_mut() {
                session.sender.on_local_append(end);
            }
        }
    }

    fn advance_time(&mut self, max_ms: u64) {
        self.now_ms += self.rng.random_range(1..=max_ms);
        if let Some(session) = self.session.as_mut() {
            session.sender.on_timer(self.now_ms);
            session.receiver.on_timer(self.now_ms);
        } else if self.now_ms >= self.reconnect_at_ms {
            self.connect();
        }
    }

    fn step(&mut self, faults: Faults) {
        let choice = self.rng.random_range(0..100);
        let Some(session) = self.session.as_mut() else {
            self.advance_time(50);
            self.drain_actions(faults);
            return;
        };
        match choice {
            0..=24 => {
                if let Some(frame) = Self::pop_frame(
                    &mut self.rng,
                    &mut session.to_receiver,
                    &self.limits,
                    faults,
                ) {
                    session.receiver.on_frame(frame, self.now_ms);
                }
            }
            25..=44 => {
                if let Some(frame) =
                    Self::pop_frame(&mut self.rng, &mut session.to_sender, &self.limits, faults)
                {
                    session.sender.on_frame(frame, self.now_ms);
                }
            }
            45..=57 => self.do_read(),
            58..=70 => self.do_apply(),
            71..=77 => self.do_persist(),
            78..=85 => self.append_some(),
            86..=89 => {
                if session.to_sender.is_empty() && session.to_receiver.is_empty() {
                    let acked = session.sender.acked_through();
                    let start = self.rng.random_range(0..=acked);
                    session.sender.request_digest(start, acked, self.now_ms);
                }
            }
            _ => {
                if self.rng.random_ratio(faults.crash_per_mille, 1000) {
                    self.crash_receiver();
                } else if self.rng.random_ratio(faults.disconnect_per_mille, 1000) {
                    self.disconnect();
                } else {
                    self.advance_time(60);
                }
            }
        }
        self.drain_actions(faults);
    }

    fn delivered_all(&self) -> bool {
        self.visible == self.log.len()
            && self.store.entries.len()
                == self
                    .log
                    .iter()
                    .filter(|record| record.origin == SOURCE)
                    .count()
    }

    fn check_exactly_once_in_order(&self) {
        let expected: Vec<&Entry> = self
            .log
            .iter()
            .filter(|record| record.origin == SOURCE)
            .map(|record| &record.entry)
            .collect();
        let stored: Vec<&Entry> = self.store.entries.iter().collect();
        assert_eq!(stored, expected);
    }
}

fn run(seed: u64, records: usize, faults: Faults) -> Sim {
    let mut sim = Sim::new(seed, records);
    sim.connect();
    for _ in 0..4_000 {
        sim.step(faults);
    }
    // Calm: no faults until everything arrives (bounded, so a livelock fails the test).
    let mut calm_steps = 0;
    while !sim.delivered_all() {
        assert!(calm_steps < 200_000, "no progress in the calm phase");
        sim.step(CALM);
        calm_steps += 1;
    }
    sim.check_exactly_once_in_order();
    sim
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_entry_arrives_exactly_once_in_order(
        seed in any::<u64>(),
        records in 1usize..400,
        drop_per_mille in 0u32..30,
        duplicate_per_mille in 0u32..20,
        reorder_per_mille in 0u32..30,
        disconnect_per_mille in 0u32..60,
        crash_per_mille in 0u32..60,
    ) {
        run(seed, records, Faults {
            drop_per_mille,
            duplicate_per_mille,
            reorder_per_mille,
            disconnect_per_mille,
            crash_per_mille,
        });
    }
}

#[test]
fn a_calm_link_delivers_everything_and_verifies_digests() {
    let sim = run(42, 500, CALM);
    assert!(sim.digests_checked > 0);
    assert_eq!(sim.next_link_id, 2, "a calm link never reconnects");
}

#[test]
fn a_harsh_link_still_delivers_exactly_once() {
    let faults = Faults {
        drop_per_mille: 40,
        duplicate_per_mille: 30,
        reorder_per_mille: 40,
        disconnect_per_mille: 100,
        crash_per_mille: 100,
    };
    for seed in 0..8 {
        let sim = run(seed, 300, faults);
        assert!(
            sim.next_link_id > 2,
            "seed {seed}: the faults caused reconnects"
        );
    }
}
