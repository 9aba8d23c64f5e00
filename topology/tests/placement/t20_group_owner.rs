//! FIFO message-group ownership: rendezvous hashing properties, pins, and the frozen placement.

use std::collections::BTreeSet;

use meridian_topology::{
    GroupPlacement, RegionName, owner_weight, rendezvous_owner, stable_hash64,
};
use proptest::prelude::*;

use crate::support::region_names;

fn groups() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9:_-]{0,16}"), 1..64)
}

proptest! {
    #![proptest_config(crate::support::proptest_config(512))]

    /// The owner is one of the healthy regions; there is none only when no region is healthy.
    #[test]
    fn owner_is_always_a_healthy_region(
        healthy in proptest::collection::btree_set(crate::support::region_name(), 0..6),
        groups in groups(),
    ) {
        for (topic, group) in &groups {
            match rendezvous_owner(topic, group, &healthy) {
                Some(owner) => prop_assert!(healthy.contains(owner)),
                None => prop_assert!(healthy.is_empty()),
            }
        }
    }

    /// Removing a region moves exactly the groups it owned; everyone else keeps their owner.
    #[test]
    fn removing_a_region_moves_only_its_groups(
        names in region_names(),
        removed in any::<prop::sample::Index>(),
        groups in groups(),
    ) {
        let list: Vec<&RegionName> = names.iter().collect();
        let removed = (*removed.get(&list)).clone();
        let after: BTreeSet<RegionName> = names.iter().filter(|r| **r != removed).cloned().collect();
        for (topic, group) in &groups {
            let before_owner = rendezvous_owner(topic, group, &names).unwrap();
            let after_owner = rendezvous_owner(topic, group, &after);
            if *before_owner == removed {
                prop_assert!(after_owner.is_none_or(|o| *o != removed));
            } else {
                prop_assert_eq!(after_owner, Some(before_owner));
            }
        }
    }

    /// Adding a region moves groups only onto the new region.
    #[test]
    fn adding_a_region_only_takes_groups(
        names in region_names(),
        added in crate::support::region_name(),
        groups in groups(),
    ) {
        prop_assume!(!names.contains(&added));
        let mut after = names.clone();
        after.insert(added.clone());
        for (topic, group) in &groups {
            let before_owner = rendezvous_owner(topic, group, &names).unwrap();
            let after_owner = rendezvous_owner(topic, group, &after).unwrap();
            prop_assert!(after_owner == before_owner || *after_owner == added);
        }
    }

    /// The owner depends on the set of healthy regions only: not on their order, not on repeats.
    #[test]
    fn owner_ignores_order_and_repeats(
        names in region_names(),
        shuffle_seed in any::<u64>(),
        repeats in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        groups in groups(),
    ) {
        let sorted: Vec<RegionName> = names.iter().cloned().collect();
        let mut shuffled = sorted.clone();
        deterministic_shuffle(&mut shuffled, shuffle_seed);
        for index in &repeats {
            shuffled.push(index.get(&sorted).clone());
        }
        let mut pinned = GroupPlacement::new();
        pinned.pin("orders", "pinned", sorted[0].clone());
        for (topic, group) in groups.iter().map(|(t, g)| (t.as_str(), g.as_str())).chain([("orders", "pinned")]) {
            prop_assert_eq!(
                rendezvous_owner(topic, group, &sorted),
                rendezvous_owner(topic, group, &shuffled)
            );
            prop_assert_eq!(pinned.owner(topic, group, &sorted), pinned.owner(topic, group, &shuffled));
        }
    }

    /// A healthy pinned region always owns its group; an unhealthy one falls back to hashing.
    #[test]
    fn pins_hold_while_the_region_is_healthy(
        names in region_names(),
        pin_index in any::<prop::sample::Index>(),
        mask in any::<u32>(),
        groups in groups(),
    ) {
        let list: Vec<&RegionName> = names.iter().collect();
        let pin = (*pin_index.get(&list)).clone();
        let healthy = crate::support::subset(&names, mask);
        let mut placement = GroupPlacement::new();
        for (topic, group) in &groups {
            placement.pin(topic.clone(), group.clone(), pin.clone());
        }
        for (topic, group) in &groups {
            let owner = placement.owner(topic, group, &healthy);
            if healthy.contains(&pin) {
                prop_assert_eq!(owner, Some(&pin));
            } else {
                prop_assert_eq!(owner, rendezvous_owner(topic, group, &healthy));
            }
        }
    }
}

/// Fisher-Yates driven by a SplitMix64 sequence, so the permutation is a pure function of the seed.
fn deterministic_shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The placement function is frozen: routers and clients of different versions must agree, and a
/// change would re-home groups on upgrade. The values below were cross-checked against an independent
/// Python implementation of the documented function (FNV-1a 64 over length-prefixed parts, then
/// MurmurHash3 fmix64) when it was written; if this test fails, the change to `stable_hash64` or
/// `owner_weight` is the bug.
#[test]
fn placement_is_frozen_across_releases() {
    assert_eq!(stable_hash64(&[]), 0xefd0_1f60_ba99_2926);
    assert_eq!(stable_hash64(&[b"meridian"]), 0xef84_d444_3829_9915);
    let us_east = RegionName::new("us-east").unwrap();
    assert_eq!(
        owner_weight("orders", "customer-1", &us_east),
        0xcefe_5ab1_1ba7_d7e4
    );
    assert_eq!(
        owner_weight("", "", &RegionName::new("a").unwrap()),
        0xe1c8_1c5a_190c_1901
    );

    let regions: Vec<RegionName> = ["us-east", "eu-west", "ap-south"]
        .iter()
        .map(|n| RegionName::new(*n).unwrap())
        .collect();
    for (topic, group, owner) in FROZEN_OWNERS {
        assert_eq!(
            rendezvous_owner(topic, group, &regions).unwrap().as_str(),
            owner,
            "{topic}/{group}"
        );
    }
}

const FROZEN_OWNERS: [(&str, &str, &str); 10] = [
    ("orders", "customer-1", "us-east"),
    ("orders", "customer-2", "eu-west"),
    ("orders", "customer-3", "us-east"),
    ("orders", "customer-42", "us-east"),
    ("payments", "eu-4411", "ap-south"),
    ("payments", "", "ap-south"),
    ("audit", "tenant-a", "eu-west"),
    ("audit", "tenant-b", "eu-west"),
    ("inventory", "sku-1001", "us-east"),
    ("inventory", "sku-1002", "eu-west"),
];
