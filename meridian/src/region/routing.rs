//! The router's IO shell for one region: the cell's write gate from the router's admission,
//! the write lease renewed through meta, and the failover driver.
//!
//! - **Routes**: the meta agent's mirror of meta's topics becomes the router's route table
//!   (`AgentStatus::routes`), so the gate answers from what meta decided, epoch included.
//! - **Lease**: every `heartbeat_interval_ms` a linearizable meta read (the leader confirms it
//!   still leads a quorum) renews the region's write lease from the read's send time; a region
//!   cut off from the meta majority stops taking writes for the homes it holds when the lease
//!   runs out, before any other region may be promoted (see `meridian_router::lease`).
//! - **Failover**: every `failover_tick_ms` the region reads the cells' heartbeats from meta;
//!   if its meta node leads, it writes the router's home moves (compare-and-set on each
//!   topic's epoch); if it is the heir of a failed region, its cell adopts that region's pending
//!   delay messages and open transactions (once per failure).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_cell::messaging::{Broker, RefusalReason, WriteDecision, WriteGate, WriteRefusal};
use meridian_meta::client::MetaClient;
use meridian_meta::node::MetaNode;
use meridian_meta::state::{Command as MetaCommand, Object, ObjectKind, Topic, Topology};
use meridian_router::{
    Admission, FailoverInput, Health, HealthPolicy, LeasePolicy, Refusal, RouteTable,
    RouteTopology, TopicRoute, WriteLease, admit, health_at, heir_of, plan_home_moves,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

/// How often the failover driver looks at the fabric.
pub(crate) const FAILOVER_TICK_MS: u64 = 250;
/// Longest one lease renewal or heartbeat listing may take.
const META_CALL_TIMEOUT_MS: u64 = 1_000;

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Meta's topics as the router's route table.
pub(crate) fn routes_of<'a>(topics: impl IntoIterator<Item = &'a Topic>) -> RouteTable {
    topics
        .into_iter()
        .map(|topic| {
            let route = TopicRoute {
                name: topic.spec.name.clone(),
                regions: topic.spec.regions.clone(),
                topology: match &topic.spec.topology {
                    Topology::ActiveActive => RouteTopology::ActiveActive,
                    Topology::ActiveStandby { home } => {
                        RouteTopology::ActiveStandby { home: home.clone() }
                    }
                },
                epoch: topic.epoch,
                moving_to: topic.moving_to.clone(),
            };
            (route.name.clone(), route)
        })
        .collect()
}

/// One region's routing state, shared by the gate and the background tasks.
#[derive(Debug)]
pub(crate) struct RegionRouter {
    region: String,
    routes: RwLock<RouteTable>,
    lease: Mutex<WriteLease>,
    lease_policy: LeasePolicy,
    health: HealthPolicy,
    /// For each region, every region nearest first (from the topology's latency map).
    proximity: BTreeMap<String, Vec<String>>,
    /// Failed regions this cell has adopted since they failed (cleared when they recover).
    adopted: Mutex<BTreeSet<String>>,
    /// What the region's router saw and did, for `/metrics`.
    pub(crate) stats: RouterStats,
}

/// The router's figures: every region's health as this region last saw it, and the failover
/// events it took part in.
#[derive(Debug, Default)]
pub(crate) struct RouterStats {
    /// Region → health at the last failover tick that could read meta.
    pub(crate) health: Mutex<BTreeMap<String, Health>>,
    /// Home moves this region wrote as meta leader (failovers).
    pub(crate) home_moves_written: AtomicU64,
    /// Failed regions whose delay messages and transactions this region adopted.
    pub(crate) adoptions: AtomicU64,
    /// Writes the gate refused, by reason (not home, moving, fenced, not a replica).
    pub(crate) refused_writes: [AtomicU64; 4],
}

impl RouterStats {
    /// Labels of `refused_writes`, in index order.
    pub(crate) const REFUSAL_LABELS: [&'static str; 4] =
        ["not_home", "moving", "fenced", "not_a_replica"];
}

impl RegionRouter {
    pub(crate) fn new(region: &str, proximity: BTreeMap<String, Vec<String>>) -> Self {
        RegionRouter {
            region: region.to_string(),
            routes: RwLock::new(RouteTable::new()),
            lease: Mutex::new(WriteLease::default()),
            lease_policy: LeasePolicy::default(),
            health: HealthPolicy::default(),
            proximity,
            adopted: Mutex::new(BTreeSet::new()),
            stats: RouterStats::default(),
        }
    }

    /// Whether this region holds a valid write lease now.
    pub(crate) fn holds_lease(&self) -> bool {
        self.lease_valid()
    }

    pub(crate) fn set_routes(&self, routes: RouteTable) {
        *self.routes.write() = routes;
    }

    fn lease_valid(&self) -> bool {
        self.lease.lock().is_valid(wall_ms())
    }
}

impl WriteGate for RegionRouter {
    fn check(&self, topic: &str, _message_group: &str) -> WriteDecision {
        let routes = self.routes.read();
        match admit(routes.get(topic), &self.region, self.lease_valid()) {
            Admission::Accept { epoch } => WriteDecision::Accept { epoch },
            Admission::Refuse {
                home_region,
                epoch,
                reason,
            } => {
                let (index, reason) = match reason {
                    Refusal::NotHome => (0, RefusalReason::NotHome),
                    Refusal::Moving => (1, RefusalReason::Moving),
                    Refusal::Fenced => (2, RefusalReason::Fenced),
                    Refusal::NotAReplica => (3, RefusalReason::NotAReplica),
                };
                self.stats.refused_writes[index].fetch_add(1, Ordering::Relaxed);
                WriteDecision::Refuse(WriteRefusal {
                    topic: topic.to_string(),
                    home_region,
                    epoch,
                    reason,
                })
            }
        }
    }
}

/// Renews the lease until `shutdown` flips.
pub(crate) async fn renew_lease(
    router: Arc<RegionRouter>,
    client: Arc<MetaClient>,
    interval_ms: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.max(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let sent_ms = wall_ms();
        let confirmed = tokio::time::timeout(
            Duration::from_millis(META_CALL_TIMEOUT_MS),
            client.list(ObjectKind::Regions),
        )
        .await;
        if matches!(confirmed, Ok(Ok(_))) {
            router.lease.lock().confirmed(&router.lease_policy, sent_ms);
        }
    }
}

/// Mirrors the agent's route table into the router until `shutdown` flips.
pub(crate) async fn follow_routes(
    router: Arc<RegionRouter>,
    mut status: watch::Receiver<super::agent::AgentStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let routes = status.borrow_and_update().routes.clone();
        router.set_routes(routes);
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Runs the failover driver until `shutdown` flips.
pub(crate) async fn drive_failover(
    router: Arc<RegionRouter>,
    client: Arc<MetaClient>,
    meta: MetaNode,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(FAILOVER_TICK_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let Ok(Ok((_, cells))) = tokio::time::timeout(
            Duration::from_millis(META_CALL_TIMEOUT_MS),
            client.list(ObjectKind::Cells),
        )
        .await
        else {
            continue;
        };
        let mut last_heartbeat_ms: BTreeMap<String, u64> = BTreeMap::new();
        for object in cells {
            if let Object::Cell(cell) = object {
                let last = last_heartbeat_ms.entry(cell.region.clone()).or_default();
                *last = (*last).max(cell.last_heartbeat_ms);
            }
        }
        let routes = router.routes.read().clone();
        let input = FailoverInput {
            routes: &routes,
            last_heartbeat_ms: &last_heartbeat_ms,
            proximity: &router.proximity,
            health: router.health,
            lease: router.lease_policy,
            now_ms: wall_ms(),
        };
        let now_ms = input.now_ms;
        *router.stats.health.lock() = router
            .proximity
            .keys()
            .map(|region| {
                let last = last_heartbeat_ms.get(region).copied().unwrap_or(0);
                (region.clone(), health_at(&router.health, last, now_ms))
            })
            .collect();
        let leads = meta.leader().is_some_and(|(leader, _)| leader == meta.id());
        if leads {
            for home_move in plan_home_moves(&input) {
                let command = MetaCommand::MoveTopicHome {
                    topic: home_move.topic.clone(),
                    new_home: home_move.to.clone(),
                    expected_epoch: home_move.expected_epoch,
                };
                match client.write(&command).await {
                    Ok(_) => {
                        router
                            .stats
                            .home_moves_written
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                        region = %router.region, topic = %home_move.topic, from = %home_move.from,
                        to = %home_move.to, epoch = home_move.expected_epoch + 1,
                        "failover: home moved"
                        );
                    }
                    Err(error) => tracing::info!(
                        topic = %home_move.topic, %error, "failover move not written (another decider may have won)"
                    ),
                }
            }
        }
        for failed in router.proximity.keys() {
            if *failed == router.region {
                continue;
            }
            let heir = heir_of(&input, failed);
            let mut adopted = router.adopted.lock();
            if heir.as_deref() == Some(router.region.as_str()) {
                if adopted.insert(failed.clone()) {
                    match broker.adopt_region(failed) {
                        Ok(outcome) => {
                            router.stats.adoptions.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                            region = %router.region, failed = %failed,
                            timers = outcome.timers_armed, transactions = outcome.transactions_opened,
                            "failover: adopted a failed region's delay messages and transactions"
                            );
                        }
                        Err(error) => {
                            adopted.remove(failed);
                            tracing::warn!(failed = %failed, %error, "adopting a failed region");
                        }
                    }
                }
            } else if heir.is_none() && input.may_take_over(failed) {
                // No healthy heir: try again later.
            } else if !input.may_take_over(failed) {
                adopted.remove(failed);
            }
        }
    }
}
