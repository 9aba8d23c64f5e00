//! Sans-IO mapping from meta's objects to one region's cell and replicator settings.
//!
//! [`MetaMirror`] keeps this region's copy of the topics and consumer groups meta holds, fed by
//! a listing ([`MetaMirror::reset`]) and then by watch changes ([`MetaMirror::apply`]); a change
//! at or below the mirror's revision is ignored, so replaying an overlap after a reconnect is
//! harmless. [`plan`] turns the mirror into what the region's cell and replicator should hold:
//! the topics whose `regions` include this region (with message type and queue count), the
//! `sync-quorum` subset of them, the consumer groups subscribed to any of them, and, per peer
//! region, the topics that must not ship there because the peer is not among their regions.
//! [`destination_filters`] turns the withheld topics into the replicator's per-destination
//! filters (an SQL92 `FALSE` filter per withheld topic: nothing of it ships). Nothing here
//! touches a broker, a socket or a clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meridian_cell::messaging::{
    Backoff, ConsumptionModel, FilterError, FilterKind, GroupConfig, RetryPolicy, TopicMessageType,
};
use meridian_meta::state::{
    Change, ConsumeOrder, ConsumerGroup, MessageType, Object, ObjectKey, ReplicationMode, Topic,
};
use meridian_replicator::link::filter::{DestinationFilter, TopicFilter};

/// The filter expression that matches no message: a withheld topic ships nothing.
const SHIP_NOTHING_SQL: &str = "FALSE";

/// This region's copy of meta's topics and consumer groups at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MetaMirror {
    revision: u64,
    topics: BTreeMap<String, Topic>,
    groups: BTreeMap<String, ConsumerGroup>,
}

impl MetaMirror {
    /// The meta revision the mirror reflects.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// The topics, by name.
    pub(crate) fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    /// Replaces the content with a listing of topics and groups taken at `revision` (the lower
    /// of the two listings' revisions, so that watching from it misses nothing).
    pub(crate) fn reset(&mut self, revision: u64, objects: impl IntoIterator<Item = Object>) {
        self.topics.clear();
        self.groups.clear();
        for object in objects {
            self.put(object);
        }
        self.revision = revision;
    }

    /// Applies one watch change; returns whether it was new (above the mirror's revision).
    pub(crate) fn apply(&mut self, change: &Change) -> bool {
        if change.revision <= self.revision {
            return false;
        }
        for update in &change.updates {
            match (&update.key, &update.object) {
                (_, Some(object)) => self.put(object.clone()),
                (ObjectKey::Topic(name), None) => {
                    self.topics.remove(name);
                }
                (ObjectKey::ConsumerGroup(name), None) => {
                    self.groups.remove(name);
                }
                // Regions, cells, users and message-group owners do not configure a cell.
                _ => {}
            }
        }
        self.revision = change.revision;
        true
    }

    fn put(&mut self, object: Object) {
        match object {
            Object::Topic(topic) => {
                self.topics.insert(topic.spec.name.clone(), topic);
            }
            Object::ConsumerGroup(group) => {
                self.groups.insert(group.name.clone(), group);
            }
            _ => {}
        }
    }
}

/// One topic as the cell must hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlannedTopic {
    pub(crate) queue_count: u32,
    pub(crate) message_type: TopicMessageType,
}

/// What one region's cell and replicator should hold, derived from a [`MetaMirror`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CellPlan {
    /// The meta revision this plan reflects.
    pub(crate) revision: u64,
    /// Topics whose `regions` include this region.
    pub(crate) topics: BTreeMap<String, PlannedTopic>,
    /// The subset of `topics` replicated `sync-quorum`.
    pub(crate) sync_quorum_topics: BTreeSet<String>,
    /// Consumer groups subscribed to at least one of `topics`, or to no topic at all.
    pub(crate) groups: BTreeMap<String, GroupConfig>,
    /// Per peer region: this region's topics the peer is not among the regions of, which must
    /// therefore not ship to it (data residency).
    pub(crate) withheld_by_peer: BTreeMap<String, BTreeSet<String>>,
}

/// The cell's message type for meta's.
pub(crate) fn message_type(kind: MessageType) -> TopicMessageType {
    match kind {
        MessageType::Normal => TopicMessageType::Normal,
        MessageType::Fifo => TopicMessageType::Fifo,
        MessageType::Delay => TopicMessageType::Delay,
        MessageType::Transaction => TopicMessageType::Transaction,
    }
}

/// The cell's group settings for meta's: FIFO order, broadcasting, and an exponential backoff
/// (doubling) between meta's initial and maximum delay.
pub(crate) fn group_config(group: &ConsumerGroup) -> GroupConfig {
    let fifo = group.order == ConsumeOrder::Fifo;
    let mut config = GroupConfig::new(group.name.clone(), fifo);
    config.model = if group.broadcast {
        ConsumptionModel::Broadcasting
    } else {
        ConsumptionModel::Clustering
    };
    config.retry = RetryPolicy {
        max_delivery_attempts: group.retry.max_attempts,
        backoff: Backoff::Exponential {
            initial_ms: group.retry.initial_backoff_ms,
            max_ms: group.retry.max_backoff_ms,
            multiplier: 2,
        },
    };
    config
}

/// What `region` (whose replicator links to `peers`) should hold according to `mirror`.
pub(crate) fn plan(region: &str, peers: &[String], mirror: &MetaMirror) -> CellPlan {
    let mut topics = BTreeMap::new();
    let mut sync_quorum_topics = BTreeSet::new();
    let mut withheld_by_peer: BTreeMap<String, BTreeSet<String>> = peers
        .iter()
        .map(|peer| (peer.clone(), BTreeSet::new()))
        .collect();
    for (name, topic) in &mirror.topics {
        let spec = &topic.spec;
        if !spec.regions.contains(region) {
            continue;
        }
        topics.insert(
            name.clone(),
            PlannedTopic {
                queue_count: spec.queue_count,
                message_type: message_type(spec.message_type),
            },
        );
        if spec.replication == ReplicationMode::SyncQuorum {
            sync_quorum_topics.insert(name.clone());
        }
        for (peer, withheld) in &mut withheld_by_peer {
            if !spec.regions.contains(peer) {
                withheld.insert(name.clone());
            }
        }
    }
    let groups = mirror
        .groups
        .values()
        .filter(|group| {
            group.topics.is_empty() || group.topics.iter().any(|t| topics.contains_key(t))
        })
        .map(|group| (group.name.clone(), group_config(group)))
        .collect();
    CellPlan {
        revision: mirror.revision,
        topics,
        sync_quorum_topics,
        groups,
        withheld_by_peer,
    }
}

/// The replicator's per-destination filters for `plan`: peers with withheld topics get a
/// filter that ships nothing of those topics; peers without get no entry (everything ships).
pub(crate) fn destination_filters(
    plan: &CellPlan,
) -> Result<HashMap<String, DestinationFilter>, FilterError> {
    let mut filters = HashMap::new();
    for (peer, topics) in &plan.withheld_by_peer {
        if topics.is_empty() {
            continue;
        }
        let topic_filters = topics
            .iter()
            .map(|topic| TopicFilter::parse(topic.clone(), FilterKind::Sql92, SHIP_NOTHING_SQL))
            .collect::<Result<Vec<_>, _>>()?;
        filters.insert(peer.clone(), DestinationFilter::new(topic_filters));
    }
    Ok(filters)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use meridian_meta::state::{RetryPolicy as MetaRetry, TopicSpec, Topology, Update};

    use super::*;

    fn topic(name: &str, regions: &[&str], replication: ReplicationMode) -> Topic {
        Topic {
            spec: TopicSpec {
                name: name.into(),
                queue_count: 8,
                message_type: MessageType::Fifo,
                regions: regions.iter().map(|r| r.to_string()).collect(),
                replication,
                topology: Topology::ActiveActive,
            },
            epoch: 0,
            moving_to: None,
        }
    }

    fn group(name: &str, topics: &[&str]) -> ConsumerGroup {
        ConsumerGroup {
            name: name.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            order: ConsumeOrder::Concurrent,
            broadcast: true,
            retry: MetaRetry {
                max_attempts: 5,
                initial_backoff_ms: 100,
                max_backoff_ms: 10_000,
            },
        }
    }

    fn change(revision: u64, key: ObjectKey, object: Option<Object>) -> Change {
        Change {
            revision,
            updates: vec![Update { key, object }],
        }
    }

    fn peers() -> Vec<String> {
        vec!["eu".to_string(), "ap".to_string()]
    }

    #[test]
    fn a_region_holds_only_the_topics_that_name_it_and_withholds_them_from_other_peers() {
        let mut mirror = MetaMirror::default();
        mirror.reset(
            7,
            [
                Object::Topic(topic("orders", &["us", "eu"], ReplicationMode::SyncQuorum)),
                Object::Topic(topic("local", &["us"], ReplicationMode::Async)),
                Object::Topic(topic("elsewhere", &["eu", "ap"], ReplicationMode::Async)),
            ],
        );
        let plan = plan("us", &peers(), &mirror);
        assert_eq!(plan.revision, 7);
        assert_eq!(
            plan.topics.keys().collect::<Vec<_>>(),
            vec!["local", "orders"]
        );
        assert_eq!(
            plan.topics["orders"],
            PlannedTopic {
                queue_count: 8,
                message_type: TopicMessageType::Fifo
            }
        );
        assert_eq!(
            plan.sync_quorum_topics,
            BTreeSet::from(["orders".to_string()])
        );
        assert_eq!(
            plan.withheld_by_peer["eu"],
            BTreeSet::from(["local".to_string()])
        );
        assert_eq!(
            plan.withheld_by_peer["ap"],
            BTreeSet::from(["local".to_string(), "orders".to_string()])
        );
    }

    #[test]
    fn withheld_topics_become_filters_that_ship_nothing_of_them() {
        let mut mirror = MetaMirror::default();
        mirror.reset(
            2,
            [
                Object::Topic(topic("orders", &["us", "eu"], ReplicationMode::Async)),
                Object::Topic(topic("all", &["us", "eu", "ap"], ReplicationMode::Async)),
            ],
        );
        let filters = destination_filters(&plan("us", &peers(), &mirror)).unwrap();
        // eu holds every topic of us: no filter at all.
        assert!(!filters.contains_key("eu"));
        let ap = &filters["ap"];
        let none = BTreeMap::new();
        assert!(!ap.ships_message("orders", "", &none));
        assert!(!ap.ships_message("orders", "TagA", &none));
        assert!(ap.ships_message("all", "", &none));
        // Topics meta does not know (auto-created in one cell) still ship.
        assert!(ap.ships_message("unknown", "", &none));
    }

    #[test]
    fn groups_follow_their_topics_and_map_order_broadcast_and_retry() {
        let mut mirror = MetaMirror::default();
        mirror.reset(
            3,
            [
                Object::Topic(topic("orders", &["us"], ReplicationMode::Async)),
                Object::Topic(topic("elsewhere", &["eu"], ReplicationMode::Async)),
                Object::ConsumerGroup(group("readers", &["orders"])),
                Object::ConsumerGroup(group("far", &["elsewhere"])),
                Object::ConsumerGroup(group("any", &[])),
            ],
        );
        let plan = plan("us", &peers(), &mirror);
        assert_eq!(
            plan.groups.keys().collect::<Vec<_>>(),
            vec!["any", "readers"]
        );
        let readers = &plan.groups["readers"];
        assert!(!readers.fifo);
        assert_eq!(readers.model, ConsumptionModel::Broadcasting);
        assert_eq!(readers.retry.max_delivery_attempts, 5);
        assert_eq!(readers.retry.backoff_ms(1), 100);
        assert_eq!(readers.retry.backoff_ms(2), 200);
        assert_eq!(readers.retry.backoff_ms(20), 10_000);
        assert!(readers.retry.validate().is_ok());
    }

    #[test]
    fn watch_changes_update_and_delete_and_replays_are_ignored() {
        let mut mirror = MetaMirror::default();
        mirror.reset(
            1,
            [Object::Topic(topic(
                "orders",
                &["us"],
                ReplicationMode::Async,
            ))],
        );
        let sync = topic("orders", &["us", "eu"], ReplicationMode::SyncQuorum);
        assert!(mirror.apply(&change(
            2,
            ObjectKey::Topic("orders".into()),
            Some(Object::Topic(sync.clone()))
        )));
        assert!(
            plan("us", &peers(), &mirror)
                .sync_quorum_topics
                .contains("orders")
        );
        // A replay of an older revision (after a reconnect) changes nothing.
        let stale = topic("orders", &["us"], ReplicationMode::Async);
        assert!(!mirror.apply(&change(
            2,
            ObjectKey::Topic("orders".into()),
            Some(Object::Topic(stale))
        )));
        assert_eq!(mirror.topics()["orders"], sync);
        // Changes to objects that do not configure a cell still advance the revision.
        assert!(mirror.apply(&change(3, ObjectKey::Region("us".into()), None)));
        assert_eq!(mirror.revision(), 3);
        assert!(mirror.apply(&change(4, ObjectKey::Topic("orders".into()), None)));
        let plan = plan("us", &peers(), &mirror);
        assert!(plan.topics.is_empty());
        assert!(plan.sync_quorum_topics.is_empty());
        assert_eq!(plan.revision, 4);
    }
}
