//! Metadata objects the state machine stores: regions, cells, topics, consumer groups, users
//! and FIFO message-group ownership. Plain data with serde; all rules live in `apply`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Lifecycle of a region as seen by the whole fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionStatus {
    /// Serves traffic.
    Active,
    /// Finishing in-flight work; takes no new homes.
    Draining,
    /// Declared dead; topics homed there must fail over.
    Failed,
}

/// A region (one failure domain, usually a cloud region).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub zone: String,
    pub endpoints: Vec<String>,
    pub status: RegionStatus,
    /// Bumped on every status change; status changes are compare-and-set on it.
    pub epoch: u64,
}

/// A cell (one broker group) inside a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub id: String,
    pub region: String,
    pub endpoints: Vec<String>,
    /// Wall-clock milliseconds of the last heartbeat meta recorded; 0 before the first one.
    pub last_heartbeat_ms: u64,
}

/// RocketMQ message types a topic may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    Normal,
    Fifo,
    Delay,
    Transaction,
}

/// How writes reach the other regions of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    /// Acknowledged locally, shipped to other regions afterwards.
    Async,
    /// Acknowledged once a quorum of the topic's regions holds the message.
    SyncQuorum,
}

/// Which regions accept writes for a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Topology {
    /// Every region of the topic accepts writes.
    ActiveActive,
    /// Only `home` accepts writes; the others follow and take over on failover.
    ActiveStandby { home: String },
}

/// What an admin submits to create or update a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub queue_count: u32,
    pub message_type: MessageType,
    pub regions: BTreeSet<String>,
    pub replication: ReplicationMode,
    pub topology: Topology,
}

/// A stored topic: its spec plus the failover epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub spec: TopicSpec,
    /// Failover epoch: bumped by every home move, compared-and-set by every mover so that an
    /// actor holding an old epoch can never move the topic back.
    pub epoch: u64,
    /// A planned switchover in progress: the region the home is moving to. While set, the
    /// current home takes no new writes (they are answered "moving"); `MoveTopicHome` to this
    /// region completes the move, `AbortTopicMove` cancels it. Both bump the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
}

/// How a consumer group consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumeOrder {
    /// One consumer at a time per message group, in order.
    Fifo,
    /// Any consumer, any order.
    Concurrent,
}

/// Redelivery of messages a consumer failed to acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Deliveries before the message goes to the dead-letter queue; at least 1.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

/// A consumer group and the topics it subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    pub name: String,
    pub topics: BTreeSet<String>,
    pub order: ConsumeOrder,
    /// Every consumer receives every message (instead of one consumer per message).
    pub broadcast: bool,
    pub retry: RetryPolicy,
}

/// What a permission covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Resource {
    Cluster,
    Topic(String),
    ConsumerGroup(String),
}

/// An action a permission allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Publish,
    Subscribe,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    pub resource: Resource,
    pub actions: BTreeSet<Action>,
}

/// A user. Meta stores only a digest of the credential, computed by the admin tooling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub credential_digest: String,
    pub permissions: Vec<Permission>,
}

/// Identifies one FIFO message group of one topic as consumed by one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageGroupKey {
    pub topic: String,
    pub consumer_group: String,
    pub message_group: String,
}

/// Who currently owns a FIFO message group, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageGroupOwner {
    pub key: MessageGroupKey,
    pub owner: String,
    /// Wall-clock milliseconds after which another owner may claim the group.
    pub lease_until_ms: u64,
    /// Bumped on every change of owner, so a consumer can fence its own stale work.
    pub epoch: u64,
}
