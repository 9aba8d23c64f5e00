//! The replicated metadata state machine, sans IO: `State::apply` takes a `Request` (a command
//! plus the wall-clock time the accepting node stamped on it) and returns the result every
//! replica computes identically. No clocks, sockets or disks are touched here.
//!
//! Every accepted command except heartbeat batches advances the revision by one and records
//! one `Change` in a bounded `ChangeLog`, which watchers resume from. Heartbeat batches update
//! `Cell::last_heartbeat_ms` without a revision: liveness is polled, not watched, so that
//! heartbeats cannot flush configuration changes out of the watch window.

mod apply;
mod changelog;
mod model;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ownership;
#[cfg(test)]
mod tests_switchover;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use changelog::{ChangeLog, Since};
pub use model::{
    Action, Cell, ConsumeOrder, ConsumerGroup, MessageGroupKey, MessageGroupOwner, MessageType,
    Permission, Region, RegionStatus, ReplicationMode, Resource, RetryPolicy, Topic, TopicSpec,
    Topology, User,
};
pub use validate::Limits;

use crate::error::MetaError;

/// A command as replicated through Raft: what to do, and the wall-clock milliseconds the
/// accepting node stamped on it (used for heartbeats and leases, so replay is deterministic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub issued_at_ms: u64,
    pub command: Command,
}

/// A metadata write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Command {
    /// Creates a region (active, epoch 0) or updates its zone and endpoints.
    PutRegion {
        name: String,
        zone: String,
        endpoints: Vec<String>,
    },
    /// Compare-and-set on the region epoch; bumps it.
    SetRegionStatus {
        name: String,
        status: RegionStatus,
        expected_epoch: u64,
    },
    /// Refused while any cell or topic still uses the region.
    DeleteRegion {
        name: String,
    },
    /// Creates or updates a cell; a cell cannot move between regions.
    PutCell {
        id: String,
        region: String,
        endpoints: Vec<String>,
    },
    DeleteCell {
        id: String,
    },
    /// One batch of cell heartbeats. Unknown cells are reported, not fatal, so one
    /// decommissioned cell cannot block everyone else's liveness.
    RecordHeartbeats {
        beats: Vec<CellBeat>,
    },
    CreateTopic {
        spec: TopicSpec,
    },
    /// Compare-and-set on the topic's failover epoch; bumps it when the topology changes.
    UpdateTopic {
        spec: TopicSpec,
        expected_epoch: u64,
    },
    /// Refused while a consumer group subscribes to the topic.
    DeleteTopic {
        name: String,
    },
    /// Starts a planned switchover of an active-standby topic to `new_home`: compare-and-set
    /// on the epoch, which it bumps; the old home stops taking writes (see `Topic::moving_to`).
    BeginTopicMove {
        topic: String,
        new_home: String,
        expected_epoch: u64,
    },
    /// Cancels a switchover in progress; the old home takes writes again. Bumps the epoch.
    AbortTopicMove {
        topic: String,
        expected_epoch: u64,
    },
    /// Failover or switchover of an active-standby topic: compare-and-set on its epoch.
    MoveTopicHome {
        topic: String,
        new_home: String,
        expected_epoch: u64,
    },
    PutConsumerGroup {
        group: ConsumerGroup,
    },
    /// Also drops the group's FIFO message-group ownerships.
    DeleteConsumerGroup {
        name: String,
    },
    PutUser {
        user: User,
    },
    DeleteUser {
        name: String,
    },
    /// Takes or renews a FIFO message group for `owner` for `lease_ms`. Lease times come from
    /// the wall clock of the meta node that accepted the command, so clock skew between meta
    /// nodes lengthens or shortens a lease by that skew; consumers must also fence on the epoch.
    ClaimMessageGroup {
        key: MessageGroupKey,
        owner: String,
        lease_ms: u64,
    },
    ReleaseMessageGroup {
        key: MessageGroupKey,
        owner: String,
    },
}

impl Command {
    /// Whether the command needs the admin credential. Heartbeats and FIFO message-group
    /// claims come from cells and need only the peer credential.
    pub fn needs_admin(&self) -> bool {
        !matches!(
            self,
            Self::RecordHeartbeats { .. }
                | Self::ClaimMessageGroup { .. }
                | Self::ReleaseMessageGroup { .. }
        )
    }
}

/// One cell heartbeat as received by a meta node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellBeat {
    pub cell: String,
    /// Wall-clock milliseconds at which the receiving meta node saw the beat.
    pub at_ms: u64,
}

/// What an accepted command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// State revision after the command.
    pub revision: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    Done,
    /// The new epoch of the region, topic or message group the command moved.
    Epoch {
        epoch: u64,
    },
    Heartbeats {
        recorded: usize,
        unknown_cells: Vec<String>,
    },
}

/// Result of applying one request, as replicated back to the client.
pub type CommandResult = Result<Applied, MetaError>;

/// Names one stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum ObjectKey {
    Region(String),
    Cell(String),
    Topic(String),
    ConsumerGroup(String),
    User(String),
    MessageGroup(MessageGroupKey),
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Object {
    Region(Region),
    Cell(Cell),
    Topic(Topic),
    ConsumerGroup(ConsumerGroup),
    User(User),
    MessageGroup(MessageGroupOwner),
}

/// The new value of one object, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub key: ObjectKey,
    pub object: Option<Object>,
}

/// Everything one revision changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    pub updates: Vec<Update>,
}

/// Kinds of objects a client can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Regions,
    Cells,
    Topics,
    ConsumerGroups,
    Users,
    MessageGroups,
}

impl ObjectKind {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "regions" => Self::Regions,
            "cells" => Self::Cells,
            "topics" => Self::Topics,
            "consumer_groups" => Self::ConsumerGroups,
            "users" => Self::Users,
            "message_groups" => Self::MessageGroups,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regions => "regions",
            Self::Cells => "cells",
            Self::Topics => "topics",
            Self::ConsumerGroups => "consumer_groups",
            Self::Users => "users",
            Self::MessageGroups => "message_groups",
        }
    }
}

/// The whole metadata state, including the watch window; this is what a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    revision: u64,
    limits: Limits,
    regions: BTreeMap<String, Region>,
    cells: BTreeMap<String, Cell>,
    topics: BTreeMap<String, Topic>,
    groups: BTreeMap<String, ConsumerGroup>,
    users: BTreeMap<String, User>,
    /// Stored as a list because JSON map keys must be strings.
    #[serde(with = "message_group_list")]
    message_groups: BTreeMap<MessageGroupKey, MessageGroupOwner>,
    changes: ChangeLog,
}

impl State {
    /// An empty state keeping the last `change_log_capacity_revisions` changes for watchers.
    pub fn new(limits: Limits, change_log_capacity_revisions: usize) -> Self {
        Self {
            revision: 0,
            limits,
            regions: BTreeMap::new(),
            cells: BTreeMap::new(),
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            users: BTreeMap::new(),
            message_groups: BTreeMap::new(),
            changes: ChangeLog::new(change_log_capacity_revisions),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.get(name)
    }

    pub fn cell(&self, id: &str) -> Option<&Cell> {
        self.cells.get(id)
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn consumer_group(&self, name: &str) -> Option<&ConsumerGroup> {
        self.groups.get(name)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn message_group(&self, key: &MessageGroupKey) -> Option<&MessageGroupOwner> {
        self.message_groups.get(key)
    }

    /// Every object of `kind`, in key order.
    pub fn list(&self, kind: ObjectKind) -> Vec<Object> {
        match kind {
            ObjectKind::Regions => self.regions.values().cloned().map(Object::Region).collect(),
            ObjectKind::Cells => self.cells.values().cloned().map(Object::Cell).collect(),
            ObjectKind::Topics => self.topics.values().cloned().map(Object::Topic).collect(),
            ObjectKind::ConsumerGroups => self
                .groups
                .values()
                .cloned()
                .map(Object::ConsumerGroup)
                .collect(),
            ObjectKind::Users => self.users.values().cloned().map(Object::User).collect(),
            ObjectKind::MessageGroups => self
                .message_groups
                .values()
                .cloned()
                .map(Object::MessageGroup)
                .collect(),
        }
    }

    /// Changes after `after_revision` (at most `max_count`), or `Compacted` when the watcher
    /// fell out of the retained window and must re-list.
    pub fn changes_since(&self, after_revision: u64, max_count: usize) -> Since {
        self.changes.since(after_revision, self.revision, max_count)
    }
}

mod message_group_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{MessageGroupKey, MessageGroupOwner};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<MessageGroupKey, MessageGroupOwner>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let owners: Vec<&MessageGroupOwner> = map.values().collect();
        owners.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<MessageGroupKey, MessageGroupOwner>, D::Error> {
        let owners = Vec::<MessageGroupOwner>::deserialize(deserializer)?;
        Ok(owners
            .into_iter()
            .map(|owner| (owner.key.clone(), owner))
            .collect())
    }
}
