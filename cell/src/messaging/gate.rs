//! The write gate: whether this cell may take a write for a topic right now.
//!
//! Which region may take a write is the router's decision (active-standby homes, FIFO group
//! owners, switchover pauses, the region's write lease); the cell only asks before it stores
//! anything. The binary installs an implementation that answers from the router's view
//! ([`crate::messaging::Broker::set_write_gate`]); without one every write is accepted, as in a
//! single-region cell. The answer is computed before the append, so a refusal stores nothing.

use std::fmt;

/// Decides, per message, whether this cell may store a write.
pub trait WriteGate: Send + Sync + fmt::Debug {
    /// `message_group` is empty for messages without one. Must not block: it runs on every
    /// send.
    fn check(&self, topic: &str, message_group: &str) -> WriteDecision;
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteDecision {
    /// Store it; `epoch` is the topic's failover epoch the decision was made under (stamped on
    /// the stored message so that a history can prove no two regions took writes for one home
    /// in one epoch).
    Accept { epoch: u64 },
    /// Do not store it here.
    Refuse(WriteRefusal),
}

/// Why a write is refused, and where it belongs instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRefusal {
    /// The topic.
    pub topic: String,
    /// The region that takes the topic's (or the message group's) writes now, if known.
    pub home_region: String,
    /// The failover epoch of that answer; a client holding an older epoch must refresh.
    pub epoch: u64,
    /// Why.
    pub reason: RefusalReason,
}

/// Why a write may not be stored in this region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Another region is the topic's home (active-standby) or the message group's owner
    /// (FIFO in active-active): forward the write there.
    NotHome,
    /// The topic's home is moving (planned switchover): retry shortly, at `home_region`.
    Moving,
    /// This region lost its write lease (cut off from the metadata majority): it takes no
    /// write that another region might take over.
    Fenced,
    /// The topic does not live in this region.
    NotAReplica,
}

impl RefusalReason {
    /// A short word for messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NotHome => "not-home",
            RefusalReason::Moving => "moving",
            RefusalReason::Fenced => "fenced",
            RefusalReason::NotAReplica => "not-a-replica",
        }
    }
}

impl fmt::Display for WriteRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            RefusalReason::NotHome => write!(
                formatter,
                "topic {:?} takes writes in region {:?} (epoch {}), not here",
                self.topic, self.home_region, self.epoch
            ),
            RefusalReason::Moving => write!(
                formatter,
                "topic {:?} is moving to region {:?} (epoch {}); retry shortly",
                self.topic, self.home_region, self.epoch
            ),
            RefusalReason::Fenced => write!(
                formatter,
                "this region has lost its write lease for topic {:?} (epoch {}); write to \
                 region {:?} or retry",
                self.topic, self.epoch, self.home_region
            ),
            RefusalReason::NotAReplica => write!(
                formatter,
                "topic {:?} does not live in this region (epoch {})",
                self.topic, self.epoch
            ),
        }
    }
}
