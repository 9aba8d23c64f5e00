//! Workload history: what producers sent and had acknowledged, what consumers received, acked and
//! nacked, and which faults were injected, each with a time in milliseconds since the run started.
//! Stored as JSON lines (one event per line) so a run can be checked later or by another tool.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{ChaosError, Result};

/// Interpreted fault kinds; the checker's RTO and RPO key on `RegionDown` / `RegionUp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A whole region became unavailable (its nodes killed or cut off); `target` is the region.
    RegionDown,
    /// A region came back; `target` is the region.
    RegionUp,
    /// A link got faults (latency, loss, partition); `target` is the link name.
    LinkFault,
    /// A link's faults were removed; `target` is the link name.
    LinkHeal,
    /// A node was stopped, killed or paused; `target` names it.
    NodeDown,
    /// A node was restarted or resumed; `target` names it.
    NodeUp,
    /// Anything else worth having on the timeline.
    Other,
}

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A producer attempted a send.
    Send {
        /// Message id, unique per message across retries and regions.
        id: String,
        /// Region the send went to.
        region: String,
        /// Topic.
        topic: String,
        /// FIFO message group, if the message is ordered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// Position within the message group (0, 1, 2, ... in send order).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// Producer identity, so RTO can follow producers displaced by a failover.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        producer: Option<String>,
        /// Send attempt, from 1.
        attempt: u32,
        /// Time of the attempt.
        at_ms: u64,
    },
    /// The broker acknowledged the send (it is now durable by the fabric's promise).
    SendAck {
        /// Message id.
        id: String,
        /// Region that acknowledged.
        region: String,
        /// Time of the acknowledgement.
        at_ms: u64,
    },
    /// The send failed for good (after the client's retries).
    SendFailed {
        /// Message id.
        id: String,
        /// Region that was tried last.
        region: String,
        /// Client-side reason.
        reason: String,
        /// Time of the failure.
        at_ms: u64,
    },
    /// The message was observed stored in a region (e.g. replicated there), without a consumer.
    Arrival {
        /// Message id.
        id: String,
        /// Region where it arrived.
        region: String,
        /// Time it was observed.
        at_ms: u64,
    },
    /// A consumer received the message.
    Receive {
        /// Message id.
        id: String,
        /// Region of the broker that delivered it.
        region: String,
        /// Consumer group.
        consumer_group: String,
        /// Consumer (client) identity.
        consumer: String,
        /// Delivery attempt reported by the broker, from 1.
        attempt: u32,
        /// Time of the receipt.
        at_ms: u64,
    },
    /// The consumer acknowledged (committed) the message.
    Ack {
        /// Message id.
        id: String,
        /// Region the ack went to.
        region: String,
        /// Consumer group.
        consumer_group: String,
        /// Time of the ack.
        at_ms: u64,
    },
    /// The consumer negatively acknowledged the message (asks for redelivery).
    Nack {
        /// Message id.
        id: String,
        /// Region the nack went to.
        region: String,
        /// Consumer group.
        consumer_group: String,
        /// Time of the nack.
        at_ms: u64,
    },
    /// A fault was injected or removed.
    Fault {
        /// What happened.
        kind: FaultKind,
        /// Region, link or node it applies to.
        target: String,
        /// Time it took effect.
        at_ms: u64,
        /// Free text for humans.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
}

impl Event {
    /// The event's time.
    pub fn at_ms(&self) -> u64 {
        match self {
            Self::Send { at_ms, .. }
            | Self::SendAck { at_ms, .. }
            | Self::SendFailed { at_ms, .. }
            | Self::Arrival { at_ms, .. }
            | Self::Receive { at_ms, .. }
            | Self::Ack { at_ms, .. }
            | Self::Nack { at_ms, .. }
            | Self::Fault { at_ms, .. } => *at_ms,
        }
    }
}

/// A run's events, in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The events.
    pub events: Vec<Event>,
}

impl History {
    /// Reads JSON lines; blank lines are skipped. Fails past `max_events` events.
    pub fn read_jsonl(reader: impl BufRead, max_events: usize) -> Result<Self> {
        let mut events = Vec::new();
        for (index, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| ChaosError::io("reading history", source))?;
            if line.trim().is_empty() {
                continue;
            }
            if events.len() >= max_events {
                return Err(ChaosError::HistoryTooLarge { max_events });
            }
            let event = serde_json::from_str(&line).map_err(|source| ChaosError::HistoryLine {
                line: index + 1,
                source,
            })?;
            events.push(event);
        }
        Ok(Self { events })
    }

    /// Writes one JSON object per line.
    pub fn write_jsonl(&self, mut writer: impl Write) -> Result<()> {
        for event in &self.events {
            serde_json::to_writer(&mut writer, event).map_err(ChaosError::Json)?;
            writer
                .write_all(b"\n")
                .map_err(|source| ChaosError::io("writing history", source))?;
        }
        writer
            .flush()
            .map_err(|source| ChaosError::io("flushing history", source))
    }
}

/// Thread-safe, cloneable collector for a live workload: stamps nothing itself but offers a
/// run clock (`now_ms`), and keeps at most `max_events` events (later ones are counted, not kept).
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    origin: Instant,
    max_events: usize,
    state: Mutex<RecorderState>,
}

#[derive(Debug, Default)]
struct RecorderState {
    events: Vec<Event>,
    overflow_count: u64,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new(max_events: usize) -> Self {
        Self {
            inner: Arc::new(RecorderInner {
                origin: Instant::now(),
                max_events,
                state: Mutex::new(RecorderState::default()),
            }),
        }
    }

    /// Milliseconds since the recorder was created.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records one event; returns false if it was not kept because the limit was reached.
    pub fn record(&self, event: Event) -> bool {
        let mut state = self.inner.state.lock();
        if state.events.len() >= self.inner.max_events {
            state.overflow_count += 1;
            return false;
        }
        state.events.push(event);
        true
    }

    /// Events dropped because the limit was reached; a non-zero value makes a check meaningless.
    pub fn overflow_count(&self) -> u64 {
        self.inner.state.lock().overflow_count
    }

    /// A copy of the events so far.
    pub fn snapshot(&self) -> History {
        History {
            events: self.inner.state.lock().events.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> History {
        History {
            events: vec![
                Event::Send {
                    id: "m1".into(),
                    region: "us".into(),
                    topic: "orders".into(),
                    group: Some("g".into()),
                    seq: Some(0),
                    producer: None,
                    attempt: 1,
                    at_ms: 10,
                },
                Event::SendAck {
                    id: "m1".into(),
                    region: "us".into(),
                    at_ms: 12,
                },
                Event::Fault {
                    kind: FaultKind::RegionDown,
                    target: "us".into(),
                    at_ms: 20,
                    note: String::new(),
                },
                Event::Receive {
                    id: "m1".into(),
                    region: "eu".into(),
                    consumer_group: "cg".into(),
                    consumer: "c1".into(),
                    attempt: 1,
                    at_ms: 30,
                },
            ],
        }
    }

    #[test]
    fn jsonl_round_trip() {
        let history = sample();
        let mut out = Vec::new();
        history.write_jsonl(&mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.lines().next().unwrap().contains("\"type\":\"send\""));
        assert!(text.contains("\"kind\":\"region_down\""));
        let back = History::read_jsonl(out.as_slice(), 100).unwrap();
        assert_eq!(back, history);
    }

    #[test]
    fn reader_reports_line_and_enforces_limit() {
        let text = "{\"type\":\"send_ack\",\"id\":\"a\",\"region\":\"us\",\"at_ms\":1}\n\n{\"type\":\"bogus\"}\n";
        match History::read_jsonl(text.as_bytes(), 100) {
            Err(ChaosError::HistoryLine { line, .. }) => assert_eq!(line, 3),
            other => panic!("unexpected {other:?}"),
        }
        let mut out = Vec::new();
        sample().write_jsonl(&mut out).unwrap();
        assert!(matches!(
            History::read_jsonl(out.as_slice(), 3),
            Err(ChaosError::HistoryTooLarge { max_events: 3 })
        ));
    }

    #[test]
    fn recorder_keeps_at_most_its_limit() {
        let recorder = Recorder::new(2);
        for event in sample().events {
            recorder.record(event);
        }
        assert_eq!(recorder.snapshot().events.len(), 2);
        assert_eq!(recorder.overflow_count(), 2);
        assert!(recorder.now_ms() < 60_000);
    }
}
