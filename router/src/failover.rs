//! Failover decisions: which active-standby homes move where when a region has failed, and
//! which surviving region adopts the failed region's pending delay messages and open
//! transactions. Sans-IO: fed the route table, each region's last heartbeat (meta's clock),
//! the latency ranking and `now_ms`; the shell writes the moves to meta (compare-and-set on
//! the epoch, so two deciders cannot both move a topic) and tells the heir to adopt.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::admission::{RouteTable, RouteTopology};
use crate::health::{Health, HealthPolicy, health_at};
use crate::lease::LeasePolicy;

/// A home move to write to meta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeMove {
    /// Topic.
    pub topic: String,
    /// The failed home.
    pub from: String,
    /// The new home.
    pub to: String,
    /// The epoch the move is compare-and-set on.
    pub expected_epoch: u64,
}

/// What the failover logic sees.
#[derive(Debug, Clone, Copy)]
pub struct FailoverInput<'a> {
    /// Topics.
    pub routes: &'a RouteTable,
    /// Each region's latest heartbeat as meta recorded it (0: never).
    pub last_heartbeat_ms: &'a BTreeMap<String, u64>,
    /// For each region, every region ordered nearest first (itself first).
    pub proximity: &'a BTreeMap<String, Vec<String>>,
    /// Health thresholds.
    pub health: HealthPolicy,
    /// Lease settings.
    pub lease: LeasePolicy,
    /// Meta's clock now.
    pub now_ms: u64,
}

impl FailoverInput<'_> {
    fn health_of(&self, region: &str) -> Health {
        health_at(
            &self.health,
            self.last_heartbeat_ms.get(region).copied().unwrap_or(0),
            self.now_ms,
        )
    }

    /// Failed, and its lease has surely run out: its homes may move.
    pub fn may_take_over(&self, region: &str) -> bool {
        let last = self.last_heartbeat_ms.get(region).copied().unwrap_or(0);
        self.health_of(region) == Health::Failed
            && self.now_ms >= self.lease.promotion_allowed_at_ms(last)
    }

    /// The healthy region nearest to `failed` among `candidates`.
    fn nearest_healthy<'b>(
        &self,
        failed: &str,
        candidates: impl Fn(&str) -> bool + 'b,
    ) -> Option<String> {
        self.proximity
            .get(failed)?
            .iter()
            .filter(|region| region.as_str() != failed)
            .find(|region| candidates(region) && self.health_of(region) == Health::Healthy)
            .cloned()
    }
}

/// The home moves due now: every active-standby topic whose home may be taken over goes to the
/// healthy region of the topic nearest the failed home (ties by name, in the proximity order).
/// A topic with no healthy region left stays (nothing can take it).
pub fn plan_home_moves(input: &FailoverInput<'_>) -> Vec<HomeMove> {
    let mut moves = Vec::new();
    for route in input.routes.values() {
        let RouteTopology::ActiveStandby { home } = &route.topology else {
            continue;
        };
        if !input.may_take_over(home) {
            continue;
        }
        if let Some(to) = input.nearest_healthy(home, |region| route.regions.contains(region)) {
            moves.push(HomeMove {
                topic: route.name.clone(),
                from: home.clone(),
                to,
                expected_epoch: route.epoch,
            });
        }
    }
    moves
}

/// The region that adopts `failed`'s pending delay messages and open transactions: the
/// healthy region nearest to it. Every decider computes the same answer from the same inputs,
/// so exactly one region adopts; `None` until `failed` may be taken over.
pub fn heir_of(input: &FailoverInput<'_>, failed: &str) -> Option<String> {
    if !input.may_take_over(failed) {
        return None;
    }
    input.nearest_healthy(failed, |_| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::TopicRoute;

    fn routes() -> RouteTable {
        let regions = |names: &[&str]| names.iter().map(|r| r.to_string()).collect();
        [
            TopicRoute {
                name: "orders".into(),
                regions: regions(&["us", "eu", "ap"]),
                topology: RouteTopology::ActiveStandby { home: "us".into() },
                epoch: 4,
                moving_to: None,
            },
            TopicRoute {
                name: "ledger".into(),
                regions: regions(&["us", "ap"]),
                topology: RouteTopology::ActiveStandby { home: "us".into() },
                epoch: 1,
                moving_to: None,
            },
            TopicRoute {
                name: "clicks".into(),
                regions: regions(&["us", "eu", "ap"]),
                topology: RouteTopology::ActiveActive,
                epoch: 0,
                moving_to: None,
            },
        ]
        .into_iter()
        .map(|route| (route.name.clone(), route))
        .collect()
    }

    fn proximity() -> BTreeMap<String, Vec<String>> {
        let order = |names: &[&str]| names.iter().map(|r| r.to_string()).collect();
        BTreeMap::from([
            ("us".to_string(), order(&["us", "eu", "ap"])),
            ("eu".to_string(), order(&["eu", "us", "ap"])),
            ("ap".to_string(), order(&["ap", "eu", "us"])),
        ])
    }

    #[test]
    fn homes_move_to_the_nearest_healthy_replica_once_the_lease_has_run_out() {
        let routes = routes();
        let proximity = proximity();
        let last = BTreeMap::from([
            ("us".to_string(), 10_000),
            ("eu".to_string(), 11_900),
            ("ap".to_string(), 11_900),
        ]);
        let at = |now_ms| FailoverInput {
            routes: &routes,
            last_heartbeat_ms: &last,
            proximity: &proximity,
            health: HealthPolicy::default(),
            lease: LeasePolicy::default(),
            now_ms,
        };
        // Suspect, then failed at 11,500; the lease (1,000 + 250 skew) has run out by then.
        assert!(plan_home_moves(&at(11_000)).is_empty());
        assert_eq!(heir_of(&at(11_000), "us"), None);
        let moves = plan_home_moves(&at(11_500));
        assert_eq!(
            moves,
            vec![
                HomeMove {
                    topic: "ledger".into(),
                    from: "us".into(),
                    to: "ap".into(),
                    expected_epoch: 1
                },
                HomeMove {
                    topic: "orders".into(),
                    from: "us".into(),
                    to: "eu".into(),
                    expected_epoch: 4
                },
            ]
        );
        assert_eq!(heir_of(&at(11_500), "us").as_deref(), Some("eu"));
        // Detection to promotion with the defaults: 1.5 s after the last heartbeat, inside
        // the 3 s RTO budget.
        assert_eq!(
            (11_500u64 - 10_000).max(LeasePolicy::default().promotion_allowed_at_ms(0)),
            1_500
        );
    }

    #[test]
    fn an_unhealthy_candidate_is_skipped_and_no_candidate_means_no_move() {
        let routes = routes();
        let proximity = proximity();
        let last = BTreeMap::from([
            ("us".to_string(), 10_000),
            ("eu".to_string(), 10_000),
            ("ap".to_string(), 12_900),
        ]);
        let input = FailoverInput {
            routes: &routes,
            last_heartbeat_ms: &last,
            proximity: &proximity,
            health: HealthPolicy::default(),
            lease: LeasePolicy::default(),
            now_ms: 13_000,
        };
        let moves = plan_home_moves(&input);
        assert!(
            moves.iter().all(|home_move| home_move.to == "ap"),
            "{moves:?}"
        );
        assert_eq!(heir_of(&input, "us").as_deref(), Some("ap"));
    }
}
