//! Which region owns a FIFO message group: rendezvous hashing over the healthy regions, with optional
//! pins.
//!
//! A FIFO message group is produced and consumed through one owner region at a time so that its order
//! is total. Every router and client must pick the same owner from the same health view without talking
//! to each other, and a region failing must move only the groups it owned. Rendezvous
//! (highest-random-weight) hashing gives both: each (group, region) pair gets a pseudo-random weight from
//! a [stable hash](crate::stable_hash64), and the owner is the healthy region with the highest weight.
//! Removing a region changes the winner only where that region was the winner; adding one takes over
//! only the groups where it now wins, about 1/n of them.
//!
//! This module decides; it does not move anything. Handing a group over between regions (draining,
//! fencing with epochs) is the router's and meta's work.

use std::collections::BTreeMap;

use crate::hash::stable_hash64;
use crate::region::RegionName;

/// Domain tag mixed into every weight, so these weights are independent of any other use of
/// [`stable_hash64`] on the same strings. Part of the frozen placement function.
const OWNER_WEIGHT_TAG: &[u8] = b"meridian/fifo-owner/v1";

/// The rendezvous weight of `region` for the message group `message_group` of `topic`.
pub fn owner_weight(topic: &str, message_group: &str, region: &RegionName) -> u64 {
    stable_hash64(&[
        OWNER_WEIGHT_TAG,
        topic.as_bytes(),
        message_group.as_bytes(),
        region.as_str().as_bytes(),
    ])
}

/// The owner of a FIFO message group among `healthy` regions by rendezvous hashing: the region with the
/// highest [`owner_weight`], equal weights broken by the smaller name. The result depends only on the
/// set of regions given, not on their order or repetitions. `None` when `healthy` is empty.
pub fn rendezvous_owner<'a, I>(
    topic: &str,
    message_group: &str,
    healthy: I,
) -> Option<&'a RegionName>
where
    I: IntoIterator<Item = &'a RegionName>,
{
    healthy
        .into_iter()
        .map(|region| (owner_weight(topic, message_group, region), region))
        // Highest weight wins; on a tie the smaller name must win, hence `Reverse` on the name.
        .max_by(|(wa, ra), (wb, rb)| wa.cmp(wb).then_with(|| rb.cmp(ra)))
        .map(|(_, region)| region)
}

/// Owner choice for FIFO message groups: rendezvous hashing plus explicit pins.
///
/// A pin is a preference: a pinned group is owned by its pinned region while that region is healthy,
/// and otherwise fails over by rendezvous hashing like any other group. Pins are kept sorted, so two
/// placements with the same pins behave identically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPlacement {
    /// (topic, message group) -> preferred region.
    pins: BTreeMap<(String, String), RegionName>,
}

impl GroupPlacement {
    /// A placement with no pins: pure rendezvous hashing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins a group to `region`; returns the previous pin of that group, if any.
    pub fn pin(
        &mut self,
        topic: impl Into<String>,
        message_group: impl Into<String>,
        region: RegionName,
    ) -> Option<RegionName> {
        self.pins
            .insert((topic.into(), message_group.into()), region)
    }

    /// Removes the pin of a group; returns it, if there was one.
    pub fn unpin(&mut self, topic: &str, message_group: &str) -> Option<RegionName> {
        self.pins
            .remove(&(topic.to_owned(), message_group.to_owned()))
    }

    /// The pinned region of a group, if it has one.
    pub fn pinned(&self, topic: &str, message_group: &str) -> Option<&RegionName> {
        self.pins.get(&(topic.to_owned(), message_group.to_owned()))
    }

    /// The owner of a group among `healthy` regions: its pinned region if that is among them, else the
    /// [`rendezvous_owner`]. Independent of the order of `healthy`; `None` when it is empty.
    pub fn owner<'a, I>(
        &self,
        topic: &str,
        message_group: &str,
        healthy: I,
    ) -> Option<&'a RegionName>
    where
        I: IntoIterator<Item = &'a RegionName>,
        I::IntoIter: Clone,
    {
        let healthy = healthy.into_iter();
        if let Some(pinned) = self.pinned(topic, message_group)
            && let Some(region) = healthy.clone().find(|r| *r == pinned)
        {
            return Some(region);
        }
        rendezvous_owner(topic, message_group, healthy)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn regions(names: &[&str]) -> Vec<RegionName> {
        names.iter().map(|n| RegionName::new(*n).unwrap()).collect()
    }

    #[test]
    fn no_healthy_region_means_no_owner() {
        let none: Vec<RegionName> = Vec::new();
        assert_eq!(rendezvous_owner("t", "g", &none), None);
        assert_eq!(GroupPlacement::new().owner("t", "g", &none), None);
    }

    #[test]
    fn groups_spread_evenly_over_three_regions() {
        let healthy = regions(&["us-east", "eu-west", "ap-south"]);
        let groups = 30_000;
        let mut counts = BTreeMap::new();
        for i in 0..groups {
            let owner = rendezvous_owner("orders", &format!("customer-{i}"), &healthy).unwrap();
            *counts.entry(owner.clone()).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 3);
        for (region, count) in counts {
            // 1/3 each, within 3 percentage points (the binomial standard deviation is ~0.27 points).
            let share = f64::from(count) / f64::from(groups);
            assert!((0.303..0.363).contains(&share), "{region}: {share}");
        }
    }

    #[test]
    fn pins_win_while_healthy_and_fail_over_otherwise() {
        let all = regions(&["us-east", "eu-west", "ap-south"]);
        let mut placement = GroupPlacement::new();
        // Pin to a region the hash would not pick, so the test proves the pin is honoured.
        let hashed = rendezvous_owner("orders", "vip", &all).unwrap().clone();
        let pinned = all.iter().find(|r| **r != hashed).unwrap().clone();
        assert_eq!(placement.pin("orders", "vip", pinned.clone()), None);
        assert_eq!(placement.owner("orders", "vip", &all), Some(&pinned));

        let without_pinned: Vec<RegionName> =
            all.iter().filter(|r| **r != pinned).cloned().collect();
        assert_eq!(
            placement.owner("orders", "vip", &without_pinned),
            rendezvous_owner("orders", "vip", &without_pinned)
        );
        // Other groups and other topics are not affected by the pin.
        assert_eq!(
            placement.owner("payments", "vip", &all),
            rendezvous_owner("payments", "vip", &all)
        );
        assert_eq!(placement.unpin("orders", "vip"), Some(pinned));
        assert_eq!(placement.owner("orders", "vip", &all), Some(&hashed));
    }

    #[test]
    fn topic_and_group_are_not_concatenated_ambiguously() {
        let r = &regions(&["x"])[0];
        assert_ne!(owner_weight("ab", "c", r), owner_weight("a", "bc", r));
    }
}
