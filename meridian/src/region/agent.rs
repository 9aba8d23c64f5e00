//! The meta agent of one region: the IO shell between meta and the region's cell.
//!
//! It (a) registers the region and its cell in meta (`PutRegion`, `PutCell`; both are
//! create-or-update, so every start may repeat them), (b) reports the cell's heartbeat every
//! `heartbeat_interval_ms`, and (c) watches meta's topics and consumer groups and applies them
//! to the cell: lists once, then follows the watch from the listed revision; when the stream
//! breaks it reopens it from the last revision applied (on the next meta endpoint), and re-lists
//! only when meta says the revision fell out of its change window. What to apply is computed by
//! the sans-IO [`super::plan`]; this file only calls the broker.
//!
//! The replicator takes its per-destination filters only when a link starts (the region sets
//! them at start from its meta replica), so changes of the topics a peer must not receive
//! ([`CellPlan::withheld_by_peer`]) are published in [`AgentStatus`] and logged, and reach the
//! running links only at the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meridian_cell::messaging::{Broker, GroupConfig, MessagingError};
use meridian_meta::client::{MetaClient, WatchItem};
use meridian_meta::state::{Command, ObjectKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::plan::{CellPlan, MetaMirror, plan};

/// What the agent has done so far; published on a `watch` channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AgentStatus {
    /// The region and its cell are recorded in meta.
    pub(crate) registered: bool,
    /// The meta revision whose topics and groups the cell holds.
    pub(crate) applied_revision: u64,
    /// Topics of this region (per meta) that the cell holds.
    pub(crate) topics: BTreeSet<String>,
    /// Topics whose sends wait for a quorum of regions.
    pub(crate) sync_quorum_topics: BTreeSet<String>,
    /// Per peer region, topics that must not ship there (not enforced on running links yet).
    pub(crate) withheld_by_peer: BTreeMap<String, BTreeSet<String>>,
    /// Heartbeats meta accepted.
    pub(crate) heartbeats_accepted: u64,
    /// The last problem met, for status output.
    pub(crate) last_error: Option<String>,
    /// Meta's topics as the router's route table (homes, epochs, switchovers).
    pub(crate) routes: meridian_router::RouteTable,
}

/// Who the agent speaks for and how often.
#[derive(Debug, Clone)]
pub(crate) struct AgentConfig {
    pub(crate) region: String,
    pub(crate) zone: String,
    pub(crate) cell_id: String,
    /// The region's endpoints as recorded in meta (gRPC, meta, replication).
    pub(crate) region_endpoints: Vec<String>,
    /// The cell's client endpoint(s).
    pub(crate) cell_endpoints: Vec<String>,
    /// The other regions of the fabric (the replicator's peers).
    pub(crate) peers: Vec<String>,
    pub(crate) heartbeat_interval_ms: u64,
    /// First pause after a failed meta call; doubles up to `retry_pause_ms_max`.
    pub(crate) retry_pause_ms_first: u64,
    pub(crate) retry_pause_ms_max: u64,
}

/// Starts the agent; it runs until `shutdown` flips.
pub(crate) fn spawn(
    config: AgentConfig,
    client: Arc<MetaClient>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> (JoinHandle<()>, watch::Receiver<AgentStatus>) {
    let (status_tx, status_rx) = watch::channel(AgentStatus::default());
    let agent = Agent {
        config,
        client,
        broker,
        status: status_tx,
        applied_groups: BTreeMap::new(),
    };
    let task = tokio::spawn(agent.run(shutdown));
    (task, status_rx)
}

struct Agent {
    config: AgentConfig,
    client: Arc<MetaClient>,
    broker: Arc<Broker>,
    status: watch::Sender<AgentStatus>,
    /// Groups as last written to the cell, so unchanged groups are not rewritten.
    applied_groups: BTreeMap<String, GroupConfig>,
}

/// Pause state between failed attempts: doubles from `first` to `max`.
struct Pause {
    next_ms: u64,
    first_ms: u64,
    max_ms: u64,
}

impl Pause {
    fn new(first_ms: u64, max_ms: u64) -> Self {
        Pause {
            next_ms: first_ms,
            first_ms,
            max_ms: max_ms.max(first_ms),
        }
    }

    fn reset(&mut self) {
        self.next_ms = self.first_ms;
    }

    /// Sleeps the current pause unless `shutdown` flips first; returns false on shutdown.
    async fn sleep(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let pause = Duration::from_millis(self.next_ms);
        self.next_ms = self.next_ms.saturating_mul(2).min(self.max_ms);
        let stopped = tokio::select! {
            _ = tokio::time::sleep(pause) => None,
            stopped = shutdown.wait_for(|stop| *stop) => Some(stopped.is_ok()),
        };
        stopped.is_none() && !*shutdown.borrow()
    }
}

impl Agent {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if !self.register(&mut shutdown).await {
            return;
        }
        let heartbeats = tokio::spawn(heartbeat_loop(
            Arc::clone(&self.client),
            self.config.cell_id.clone(),
            self.config.heartbeat_interval_ms,
            self.status.clone(),
            shutdown.clone(),
        ));
        self.follow_topics(&mut shutdown).await;
        heartbeats.abort();
    }

    fn note_error(&self, error: String) {
        self.status
            .send_modify(|status| status.last_error = Some(error));
    }

    /// Records the region and the cell; retries (with a capped pause) until meta takes them or
    /// the region stops. Returns false on shutdown.
    async fn register(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let config = &self.config;
        let commands = [
            Command::PutRegion {
                name: config.region.clone(),
                zone: config.zone.clone(),
                endpoints: config.region_endpoints.clone(),
            },
            Command::PutCell {
                id: config.cell_id.clone(),
                region: config.region.clone(),
                endpoints: config.cell_endpoints.clone(),
            },
        ];
        let mut pause = Pause::new(config.retry_pause_ms_first, config.retry_pause_ms_max);
        for command in &commands {
            loop {
                if *shutdown.borrow() {
                    return false;
                }
                match self.client.write(command).await {
                    Ok(_) => {
                        pause.reset();
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(region = %config.region, %error, "registering in meta");
                        self.note_error(format!("registering in meta: {error}"));
                        if !pause.sleep(shutdown).await {
                            return false;
                        }
                    }
                }
            }
        }
        tracing::info!(region = %config.region, cell = %config.cell_id, "registered in meta");
        self.status.send_modify(|status| status.registered = true);
        true
    }

    /// List, then watch from the listed revision; reopen the watch from the last applied
    /// revision when it breaks, re-list when meta compacted past it.
    async fn follow_topics(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut mirror = MetaMirror::default();
        let mut listed = false;
        let mut endpoint_index = 0usize;
        let endpoint_count = self.config.region_endpoints.len().max(1);
        let mut pause = Pause::new(
            self.config.retry_pause_ms_first,
            self.config.retry_pause_ms_max,
        );
        while !*shutdown.borrow() {
            if !listed {
                match self.list(&mut mirror).await {
                    Ok(()) => {
                        listed = true;
                        self.apply(&mirror);
                    }
                    Err(error) => {
                        tracing::warn!(region = %self.config.region, %error, "listing meta topics");
                        self.note_error(error);
                        if !pause.sleep(shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let mut stream = match self.client.watch(endpoint_index, mirror.revision()).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(region = %self.config.region, %error, "opening the meta watch");
                    self.note_error(format!("opening the meta watch: {error}"));
                    endpoint_index = (endpoint_index + 1) % endpoint_count;
                    if !pause.sleep(shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                };
                match item {
                    Ok(Some(WatchItem::Change(change))) => {
                        pause.reset();
                        if mirror.apply(&change) {
                            self.apply(&mirror);
                        }
                    }
                    Ok(Some(WatchItem::Compacted { revision })) => {
                        tracing::info!(region = %self.config.region, revision, "meta watch compacted; re-listing");
                        listed = false;
                        break;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(region = %self.config.region, %error, "meta watch broke");
                        self.note_error(format!("meta watch: {error}"));
                        endpoint_index = (endpoint_index + 1) % endpoint_count;
                        break;
                    }
                }
            }
            if !pause.sleep(shutdown).await {
                return;
            }
        }
    }

    /// Replaces the mirror with a fresh listing of topics and consumer groups.
    async fn list(&self, mirror: &mut MetaMirror) -> Result<(), String> {
        let (topics_revision, mut objects) = self
            .client
            .list(ObjectKind::Topics)
            .await
            .map_err(|error| format!("listing meta topics: {error}"))?;
        let (groups_revision, groups) = self
            .client
            .list(ObjectKind::ConsumerGroups)
            .await
            .map_err(|error| format!("listing meta consumer groups: {error}"))?;
        objects.extend(groups);
        // The lower revision: changes between the two listings are replayed by the watch,
        // and replaying a full object value is idempotent.
        mirror.reset(topics_revision.min(groups_revision), objects);
        Ok(())
    }

    /// Brings the cell to the plan of `mirror` and publishes the result.
    fn apply(&mut self, mirror: &MetaMirror) {
        let plan = plan(&self.config.region, &self.config.peers, mirror);
        let (held, errors) = apply_to_broker(&self.broker, &plan, &mut self.applied_groups);
        let previous_withheld = self.status.borrow().withheld_by_peer.clone();
        if previous_withheld != plan.withheld_by_peer {
            for (peer, topics) in &plan.withheld_by_peer {
                if !topics.is_empty() {
                    tracing::info!(
                        region = %self.config.region,
                        peer = %peer,
                        topics = ?topics,
                        "topics outside this peer's regions (the running links apply this from the next start)"
                    );
                }
            }
        }
        let routes = super::routing::routes_of(mirror.topics().values());
        self.status.send_modify(|status| {
            status.routes = routes;
            status.applied_revision = plan.revision;
            status.topics = held;
            status.sync_quorum_topics = plan.sync_quorum_topics.clone();
            status.withheld_by_peer = plan.withheld_by_peer.clone();
            if let Some(error) = errors.last() {
                status.last_error = Some(error.clone());
            }
        });
    }
}

/// Applies `plan` to `broker`: creates missing topics, writes changed groups, replaces the
/// `sync-quorum` set, grows queues that meta raised. Returns the planned topics the cell holds
/// and the errors met (a type change or fewer queues in meta is not applied to a running cell).
pub(crate) fn apply_to_broker(
    broker: &Broker,
    plan: &CellPlan,
    applied_groups: &mut BTreeMap<String, GroupConfig>,
) -> (BTreeSet<String>, Vec<String>) {
    let mut held = BTreeSet::new();
    let mut errors = Vec::new();
    for (name, topic) in &plan.topics {
        match broker.create_topic(name, topic.queue_count, topic.message_type) {
            Ok(_) => {
                held.insert(name.clone());
            }
            Err(MessagingError::TopicConflict {
                existing,
                existing_queue_count,
                ..
            }) if existing == topic.message_type && existing_queue_count < topic.queue_count => {
                // More queues in meta: the cell grows (queues never shrink).
                held.insert(name.clone());
                if let Err(error) = broker.grow_topic_queues(name, topic.queue_count) {
                    tracing::warn!(topic = %name, %error, "growing a topic's queues from meta");
                    errors.push(format!("topic {name}: {error}"));
                }
            }
            Err(error @ MessagingError::TopicConflict { .. }) => {
                // A type change or fewer queues: the cell keeps the old settings and the topic
                // stays usable with them.
                held.insert(name.clone());
                tracing::warn!(topic = %name, %error, "topic settings changed in meta; the cell keeps its own");
                errors.push(format!("topic {name}: {error}"));
            }
            Err(error) => {
                tracing::warn!(topic = %name, %error, "creating a topic from meta");
                errors.push(format!("topic {name}: {error}"));
            }
        }
    }
    broker.set_sync_quorum_topics(plan.sync_quorum_topics.iter().cloned());
    for (name, group) in &plan.groups {
        if applied_groups.get(name) == Some(group) {
            continue;
        }
        match broker.create_group(group.clone()) {
            Ok(()) => {
                applied_groups.insert(name.clone(), group.clone());
            }
            Err(error) => {
                tracing::warn!(group = %name, %error, "creating a consumer group from meta");
                errors.push(format!("group {name}: {error}"));
            }
        }
    }
    (held, errors)
}

/// Reports the cell's heartbeat every `interval_ms` until `shutdown` flips.
async fn heartbeat_loop(
    client: Arc<MetaClient>,
    cell_id: String,
    interval_ms: u64,
    status: watch::Sender<AgentStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cells = [cell_id];
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match client.heartbeat(&cells).await {
            Ok(accepted) => {
                status.send_modify(|status| status.heartbeats_accepted += u64::from(accepted));
            }
            Err(error) => {
                // The next beat retries; meta judges liveness over several intervals.
                tracing::debug!(cell = %cells[0], %error, "heartbeat not delivered");
            }
        }
    }
}
