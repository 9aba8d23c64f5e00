//! Which region may take a write for a topic, as the router sees the fabric: the route table
//! (from meta) and this region's write lease. Sans-IO; the cell asks before every append.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Which regions take writes for a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteTopology {
    /// Every region of the topic takes writes.
    ActiveActive,
    /// Only `home` takes writes; the others forward to it.
    ActiveStandby {
        /// The home region.
        home: String,
    },
}

/// What the router knows of one topic (mirrored from meta).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRoute {
    /// Topic name.
    pub name: String,
    /// Regions that hold the topic.
    pub regions: BTreeSet<String>,
    /// Who takes writes.
    pub topology: RouteTopology,
    /// Failover epoch (meta's compare-and-set counter).
    pub epoch: u64,
    /// A planned switchover in progress, to this region.
    pub moving_to: Option<String>,
}

/// Routes by topic name.
pub type RouteTable = BTreeMap<String, TopicRoute>;

/// Why a write is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Another region is the home: forward there.
    NotHome,
    /// The home is moving (planned switchover): retry shortly at the new home.
    Moving,
    /// This region's write lease ran out: it may be failed over any moment.
    Fenced,
    /// The topic does not live in this region.
    NotAReplica,
}

/// The decision for one write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// Take it, under this epoch.
    Accept {
        /// The topic's epoch.
        epoch: u64,
    },
    /// Do not take it here.
    Refuse {
        /// Where it belongs (or will, for `Moving`).
        home_region: String,
        /// The topic's epoch.
        epoch: u64,
        /// Why.
        reason: Refusal,
    },
}

/// Decides a write for `route` (`None`: a topic meta does not know, which the cell alone
/// governs, as in a single-region cell) arriving in `region`, whose lease is `lease_valid`.
pub fn admit(route: Option<&TopicRoute>, region: &str, lease_valid: bool) -> Admission {
    let Some(route) = route else {
        return Admission::Accept { epoch: 0 };
    };
    let refuse = |home_region: &str, reason| Admission::Refuse {
        home_region: home_region.to_string(),
        epoch: route.epoch,
        reason,
    };
    match &route.topology {
        RouteTopology::ActiveStandby { home } if home != region => refuse(home, Refusal::NotHome),
        RouteTopology::ActiveStandby { home } => match &route.moving_to {
            Some(next) => refuse(next, Refusal::Moving),
            None if !lease_valid => refuse(home, Refusal::Fenced),
            None => Admission::Accept { epoch: route.epoch },
        },
        RouteTopology::ActiveActive if !route.regions.contains(region) => {
            let any = route.regions.iter().next().map_or("", String::as_str);
            refuse(any, Refusal::NotAReplica)
        }
        // Every region takes writes; nothing can be lost to a failover that the lease would
        // protect (FIFO group ownership is not enforced yet).
        RouteTopology::ActiveActive => Admission::Accept { epoch: route.epoch },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn standby(home: &str, epoch: u64, moving_to: Option<&str>) -> TopicRoute {
        TopicRoute {
            name: "orders".into(),
            regions: ["us", "eu", "ap"].iter().map(|r| r.to_string()).collect(),
            topology: RouteTopology::ActiveStandby { home: home.into() },
            epoch,
            moving_to: moving_to.map(str::to_string),
        }
    }

    #[test]
    fn only_the_home_takes_active_standby_writes_and_only_while_leased_and_not_moving() {
        let route = standby("us", 3, None);
        assert_eq!(
            admit(Some(&route), "us", true),
            Admission::Accept { epoch: 3 }
        );
        assert_eq!(
            admit(Some(&route), "eu", true),
            Admission::Refuse {
                home_region: "us".into(),
                epoch: 3,
                reason: Refusal::NotHome
            }
        );
        assert!(matches!(
            admit(Some(&route), "us", false),
            Admission::Refuse {
                reason: Refusal::Fenced,
                ..
            }
        ));
        let moving = standby("us", 4, Some("eu"));
        assert_eq!(
            admit(Some(&moving), "us", true),
            Admission::Refuse {
                home_region: "eu".into(),
                epoch: 4,
                reason: Refusal::Moving
            }
        );
        // The target does not take writes before the move commits.
        assert!(matches!(
            admit(Some(&moving), "eu", true),
            Admission::Refuse {
                reason: Refusal::NotHome,
                ..
            }
        ));
        assert_eq!(admit(None, "eu", false), Admission::Accept { epoch: 0 });
    }

    #[test]
    fn active_active_topics_take_writes_in_their_regions_only() {
        let mut route = standby("us", 1, None);
        route.topology = RouteTopology::ActiveActive;
        route.regions.remove("ap");
        assert_eq!(
            admit(Some(&route), "eu", false),
            Admission::Accept { epoch: 1 }
        );
        assert!(matches!(
            admit(Some(&route), "ap", true),
            Admission::Refuse {
                reason: Refusal::NotAReplica,
                ..
            }
        ));
    }

    proptest! {
        /// Whatever the sequence of home moves and switchovers (each a new epoch), at every
        /// epoch at most one region accepts writes for an active-standby topic.
        #[test]
        fn one_writer_per_epoch(steps in proptest::collection::vec((0usize..3, any::<bool>(), any::<bool>()), 1..50)) {
            let regions = ["us", "eu", "ap"];
            for (epoch, (home, moving, leased)) in steps.into_iter().enumerate() {
                let target = regions[(home + 1) % 3];
                let route = standby(regions[home], epoch as u64, moving.then_some(target));
                let writers: Vec<&str> = regions
                    .iter()
                    .copied()
                    .filter(|region| matches!(admit(Some(&route), region, leased), Admission::Accept { .. }))
                    .collect();
                prop_assert!(writers.len() <= 1, "epoch {epoch}: {writers:?}");
                if let Some(writer) = writers.first() {
                    prop_assert_eq!(*writer, regions[home]);
                }
            }
        }
    }
}
